"""The result of a claim's predicate."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Verdict"]


@dataclass(frozen=True)
class Verdict:
    """Whether a claim holds, and the measured numbers behind the decision.

    Truthy exactly when the claim holds, so ``self_check(verdict, message)`` works;
    ``verdict.values`` holds the quantities the predicate compared (for the message and for tests),
    ``verdict["slope"]`` reads one of them.
    """

    passed: bool
    values: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.passed)

    def __getitem__(self, key: str):
        return self.values[key]

    def __str__(self) -> str:
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in self.values.items())
        return f"{'holds' if self.passed else 'fails'} ({shown})"


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else repr(value)
