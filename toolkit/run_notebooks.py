"""The notebook runner: ``python -m toolkit.run_notebooks`` (what ``make demo`` calls) executes
every notebook in a preset and reports.

Each notebook is executed with papermill (its ``parameters`` cell gets ``PRESET``), written to
``build/<name>.ipynb`` and ``build/<name>.html``, and its self-check lines are counted. The run
prints a table (notebook, wall time, self-checks passed/failed) and exits non-zero if any notebook
failed.

Each successful run stamps its executed copy with a cache key (the notebook's bytes, the preset
and every source file of ``toolkit``); ``--cache`` (and ``run_notebook(..., cache=True)``) reuses
an executed copy whose key still matches instead of running the notebook again, which is what
``make book`` relies on: an unchanged notebook on an unchanged package is not re-run.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NOTEBOOK_DIR", "NotebookResult", "run_notebook", "count_self_checks", "format_table",
           "cache_key", "CACHE_FIELD", "main"]

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
PASSED, FAILED = "SELF-CHECK PASSED", "SELF-CHECK FAILED"


@dataclass
class NotebookResult:
    name: str
    seconds: float
    passed: int
    failed: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.failed == 0


def count_self_checks(nb) -> tuple[int, int]:
    """Count ``SELF-CHECK PASSED`` / ``FAILED`` lines in an executed notebook's outputs."""
    passed = failed = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            text = out.get("text", "") or ""
            if out.get("output_type") == "error":
                text += out.get("evalue", "")
            passed += text.count(PASSED)
            failed += text.count(FAILED)
    return passed, failed


PACKAGE_DIR = Path(__file__).resolve().parent
CACHE_FIELD = "toolkit_cache_key"


def cache_key(path: str | Path, preset: str) -> str:
    """What an executed notebook depends on: its own bytes, the preset, the package's sources."""
    digest = hashlib.sha256(Path(path).read_bytes())
    digest.update(preset.encode())
    for source in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(str(source.relative_to(PACKAGE_DIR)).encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _cached(out_path: Path, key: str):
    """The executed notebook at ``out_path`` if its stamp is ``key`` (None when stale or unreadable)."""
    import nbformat

    try:
        nb = nbformat.read(out_path, as_version=4)
    except Exception:  # missing or not a notebook: run it again
        return None
    return nb if nb.metadata.get(CACHE_FIELD) == key else None


def run_notebook(path: str | Path, out_dir: str | Path, *, preset: str = "toy",
                 timeout: int = 600, html: bool = True, cache: bool = False) -> NotebookResult:
    """Execute one notebook in ``preset``; write the executed copy (and HTML) to ``out_dir``.

    ``cache=True``: when ``out_dir`` already holds a copy executed from the same notebook, preset
    and package sources (see :func:`cache_key`), reuse it (``seconds`` is then 0)."""
    import nbformat
    import papermill as pm

    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path = out_dir / path.name
    key = cache_key(path, preset)
    if cache and (nb := _cached(out_path, key)) is not None:
        passed, failed = count_self_checks(nb)
        if html and not out_path.with_suffix(".html").exists():
            _write_html(nb, out_path)
        return NotebookResult(path.stem, 0.0, passed, failed, None)
    start, error = time.perf_counter(), None
    try:
        pm.execute_notebook(str(path), str(out_path), parameters={"PRESET": preset},
                            cwd=str(path.parent), execution_timeout=timeout, progress_bar=False,
                            kernel_name="python3")
    except Exception as err:  # papermill raises PapermillExecutionError with the cell's error
        error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err) else ''}"
    seconds = time.perf_counter() - start
    passed = failed = 0
    if out_path.exists():
        nb = nbformat.read(out_path, as_version=4)
        passed, failed = count_self_checks(nb)
        if error is None and failed == 0:  # only a clean run may be reused
            nb.metadata[CACHE_FIELD] = key
            nbformat.write(nb, out_path)
        if html:
            _write_html(nb, out_path)
    return NotebookResult(path.stem, seconds, passed, failed, error)


def _write_html(nb, out_path: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    out_path.with_suffix(".html").write_text(body, encoding="utf-8")


def format_table(results: list[NotebookResult]) -> str:
    """A plain-text table of the results."""
    lines = [f"{'notebook':<24} {'time (s)':>9} {'passed':>7} {'failed':>7}  status",
             "-" * 62]
    for r in results:
        status = "ok" if r.ok else (r.error or "self-check failed")
        lines.append(f"{r.name:<24} {r.seconds:>9.1f} {r.passed:>7} {r.failed:>7}  {status}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.run_notebooks",
                                     description="Execute every notebook in one preset.")
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all in notebooks/)")
    parser.add_argument("--out", default="build", help="folder for executed notebooks and HTML")
    parser.add_argument("--preset", default="toy", help="preset passed to each notebook")
    parser.add_argument("--timeout", type=int, default=600, help="per-cell timeout in seconds")
    parser.add_argument("--cache", action="store_true",
                        help="reuse executed copies in --out whose notebook and package are unchanged")
    parser.add_argument("--no-html", dest="html", action="store_false", help="skip the HTML copies")
    args = parser.parse_args(argv)
    # Notebook kernels inherit this: idle OpenMP threads sleep instead of spinning, which keeps
    # small toy computations fast on machines with few cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    paths = [Path(p) for p in args.notebooks] or sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        parser.error(f"no notebooks found in {NOTEBOOK_DIR}")
    results = []
    for p in paths:
        print(f"running {p.name} ({args.preset}) ...", flush=True)
        results.append(run_notebook(p, args.out, preset=args.preset, timeout=args.timeout,
                                    html=args.html, cache=args.cache))
    print()
    print(format_table(results))
    n_bad = sum(not r.ok for r in results)
    total = sum(r.seconds for r in results)
    print(f"\n{len(results) - n_bad} of {len(results)} notebooks ok in {total:.0f} s; "
          f"executed notebooks and HTML in {Path(args.out).resolve()}")
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
