"""The published forms (issue 19): the static book and the Voilà apps.

The book is built by ``python -m toolkit.publish.book`` exactly as ``make book`` runs it (the
Jupyter Book venv is created by the Makefile's rule; skipped with the reason if pip cannot
create it), from the executed-notebook cache that ``tests/test_notebooks.py`` fills, so a full
``make test`` executes each notebook once. Every page is then opened in headless Chromium served
from localhost with every other host blocked: pages load without console errors or outside
requests, images decode, math is typeset by the local MathJax, and each notebook page shows its
panel's static figure. The app test serves one notebook's app with Voilà on a free port, waits
for the panel, moves its slider and checks that the figure is redrawn (requests outside
localhost are blocked there too; Voila's own template asks only for Font Awesome's CSS).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from _chromium import chromium_context, free_port, move_slider_and_wait_for_redraw

from toolkit.publish import app as app_module
from toolkit.publish import book as book_module
from toolkit.run_notebooks import CACHE_FIELD, NOTEBOOK_DIR, cache_key, run_notebook

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
EXECUTED = ROOT / "build" / "executed"
BOOK_PYTHON = ROOT / "build" / "venvs" / "book" / "bin" / "python"
APP_NOTEBOOK = "06"       # its panel redraws from precomputed spectra: a quick slider check
PAGE_TIMEOUT_MS = 60_000


# -- no browser ------------------------------------------------------------------------------

@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_is_placed_in_a_topic_and_has_a_panel(nb):
    assert book_module.topic_of(nb.stem[:2])
    assert app_module.panel_cells(nbformat.read(nb, as_version=4)), f"{nb.stem}: no panel cell"


def test_app_runs_every_cell_but_shows_only_title_and_panels():
    source = nbformat.read(app_module.find_notebook("01"), as_version=4)
    app = app_module.app_notebook(app_module.find_notebook("01"))
    code = [c for c in source.cells if c.cell_type == "code"]
    app_code = [c for c in app.cells if c.cell_type == "code"]
    assert len(app_code) == len(code)  # every experiment still runs
    shown = [c for c in app_code if not c.source.startswith("%%capture\n")]
    assert [c.source for c in shown] == [code[i].source for i in range(len(code))
                                         if app_module._is_panel_cell(code[i].source)]
    assert len(shown) == 1
    markdown = [c.source for c in app.cells if c.cell_type == "markdown"]
    assert markdown[0].startswith("# 01")
    assert len(markdown) == 2  # the title and the paragraph introducing the panel


def test_find_notebook_names_the_choices_on_a_bad_spec():
    with pytest.raises(ValueError, match="00_tour"):
        app_module.find_notebook("99")


def test_notebook_outside_every_topic_is_an_error(monkeypatch):
    monkeypatch.setattr(book_module, "TOPICS", {"Start here": ["00"]})
    with pytest.raises(ValueError, match="no topic"):
        book_module.topic_of("01")


def test_papers_are_read_from_the_notebooks():
    papers = book_module.papers_by_notebook(NOTEBOOKS)
    assert all(papers[nb.stem] for nb in NOTEBOOKS if nb.stem != "00_tour")
    assert "1806.07572" in papers["01_ntk_equivalence"]  # Jacot et al., the NTK


def test_readme_intro_has_no_remote_images_and_local_notebook_links():
    intro = book_module.readme_intro()
    assert "![" not in intro
    assert "](notebooks/" not in intro


@pytest.mark.notebook
def test_runner_cache_reuses_an_unchanged_notebook_and_reruns_a_changed_one(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('PRESET = "toy"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('SELF-CHECK PASSED: ran')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "src" / "99_tiny.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    first = run_notebook(path, tmp_path / "out", html=False, cache=True)
    assert first.ok and first.seconds > 0
    stamped = nbformat.read(tmp_path / "out" / path.name, as_version=4)
    assert stamped.metadata[CACHE_FIELD] == cache_key(path, "toy")
    again = run_notebook(path, tmp_path / "out", html=False, cache=True)
    assert again.ok and again.seconds == 0 and again.passed == 1
    nb.cells[1].source = "print('SELF-CHECK PASSED: changed')"
    nbformat.write(nb, path)
    changed = run_notebook(path, tmp_path / "out", html=False, cache=True)
    assert changed.seconds > 0
    assert cache_key(path, "toy") != cache_key(path, "full")


# -- the book in Chromium --------------------------------------------------------------------

@pytest.fixture(scope="module")
def book_html(tmp_path_factory):
    made = subprocess.run(["make", "-s", str((BOOK_PYTHON.parent.parent / ".ok").relative_to(ROOT))],
                          cwd=ROOT,
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"could not create the Jupyter Book venv: {made.stderr.strip()[-300:]}")
    out = tmp_path_factory.mktemp("book")
    proc = subprocess.run([sys.executable, "-m", "toolkit.publish.book", "--out", str(out),
                           "--executed", str(EXECUTED), "--book-python", str(BOOK_PYTHON)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = out / "_build" / "html"
    assert (html / "index.html").exists()
    return html


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium_context(tmp_path_factory.mktemp("chromium-book")) as context:
        yield context


@pytest.fixture(scope="module")
def served_book(book_html):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                               "127.0.0.1", "--directory", str(book_html)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/"
    _wait_for(base, 30)
    try:
        yield base
    finally:
        server.terminate()
        server.wait(10)


def _wait_for(url: str, timeout: float, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _open_offline(browser, url: str, base: str, wait_until: str = "load"):
    """A page on ``url`` that may only talk to ``base``; returns (page, console errors, outside
    requests)."""
    page = browser.new_page()
    errors, outside = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def only_local(route):
        if route.request.url.startswith(base) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto(url, wait_until=wait_until, timeout=PAGE_TIMEOUT_MS)
    return page, errors, outside


JS_MATH = """() => ({math: document.querySelectorAll('span.math, div.math').length,
  typeset: document.querySelectorAll('.MathJax_MathML, .MathJax_CHTML, .MathJax, .MathJax_SVG').length,
  mathErrors: document.querySelectorAll('.MathJax_Error, merror').length})"""
JS_IMAGES = """() => Array.from(document.querySelectorAll('main img, article img'))
  .map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}))"""
JS_MATHJAX_IDLE = """() => !document.querySelector('.math') || (window.MathJax && MathJax.Hub &&
  MathJax.Hub.queue && MathJax.Hub.queue.pending === 0 && !MathJax.Hub.queue.running &&
  document.querySelectorAll('.MathJax_MathML, .MathJax_Error').length > 0)"""


@pytest.mark.browser
@pytest.mark.parametrize("page_name", ["intro", "papers"] + [nb.stem for nb in NOTEBOOKS])
def test_book_page_renders_offline(browser, served_book, page_name):
    page, errors, outside = _open_offline(browser, served_book + f"{page_name}.html", served_book)
    try:
        page.wait_for_function(JS_MATHJAX_IDLE, timeout=PAGE_TIMEOUT_MS)
        math = page.evaluate(JS_MATH)
        images = page.evaluate(JS_IMAGES)
        launch = page.evaluate("() => Array.from(document.querySelectorAll('a'))"
                               ".map(a => a.href).filter(h => /mybinder|colab/.test(h)).length")
        text = page.evaluate("() => document.body.innerText")
    finally:
        page.close()
    assert not errors, f"{page_name}: console errors {errors[:3]}"
    assert not outside, f"{page_name}: requests outside the book {outside[:3]}"
    assert all(i["ok"] for i in images), f"{page_name}: images not decoded {images}"
    assert not math["mathErrors"], f"{page_name}: MathJax errors"
    assert math["typeset"] >= math["math"], f"{page_name}: math not typeset ({math})"
    if page_name == "intro":  # the table of contents: one part per topic, and the papers page
        assert all(topic in text for topic in book_module.TOPICS), text[:500]
        assert "Papers" in text
    if page_name.startswith(tuple("0123456789")):
        assert images, f"{page_name}: no figure (the panel's static PNG at least)"
        assert launch >= 2, f"{page_name}: Binder and Colab launch buttons missing"


# -- the Voilà app -----------------------------------------------------------------------------

@pytest.mark.browser
def test_voila_app_redraws_when_the_slider_moves(browser, tmp_path):
    target = app_module.write_app(APP_NOTEBOOK, tmp_path / "apps")
    port = free_port()
    log = open(tmp_path / "voila.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "voila", str(target), f"--port={port}",
                             "--no-browser", "--Voila.ip=127.0.0.1"],
                            cwd=target.parent, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/"
    try:
        _wait_for(base, 120, proc)
        # Voila streams the page while the notebook's cells run: do not wait for "load"
        page, errors, outside = _open_offline(browser, base, base, wait_until="commit")
        try:
            page.wait_for_selector(".widget-slider .noUi-handle", timeout=300_000)
            page.wait_for_selector(".widget-output img", timeout=120_000)
            code_shown = page.evaluate("() => document.querySelectorAll('.jp-InputArea-editor')"
                                       ".length")
            move_slider_and_wait_for_redraw(page, f"app {APP_NOTEBOOK}", timeout_s=120)
            text = page.evaluate("() => document.body.innerText")
        finally:
            page.close()
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    assert code_shown == 0, "the app shows code"
    assert "Traceback" not in text, (tmp_path / "voila.log").read_text()[-2000:]
    # Voila's lab template links Font Awesome's CSS from a CDN (icons only); requests outside
    # localhost are blocked here, and nothing else may be asked for.
    assert all("fontawesome" in url for url in outside), f"the app fetched {outside[:3]}"
