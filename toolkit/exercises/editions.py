"""Instructor and student editions of the notebooks (``make student``).

The ``.py`` notebooks are the instructor edition: each exercise's solution sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines, followed by its starter as ``### STARTER ``
lines (a cell tagged ``solution`` counts as one whole solution block). The student edition
replaces every block by its starter (the text after ``### STARTER ``, indentation kept; ``...``
when there is none), clears outputs and writes ``build/student/NN_name.ipynb``::

    python -m toolkit.exercises.editions --out build/student [notebooks/NN_name.py ...]

:func:`exercise_statuses` reads the ``EXERCISE name: status`` lines back from an executed notebook.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._core import RESULT_LINE

__all__ = ["BEGIN", "END", "STARTER", "student_source", "student_notebook", "has_solutions",
           "write_student_editions", "exercise_statuses", "main"]

BEGIN, END, STARTER = "### BEGIN SOLUTION", "### END SOLUTION", "### STARTER"


def has_solutions(source: str) -> bool:
    return any(line.strip() == BEGIN for line in source.splitlines())


def student_source(source: str, *, whole_cell: bool = False) -> str:
    """One code cell's source with each solution block replaced by its starter lines.

    Raises ``ValueError`` on an unclosed or nested block, so a broken marker never leaks a solution.
    """
    lines = source.splitlines()
    if whole_cell:
        lines = [BEGIN, *[ln for ln in lines if not ln.lstrip().startswith(STARTER)], END,
                 *[ln for ln in lines if ln.lstrip().startswith(STARTER)]]
    out: list[str] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped == END:
            raise ValueError(f"line {i + 1}: {END!r} without a {BEGIN!r} before it.")
        if stripped != BEGIN:
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        j = i + 1
        while j < len(lines) and lines[j].strip() != END:
            if lines[j].strip() == BEGIN:
                raise ValueError(f"line {j + 1}: nested {BEGIN!r}; close the block at line {i + 1}.")
            j += 1
        if j == len(lines):
            raise ValueError(f"line {i + 1}: {BEGIN!r} is never closed by {END!r}.")
        k, starter = j + 1, []
        while k < len(lines) and lines[k].lstrip().startswith(STARTER):
            text = lines[k].lstrip()[len(STARTER):]
            starter.append(indent + (text[1:] if text.startswith(" ") else text))
            k += 1
        out.extend(starter or [indent + "..."])
        i = k
    stray = [n + 1 for n, ln in enumerate(out) if ln.lstrip().startswith(STARTER)]
    if stray:
        raise ValueError(f"line {stray[0]}: a {STARTER!r} line must follow an {END!r} line.")
    return "\n".join(out)


def student_notebook(path: str | Path):
    """The student edition of one jupytext notebook, as an ``nbformat`` notebook."""
    import jupytext

    nb = jupytext.read(Path(path))
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        whole = "solution" in cell.metadata.get("tags", [])
        if whole or has_solutions(cell.source) or STARTER in cell.source:
            try:
                cell.source = student_source(cell.source, whole_cell=whole)
            except ValueError as err:
                raise ValueError(f"{Path(path).name}: {err}") from None
            if whole:
                cell.metadata["tags"] = [t for t in cell.metadata["tags"] if t != "solution"]
        cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("jupytext", None)  # the student copy is not paired with a .py
    return nb


def write_student_editions(out_dir: str | Path = "build/student",
                           sources: list[str | Path] | None = None) -> list[Path]:
    """Write ``out_dir/NN_name.ipynb`` for each notebook source (default: every notebook)."""
    import nbformat

    from toolkit.run_notebooks import NOTEBOOK_DIR

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in sources] if sources else sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
    written = []
    for path in paths:
        target = out_dir / f"{path.stem}.ipynb"
        nbformat.write(student_notebook(path), target)
        written.append(target)
    return written


def exercise_statuses(nb) -> dict[str, list[str]]:
    """``{"01.ntk_entry": ["correct"], ...}`` from the outputs of an executed notebook (every
    status an exercise reported, in order)."""
    found: dict[str, list[str]] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            texts = [out.get("text", "") or ""]
            data = out.get("data", {}) or {}
            texts.append(data.get("text/plain", "") or "")
            for text in texts:
                if isinstance(text, list):
                    text = "".join(text)
                for name, status in RESULT_LINE.findall(text):
                    found.setdefault(name, []).append(status)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.exercises.editions",
                                     description="Write the student edition of the notebooks.")
    parser.add_argument("notebooks", nargs="*", help="notebook .py sources (default: all)")
    parser.add_argument("--out", default="build/student", help="output folder")
    args = parser.parse_args(argv)
    for path in write_student_editions(args.out, args.notebooks or None):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
