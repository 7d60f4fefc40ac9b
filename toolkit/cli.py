"""Command line for long runs outside notebooks: ``python -m toolkit`` (or the ``toolkit`` script).

::

    python -m toolkit presets                                   # experiments and their presets
    python -m toolkit train --experiment tour --preset full     # one process (GPU if present)
    torchrun --nproc_per_node=4 -m toolkit train --experiment tour --preset full   # DDP
    python -m toolkit analyze eval --checkpoint RUN_DIR         # loss/accuracy -> RUN_DIR/eval.json

``train`` builds the dataset and the model from the preset (``dataset``, ``model``, ``widths``,
``epochs``, ``batch_size``, ``lr`` and the ``extra`` knobs that match an argument of the dataset
loader, the model or :func:`toolkit.train.fit`), trains with checkpoints in ``--out`` and writes
``history.csv`` and ``run.json`` there (``run.json`` holds what :func:`load_run` needs to rebuild
the model). A run restarted with the same ``--out`` resumes from its checkpoint.

``analyze KIND`` loads a run (its folder or its ``checkpoint.pt``) and writes the results of one
analysis beside it (``.pt`` for tensors, CSV/JSON for tables). Kinds live in a registry: adding one
is a decorated function, see :func:`analysis`.

Errors in what the user typed (unknown experiment, preset or kind, a missing checkpoint, settings
that clash with an existing checkpoint) print the message and exit with status 2, no traceback
(set ``TOOLKIT_DEBUG=1`` to see it).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import data as data_mod
from . import distributed
from . import models as models_mod
from . import presets as presets_mod
from . import train as train_mod
from .utils import cache_dir, get_device, seed_everything

__all__ = ["RUN_FILE", "HISTORY_FILE", "FIT_KNOBS", "NOT_A_SINGLE_FIT", "UsageError",
           "dataset_spec", "build_dataset", "model_spec", "model_factory", "build_model",
           "fit_kwargs", "LoadedRun", "load_run", "cmd_train", "Analysis", "ANALYSES", "analysis",
           "cmd_analyze", "cmd_presets", "build_parser", "main"]

RUN_FILE = "run.json"
HISTORY_FILE = "history.csv"
FIT_KNOBS = ("loss", "optimizer", "momentum", "weight_decay", "schedule", "rho", "adaptive", "asam_eta",
             "loss_kwargs", "amp", "compile")
# Experiments whose main computation is not one `fit` of one model: the reason, and what to run.
NOT_A_SINGLE_FIT = {
    "ntk": ("its `widths` are a sweep of one-hidden-layer networks trained with kernel-relative "
            "step sizes (the notebook's cells), not one model", "01_ntk_equivalence"),
    "feature_learning": ("it sweeps widths, parameterisations and learning rates (coordinate "
                         "check, learning-rate transfer), not one model", "05_feature_learning"),
    "curvature": ("it computes dense Hessian ranks of a sweep of tiny CNNs and MLPs, not one fit",
                  "06_curvature_scaling"),
    "collapse_batches": ("it optimises free embeddings (no network) with three batch schemes",
                         "07_collapse_batches"),
    "pruning_theory": ("it compares pruning, rescaling and retraining schemes over several runs",
                       "08_pruning_theory"),
    "landscape_convergence": ("it evaluates one trained net's loss on nested subsets over several "
                              "seeds and orderings, not one fit", "09_landscape_convergence"),
    "sharpness": ("it compares SAM, GD and hand-built interpolators on sparse parity over several "
                  "seeds", "10_sharpness_generalisation"),
    "pruning_bounds": ("it prunes one trained net at several sparsities and evaluates bounds",
                       "11_pruning_bounds"),
}


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


# ------------------------------------------------------------------------------ building a run


def _matching(fn: Callable, extra: dict, exclude: tuple = ()) -> dict:
    """The ``extra`` entries whose key is a parameter of ``fn`` (minus ``exclude``)."""
    params = inspect.signature(fn).parameters
    return {k: v for k, v in extra.items() if k in params and k not in exclude}


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, int | float | str | bool | type(None)):
        return value
    raise UsageError(f"preset value {value!r} cannot be stored in run.json; presets used by the "
                     "command line must hold plain numbers, strings, lists and dicts.")


def dataset_spec(preset: presets_mod.Preset, seed: int) -> dict:
    """``{"name", "kwargs"}`` for :func:`build_dataset`: the loader's arguments from the preset."""
    name = preset.dataset
    if name in data_mod.DATASETS:
        kwargs = _matching(data_mod.DATASETS[name], preset.extra, exclude=("seed",))
        kwargs["seed"] = seed
    elif name.lower().replace("-", "").replace("_", "") in data_mod.VISION_DATASETS:
        kwargs = _matching(data_mod.load_vision, preset.extra,
                           exclude=("name", "train", "download"))
    else:
        raise UsageError(f"preset {preset.experiment}/{preset.name} names dataset {name!r}, which "
                         f"the command line cannot build; known: "
                         f"{sorted(data_mod.DATASETS) + list(data_mod.VISION_DATASETS)}.")
    spec = {"name": name, "kwargs": _jsonable(kwargs)}
    n_train = preset.extra.get("n_train")
    if "n_train" not in kwargs and isinstance(n_train, int):  # e.g. a terminal-phase subset
        spec.update(subsample=n_train, seed=seed)
    return spec


def build_dataset(spec: dict, *, download: bool = False):
    """``(train, test)`` TensorDatasets from a :func:`dataset_spec` (vision files: no download
    unless ``download``; under torchrun rank 0 downloads while the others wait). A ``subsample``
    entry keeps that many training samples (stratified, seeded)."""
    name, kwargs = spec["name"], dict(spec["kwargs"])
    if name in data_mod.DATASETS:
        train_set, test_set = data_mod.DATASETS[name](**kwargs)
    else:
        if download and not distributed.is_main():
            distributed.barrier()  # rank 0 downloads first
        train_set, test_set = (data_mod.load_vision(name, train=True, download=download, **kwargs),
                               data_mod.load_vision(name, train=False, download=download, **kwargs))
        if download and distributed.is_main():
            distributed.barrier()
    if spec.get("subsample") is not None:
        n = min(int(spec["subsample"]), len(train_set))
        train_set = data_mod.subsample(train_set, n, seed=spec.get("seed", 0))
    return train_set, test_set


def _image_shape(x: torch.Tensor) -> tuple[int, int]:
    """(channels, side) of square images, from 4-D tensors or flattened single-channel ones."""
    if x.ndim == 4:
        return x.shape[1], x.shape[2]
    side = round(x[0].numel() ** 0.5)
    if side * side != x[0].numel():
        raise UsageError(f"a convolutional model needs square images; inputs have shape "
                         f"{tuple(x.shape[1:])}.")
    return 1, side


def model_spec(preset: presets_mod.Preset, train_set) -> dict:
    """``{"name", "kwargs"}`` for :func:`build_model`, sized from the data and the preset.

    Input size and number of outputs come from the training set; ``widths`` gives the hidden
    widths (MLP), the width (CNN, ResNet, deep linear: ``widths[0]``); ``extra`` entries that name
    a constructor argument (``activation``, ``parameterization``, ``skip``, ``depth`` ...) are
    passed through.
    """
    if preset.experiment in NOT_A_SINGLE_FIT:
        reason, notebook = NOT_A_SINGLE_FIT[preset.experiment]
        raise UsageError(f"`train` cannot run experiment {preset.experiment!r}: {reason}. Run its "
                         f"notebook instead: `papermill notebooks/{notebook}.ipynb "
                         f"build/{notebook}.ipynb -p PRESET {preset.name}`.")
    x, y = train_set.tensors[0], train_set.tensors[1]
    in_dim = int(x[0].numel())
    out = data_mod.n_classes(train_set) if not y.dtype.is_floating_point else int(y.shape[-1])
    name, widths = preset.model, [int(w) for w in preset.widths]
    if name not in models_mod.MODELS:
        raise UsageError(f"preset {preset.experiment}/{preset.name} names model {name!r}, which "
                         f"the command line cannot build; known: {sorted(models_mod.MODELS)}.")
    width = dict(width=widths[0]) if widths else {}
    if name == "mlp":
        kwargs = dict(in_dim=in_dim, widths=widths, out_dim=out)
    elif name == "cnn":
        channels, side = _image_shape(x)
        kwargs = dict(in_channels=channels, n_classes=out, image_size=side, **width)
    elif name == "resnet18":
        kwargs = dict(n_classes=out, in_channels=_image_shape(x)[0], **width)
    elif name == "resnet_mini":
        kwargs = dict(in_dim=in_dim, n_classes=out, **width)
    else:  # deep_linear
        kwargs = dict(in_dim=in_dim, out_dim=out, width=widths[0] if widths else 64,
                      depth=max(len(widths), 1))
    kwargs.update(_matching(model_factory(name), preset.extra, exclude=tuple(kwargs)))
    return {"name": name, "kwargs": _jsonable(kwargs)}


# Model names that earlier releases wrote into run.json, and what the model is called now.
_RETIRED_MODELS = {
    "bn_mlp": 'the batch-norm MLP is now model "mlp" with norm "batch": in run.json set '
              '"name": "mlp" and, in its "kwargs", rename "n_classes" to "out_dim" and add '
              '"norm": "batch" (the weights load unchanged), or train the run again',
}


def model_factory(name: str) -> Callable[..., torch.nn.Module]:
    """The constructor of a model name in ``toolkit.models.MODELS``."""
    if name in _RETIRED_MODELS:
        raise UsageError(f"this run was written with model {name!r}, which no longer exists; "
                         f"{_RETIRED_MODELS[name]}.")
    if name not in models_mod.MODELS:
        raise UsageError(f"unknown model {name!r}; known: {sorted(models_mod.MODELS)}.")
    return models_mod.MODELS[name]


def build_model(spec: dict) -> torch.nn.Module:
    """The model of a :func:`model_spec` (freshly initialised from the current torch seed)."""
    return model_factory(spec["name"])(**spec["kwargs"])


def fit_kwargs(preset: presets_mod.Preset) -> dict:
    """:func:`toolkit.train.fit` arguments from the preset: sizes and the ``FIT_KNOBS`` extras."""
    kwargs = dict(epochs=preset.epochs, batch_size=preset.batch_size, lr=preset.lr)
    kwargs.update({k: v for k, v in preset.extra.items() if k in FIT_KNOBS})
    return _jsonable(kwargs)


# -------------------------------------------------------------------------------- loading a run


@dataclass
class LoadedRun:
    """A finished (or checkpointed) run: the model with its weights, its data, its record."""

    model: torch.nn.Module
    train_set: object
    test_set: object
    info: dict
    checkpoint: dict
    directory: Path
    history: object = field(default=None)


def _run_dir(path: str | Path) -> tuple[Path, Path]:
    path = Path(path).expanduser()
    ckpt = path / train_mod.CHECKPOINT_NAME if path.is_dir() else path
    if not ckpt.exists():
        raise FileNotFoundError(f"No checkpoint at {ckpt}. Pass a run folder written by "
                                "`python -m toolkit train` (or its checkpoint.pt).")
    return ckpt.parent, ckpt


def load_run(path: str | Path, *, device: str | torch.device = "cpu",
             download: bool = False) -> LoadedRun:
    """Rebuild a run written by ``toolkit train`` from its folder (or ``checkpoint.pt``).

    The model is rebuilt from ``run.json``'s spec, its weights loaded from the checkpoint, moved to
    ``device`` and put in eval mode; the dataset is rebuilt from its spec (same seed, same split).
    A notebook can call this to load a finished full-preset run instead of training.
    """
    directory, ckpt_path = _run_dir(path)
    run_file = directory / RUN_FILE
    if not run_file.exists():
        raise FileNotFoundError(f"No {RUN_FILE} beside {ckpt_path}; the command line needs the "
                                "run record that `python -m toolkit train` writes.")
    info = json.loads(run_file.read_text())
    device = get_device(device)
    model = build_model(info["model"])
    ckpt = train_mod.load_checkpoint(ckpt_path, map_location="cpu")
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    train_set, test_set = build_dataset(info["dataset"], download=download)
    import pandas as pd
    return LoadedRun(model, train_set, test_set, info, ckpt, directory,
                     pd.DataFrame(ckpt["history"]))


# ---------------------------------------------------------------------------------------- train


def _write_json(path: Path, obj) -> None:
    """Write JSON atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _summary(history) -> str:
    last = history.iloc[-1]
    keys = [k for k in ("train_loss", "train_acc", "test_loss", "test_acc") if k in history]
    return ", ".join(f"{k} {last[k]:.4g}" for k in keys)


def cmd_train(args: argparse.Namespace) -> int:
    preset = presets_mod.get_preset(args.experiment, args.preset)
    out = Path(args.out).expanduser() if args.out else cache_dir(
        "runs", f"{args.experiment}-{args.preset}-seed{args.seed}")
    device = distributed.init_from_env(args.device)
    main = distributed.is_main()
    run_file = out / RUN_FILE
    old = None
    if main and args.resume and run_file.exists():
        old = json.loads(run_file.read_text())
    old = distributed.broadcast_object(old)  # rank 0 read it; no rank reads a file being written
    if old is not None and (old.get("experiment"), old.get("preset")) != (args.experiment,
                                                                          args.preset):
        raise UsageError(f"{out} holds a run of {old.get('experiment')}/{old.get('preset')}; "
                         "use another --out, or --no-resume to overwrite it.")

    seed_everything(args.seed)
    d_spec = dataset_spec(preset, args.seed)
    train_set, test_set = build_dataset(d_spec, download=args.download)
    m_spec = model_spec(preset, train_set)
    seed_everything(args.seed)
    model = build_model(m_spec)
    kwargs = fit_kwargs(preset)
    for key in ("epochs", "batch_size", "lr"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.full_batch:
        kwargs["batch_size"] = None
    kwargs["amp"] = args.amp or kwargs.get("amp", False)
    kwargs["compile"] = args.compile or kwargs.get("compile", False)

    info = {"experiment": args.experiment, "preset": args.preset, "seed": args.seed,
            "dataset": d_spec, "model": m_spec, "fit": kwargs, "status": "running",
            "world_size": distributed.world_size(), "device": str(device),
            "torch": torch.__version__, "python": platform.python_version(),
            "checkpoint": train_mod.CHECKPOINT_NAME, "history": HISTORY_FILE}
    if old is not None and old.get("model") != m_spec:
        raise UsageError(f"{out} holds a run with another model ({old.get('model')}); use "
                         "another --out, or --no-resume to overwrite it.")
    if main and old is None:  # a resumed run keeps its record until it finishes
        _write_json(run_file, info)
    start = time.perf_counter()
    try:
        history = train_mod.fit(model, train_set, test=test_set, device=device, seed=args.seed,
                                checkpoint_dir=out, checkpoint_every=args.checkpoint_every,
                                resume=args.resume, progress=args.progress, **kwargs)
    except ValueError as err:
        if "checkpoint" in str(err):
            raise UsageError(f"{err} (Command line: another --out or --no-resume.)") from err
        raise
    seconds = time.perf_counter() - start
    if main:
        history.to_csv(out / HISTORY_FILE, index=False)
        info.update(status="finished", seconds=round(seconds, 3),
                    final={k: float(v) for k, v in history.iloc[-1].items()})
        _write_json(run_file, info)
        procs = distributed.world_size()
        print(f"train {args.experiment}/{args.preset} seed {args.seed}: "
              f"{int(history['epoch'].iloc[-1])} epochs, {seconds:.1f} s on {device}"
              f"{f' x {procs} processes' if procs > 1 else ''}; {_summary(history)} -> {out}")
    return 0


# -------------------------------------------------------------------------------------- analyze


@dataclass
class Analysis:
    """One ``analyze`` kind: ``run(loaded_run, args, out_dir) -> dict`` of summary numbers."""

    name: str
    help: str
    run: Callable[[LoadedRun, argparse.Namespace, Path], dict]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


ANALYSES: dict[str, Analysis] = {}


def analysis(name: str, help: str,
             arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register ``fn(run, args, out) -> dict`` as ``python -m toolkit analyze NAME``.

    ``arguments(parser)`` adds the kind's own options (each with a ``help``). ``fn`` receives the
    :class:`LoadedRun` (model on the chosen device, in eval mode), the parsed options and the output
    folder; it writes its files there (only on rank 0 under torchrun: check
    :func:`toolkit.distributed.is_main`) and returns a few numbers for the summary line.
    """
    def register(fn):
        ANALYSES[name] = Analysis(name, help, fn, arguments)
        return fn
    return register


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", choices=("train", "test", "both"), default="both",
                        help="which split(s) to evaluate (default: both)")
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="evaluation batch size (default: the run's training batch size)")


@analysis("eval", "loss and accuracy of the checkpoint -> eval.json", _eval_arguments)
def _analyze_eval(run: LoadedRun, args: argparse.Namespace, out: Path) -> dict:
    fit = run.info.get("fit", {})
    batch_size = args.batch_size if args.batch_size is not None else fit.get("batch_size")
    loss_fn = _run_loss(run)
    device = next(run.model.parameters()).device
    splits = ("train", "test") if args.split == "both" else (args.split,)
    result = {"checkpoint_epoch": int(run.checkpoint["epoch"])}
    for split in splits:
        x, y = (run.train_set if split == "train" else run.test_set).tensors[:2]
        data = (x.to(device), y.to(device))
        if distributed.is_distributed():
            metrics = train_mod._evaluate_sharded(run.model, data, loss_fn, batch_size, device)
        else:
            metrics = train_mod.evaluate(run.model, data, loss=loss_fn, batch_size=batch_size)
        result.update({f"{split}_{k}": v for k, v in metrics.items()})
    if distributed.is_main():
        _write_json(out / "eval.json", result)
    return result


def _subset_arguments(parser: argparse.ArgumentParser, n_default: int) -> None:
    parser.add_argument("--n-samples", type=_positive_int, default=n_default,
                        help=f"training samples analysed (the first N; default {n_default})")
    parser.add_argument("--batch-size", type=_positive_int, default=None,
                        help="batch size of the data passes (default: one batch)")


def _train_subset(run: LoadedRun, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = run.train_set.tensors[:2]
    device = next(run.model.parameters()).device
    return x[:n].to(device), y[:n].to(device)


def _run_loss(run: LoadedRun):
    fit = run.info.get("fit", {})
    return train_mod.get_loss(fit.get("loss", "ce"), **(fit.get("loss_kwargs") or {}))


def _landscape_arguments(parser: argparse.ArgumentParser) -> None:
    _subset_arguments(parser, 512)
    parser.add_argument("--steps", type=_positive_int, default=21,
                        help="grid points per axis (default 21; the paper uses 51)")
    parser.add_argument("--span", type=_positive_float, default=1.0,
                        help="the grid covers [-span, span]^2 in filter-normalised units")
    parser.add_argument("--direction-seed", type=int, default=0,
                        help="seed of the two random directions")


@analysis("landscape", "filter-normalised 2-D loss surface around the checkpoint -> surface.pt",
          _landscape_arguments)
def _analyze_landscape(run: LoadedRun, args: argparse.Namespace, out: Path) -> dict:
    from . import landscape
    if args.steps < 2:
        raise ValueError("--steps must be at least 2.")
    d1 = landscape.random_direction(run.model, seed=args.direction_seed)
    d2 = landscape.random_direction(run.model, seed=args.direction_seed + 1)
    surf = landscape.surface_2d(run.model, _run_loss(run), _train_subset(run, args.n_samples),
                                d1, d2, xrange=(-args.span, args.span),
                                yrange=(-args.span, args.span), steps=args.steps,
                                batch_size=args.batch_size, progress=distributed.is_main())
    if distributed.is_main():
        torch.save({"x": torch.from_numpy(surf.x), "y": torch.from_numpy(surf.y),
                    **{k: torch.from_numpy(v) for k, v in surf.metrics.items()}},
                   out / "surface.pt")
    return {"center_loss": surf.center_loss, "max_loss": float(np.nanmax(surf.loss)),
            "nan_points": int(np.isnan(surf.loss).sum())}


def _hessian_arguments(parser: argparse.ArgumentParser) -> None:
    _subset_arguments(parser, 512)
    parser.add_argument("--k", type=_positive_int, default=3, help="top eigenvalues (default 3)")
    parser.add_argument("--trace-samples", type=_positive_int, default=30,
                        help="Hutch++ products for the trace estimate (default 30)")


@analysis("hessian", "top Hessian eigenvalues and trace of the training loss -> hessian.json",
          _hessian_arguments)
def _analyze_hessian(run: LoadedRun, args: argparse.Namespace, out: Path) -> dict:
    from . import hessian
    data = _train_subset(run, args.n_samples)
    loss = _run_loss(run)
    top = hessian.top_eigenvalues(run.model, loss, data, k=args.k, batch_size=args.batch_size)
    tr = hessian.trace(run.model, loss, data, n_samples=max(3, args.trace_samples),
                       method="hutch++", batch_size=args.batch_size,
                       progress=distributed.is_main())
    result = {"lambda_max": float(top.eigenvalues[0]), "trace": float(tr.trace),
              "trace_stderr": float(tr.stderr)}
    if distributed.is_main():
        _write_json(out / "hessian.json", {**result,
                                           "top_eigenvalues": [float(v) for v in top.eigenvalues],
                                           "n_samples": len(data[0])})
    return result


def _ntk_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-samples", type=_positive_int, default=256,
                        help="training samples in the kernel (default 256)")
    parser.add_argument("--mode", choices=("trace", "diagonal", "full"), default="trace",
                        help="output contraction of the kernel (default trace)")
    parser.add_argument("--chunk-size", type=_positive_int, default=None,
                        help="inputs per kernel block (default: from a memory budget)")


@analysis("ntk", "empirical NTK of the checkpoint on training inputs -> ntk.pt", _ntk_arguments)
def _analyze_ntk(run: LoadedRun, args: argparse.Namespace, out: Path) -> dict:
    from . import ntk
    x, _ = _train_subset(run, args.n_samples)
    kernel = ntk.empirical_ntk(run.model, x, mode=args.mode, chunk_size=args.chunk_size,
                               progress=distributed.is_main())
    # the (N, N) trace kernel: mean over outputs of the per-output kernels
    if args.mode == "full":
        flat = kernel.diagonal(dim1=-2, dim2=-1).mean(-1)
    elif args.mode == "diagonal":
        flat = kernel.mean(-1)
    else:
        flat = kernel
    evals = torch.linalg.eigvalsh(flat.double())
    if distributed.is_main():
        torch.save({"kernel": kernel.cpu(), "mode": args.mode}, out / "ntk.pt")
    return {"n": len(x), "lambda_max": float(evals[-1]), "lambda_min": float(evals[0]),
            "trace_mean": float(flat.diagonal().mean())}


def _collapse_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", choices=("train", "test"), default="train",
                        help="which split's features (default train, as Papyan et al.)")
    parser.add_argument("--batch-size", type=_positive_int, default=512,
                        help="batch size of the two streaming passes (default 512)")


@analysis("collapse", "neural-collapse metrics NC1-NC4 of the penultimate features -> "
          "collapse.json", _collapse_arguments)
def _analyze_collapse(run: LoadedRun, args: argparse.Namespace, out: Path) -> dict:
    from . import collapse
    x, y = (run.train_set if args.split == "train" else run.test_set).tensors[:2]
    if y.dtype.is_floating_point:
        raise ValueError("analyze collapse needs a classification run (integer labels).")
    metrics = collapse.collapse_metrics(run.model, (x, y), batch_size=args.batch_size,
                                        progress=distributed.is_main())
    values = {k: v for k, v in metrics.as_dict().items()
              if isinstance(v, float | int) and not isinstance(v, bool)}
    if distributed.is_main():
        _write_json(out / "collapse.json", {**values, "split": args.split})
    return {k: values[k] for k in ("nc1", "etf_error", "self_duality", "ncc_mismatch")
            if k in values and values[k] is not None}


def _spectra_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conv", choices=("slices", "reshape"), default="slices",
                        help="conv weights: pool the k×k slices' spectra (WeightWatcher) or "
                             "reshape to (out, in·k·k) (default slices)")
    parser.add_argument("--no-randomized", action="store_true",
                        help="skip the shuffled-weights control columns")


@analysis("spectra", "per-layer eigenvalue spectra: power-law alpha, spikes, ranks -> spectra.csv",
          _spectra_arguments)
def _analyze_spectra(run: LoadedRun, args: argparse.Namespace, out: Path) -> dict:
    from . import spectra
    report = spectra.layer_report(run.model, conv=args.conv, randomize=not args.no_randomized,
                                  progress=distributed.is_main())
    if distributed.is_main():
        report.to_csv(out / "spectra.csv", index=False)
    return {"layers": len(report), "mean_alpha": float(report["alpha"].mean()),
            "spikes": int(report["n_spikes"].sum())}


def cmd_analyze(args: argparse.Namespace) -> int:
    kind = ANALYSES[args.kind]
    device = distributed.init_from_env(args.device)
    run = load_run(args.checkpoint, device=device, download=args.download)
    out = Path(args.out).expanduser() if args.out else run.directory
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result = kind.run(run, args, out)
    if distributed.is_main():
        numbers = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                            for k, v in result.items())
        print(f"analyze {kind.name} of {run.info['experiment']}/{run.info['preset']} "
              f"({time.perf_counter() - start:.1f} s): {numbers} -> {out}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    for exp in presets_mod.experiments():
        for name in sorted(presets_mod._REGISTRY[exp]):
            p = presets_mod.get_preset(exp, name)
            print(f"{exp:<20} {name:<8} dataset={p.dataset} model={p.model} "
                  f"widths={list(p.widths)} epochs={p.epochs} batch_size={p.batch_size} lr={p.lr}")
    return 0


# --------------------------------------------------------------------------------------- parser


def _number(cast: Callable, description: str, valid: Callable[[float], bool]) -> Callable:
    """An argparse type: ``cast(text)`` that must satisfy ``valid``, else a clear error."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}") from None
        if not valid(value):
            raise argparse.ArgumentTypeError(f"expected {description}, got {value}")
        return value
    return parse


_positive_int = _number(int, "a positive integer", lambda v: v >= 1)
_non_negative_int = _number(int, "a non-negative integer", lambda v: v >= 0)
_positive_float = _number(float, "a positive number", lambda v: v > 0)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps; under "
                             "torchrun each process takes cuda:LOCAL_RANK (default: auto)")
    parser.add_argument("--download", action="store_true",
                        help="allow downloading vision datasets (MNIST, CIFAR) into $TOOLKIT_DATA")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m toolkit",
        description="Train the notebooks' experiments at toy or paper scale and analyse the "
                    "checkpoints. Launch with `torchrun --nproc_per_node=N -m toolkit ...` to use "
                    "N processes (DistributedDataParallel; NCCL on GPUs, gloo on CPUs).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train an experiment's preset with checkpoints",
                       description="Train the model of an experiment's preset. Writes "
                                   "checkpoint.pt, history.csv and run.json to --out; rerunning "
                                   "with the same --out resumes.")
    p.add_argument("--experiment", required=True,
                   help="experiment name, e.g. tour (`python -m toolkit presets` lists them)")
    p.add_argument("--preset", default="toy", help="preset name: toy or full (default: toy)")
    p.add_argument("--seed", type=_non_negative_int, default=0,
                   help="seed of the data split, the initialisation and the shuffling (default: 0)")
    p.add_argument("--out", default=None,
                   help="run folder (default: $TOOLKIT_CACHE/runs/EXPERIMENT-PRESET-seedSEED, "
                        "TOOLKIT_CACHE defaulting to ~/.cache/toolkit)")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the checkpoint in --out if there is one (default: resume)")
    p.add_argument("--epochs", type=_non_negative_int, default=None,
                   help="override the preset's number of epochs")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="override the preset's (global) batch size")
    p.add_argument("--full-batch", action="store_true",
                   help="full-batch gradient descent (one step per epoch)")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="override the preset's learning rate")
    p.add_argument("--checkpoint-every", type=_positive_int, default=10,
                   help="epochs between checkpoints (one is always written at the end; default 10)")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision for training on CUDA (bf16 where supported)")
    p.add_argument("--compile", action="store_true",
                   help="run the training steps through torch.compile")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar (rank 0 only; default: on)")
    _common(p)
    p.set_defaults(func=cmd_train)

    a = sub.add_parser("analyze", help="run an analysis on a checkpoint",
                       description="Run one analysis on a run written by `train`; results are "
                                   "written beside the checkpoint unless --out is given.")
    kinds = a.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind in ANALYSES.values():
        k = kinds.add_parser(kind.name, help=kind.help, description=kind.help)
        k.add_argument("--checkpoint", required=True,
                       help="run folder written by `train`, or its checkpoint.pt")
        k.add_argument("--out", default=None,
                       help="folder for the results (default: the run folder)")
        if kind.add_arguments is not None:
            kind.add_arguments(k)
        _common(k)
        k.set_defaults(func=cmd_analyze)

    s = sub.add_parser("presets", help="list experiments and their presets",
                       description="List every registered experiment and preset.")
    s.set_defaults(func=cmd_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m toolkit`` and the ``toolkit`` script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    initialised_here = distributed.launched_by_torchrun() and not torch.distributed.is_initialized()
    try:
        return args.func(args)
    except (UsageError, FileNotFoundError, ValueError, ImportError) as err:
        if os.environ.get("TOOLKIT_DEBUG"):
            raise
        hint = " (Command line: add --download.)" if "download=True" in str(err) else ""
        print(f"{parser.prog} {args.command}: error: {err or type(err).__name__}{hint}",
              file=sys.stderr)
        return 2
    finally:
        if initialised_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
