"""The notebooks as a static book: ``make book`` → ``build/book/_build/html/index.html``.

Built with Jupyter Book 1 (Sphinx, sphinx-book-theme), which the Makefile installs into its own
virtual environment (``build/venvs/book``) so its Sphinx pins never meet the toolkit's. The
notebooks are executed here, in the toolkit's environment, through the runner's cache
(:func:`toolkit.run_notebooks.run_notebook` with ``cache=True``): an unchanged notebook on
unchanged package sources is not re-run, and Jupyter Book itself never executes anything.

Offline by construction: MathJax 2 is copied into the book's ``_static`` (from the
``jupyter-server-mathjax`` package), panels render as their static PNG (the widget view is
dropped from the HTML mime priority, so no widget manager is fetched), and the README's badge
images (remote SVGs) become plain links. Launch buttons (Binder, Colab) are links to the
repository set in ``hosting.toml`` (the setting ``make hosting`` writes into the notebooks).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["ROOT", "TOPICS", "papers_by_notebook", "topic_of", "readme_intro", "assemble_book",
           "main"]

ROOT = Path(__file__).resolve().parents[2]
# The table of contents: one part per topic of the mission, notebooks by number. A notebook that
# is in no topic fails the build (tests/test_published.py), so a new notebook is placed on purpose.
TOPICS = {
    "Start here": ["00"],
    "Kernels and feature learning": ["01", "05"],
    "Loss landscapes and curvature": ["02", "06", "09", "10"],
    "Neural collapse": ["03", "07"],
    "Pruning and weight spectra": ["04", "08", "11"],
}
ARXIV = re.compile(r"arXiv[:\s]+(\d{4}\.\d{4,5})")
BADGE = re.compile(r"\[!\[([^\]]*)\]\([^)]*\)\]\(([^)]*)\)")


def topic_of(number: str) -> str:
    for topic, numbers in TOPICS.items():
        if number in numbers:
            return topic
    raise ValueError(f"notebook {number} is in no topic of toolkit.publish.book.TOPICS; add it "
                     "to the part it belongs to.")


def _markdown(nb_path: Path) -> str:
    import nbformat

    nb = nbformat.read(nb_path, as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def _title(nb_path: Path) -> str:
    heading = next((line for line in _markdown(nb_path).splitlines() if line.startswith("# ")),
                   nb_path.stem)
    return heading.lstrip("# ").strip()


def papers_by_notebook(notebooks: list[Path]) -> dict[str, list[str]]:
    """The arXiv ids each notebook cites, in order of first mention."""
    return {nb.stem: list(dict.fromkeys(ARXIV.findall(_markdown(nb)))) for nb in notebooks}


def readme_intro(readme: Path = ROOT / "README.md") -> str:
    """The README up to its first level-2 heading after the notebook table, links made local."""
    text = readme.read_text(encoding="utf-8")
    cut = text.find("\n## Using the package")
    text = text if cut < 0 else text[:cut]
    text = BADGE.sub(r"[\1](\2)", text)  # remote badge images would need the network
    # notebook links point at the book's own pages
    return re.sub(r"\]\((?:\./)?notebooks/(\d\d_[\w]+)\.(?:py|ipynb)\)", r"](\1.ipynb)", text)


def _repository() -> tuple[str, str]:
    """(URL, branch) from ``hosting.toml``, the one setting behind every launch link."""
    import tomllib

    setting = tomllib.loads((ROOT / "hosting.toml").read_text(encoding="utf-8"))
    return setting["repository"], setting.get("branch", "main")


def _config(repository: tuple[str, str]) -> str:
    # YAML is a superset of JSON: write the config as JSON, no YAML writer needed.
    config = {
        "title": "Deep learning theory, hands on",
        "author": "the toolkit authors",
        "only_build_toc_files": True,
        "execute": {"execute_notebooks": "off"},
        "repository": {"url": repository[0], "branch": repository[1],
                       "path_to_book": "notebooks"},
        "launch_buttons": {"binderhub_url": "https://mybinder.org", "thebe": False,
                           "colab_url": "https://colab.research.google.com",
                           "notebook_interface": "jupyterlab"},
        "html": {"use_repository_button": False, "use_issues_button": False,
                 "use_edit_page_button": False, "use_download_button": True},
        "parse": {"myst_enable_extensions": ["dollarmath", "amsmath", "colon_fence"]},
        "sphinx": {"config": {
            "mathjax_path": "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full",
            # the MathJax 2.7 of jupyter-server-mathjax ships one combined configuration and
            # the STIX-Web fonts only
            # and its HTML-CSS output probes web fonts with an `about:blank` font, a console
            # error in Chromium: render to native MathML (which current browsers typeset), and
            # point its TeX web fonts for \\mathbb, \\mathcal, ... (not shipped) at local fonts
            "mathjax2_config": {"menuSettings": {"renderer": "NativeMML"},
                                "NativeMML": {"styles": {
                                    f"@font-face /*{i}*/": {"font-family": family,
                                                            "src": "local('STIX Two Math')"}
                                    for i, family in enumerate(
                                        ["Caligraphic", "Caligraphic", "AMS", "Script", "Fraktur",
                                         "Fraktur"], start=1)
                                    for family in [f"MathJax_{family}-WEB"]}},
                                "HTML-CSS": {"availableFonts": [], "preferredFont": None,
                                             "webFont": "STIX-Web", "imageFont": None},
                                "tex2jax": {"inlineMath": [["\\(", "\\)"]],
                                            "displayMath": [["\\[", "\\]"]],
                                            "processEscapes": True,
                                            # myst-nb wraps notebooks in mathjax_ignore and
                                            # marks the math it wants typeset (MathJax 3 style)
                                            "ignoreClass": "tex2jax_ignore|mathjax_ignore",
                                            "processClass": "math|output_area|tex2jax_process"},
                                "showMathMenu": False},
            # panels: their static PNG, never the widget view (that needs a widget manager
            # fetched from a CDN)
            "nb_mime_priority_overrides": [["html", "application/vnd.jupyter.widget-view+json",
                                            None]],
            # MathJax lives outside `_static`: Jupyter Book links every .js found there into
            # every page, which would load all of MathJax's extensions at once
            "html_static_path": ["_assets"],
            "html_favicon": "_assets/favicon.png",  # else the browser's /favicon.ico is a 404
            "html_context": {"default_mode": "light"},
        }},
    }
    return json.dumps(config, indent=2)


def _toc(notebooks: list[Path]) -> str:
    parts = []
    for topic, numbers in TOPICS.items():
        chapters = [{"file": nb.stem} for n in numbers for nb in notebooks if nb.stem[:2] == n]
        if chapters:
            parts.append({"caption": topic, "chapters": chapters})
    parts.append({"caption": "Reference", "chapters": [{"file": "papers"}]})
    return json.dumps({"format": "jb-book", "root": "intro", "parts": parts}, indent=2)


def _papers_page(notebooks: list[Path]) -> str:
    lines = ["# Papers", "", "The papers each notebook tests, in order of first mention.", ""]
    for nb in notebooks:
        ids = papers_by_notebook([nb])[nb.stem]
        links = ", ".join(f"[arXiv {i}](https://arxiv.org/abs/{i})" for i in ids) or "—"
        lines.append(f"- [{_title(nb)}]({nb.stem}.ipynb): {links}")
    return "\n".join(lines) + "\n"


def _write_favicon(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(0.32, 0.32), dpi=100)
    fig.patch.set_facecolor("#3b6ea8")
    fig.savefig(path, facecolor=fig.get_facecolor())
    plt.close(fig)


def _copy_without_widget_state(source: Path, target: Path) -> None:
    # Saved widget state makes myst-nb embed the widget manager from a CDN; the book shows the
    # panels' static PNGs instead.
    import nbformat

    nb = nbformat.read(source, as_version=4)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, target)


def assemble_book(executed: list[Path], src: Path, mathjax: Path) -> Path:
    """Write the Jupyter Book source folder ``src`` from executed notebooks; return it."""
    for nb in executed:
        topic_of(nb.stem[:2])  # every notebook must be placed
    if src.exists():
        shutil.rmtree(src)
    (src / "_assets").mkdir(parents=True)
    for nb in executed:
        _copy_without_widget_state(nb, src / nb.name)
    shutil.copytree(mathjax, src / "_assets" / "mathjax")
    _write_favicon(src / "_assets" / "favicon.png")
    (src / "_config.yml").write_text(_config(_repository()), encoding="utf-8")
    (src / "_toc.yml").write_text(_toc(executed), encoding="utf-8")
    (src / "intro.md").write_text(readme_intro(), encoding="utf-8")
    (src / "papers.md").write_text(_papers_page(executed), encoding="utf-8")
    return src


def _drop_repeated_inline_scripts(page: Path) -> None:
    # sphinx-thebe (pulled in by Jupyter Book even with thebe off) writes its inline config
    # twice; the second `const THEBE_JS_URL = ...` is a SyntaxError in the browser console.
    seen, lines = set(), []
    for line in page.read_text(encoding="utf-8").splitlines(keepends=True):
        inline = line.lstrip().startswith("<script>") and line.rstrip().endswith("</script>")
        if inline and line in seen:
            continue
        seen.add(line)
        lines.append(line)
    page.write_text("".join(lines), encoding="utf-8")


def _mathjax_dir(book_python: Path) -> Path:
    out = subprocess.run([str(book_python), "-c", "import jupyter_server_mathjax as m, pathlib; "
                          "print(pathlib.Path(m.__file__).parent / 'static')"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    from ..run_notebooks import NOTEBOOK_DIR, format_table, run_notebook

    parser = argparse.ArgumentParser(prog="python -m toolkit.publish.book",
                                     description="Build the notebooks into a static HTML book.")
    parser.add_argument("--out", default="build/book", help="book folder (HTML in _build/html)")
    parser.add_argument("--executed", default="build/executed",
                        help="cache of executed notebooks (reused when unchanged)")
    parser.add_argument("--book-python", default="build/venvs/book/bin/python",
                        help="python of the environment that has jupyter-book")
    parser.add_argument("--preset", default="toy")
    args = parser.parse_args(argv)
    book_python = Path(args.book_python)
    if not book_python.exists():
        print(f"{book_python} not found: `make book` creates it (jupyter-book in its own venv)",
              file=sys.stderr)
        return 2
    results, executed = [], []
    for nb in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        topic_of(nb.stem[:2])
        results.append(run_notebook(nb, args.executed, preset=args.preset, html=False, cache=True))
        executed.append(Path(args.executed) / nb.name)
    print(format_table(results))
    if not all(r.ok for r in results):
        print("a notebook failed: the book is not built", file=sys.stderr)
        return 1
    out = Path(args.out)
    src = assemble_book(executed, out / "_src", _mathjax_dir(book_python))
    jb = book_python.parent / "jupyter-book"
    code = subprocess.call([str(jb), "build", str(src), "--path-output", str(out.resolve()),
                            "--builder", "html"])
    if code == 0:
        html = out / "_build" / "html"
        for page in html.glob("*.html"):
            _drop_repeated_inline_scripts(page)
        print(f"book: {(html / 'index.html').resolve()}")
    return code


if __name__ == "__main__":
    sys.exit(main())
