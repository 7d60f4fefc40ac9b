"""Colab, Kaggle and other hosted kernels: the install cell and the README badges.

``hosting.toml`` holds the repository URL; ``tools/hosting.py`` (``make hosting``) writes it into the
install cell, the first code cell of every notebook, and into the README's Colab / Binder badges.
The last test is a student's first run on a host without the toolkit: a fresh virtual environment
with only torch and a Jupyter kernel runs a notebook's install cell (pointed at a copy of this
checkout through ``TOOLKIT_INSTALL_SPEC``), which installs the package beside the torch it found,
and the notebook then runs in that kernel. It is skipped, with the reason, when the virtual
environment cannot be made (no ``venv`` module, no local torch wheel, no package index).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jupytext
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("hosting", ROOT / "tools" / "hosting.py")
hosting = sys.modules.setdefault("hosting", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(hosting)

SETTING = hosting.load_setting()
SOURCES = hosting.notebook_sources()
FRESH_NOTEBOOK = ROOT / "notebooks" / "00_tour.py"  # the fastest notebook


def _without_install_cell(text: str) -> str:
    start = text.index("# %%\n" + hosting.MARKER)
    end = text.index("# %%", start + 4)
    return text[:start] + text[end:]


# ----------------------------------------------------------------------- the setting and its copies


def test_setting_is_one_github_repository():
    assert SETTING.repository == f"https://github.com/{SETTING.slug}"
    assert SETTING.slug.count("/") == 1
    assert SETTING.install_spec == f"toolkit @ git+{SETTING.repository}@{SETTING.branch}"


@pytest.mark.parametrize("bad", ["https://gitlab.com/a/b", "github.com/a/b", "https://github.com/a"])
def test_setting_must_be_a_github_repository(tmp_path, bad):
    path = tmp_path / "hosting.toml"
    path.write_text(f'repository = "{bad}"\n')
    with pytest.raises(ValueError, match="repository must look like"):
        hosting.load_setting(path)


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_install_cell_agrees_with_the_setting(source):
    text = source.read_text()
    current = hosting.update_notebook(text, SETTING) == text
    assert current, (
        f"{source.name}: its install cell is missing or disagrees with hosting.toml; run `make hosting`")
    code = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
    assert code[0].source.strip() == hosting.install_cell(SETTING).strip()
    assert SETTING.install_spec in code[0].source
    assert "parameters" in code[1].metadata.get("tags", []), "the parameters cell follows the install cell"
    assert [c.source.startswith(hosting.MARKER) for c in code].count(True) == 1


def test_readme_badges_agree_with_the_setting():
    readme = (ROOT / "README.md").read_text()
    stems = {p.stem for p in SOURCES}
    current = hosting.update_readme(readme, SETTING, stems) == readme
    assert current, (
        "README's Colab/Binder badges disagree with hosting.toml; run `make hosting`")
    for stem in stems:
        row = next((ln for ln in readme.splitlines() if ln.startswith(f"| `{stem}` |")), None)
        if row is None:
            continue  # a notebook the table does not list yet
        assert (f"https://colab.research.google.com/github/{SETTING.slug}/blob/{SETTING.branch}/"
                f"notebooks/{stem}.ipynb") in row
        assert f"https://mybinder.org/v2/gh/{SETTING.slug}/HEAD?labpath=notebooks/{stem}.ipynb" in row
        assert (ROOT / "notebooks" / f"{stem}.ipynb").exists()


def test_the_script_is_idempotent_and_follows_a_new_repository():
    other = hosting.Setting("https://github.com/someone/elsewhere", "dev")
    text = (ROOT / "notebooks" / "05_feature_learning.py").read_text()
    bare = _without_install_cell(text)
    assert hosting.MARKER not in bare
    inserted = hosting.update_notebook(bare, SETTING)
    assert inserted == text  # inserted right before the parameters cell, exactly as written
    moved = hosting.update_notebook(text, other)
    assert moved.count(hosting.MARKER) == 1
    assert "toolkit @ git+https://github.com/someone/elsewhere@dev" in moved
    assert SETTING.install_spec not in moved
    assert hosting.update_notebook(moved, other) == moved
    assert hosting.update_notebook(moved, SETTING) == text
    # the README: a column is added once, then updated in place
    readme = (ROOT / "README.md").read_text()
    stems = {p.stem for p in SOURCES}
    elsewhere = hosting.update_readme(readme, other, stems)
    assert elsewhere.count("someone/elsewhere/blob/dev/notebooks/05_feature_learning.ipynb") == 1
    assert hosting.update_readme(elsewhere, other, stems) == elsewhere
    assert len(elsewhere.splitlines()) == len(readme.splitlines())
    assert hosting.update_readme(elsewhere, SETTING, stems) == readme


def test_a_notebook_without_a_parameters_cell_is_refused():
    with pytest.raises(ValueError, match="parameters"):
        hosting.update_notebook("# %%\nprint(1)\n", SETTING)


def test_install_cell_does_nothing_when_the_toolkit_imports(tmp_path):
    env = {**os.environ, "TOOLKIT_INSTALL_SPEC": str(tmp_path / "does-not-exist")}
    proc = subprocess.run([sys.executable, "-c", hosting.install_cell(SETTING)], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("toolkit ") and "without the toolkit" not in proc.stdout


# --------------------------------------------------------------- a fresh kernel without the toolkit


def _run(cmd, what, timeout=600, **kwargs):
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        pytest.skip(f"cannot {what}, so the fresh-kernel install is not tested here:\n{tail}")
    return proc.stdout


@pytest.mark.notebook
@pytest.mark.timeout(900)
def test_fresh_kernel_installs_the_toolkit_then_runs_a_notebook(tmp_path, monkeypatch):
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    from toolkit.run_notebooks import count_self_checks

    start = time.perf_counter()
    env_dir, python = tmp_path / "venv", tmp_path / "venv" / "bin" / "python"
    _run([sys.executable, "-m", "venv", env_dir], "create a virtual environment (python -m venv)")
    # The host's torch: the same pinned build as this environment, from local wheels only (never a
    # multi-GB download of another build), then a Jupyter kernel, as on Colab or Kaggle.
    pin = f"torch=={torch.__version__}"
    _run([python, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", pin],
         f"install {pin} from local wheels only (pip's find-links)")
    _run([python, "-m", "pip", "install", "--quiet", pin, "ipykernel"],
         f"install ipykernel and the dependencies of {pin}")
    torch_init = Path(_run([python, "-c", "import torch; print(torch.__file__)"], "import torch").strip())
    torch_stamp = torch_init.stat().st_mtime_ns
    assert subprocess.run([python, "-c", "import toolkit"], capture_output=True).returncode != 0

    # the package as a student would get it from the repository: a copy of the working tree
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
        ".hypothesis", ".ipynb_checkpoints"))
    kernels = tmp_path / "kernels"
    (kernels / "fresh").mkdir(parents=True)
    (kernels / "fresh" / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh venv", "language": "python",
        "env": {"TOOLKIT_INSTALL_SPEC": str(checkout)}}))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    # the install cell as the script writes it (00_tour gets it from `make hosting`)
    nb = jupytext.reads(hosting.update_notebook(FRESH_NOTEBOOK.read_text(), SETTING), fmt="py:percent")
    workdir = tmp_path / "work"  # not the checkout: `import toolkit` must not find it from the cwd
    workdir.mkdir()
    km = KernelManager(kernel_name="fresh", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(workdir)}}).execute()

    install = next(c for c in nb.cells if c.cell_type == "code")
    install_out = "".join(o.get("text", "") for o in install.outputs)
    assert f"plain kernel without the toolkit: pip install '{checkout}', keeping torch==" in install_out
    assert f"from {env_dir}" in install_out, install_out  # imported from the fresh venv's site-packages
    passed, failed = count_self_checks(nb)
    assert failed == 0 and passed >= 1, f"{FRESH_NOTEBOOK.stem}: {passed} self-checks passed, {failed} failed"
    # pip kept the host's torch: same version, its files not rewritten
    after = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                           text=True)
    assert after.stdout.strip() == torch.__version__, after.stderr
    assert torch_init.stat().st_mtime_ns == torch_stamp
    print(f"fresh kernel: install + {FRESH_NOTEBOOK.stem} in {time.perf_counter() - start:.0f} s")
    nbformat.validate(nb)
