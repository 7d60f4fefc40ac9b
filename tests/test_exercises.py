"""Checkable exercises (toolkit.exercises) and the student edition of the notebooks.

For every exercise of every registered notebook: the reference solution is correct, the untouched
starter is not attempted and each typical wrong answer is incorrect with its reason, all on the
exercise's small ``example()`` context. The student edition keeps no solution code and runs top to
bottom reporting only "not attempted" (and "thought"); the instructor notebooks' "all correct" is
asserted on the executed notebooks of ``tests/test_notebooks.py`` (no second run).
"""

from pathlib import Path

import jupytext
import pytest
import torch

from toolkit import exercises
from toolkit.exercises import editions

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
ALL = [(nb, name) for nb in exercises.registered() for name in exercises.load(nb).names()]


def _exercise(nb, name):
    return getattr(exercises.load(nb), name)


# ------------------------------------------------------------------------------- every exercise


def test_every_method_notebook_has_three_checkable_exercises():
    for nb in exercises.registered():
        kinds = [e.kind for e in exercises.load(nb)]
        assert sum(k != "thought" for k in kinds) >= 3, f"notebook {nb}: {kinds}"


@pytest.mark.parametrize("nb,name", ALL, ids=[f"{nb}.{n}" for nb, n in ALL])
def test_reference_solution_is_correct(nb, name):
    ex = _exercise(nb, name)
    context = ex.example()
    answer = ex.run_code(ex.solution_code, context)
    result = ex.check(answer, **context)
    expected = "thought" if ex.kind == "thought" else "correct"
    assert result.status == expected, str(result)
    assert exercises.results()[-1] is result


@pytest.mark.parametrize("nb,name", ALL, ids=[f"{nb}.{n}" for nb, n in ALL])
def test_untouched_starter_is_not_attempted(nb, name):
    ex = _exercise(nb, name)
    if ex.kind == "thought":
        pytest.skip("a thought question has no starter")
    context = ex.example()
    for starter in (ex.starter(), None):
        result = ex.check(starter, **context)
        assert result.status == "not attempted", str(result)


@pytest.mark.parametrize("nb,name", ALL, ids=[f"{nb}.{n}" for nb, n in ALL])
def test_typical_wrong_answers_are_caught_with_their_reason(nb, name):
    ex = _exercise(nb, name)
    if ex.kind == "thought":
        assert ex.solution_code, "a thought question needs a model answer"
        assert ex.check("my answer").status == "thought"
        return
    assert ex.wrong, f"{nb}.{name} lists no typical wrong answer"
    context = ex.example()
    for code, reason in ex.wrong:
        result = ex.check(ex.run_code(code, context), **context)
        assert result.status == "incorrect", f"{code!r}: {result}"
        assert reason.lower() in result.reason.lower(), f"{code!r}: {result}"


@pytest.mark.parametrize("nb,name", ALL, ids=[f"{nb}.{n}" for nb, n in ALL])
def test_hints_and_solution_are_there(nb, name):
    ex = _exercise(nb, name)
    assert ex.solution_code and name in repr(exercises.load(nb))
    if ex.hints:
        first, second = ex.hint(), ex.hint()
        assert first.startswith("Hint 1/") and (len(ex.hints) == 1 or second.startswith("Hint 2/"))
        assert ex.hint(level=1) == first


# ------------------------------------------------------------------------------------ the core


def test_value_exercise_statuses_and_generic_reasons():
    ex = exercises.ValueExercise(prompt="sum", expected=lambda v: v.sum(), name="s")
    v = torch.tensor([1.0, 2.0, 3.0])
    assert ex.check(..., v=v).status == "not attempted"
    assert ex.check(6.0, v=v) and ex.check(torch.tensor(6.0), v=v)
    assert "factor" in ex.check(12.0, v=v).reason and "2" in ex.check(12.0, v=v).reason
    assert "sign" in ex.check(-6.0, v=v).reason
    assert "shape" in ex.check([6.0, 6.0], v=v).reason
    m = exercises.ValueExercise(prompt="m", expected=lambda a: a, name="m")
    a = torch.arange(6.0).reshape(2, 3) @ torch.arange(6.0).reshape(3, 2) + torch.tensor([[0, 1.0], [0, 0]])
    assert "transpose" in m.check(a.T, a=a).reason
    with pytest.raises(TypeError, match="v=v"):
        ex.check(6.0)


def test_function_exercise_detects_stubs_errors_and_in_place_changes():
    ex = exercises.FunctionExercise(prompt="double", reference=lambda t: 2 * t,
                                    cases=lambda: [("ones", (torch.ones(3),)),
                                                   ("empty", (torch.zeros(0),))],
                                    function_name="double", name="f")

    def stub(t):
        """Double t."""
        ...

    def raising(t):
        raise NotImplementedError("write me")

    def fails(t):
        return t.undefined()

    def in_place(t):
        return t.mul_(2)

    def forgot_return(t):
        2 * t

    assert ex.check(stub).status == ex.check(raising).status == "not attempted"
    assert ex.check(ex.starter()).status == "not attempted"
    assert "AttributeError" in ex.check(fails).reason
    assert "in place" in ex.check(in_place).reason
    assert "return" in ex.check(forgot_return).reason
    assert "the function itself" in ex.check(torch.ones(3)).reason
    assert ex.check(lambda t: t + t)


def test_prediction_and_thought_and_result_display():
    ex = exercises.PredictionExercise(prompt="p", choices={"a": "up", "b": "down"},
                                      outcome=lambda slope: "a" if slope > 0 else "b", name="p")
    assert ex.check("a", slope=1.0)
    wrong = ex.check("b", slope=1.0)
    assert wrong.status == "incorrect" and "up" in wrong.reason
    assert "choose one of" in ex.check("c", slope=1.0).reason
    line = str(wrong)
    assert line.startswith("EXERCISE p: incorrect") and "\n" not in line
    assert "incorrect" in wrong._repr_html_()
    assert exercises.RESULT_LINE.search(line).groups() == ("p", "incorrect")
    t = exercises.ThoughtExercise(prompt="why?", solution="because", name="t")
    assert t.check(...).status == "thought" and "because" in t.solution()


def test_load_rejects_unknown_notebooks():
    with pytest.raises(ValueError, match="has no exercises"):
        exercises.load("99")
    assert exercises.load(1).notebook == "01"


# ------------------------------------------------------------------------------------ editions


def test_student_source_replaces_blocks_by_starters():
    src = ("x = 1\n### BEGIN SOLUTION\ndef f(a):\n    return a\n### END SOLUTION\n"
           "### STARTER def f(a):\n### STARTER     raise NotImplementedError\nprint(x)\n"
           "    ### BEGIN SOLUTION\n    y = 2\n    ### END SOLUTION\n")
    out = editions.student_source(src)
    assert out == "x = 1\ndef f(a):\n    raise NotImplementedError\nprint(x)\n    ..."
    with pytest.raises(ValueError, match="never closed"):
        editions.student_source("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError, match="without"):
        editions.student_source("x = 1\n### END SOLUTION\n")


def _with_exercises(source):
    return editions.has_solutions(source.read_text())


@pytest.mark.parametrize("source", [s for s in SOURCES if _with_exercises(s)], ids=lambda p: p.stem)
def test_notebook_solutions_are_the_exercises_solutions(source):
    # what ex.<name>.solution() shows (and the tests run) is the code the instructor notebook runs
    known = {e.solution_code.strip() for e in exercises.load(source.stem[:2])}
    for cell in jupytext.read(source).cells:
        if cell.cell_type == "code" and editions.has_solutions(cell.source):
            for block in cell.source.split(editions.BEGIN)[1:]:
                code = block.split(editions.END)[0].strip()
                assert code in known, f"{source.name}: this solution block is no exercise's " \
                                      f"solution_code:\n{code}"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_student_edition_has_no_solution_code(source, tmp_path):
    [path] = editions.write_student_editions(tmp_path, [source])
    student = jupytext.read(path)
    instructor = jupytext.read(source)
    code = "\n".join(c.source for c in student.cells if c.cell_type == "code")
    assert editions.BEGIN not in code and editions.END not in code and editions.STARTER not in code
    assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
    student_lines = {ln.strip() for ln in code.splitlines()}
    for cell in instructor.cells:
        if cell.cell_type != "code" or not editions.has_solutions(cell.source):
            continue
        starter = {ln.strip()[len(editions.STARTER):].strip() for ln in cell.source.splitlines()
                   if ln.strip().startswith(editions.STARTER)}
        for block in cell.source.split(editions.BEGIN)[1:]:
            lines = {ln.strip() for ln in block.split(editions.END)[0].splitlines()}
            leaked = {ln for ln in lines - starter if len(ln) > 12} & student_lines
            assert not leaked, f"solution code left in the student edition: {leaked}"


@pytest.mark.notebook
@pytest.mark.parametrize("source", [s for s in SOURCES if _with_exercises(s)],
                         ids=lambda p: p.stem)
def test_student_notebook_runs_with_exercises_unattempted(source, tmp_path):
    import nbformat

    from toolkit.run_notebooks import run_notebook

    [path] = editions.write_student_editions(tmp_path / "student", [source])
    result = run_notebook(path, tmp_path / "out", preset="toy", timeout=300, html=False)
    assert result.error is None, f"student {source.stem} failed: {result.error}"
    assert result.failed == 0
    statuses = editions.exercise_statuses(nbformat.read(tmp_path / "out" / path.name, as_version=4))
    nb = source.stem[:2]
    assert set(statuses) == {e.qualname for e in exercises.load(nb)}, statuses
    assert all(s in ("not attempted", "thought") for v in statuses.values() for s in v), statuses
