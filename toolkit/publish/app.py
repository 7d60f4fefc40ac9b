"""A notebook's explorer panels as a Voilà app: ``make app NB=01``.

The app is the notebook itself with every cell kept (the panels need the experiments' results)
but only the panels shown: each code cell that is not a panel cell runs under ``%%capture``, and
the markdown is reduced to the title and the paragraph that introduces each panel. Voilà hides
the code. A *panel cell* is a code cell that builds a panel from ``toolkit.widgets`` and ends by
displaying it (``name = <...>_panel(...)`` then a bare ``name``), the house style of every
notebook; a notebook without one is reported, not silently served empty.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["NOTEBOOK_DIR", "find_notebook", "panel_cells", "app_notebook", "write_app", "main"]

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


def find_notebook(spec: str | Path, notebook_dir: Path = NOTEBOOK_DIR) -> Path:
    """``"01"``, ``"01_ntk_equivalence"`` or a path → the ``.ipynb`` notebook it names."""
    path = Path(spec)
    if path.suffix in (".ipynb", ".py") and path.exists():
        return path.with_suffix(".ipynb")
    matches = sorted(notebook_dir.glob(f"{spec}*.ipynb"))
    if len(matches) != 1:
        known = ", ".join(p.stem for p in sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb")))
        raise ValueError(f"NB={spec!r} matches {len(matches)} notebooks; pass its number or name, "
                         f"one of: {known}.")
    return matches[0]


def _source(cell) -> str:
    return "".join(cell.source) if isinstance(cell.source, list) else cell.source


def _is_panel_cell(source: str) -> bool:
    try:
        body = ast.parse(source).body
    except SyntaxError:  # IPython magics: not a panel cell
        return False
    if not body or not isinstance(body[-1], ast.Expr) or not isinstance(body[-1].value, ast.Name):
        return False
    shown = body[-1].value.id
    for stmt in body[:-1]:
        if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == shown
                                                 for t in stmt.targets)
                and isinstance(stmt.value, ast.Call)):
            func = stmt.value.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name.endswith("panel"):
                return True
    return False


def panel_cells(nb) -> list[int]:
    """Indices of the cells that build and display a panel."""
    return [i for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and _is_panel_cell(_source(cell))]


def app_notebook(path: str | Path):
    """The Voilà app of one notebook (an nbformat notebook; see the module docstring)."""
    import nbformat

    nb = nbformat.read(Path(path), as_version=4)
    panels = set(panel_cells(nb))
    if not panels:
        raise ValueError(f"{Path(path).name} has no panel cell (`name = ..._panel(...)` followed "
                         "by a bare `name`); there is nothing to serve as an app.")
    app = nbformat.v4.new_notebook(metadata=nb.metadata)
    title_done = False
    for i, cell in enumerate(nb.cells):
        source = _source(cell)
        if cell.cell_type == "markdown":
            heading = next((line for line in source.splitlines() if line.startswith("# ")), None)
            if not title_done and heading:
                app.cells.append(nbformat.v4.new_markdown_cell(heading))
                title_done = True
            elif i + 1 in panels:  # the paragraph that introduces a panel
                app.cells.append(nbformat.v4.new_markdown_cell(source))
        elif cell.cell_type == "code":
            if i in panels:
                app.cells.append(nbformat.v4.new_code_cell(source))
            else:
                app.cells.append(nbformat.v4.new_code_cell("%%capture\n" + source,
                                                           metadata=cell.metadata))
    return app


def write_app(spec: str | Path, out_dir: str | Path = "build/apps") -> Path:
    """Write the app of notebook ``spec`` to ``out_dir``; return its path."""
    import nbformat

    source = find_notebook(spec)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / source.name
    nbformat.write(app_notebook(source), target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.publish.app",
                                     description="Serve a notebook's explorer panels with Voilà.")
    parser.add_argument("notebook", help="notebook number or name, e.g. 01")
    parser.add_argument("--out", default="build/apps", help="folder for the app notebook")
    parser.add_argument("--no-serve", dest="serve", action="store_false",
                        help="only write the app notebook")
    parser.add_argument("--port", type=int, default=8866)
    args, voila_args = parser.parse_known_args(argv)
    target = write_app(args.notebook, args.out)
    print(f"app notebook: {target}")
    if not args.serve:
        return 0
    if shutil.which("voila") is None and not (Path(sys.executable).parent / "voila").exists():
        print("voila is not installed: pip install -e '.[lab]'", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "voila", str(target.resolve()), f"--port={args.port}",
           "--no-browser", *voila_args]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=target.parent)


if __name__ == "__main__":
    sys.exit(main())
