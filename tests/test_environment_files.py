"""The conda and Binder environments name every runtime dependency of pyproject.toml."""

import re
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
# conda package names that differ from PyPI's
CONDA_NAMES = {"torch": {"pytorch", "pytorch-cpu", "pytorch-gpu"}}


def _runtime_deps() -> list[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower()
            for d in meta["project"]["dependencies"]]


def _env_names(path: Path) -> set[str]:
    env = yaml.safe_load(path.read_text())
    names = set()
    for dep in env["dependencies"]:
        entries = dep["pip"] if isinstance(dep, dict) else [dep]
        for entry in entries:
            names.add(re.split(r"[<>=!~ \[]", entry, maxsplit=1)[0].lower())
    return names


@pytest.mark.parametrize("env_file", ["environment.yml", "binder/environment.yml"])
def test_environment_names_every_runtime_dependency(env_file):
    names = _env_names(ROOT / env_file)
    missing = [d for d in _runtime_deps() if not ({d} | CONDA_NAMES.get(d, set())) & names]
    assert not missing, f"{env_file} lacks {missing}"


def test_binder_is_cpu_only_and_postbuild_does_not_resolve():
    names = _env_names(ROOT / "binder/environment.yml")
    assert "pytorch-cpu" in names and "pytorch-cuda" not in names
    post = (ROOT / "binder/postBuild").read_text()
    assert "--no-deps" in post
    assert (ROOT / "binder/postBuild").stat().st_mode & 0o111, "postBuild must be executable"


def test_readme_opens_with_the_two_commands_and_binder_badge():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
    assert [ln.strip() for ln in first_block.strip().splitlines()] == ["make demo", "make test"]
    badge = re.search(r"urlpath=([^)\s&]+)", readme)
    assert badge, "README needs a Binder badge with urlpath=lab/tree/notebooks/..."
    target = badge.group(1).replace("%2F", "/").removeprefix("lab/tree/")
    assert (ROOT / target).exists(), f"Binder badge points at a missing notebook: {target}"


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci/run").read_text()
