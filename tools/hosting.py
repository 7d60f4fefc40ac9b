"""Write the repository setting of ``hosting.toml`` into the notebooks and the README.

``python tools/hosting.py`` (what ``make hosting`` runs) makes the first code cell of every
``notebooks/NN_*.py`` the install cell below (inserted before the ``parameters`` cell, or updated
in place) and syncs each changed pair with jupytext; it adds or updates the "Open in Colab" and
Binder badges of every notebook row of the README table. Running it twice changes nothing.
``--check`` writes nothing and exits 1 when a notebook or the README disagrees with the setting.

The install cell does nothing when ``import toolkit`` works. Otherwise it names the host (Colab:
``google.colab`` is imported; Kaggle: ``KAGGLE_KERNEL_RUN_TYPE`` is set; else a plain kernel),
pip-installs ``toolkit @ git+<repository>@<branch>`` (or ``$TOOLKIT_INSTALL_SPEC``, e.g. a local
checkout) into the kernel's own interpreter with the constraint ``torch==<installed version>``, so
pip keeps the torch the host ships, and imports the package.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["ROOT", "MARKER", "Setting", "load_setting", "install_cell", "update_notebook",
           "badges", "update_readme", "notebook_sources", "main"]

ROOT = Path(__file__).resolve().parent.parent
# The install cell's first line: how the script (and the tests) recognise it.
MARKER = "# Install cell: written by `make hosting` from hosting.toml (the same in every notebook)."
COLUMN = "run online"


@dataclass(frozen=True)
class Setting:
    repository: str  # https://github.com/<owner>/<repo>
    branch: str

    @property
    def slug(self) -> str:
        """``owner/repo``."""
        return self.repository.removeprefix("https://github.com/").strip("/")

    @property
    def install_spec(self) -> str:
        return f"toolkit @ git+{self.repository}@{self.branch}"


def load_setting(path: str | Path = ROOT / "hosting.toml") -> Setting:
    """Read ``hosting.toml``; the repository must be ``https://github.com/<owner>/<repo>``."""
    raw = tomllib.loads(Path(path).read_text())
    repository = str(raw.get("repository", "")).rstrip("/").removesuffix(".git")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository):
        raise ValueError(f"{path}: repository must look like https://github.com/<owner>/<repo>, "
                         f"got {raw.get('repository')!r}")
    branch = str(raw.get("branch", "main"))
    if not re.fullmatch(r"[\w./-]+", branch):
        raise ValueError(f"{path}: branch must be a plain git branch name, got {branch!r}")
    return Setting(repository, branch)


def install_cell(setting: Setting) -> str:
    """The install cell's source (without its ``# %%`` line)."""
    return f'''{MARKER}
# On Colab, Kaggle or any kernel without the toolkit it pip-installs the package from the
# repository, keeps the torch already installed (a torch==<installed version> constraint), imports it.
import importlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile

try:
    import toolkit
except ModuleNotFoundError:
    host = ("Colab" if "google.colab" in sys.modules
            else "Kaggle" if "KAGGLE_KERNEL_RUN_TYPE" in os.environ else "plain")
    spec = os.environ.get("TOOLKIT_INSTALL_SPEC", "{setting.install_spec}")
    try:
        torch_pin = "torch==" + importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_pin = ""  # no torch yet: pip installs its default build
    with tempfile.NamedTemporaryFile("w", suffix="-constraints.txt", delete=False) as pins:
        pins.write(torch_pin + "\\n")
    print(f"{{host}} kernel without the toolkit: pip install {{spec!r}}"
          + (f", keeping {{torch_pin}}" if torch_pin else "")
          + (" (needs the notebook's Internet setting on)" if host == "Kaggle" else ""))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--constraint", pins.name,
                    spec], check=True)
    importlib.invalidate_caches()
    import toolkit
print("toolkit", toolkit.__version__, "from", os.path.dirname(toolkit.__file__))'''


_CELL_LINE = re.compile(r"^# %%.*$", re.M)
_PARAMETERS = re.compile(r'^# %% tags=\["parameters"\]\s*$', re.M)


def update_notebook(text: str, setting: Setting) -> str:
    """The percent-format notebook ``text`` with the current install cell as its first code cell:
    an existing install cell is replaced in place, else one is inserted before the parameters cell."""
    block = "# %%\n" + install_cell(setting) + "\n\n"
    starts = [m.start() for m in _CELL_LINE.finditer(text)]
    for i, start in enumerate(starts):
        body = text[start:].split("\n", 2)
        if len(body) > 1 and body[1] == MARKER:
            end = starts[i + 1] if i + 1 < len(starts) else len(text)
            return text[:start] + block + text[end:]
    match = _PARAMETERS.search(text)
    if match is None:
        raise ValueError('the notebook has no `# %% tags=["parameters"]` cell to put the install '
                         "cell before")
    return text[:match.start()] + block + text[match.start():]


def badges(setting: Setting, stem: str) -> str:
    """The README table cell with the Colab and Binder badges of ``notebooks/<stem>.ipynb``."""
    colab = (f"https://colab.research.google.com/github/{setting.slug}/blob/{setting.branch}"
             f"/notebooks/{stem}.ipynb")
    binder = f"https://mybinder.org/v2/gh/{setting.slug}/HEAD?labpath=notebooks/{stem}.ipynb"
    return (f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab}) "
            f"[![Binder](https://mybinder.org/badge_logo.svg)]({binder})")


_ROW = re.compile(r"^\| `(\d\d_\w+)` \|")


def update_readme(text: str, setting: Setting, stems: set[str]) -> str:
    """Add (or update) the badge column of the README's notebook table: one cell per row whose first
    cell is a notebook in ``stems``; the header gets a ``run online`` column."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("| notebook |") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            if not line.endswith(f"| {COLUMN} |"):
                lines[i] = line + f" {COLUMN} |"
                lines[i + 1] = lines[i + 1] + "---|"
            continue
        row = _ROW.match(line)
        if row is None or row.group(1) not in stems:
            continue
        if "colab.research.google.com/github/" in line:  # replace the last cell
            line = line[: line.rstrip().rstrip("|").rstrip().rfind(" | ")] + " |"
        lines[i] = line + " " + badges(setting, row.group(1)) + " |"
    return "\n".join(lines)


def notebook_sources(root: Path = ROOT) -> list[Path]:
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/hosting.py", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 on a disagreement")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebook .py files to update (default: every notebooks/NN_*.py)")
    args = parser.parse_args(argv)
    setting = load_setting()
    sources = [p.resolve() for p in args.notebooks] or notebook_sources()
    stale = []
    for path in sources:
        old = path.read_text()
        new = update_notebook(old, setting)
        if new != old:
            stale.append(path)
            if not args.check:
                path.write_text(new)
                subprocess.run([sys.executable, "-m", "jupytext", "--sync", str(path)], check=True,
                               stdout=subprocess.DEVNULL)
    readme = ROOT / "README.md"
    old = readme.read_text()
    new = update_readme(old, setting, {p.stem for p in notebook_sources()})
    if new != old:
        stale.append(readme)
        if not args.check:
            readme.write_text(new)
    verb = "disagree with" if args.check else "updated from"
    for path in stale:
        print(f"{path.relative_to(ROOT)} {verb} hosting.toml ({setting.repository}@{setting.branch})")
    if not stale:
        print(f"notebooks and README agree with hosting.toml ({setting.repository}@{setting.branch})")
    if args.check and stale:
        print("run `make hosting` to write the setting into them")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
