"""Binder builds this repository with repo2docker: check its files with repo2docker's own logic.

No image is built (there is no container engine here): repo2docker picks a buildpack exactly as it
does on mybinder.org, parses ``binder/environment.yml``, resolves its frozen base environment for
the requested Python, and renders the Dockerfile it would build, which must install the environment
and run ``binder/postBuild``. Skipped, with the reason, when repo2docker is not installed.
(The README badge and the list of runtime dependencies are checked in test_environment_files.py.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

repo2docker = pytest.importorskip(
    "repo2docker", reason="jupyter-repo2docker is not installed (pip install -e '.[dev]'); "
                          "the Binder files cannot be checked with its logic")
from repo2docker.app import Repo2Docker  # noqa: E402
from repo2docker.buildpacks import CondaBuildPack  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PLATFORM = "linux/amd64"  # mybinder.org's platform, whatever machine runs the tests
# What a student needs on Binder beyond the package's runtime dependencies: the Lab itself, a
# kernel, live widgets, jupytext so the .py notebooks open as notebooks, and Voila for the apps
# that binder/postBuild writes (urlpath=voila/render/apps/NN_name.ipynb).
LAB_NEEDS = {"jupyterlab", "ipykernel", "ipywidgets", "jupytext", "voila"}


@pytest.fixture
def buildpack(monkeypatch):
    """The buildpack repo2docker picks for this repository, the way `Repo2Docker.build` picks it."""
    monkeypatch.chdir(ROOT)  # repo2docker inspects the current directory
    app = Repo2Docker(platform=PLATFORM)
    for cls in app.buildpacks:
        bp = cls(base_image=app.base_image)
        if bp.detect():
            break
    else:
        bp = app.default_buildpack(base_image=app.base_image)
    bp.platform = PLATFORM
    return bp


def test_repo2docker_picks_the_conda_buildpack_from_binder_dir(buildpack):
    assert type(buildpack) is CondaBuildPack, f"repo2docker would use {type(buildpack).__name__}"
    # binder/ takes precedence over the root environment.yml (the GPU-capable local one)
    assert buildpack.binder_dir == "binder"
    assert Path(buildpack.environment_yaml_path) == Path("binder/environment.yml")


def test_conda_buildpack_accepts_the_environment(buildpack):
    env = buildpack.environment_yaml  # repo2docker's own YAML parsing (TypeError if not a mapping)
    assert env.get("dependencies"), "binder/environment.yml has no dependencies"
    # An explicit x.y Python that repo2docker has a frozen base environment for (it raises
    # ValueError "Python version ... is not supported" otherwise), in the server's own env.
    assert re.fullmatch(r"3\.\d+", buildpack.python_version)
    files = buildpack.get_build_script_files()
    assert f"conda/environment.py-{buildpack.python_version}-linux-64.lock" in files
    assert not buildpack.separate_kernel_env and not buildpack.uses_r
    names = {re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower()
             for d in env["dependencies"] if isinstance(d, str)}
    assert LAB_NEEDS <= names, f"binder/environment.yml lacks {sorted(LAB_NEEDS - names)}"
    assert not {"pytorch", "pytorch-gpu", "pytorch-cuda", "cuda-version"} & names, "Binder is CPU-only"


def test_rendered_dockerfile_installs_the_env_and_runs_postbuild(buildpack):
    assert buildpack.get_post_build_scripts() == ["binder/postBuild"]
    dockerfile = buildpack.render({"NB_USER": "jovyan", "NB_UID": "1000"})
    assert 'env update -p ${NB_PYTHON_PREFIX} --file "binder/environment.yml"' in dockerfile
    assert re.search(r"^RUN \./binder/postBuild$", dockerfile, re.M)


def test_postbuild_is_a_valid_executable_bash_script():
    post = ROOT / "binder" / "postBuild"
    text = post.read_text()
    assert text.startswith("#!"), "postBuild needs a shebang (repo2docker executes it directly)"
    assert post.stat().st_mode & 0o111, "postBuild must be executable"
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not found: cannot syntax-check postBuild")
    check = subprocess.run([bash, "-n", str(post)], capture_output=True, text=True)
    assert check.returncode == 0, f"postBuild has a bash syntax error: {check.stderr}"
    # it installs this package without letting pip resolve (and replace) conda's CPU torch
    assert re.search(r"pip install .*--no-deps.*(-e )?\.(\s|$)", text), text


def test_repo2docker_cli_dry_run_accepts_the_repository():
    """`jupyter-repo2docker --no-build` on the checkout: the same path mybinder.org takes, minus
    the build. It prints the Dockerfile it would build and exits 0."""
    result = subprocess.run(
        [sys.executable, "-m", "repo2docker", "--no-build", "--no-run",
         f"--Repo2Docker.platform={PLATFORM}", str(ROOT)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "binder/environment.yml" in result.stdout
    assert "./binder/postBuild" in result.stdout
