"""The exercise kinds, their results, and the registry a notebook loads.

An exercise is a module-level object in ``toolkit/exercises/nbNN.py``; ``load("NN")`` collects
them (in definition order) into an :class:`ExerciseSet` whose attributes are the exercises. Every
kind has ``check(answer, **context) -> Result``, ``hint(level=None)`` and ``solution()``.
"""

from __future__ import annotations

import html
import importlib
import inspect
import math
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Result", "Exercise", "ValueExercise", "FunctionExercise", "PredictionExercise",
           "ThoughtExercise", "ExerciseSet", "Diagnosis", "load", "registered", "results",
           "clear_results", "is_not_attempted", "STATUSES", "RESULT_LINE"]

CORRECT, INCORRECT, NOT_ATTEMPTED, THOUGHT = "correct", "incorrect", "not attempted", "thought"
#: ``thought`` is the status of a free-text question's ``check()``: it has no automatic check.
STATUSES = (CORRECT, INCORRECT, NOT_ATTEMPTED, THOUGHT)
#: The line every result prints; ``editions.exercise_statuses`` reads it back from executed notebooks.
RESULT_LINE = re.compile(r"EXERCISE (\S+): (correct|incorrect|not attempted|thought)")

#: A diagnosis of a wrong answer: ``(predicate(answer, expected, context) -> bool, reason)``.
Diagnosis = tuple[Callable[..., bool], str]

_RESULTS: list[Result] = []


@dataclass
class Result:
    """The outcome of one ``check()``: ``status`` in :data:`STATUSES` and a specific ``reason``.

    Prints as one line, ``EXERCISE 01.ntk_entry: incorrect — your kernel is not symmetric``;
    truthy exactly when correct. Every result is recorded in :func:`results`.
    """

    exercise: str
    status: str
    reason: str = ""
    kind: str = ""
    _fresh: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {list(STATUSES)}, got {self.status!r}.")

    def __bool__(self) -> bool:
        return self.status == CORRECT

    def __str__(self) -> str:
        return f"EXERCISE {self.exercise}: {self.status}" + (f" — {self.reason}" if self.reason else "")

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        colour = {CORRECT: "#1a7f37", INCORRECT: "#cf222e", NOT_ATTEMPTED: "#9a6700",
                  THOUGHT: "#0969da"}[self.status]
        mark = {CORRECT: "✓", INCORRECT: "✗", NOT_ATTEMPTED: "…", THOUGHT: "?"}[self.status]
        reason = f" — {html.escape(self.reason)}" if self.reason else ""
        return (f'<div style="border-left:4px solid {colour};padding:2px 8px">'
                f'<b style="color:{colour}">{mark} {html.escape(self.status)}</b> '
                f"<code>{html.escape(self.exercise)}</code>{reason}"
                f'<span style="display:none">{html.escape(str(self))}</span></div>')

    def _ipython_display_(self):
        # check() has already shown this result; the cell's display hook must not show it twice
        if self._fresh:
            self._fresh = False
            return
        _display(_View(self))


class _View:
    """What check() displays: the result's HTML box, with its one line as the plain text."""

    def __init__(self, result: Result):
        self.result = result

    def __repr__(self) -> str:
        return str(self.result)

    def _repr_html_(self) -> str:
        return self.result._repr_html_()


class _Text(str):
    """A hint or a solution: a string that renders as Markdown in Jupyter and prints plainly."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_markdown_(self) -> str:
        return str(self)


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def _display(obj) -> None:
    if _in_ipython():
        from IPython.display import display
        display(obj)
    else:
        print(repr(obj))


def _swallow_echo(result: Result) -> None:
    """check() has shown ``result``; if the cell ends with that call, IPython would show it again.
    Mark it for the cell's display hook only, until the cell has run."""
    from IPython import get_ipython

    ip = get_ipython()
    result._fresh = True

    def done(*args):
        result._fresh = False
        try:
            ip.events.unregister("post_run_cell", done)
        except ValueError:
            pass

    ip.events.register("post_run_cell", done)


def results() -> list[Result]:
    """Every :class:`Result` returned by a ``check()`` in this process, oldest first."""
    return list(_RESULTS)


def clear_results() -> None:
    """Forget the recorded results."""
    _RESULTS.clear()


def is_not_attempted(answer) -> bool:
    """The starter left as it was: ``...`` or ``None``, or a function whose body does nothing but
    ``...``, ``pass``, ``raise NotImplementedError`` or ``return ...`` (after a docstring)."""
    return answer is None or answer is Ellipsis or (callable(answer) and _stub_body(answer))


def _stub_body(fn) -> bool:
    import ast

    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return False  # no source (a builtin, exec'd code): judged by calling it
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if len(defs) != 1:
        return False
    body = list(defs[0].body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]

    def trivial(node) -> bool:
        if isinstance(node, ast.Pass):
            return True
        if isinstance(node, ast.Expr | ast.Return) and isinstance(node.value, ast.Constant):
            return node.value.value is Ellipsis
        if isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
        return False

    return bool(body) and all(trivial(n) for n in body)


# ------------------------------------------------------------------------------------- the kinds


class Exercise:
    """Common behaviour: a name, a prompt, hints in levels and a solution.

    Arguments shared by every kind:

    - ``prompt``: the question (one paragraph; the notebook's markdown cell says it at length).
    - ``hints``: strings, from gentle to nearly the answer; ``hint()`` gives the next level.
    - ``solution``: code (or, for a thought question, text). For value and prediction exercises
      the code assigns ``answer``; for a function exercise it defines the function named
      ``function_name``. The tests execute it on ``example()``'s context and require *correct*.
    - ``example``: ``example() -> dict``, a small context (tensors, a tiny model) on which the
      solution, the starter and ``wrong`` are tried by ``tests/test_exercises.py``; it is also how a
      student can try the exercise outside its notebook.
    - ``wrong``: typical wrong answers, ``[(code, reason_substring), ...]``; ``code`` assigns
      ``answer`` (or defines the function) and may read the example's context. Each must be
      reported incorrect with a reason containing ``reason_substring``.
    - ``explanation``: shown after the solution.
    """

    kind = "exercise"

    def __init__(self, *, prompt: str, hints: Sequence[str] = (), solution: str = "",
                 example: Callable[[], dict] | None = None,
                 wrong: Sequence[tuple[str, str]] = (), explanation: str = "",
                 section: str = "", name: str | None = None):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt must be a non-empty string: say what the student computes.")
        self.prompt = textwrap.dedent(prompt).strip()
        self.hints = [textwrap.dedent(h).strip() for h in hints]
        self.solution_code = textwrap.dedent(solution).strip()
        self.example = example if example is not None else dict
        self.wrong = list(wrong)
        self.explanation = textwrap.dedent(explanation).strip()
        self.section = section
        self.name = name or "exercise"
        self.notebook = ""
        self._hint_level = 0

    @property
    def qualname(self) -> str:
        return f"{self.notebook}.{self.name}" if self.notebook else self.name

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.qualname}: {self.prompt.splitlines()[0]}>"

    def _repr_markdown_(self) -> str:
        return f"**{self.qualname}** ({self.kind})\n\n{self.prompt}"

    # --- hints and solution
    def hint(self, level: int | None = None) -> _Text:
        """The next hint (or hint number ``level``, 1-based); each call without ``level`` goes one
        level deeper, and the last one repeats."""
        if not self.hints:
            return _Text(f"{self.qualname} has no hints; try `.solution()`.")
        if level is None:
            self._hint_level = min(self._hint_level + 1, len(self.hints))
            level = self._hint_level
        if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= len(self.hints):
            raise ValueError(f"level must be an integer from 1 to {len(self.hints)}, got {level!r}.")
        return _Text(f"Hint {level}/{len(self.hints)}: {self.hints[level - 1]}")

    def solution(self) -> _Text:
        """The reference solution (and why)."""
        text = f"Solution for {self.qualname}:\n\n```python\n{self.solution_code}\n```"
        if self.explanation:
            text += f"\n\n{self.explanation}"
        return _Text(text)

    # --- for tests and for trying an exercise outside its notebook
    def starter(self):
        """What the untouched starter hands to ``check``."""
        return ...

    def run_code(self, code: str, context: dict):
        """Execute solution-style ``code`` with ``context`` as its variables; return its answer."""
        namespace = {"torch": torch, "np": np, "math": math, **context}
        exec(compile(code, f"<{self.qualname}>", "exec"), namespace)  # noqa: S102 (our own code)
        return namespace[self._answer_name]

    _answer_name = "answer"

    def check(self, answer, **context) -> Result:
        """Check ``answer`` and show the result (one line); see the kind's docstring."""
        status, reason = self._check(answer, context)
        result = Result(self.qualname, status, reason, self.kind)
        _RESULTS.append(result)
        _display(_View(result))
        if _in_ipython():
            _swallow_echo(result)
        return result

    def _check(self, answer, context) -> tuple[str, str]:
        raise NotImplementedError


class _ContextError(TypeError):
    pass


def _needed(fn: Callable, context: dict) -> dict:
    """The context entries ``fn`` takes (all of them when it takes ``**kwargs``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(context)
    missing = [n for n, p in params.items() if p.default is p.empty and n not in context
               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if missing:
        raise _ContextError(f"check() needs the notebook's {', '.join(missing)}: pass "
                            + ", ".join(f"{m}={m}" for m in missing) + " as keyword arguments.")
    return {n: context[n] for n in params if n in context}


def _as_array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def _close(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=rtol, atol=atol))


def _shape_text(a: np.ndarray) -> str:
    return "a scalar" if a.ndim == 0 else f"of shape {tuple(a.shape)}"


def _generic_diagnosis(a: np.ndarray, e: np.ndarray, rtol: float, atol: float) -> str:
    """Reasons that fit any numeric answer: shape, transpose, sign, a constant factor."""
    if a.size != e.size or (a.shape != e.shape and a.squeeze().shape != e.squeeze().shape):
        return f"your answer is {_shape_text(a)}, the expected one {_shape_text(e)}"
    a = a.reshape(e.shape)
    if not np.all(np.isfinite(a)):
        return "your answer contains NaN or inf"
    if a.ndim == 2 and a.shape[0] == a.shape[1] and _close(a.T, e, rtol, atol):
        return "your answer is the transpose of the expected one"
    if _close(-a, e, rtol, atol) and np.any(np.abs(e) > atol):
        return "off by a sign"
    mask = np.abs(e) > max(atol, 1e-12)
    if mask.any():
        ratios = a[mask] / e[mask]
        r = float(np.median(ratios))
        if np.allclose(ratios, r, rtol=max(rtol, 1e-3)) and r != 0 and abs(r - 1) > rtol:
            return f"off by a constant factor: your answer is {r:.4g} × the expected one"
    err = np.abs(a - e)
    worst = np.unravel_index(int(np.argmax(err)), e.shape) if e.ndim else ()
    where = f" at index {tuple(int(i) for i in worst)}" if e.ndim else ""
    return (f"not within rtol={rtol:g}, atol={atol:g} of the expected value{where}: "
            f"you have {float(a[worst]):.6g}, expected {float(e[worst]):.6g}")


class ValueExercise(Exercise):
    """A value to compute (a number, a vector, a matrix), checked with a tolerance.

    ``expected(**context)`` computes the right value from what the notebook passes to ``check``
    (``ex.ntk_entry.check(answer, model=net, x=x)``), so the check follows the notebook's preset
    and seed. ``diagnoses`` are tried in order on a wrong answer; each is
    ``(predicate(answer, expected, context) -> bool, reason)`` with ``answer`` and ``expected`` as
    float64 numpy arrays. If none fits, a generic reason is given (wrong shape, transposed, off by a
    sign or a constant factor, or the worst entry).
    """

    kind = "value"

    def __init__(self, *, expected: Callable[..., object], rtol: float = 1e-3, atol: float = 1e-6,
                 diagnoses: Sequence[Diagnosis] = (), **kwargs):
        super().__init__(**kwargs)
        self.expected, self.rtol, self.atol = expected, float(rtol), float(atol)
        self.diagnoses = list(diagnoses)

    def _check(self, answer, context):
        if is_not_attempted(answer):
            return NOT_ATTEMPTED, "replace the `...` with your answer, then run this cell again"
        expected = _as_array(self.expected(**_needed(self.expected, context)))
        try:
            a = _as_array(answer)
        except (TypeError, ValueError) as err:
            return INCORRECT, f"your answer could not be read as numbers ({err})"
        if a.size == expected.size:
            a_cmp = a.reshape(expected.shape)
            if _close(a_cmp, expected, self.rtol, self.atol):
                return CORRECT, _agreement(a_cmp, expected)
        for predicate, reason in self.diagnoses:
            try:
                if predicate(a, expected, context):
                    return INCORRECT, reason
            except (ValueError, TypeError, IndexError):
                continue  # a diagnosis that does not apply to this answer's shape
        return INCORRECT, _generic_diagnosis(a, expected, self.rtol, self.atol)


def _agreement(a: np.ndarray, e: np.ndarray) -> str:
    if e.ndim == 0 or e.size == 1:
        return f"{float(a.reshape(-1)[0]):.6g} (expected {float(e.reshape(-1)[0]):.6g})"
    return f"all {e.size} entries match (largest difference {float(np.abs(a - e).max()):.2g})"


class FunctionExercise(Exercise):
    """A function to write, checked on hidden cases against a reference implementation.

    ``cases(**context)`` returns ``[(label, args), ...]`` (``args`` a tuple of positional
    arguments; include edge cases: a single sample, a zero row, a non-square matrix). On each case
    the student's output is compared with ``reference(*args)`` (tensors, arrays and numbers with
    ``rtol``/``atol``; a tuple element by element). On the first case that differs, ``diagnoses``
    ``(predicate(output, expected, args) -> bool, reason)`` are tried, then a generic reason, which
    names the case. Not attempted: the function raises ``NotImplementedError`` or returns ``...``.
    """

    kind = "function"

    def __init__(self, *, reference: Callable, cases: Callable[..., list], function_name: str,
                 rtol: float = 1e-4, atol: float = 1e-6, diagnoses: Sequence[Diagnosis] = (),
                 **kwargs):
        super().__init__(**kwargs)
        self.reference, self.cases = reference, cases
        self.function_name = function_name
        self.rtol, self.atol = float(rtol), float(atol)
        self.diagnoses = list(diagnoses)

    @property
    def _answer_name(self):
        return self.function_name

    def starter(self):
        def stub(*args, **kwargs):
            raise NotImplementedError
        stub.__name__ = self.function_name
        return stub

    def _check(self, answer, context):
        if is_not_attempted(answer):
            return NOT_ATTEMPTED, (f"write the body of `{self.function_name}`, run its cell, then "
                                   "this one")
        if not callable(answer):
            return INCORRECT, (f"pass the function itself (`{self.function_name}`), not its result "
                               f"(got a {type(answer).__name__})")
        cases = self.cases(**_needed(self.cases, context))
        for i, (label, args) in enumerate(cases):
            args = tuple(args)
            copies = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
            try:
                out = answer(*copies)
            except NotImplementedError:
                if i == 0:
                    return NOT_ATTEMPTED, f"`{self.function_name}` still raises NotImplementedError"
                return INCORRECT, f"raises NotImplementedError on the case {label}"
            except Exception as err:  # the student's code: any error is a wrong answer
                return INCORRECT, f"raises {type(err).__name__}: {err} on the case {label}"
            if out is Ellipsis:
                if i == 0:
                    return NOT_ATTEMPTED, f"`{self.function_name}` still returns `...`"
                return INCORRECT, f"returns `...` on the case {label}"
            if out is None:
                return INCORRECT, f"returns None on the case {label}: did you forget `return`?"
            if any(isinstance(a, torch.Tensor) and not torch.equal(a, c) for a, c in zip(args, copies)):
                return INCORRECT, f"your function modifies its input in place on the case {label}"
            expected = self.reference(*args)
            ok, why = self._compare(out, expected)
            if ok:
                continue
            for predicate, reason in self.diagnoses:
                try:
                    if predicate(out, expected, args):
                        return INCORRECT, f"{reason} (case {label})"
                except (ValueError, TypeError, IndexError, RuntimeError, AttributeError):
                    continue
            return INCORRECT, f"on the case {label}: {why}"
        return CORRECT, f"matches the reference on all {len(cases)} hidden cases"

    def _compare(self, out, expected) -> tuple[bool, str]:
        if isinstance(expected, tuple):
            if not isinstance(out, tuple | list) or len(out) != len(expected):
                return False, f"expected a tuple of {len(expected)} values, got {type(out).__name__}"
            for k, (o, e) in enumerate(zip(out, expected)):
                ok, why = self._compare(o, e)
                if not ok:
                    return False, f"element {k}: {why}"
            return True, ""
        try:
            a = _as_array(out)
        except (TypeError, ValueError, RuntimeError) as err:
            return False, f"the output could not be read as numbers ({err})"
        e = _as_array(expected)
        if _close(a, e, self.rtol, self.atol):
            return True, ""
        return False, _generic_diagnosis(a, e, self.rtol, self.atol)


class PredictionExercise(Exercise):
    """A prediction to commit to *before* running an experiment, checked against its outcome.

    ``choices`` maps a key (``"a"``, ``"b"``…) to a description; the student assigns one key before
    the experiment's cell and calls ``check(prediction, **context)`` after it, and
    ``outcome(**context)`` reads the experiment's result and returns the key that happened.
    ``explanations`` (key → text) tell a student who chose that key what they missed.
    """

    kind = "prediction"

    def __init__(self, *, choices: dict, outcome: Callable[..., str], explanations: dict | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        if not choices:
            raise ValueError("choices must map at least two keys to descriptions.")
        self.choices, self.outcome = dict(choices), outcome
        self.explanations = dict(explanations or {})

    def _check(self, answer, context):
        if is_not_attempted(answer):
            return NOT_ATTEMPTED, ("commit to one of " + ", ".join(map(repr, self.choices))
                                   + " before running the experiment")
        if isinstance(answer, str) and answer not in self.choices:
            answer = {str(k).lower(): k for k in self.choices}.get(answer.strip().lower(), answer)
        if answer not in self.choices:
            return INCORRECT, f"choose one of {list(self.choices)}, got {answer!r}"
        happened = self.outcome(**_needed(self.outcome, context))
        if happened not in self.choices:
            raise RuntimeError(f"{self.qualname}: outcome returned {happened!r}, not a choice key.")
        if answer == happened:
            return CORRECT, f"the experiment shows {self.choices[happened]}"
        reason = f"you predicted {self.choices[answer]}, the experiment shows {self.choices[happened]}"
        if answer in self.explanations:
            reason += f"; {self.explanations[answer]}"
        return INCORRECT, reason


class ThoughtExercise(Exercise):
    """A free-text thought question: no automatic check, a model answer in ``solution()``."""

    kind = "thought"

    def check(self, answer=None, **context) -> Result:
        """A thought question has no automatic check: says so (status ``"thought"``)."""
        return super().check(answer, **context)

    def _check(self, answer, context):
        return THOUGHT, f"a thought question has no automatic check; compare with ex.{self.name}.solution()"

    def solution(self) -> _Text:
        return _Text(f"A model answer for {self.qualname}:\n\n{self.solution_code}"
                     + (f"\n\n{self.explanation}" if self.explanation else ""))

    def run_code(self, code, context):
        return code


# ------------------------------------------------------------------------------------ the registry


class ExerciseSet:
    """A notebook's exercises as attributes (``ex.ntk_entry``), in definition order."""

    def __init__(self, notebook: str, items: dict[str, Exercise]):
        self.notebook = notebook
        self._items = dict(items)
        for name, item in items.items():
            setattr(self, name, item)

    def __iter__(self):
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def progress(self) -> dict[str, str]:
        """The latest status of each exercise in this process (``"unchecked"`` if never checked)."""
        latest = {r.exercise: r.status for r in _RESULTS}
        return {n: latest.get(e.qualname, "unchecked") for n, e in self._items.items()}

    def __repr__(self) -> str:
        lines = [f"{len(self)} exercises for notebook {self.notebook}:"]
        lines += [f"  ex.{n:<22} {e.kind:<10} {e.prompt.splitlines()[0][:60]}"
                  for n, e in self._items.items()]
        return "\n".join(lines)


_MODULE = re.compile(r"nb(\d\d)$")


def registered() -> list[str]:
    """The notebooks that have exercises (``["01", "02", ...]``): modules ``toolkit.exercises.nbNN``."""
    import pkgutil

    from toolkit import exercises as package
    return sorted(m.group(1) for info in pkgutil.iter_modules(package.__path__)
                  if (m := _MODULE.match(info.name)))


def load(notebook: str | int) -> ExerciseSet:
    """The exercises of one notebook: ``ex = exercises.load("01")`` (or ``load(1)``)."""
    if isinstance(notebook, int) and not isinstance(notebook, bool):
        notebook = f"{notebook:02d}"
    if not isinstance(notebook, str) or not re.fullmatch(r"\d\d", notebook[:2]):
        raise ValueError(f"notebook must be a notebook number such as '01', got {notebook!r}.")
    notebook = notebook[:2]
    if notebook not in registered():
        raise ValueError(f"notebook {notebook!r} has no exercises; notebooks with exercises: "
                         f"{registered()}.")
    module = importlib.import_module(f"toolkit.exercises.nb{notebook}")
    items = {}
    for name, value in vars(module).items():
        if isinstance(value, Exercise) and not name.startswith("_"):
            value.name, value.notebook = name, notebook
            items[name] = value
    return ExerciseSet(notebook, items)
