"""Named run sizes per experiment: ``toy`` (a 2-core CPU, seconds, < 2 GB) and ``full`` (paper scale).

A preset is a small frozen dataclass. Notebooks read theirs with
``get_preset("<experiment>", PRESET)``; papermill's ``-p PRESET full`` switches to the paper-scale run.
Experiment-specific knobs live in ``extra``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

_REGISTRY: dict[str, dict[str, Preset]] = {}


@dataclass(frozen=True)
class Preset:
    """Sizes of one run: dataset, model, widths, epochs, batch size (None = full batch), lr."""

    experiment: str
    name: str
    dataset: str
    model: str
    widths: tuple = ()
    epochs: int = 10
    batch_size: int | None = None
    lr: float = 0.1
    extra: dict = field(default_factory=dict)

    def __getitem__(self, key: str):
        """``preset["key"]`` reads ``extra`` (the experiment-specific knobs)."""
        return self.extra[key]

    def with_(self, **changes) -> Preset:
        """A copy with some fields changed (``extra`` keys are merged)."""
        extra = {**self.extra, **changes.pop("extra", {})}
        return replace(self, extra=extra, **changes)


def register(experiment: str, *presets: Preset) -> None:
    """Register presets under an experiment name (each preset's ``name`` is its key)."""
    table = _REGISTRY.setdefault(experiment, {})
    for p in presets:
        if p.experiment != experiment:
            raise ValueError(f"preset {p.name!r} says experiment={p.experiment!r}, "
                             f"registered under {experiment!r}.")
        table[p.name] = p


def experiments() -> list[str]:
    """Names of the experiments that have presets."""
    return sorted(_REGISTRY)


def get_preset(experiment: str, name: str = "toy") -> Preset:
    """The preset ``name`` of ``experiment``; unknown names raise an error listing the valid ones."""
    if experiment not in _REGISTRY:
        raise ValueError(f"Unknown experiment {experiment!r}; valid experiments: {experiments()}.")
    table = _REGISTRY[experiment]
    if name not in table:
        raise ValueError(f"Unknown preset {name!r} for experiment {experiment!r}; valid presets: "
                         f"{sorted(table)}.")
    return table[name]


# ------------------------------------------------------------------------------------ 00 tour
register(
    "tour",
    Preset("tour", "toy", dataset="digits", model="mlp", widths=(128,), epochs=30,
           batch_size=64, lr=0.05, extra={"momentum": 0.9, "panel_epochs": 15}),
    Preset("tour", "full", dataset="mnist1d", model="mlp", widths=(512, 512), epochs=100,
           batch_size=128, lr=0.05, extra={"momentum": 0.9, "panel_epochs": 50}),
)
