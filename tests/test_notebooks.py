"""Every notebook pair is in sync, and every notebook runs top to bottom in its toy preset."""

from pathlib import Path

import jupytext
import nbformat
import pytest

from toolkit.run_notebooks import count_self_checks, run_notebook

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))


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
    first = code[0]
    assert "parameters" in first.metadata.get("tags", []), "first code cell must be tagged parameters"
    for line in ('PRESET = "toy"', "SEED = 0", 'DEVICE = "auto"'):
        assert line in first.source


@pytest.mark.notebook
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_runs_in_toy_preset(source, tmp_path):
    result = run_notebook(source.with_suffix(".ipynb"), tmp_path, preset="toy", timeout=300,
                          html=False)
    assert result.error is None, f"{source.stem} failed: {result.error}"
    assert result.failed == 0
    assert result.passed >= 1, "a notebook must assert its claims in self-check cells"


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
