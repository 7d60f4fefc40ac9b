"""Every notebook pair is in sync, and every notebook runs top to bottom in its toy preset."""

from pathlib import Path

import jupytext
import nbformat
import pytest

from toolkit.run_notebooks import count_self_checks, run_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
EXECUTED = NOTEBOOKS.parent / "build" / "executed"


def _cell_sources(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_there_are_notebooks():
    assert any(p.stem == "00_tour" for p in SOURCES)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_pair_in_sync(source):
    pair = source.with_suffix(".ipynb")
    assert pair.exists(), f"{pair.name} is missing: run `jupytext --sync {source}`"
    from_py = jupytext.read(source)
    from_ipynb = nbformat.read(pair, as_version=4)
    assert _cell_sources(from_py) == _cell_sources(from_ipynb), (
        f"{source.name} and {pair.name} differ: edit the .py, then `jupytext --sync {source}`")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_parameters_cell(source):
    nb = jupytext.read(source)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # the install cell (`make hosting`, tests/test_hosting.py) comes first, then the parameters
    first = code[1] if code[0].source.startswith("# Install cell:") else code[0]
    assert "parameters" in first.metadata.get("tags", []), \
        "the first code cell after the install cell must be tagged parameters"
    for line in ('PRESET = "toy"', "SEED = 0", 'DEVICE = "auto"'):
        assert line in first.source


@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_in_toy_preset(source, tmp_path):
    # executed into the runner's cache folder: `make book` (and tests/test_published.py) reuse
    # the copy while the notebook and the package are unchanged
    result = run_notebook(source.with_suffix(".ipynb"), EXECUTED, preset="toy", timeout=300,
                          html=False)
    assert result.error is None, f"{source.stem} failed: {result.error}"
    assert result.failed == 0
    assert result.passed >= 1, "a notebook must assert its claims in self-check cells"
    _assert_exercises_correct(source, EXECUTED / source.with_suffix(".ipynb").name)


def _assert_exercises_correct(source, executed):
    # the instructor edition (the .py, solutions included) checks every exercise of its notebook
    # and each one is correct (thought questions: "thought"); tests/test_exercises.py covers the rest
    from toolkit import exercises
    from toolkit.exercises.editions import exercise_statuses

    statuses = exercise_statuses(nbformat.read(executed, as_version=4))
    nb = source.stem[:2]
    expected = {e.qualname for e in exercises.load(nb)} if nb in exercises.registered() else set()
    assert set(statuses) == expected, f"{source.stem} checks {sorted(statuses)}, not {sorted(expected)}"
    wrong = {k: v for k, v in statuses.items() if any(s not in ("correct", "thought") for s in v)}
    assert not wrong, f"{source.stem}: exercises not correct in the instructor edition: {wrong}"


def test_self_check_counting():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("stream", text="SELF-CHECK PASSED: a\nSELF-CHECK PASSED: b\n"),
                    nbformat.v4.new_output("error", ename="AssertionError",
                                           evalue="SELF-CHECK FAILED: c", traceback=[])]
    nb.cells = [cell]
    assert count_self_checks(nb) == (2, 1)


def test_old_module_toolkit_demo_warns_and_still_runs_the_runner():
    import importlib
    import subprocess
    import sys

    import toolkit.run_notebooks as runner

    sys.modules.pop("toolkit.demo", None)
    with pytest.warns(DeprecationWarning, match="toolkit.run_notebooks"):
        demo = importlib.import_module("toolkit.demo")
    assert demo.run_notebook is runner.run_notebook and demo.main is runner.main
    proc = subprocess.run([sys.executable, "-m", "toolkit.demo", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "toolkit.run_notebooks" in proc.stdout
    assert "DeprecationWarning" in proc.stderr


# --------------------------------------------------------------------- every claim is falsifiable


def _claims_derived_names(tree) -> set[str]:
    """Names whose value comes from a ``toolkit.claims`` predicate, directly or through other
    names (assignments, ``for`` targets and ``list.append`` calls), to a fixed point."""
    import ast

    flows = []  # (targets, source expression)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            flows.append(([t for t in node.targets], node.value))
        elif isinstance(node, ast.For):
            flows.append(([node.target], node.iter))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "append" and isinstance(node.func.value, ast.Name)):
            flows.append(([node.func.value], node))
    derived: set[str] = set()
    changed = True
    while changed:
        changed = False
        for targets, value in flows:
            if _mentions_claims(value, derived):
                for target in targets:
                    for name in (n.id for n in ast.walk(target) if isinstance(n, ast.Name)):
                        if name not in derived:
                            derived.add(name)
                            changed = True
    return derived


def _mentions_claims(expr, derived: set[str]) -> bool:
    import ast

    return any((isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                and n.value.id == "claims") or (isinstance(n, ast.Name) and n.id in derived)
               for n in ast.walk(expr))


def _claim_predicates(tree) -> set[str]:
    """``topic.name`` (or ``name``) of every ``claims.<topic>.<name>(...)`` / ``claims.<name>(...)``
    call in the notebook."""
    import ast

    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            chain, value = [node.func.attr], node.func.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id == "claims":
                found.add(".".join(reversed(chain)))
    return found


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_every_self_check_rests_on_a_claims_predicate(source):
    # issue 13's rule: a self-check asserts a named predicate of toolkit.claims, never an inline
    # condition that no negative-control test exercises
    import ast

    tree = ast.parse(source.read_text())
    derived = _claims_derived_names(tree)
    checks = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
              and isinstance(n.func, ast.Name) and n.func.id == "self_check"]
    assert checks, f"{source.name} has no self-check"
    for call in checks:
        assert _mentions_claims(call.args[0], derived), (
            f"{source.name}:{call.lineno}: the self-check's condition does not come from a "
            "toolkit.claims predicate; add one with its control test in tests/test_claims_*.py")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_every_claims_predicate_has_a_control_test(source):
    import ast

    tests = Path(__file__).resolve().parent
    control_files = [p for p in tests.glob("test_claims_*.py")
                     if "pytest.mark.control" in p.read_text()]
    text = "\n".join(p.read_text() for p in control_files)
    for predicate in _claim_predicates(ast.parse(source.read_text())):
        name = predicate.rsplit(".", 1)[-1]
        assert f"{name}(" in text, (
            f"{source.name} calls claims.{predicate}, which no control test "
            "(tests/test_claims_*.py, marker control) exercises")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebooks_define_functions_only_as_function_exercises(source):
    # Notebooks hold experiments, not library code (that belongs in toolkit/). The one exception
    # is a student's answer to a "write this function" exercise: each top-level def must sit in a
    # solution block and be the function a FunctionExercise of this notebook checks.
    from toolkit import exercises
    from toolkit.exercises._core import FunctionExercise

    nb = source.stem[:2]
    expected = ({e.function_name for e in exercises.load(nb) if isinstance(e, FunctionExercise)}
                if nb in exercises.registered() else set())
    in_solution, defined = False, []
    for line in source.read_text(encoding="utf-8").splitlines():
        if line.startswith("### BEGIN SOLUTION"):
            in_solution = True
        elif line.startswith("### END SOLUTION"):
            in_solution = False
        elif line.startswith(("def ", "class ", "async def ")):
            name = line.split()[1 if not line.startswith("async") else 2].split("(")[0].rstrip(":")
            assert in_solution, f"{source.name} defines {name} outside an exercise's solution"
            defined.append(name)
    assert set(defined) <= expected, (f"{source.name} defines {sorted(set(defined) - expected)}, "
                                      "which no function exercise of the notebook checks")
