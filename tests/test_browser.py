"""Every notebook, the way a student meets it: JupyterLab in a real (headless) Chromium.

A JupyterLab server is started from this environment (``sys.executable -m jupyter lab``) on a free
localhost port with a random token and temporary config / data / runtime / settings / workspace
folders; it serves a *copy* of ``notebooks/`` (so autosave or the jupytext contents manager can never
rewrite the repository) and is always stopped. Debian's Chromium (``/usr/bin/chromium``, or
``$TOOLKIT_CHROMIUM``) is driven with the ``playwright`` package (never ``playwright install``).

One Lab page serves the module. For each ``notebooks/NN_*.ipynb``: double-click it in the file
browser, Run > Run All Cells from the menu bar, wait until every
code cell has an execution count and the kernel is idle, then assert: no error output, every widget
output rendered as a live widget (no "Loading widget..." / "Error displaying widget"), at least one
slider, and moving a slider of the notebook's panel changes the figure it drives. For each jupytext
``notebooks/NN_*.py``: double-click behaviour (the default viewer) must open it as a notebook with the
same cells as its ``.ipynb`` twin. A screenshot of every notebook goes to ``build/screenshots/``.

Skipped, with the reason, when playwright or Chromium is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from _chromium import chromium_context, free_port, move_slider_and_wait_for_redraw

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "build" / "screenshots"
NOTEBOOKS = sorted(ROOT.glob("notebooks/[0-9][0-9]_*.ipynb"))
PY_TWINS = sorted(ROOT.glob("notebooks/[0-9][0-9]_*.py"))
# Executing a notebook twice (as .ipynb and as its .py twin) doubles the time for no new coverage
# of the notebook itself, so only the tour's .py twin is executed end to end; the other .py twins
# are opened and checked to render as notebooks with the same cells as their .ipynb.
EXECUTE_PY_TWINS = {"00_tour"}
RUN_TIMEOUT_S = 420          # one notebook's Run All: toy presets take <= 30 s on 2 free cores,
                             # a shared CI machine can be several times slower
REDRAW_TIMEOUT_S = 120       # a slider retrains a small model before the figure changes
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# JupyterLab settings for the test server. Text notebooks (.py) open as notebooks by default: the
# same `defaultViewers` override that jupytext's own `jupytext-config set-default-viewer` writes
# (jupytext >= 1.16 opens them in the text editor unless told otherwise). Autosave is off, every
# cell is attached to the DOM (for the full-notebook screenshot), and nothing phones home.
LAB_OVERRIDES = {
    "@jupyterlab/docmanager-extension:plugin": {
        "defaultViewers": {"python": "Jupytext Notebook"},
        "autosave": False,
    },
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
}




def _api(url: str, token: str, method: str = "GET"):
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
    return json.loads(body) if body else None


class LabServer:
    """A JupyterLab server in its own process group, with every Jupyter folder temporary."""

    def __init__(self, workdir: Path):
        self.token = secrets.token_hex(24)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = workdir / "root"
        shutil.copytree(ROOT / "notebooks", self.root / "notebooks",
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        shutil.copy(ROOT / "pyproject.toml", self.root / "pyproject.toml")  # [tool.jupytext]
        config_dir = workdir / "config"
        (config_dir / "labconfig").mkdir(parents=True)
        (config_dir / "labconfig" / "default_setting_overrides.json").write_text(
            json.dumps(LAB_OVERRIDES, indent=1))
        env = dict(os.environ)
        for var, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                         ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                         ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"), ("IPYTHONDIR", "ipython"),
                         ("TOOLKIT_CACHE", "cache")]:
            (workdir / sub).mkdir(exist_ok=True)
            env[var] = str(workdir / sub)
        env.pop("MPLBACKEND", None)  # the kernel must use its inline backend
        self.log_path = workdir / "lab.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser",
             "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--LabApp.extension_manager=readonly"]
            + (["--allow-root"] if os.geteuid() == 0 else []),
            cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}:\n{self.log()}")
            try:
                _api(f"{self.url}/api/status", self.token)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()[-4000:]

    def shutdown_kernels(self) -> None:
        try:
            for session in _api(f"{self.url}/api/sessions", self.token):
                _api(f"{self.url}/api/sessions/{session['id']}", self.token, method="DELETE")
            for kernel in _api(f"{self.url}/api/kernels", self.token):
                _api(f"{self.url}/api/kernels/{kernel['id']}", self.token, method="DELETE")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass

    def stop(self) -> None:
        # Kernels run in their own sessions, so shut them down through the server first; then
        # SIGTERM the server's process group (a clean server stop also stops any kernel left).
        if self.proc.poll() is None:
            self.shutdown_kernels()
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    server = LabServer(tmp_path_factory.mktemp("jupyterlab"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A Chromium context with a fresh user-data dir (skips with the reason when unavailable)."""
    with chromium_context(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


# --------------------------------------------------------------------------------------------
# JavaScript run inside JupyterLab (window.jupyterapp exists thanks to expose_app_in_browser).

JS_CURRENT_IS = """path => {
  const app = window.jupyterapp;
  const w = app && app.shell && app.shell.currentWidget;
  return !!(w && w.context && w.context.path === path && w.context.isReady);
}"""

JS_DESCRIBE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const isNotebook = !!(w.content && w.content.model && w.content.model.cells);
  return {factory: w.context.factoryName || null, isNotebook,
          isNotebookPanel: w.node.classList.contains('jp-NotebookPanel'),
          nCells: isNotebook ? w.content.model.cells.length : 0,
          sources: isNotebook ? w.content.model.toJSON().cells.map(c =>
              Array.isArray(c.source) ? c.source.join('') : c.source) : []};
}"""

JS_KERNEL_IDLE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle';
}"""

# Done when the kernel is idle and every non-empty code cell has an execution count, or an error
# output appeared (Run All stops at an error, later cells then never get a count).
JS_RUN_DONE = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w.sessionContext.session && w.sessionContext.session.kernel;
  if (!k || k.status !== 'idle') return false;
  const cells = w.content.model.toJSON().cells.filter(c => c.cell_type === 'code');
  const src = c => Array.isArray(c.source) ? c.source.join('') : c.source;
  const error = cells.some(c => (c.outputs || []).some(o => o.output_type === 'error'));
  return error || cells.every(c => !src(c).trim() || c.execution_count !== null);
}"""

JS_REPORT = """(widgetMime) => {
  const w = window.jupyterapp.shell.currentWidget;
  const src = c => Array.isArray(c.source) ? c.source.join('') : c.source;
  const cells = w.content.model.toJSON().cells.filter(c => c.cell_type === 'code' && src(c).trim());
  const errors = [], unexecuted = [];
  let widgetOutputs = 0;
  cells.forEach((c, i) => {
    if (c.execution_count === null) unexecuted.push(i);
    for (const o of c.outputs || []) {
      if (o.output_type === 'error') errors.push(`code cell ${i}: ${o.ename}: ${o.evalue}`);
      if (o.data && o.data[widgetMime]) widgetOutputs += 1;
    }
  });
  const node = w.content.node;
  // Top-level outputs of the cells (the Output widget nests its own output area: not those).
  const top = [...node.querySelectorAll(
      '.jp-Cell-outputArea > .jp-OutputArea-child > .jp-OutputArea-output')];
  const live = top.filter(o => o.querySelector(':scope > .jupyter-widgets') &&
                               !o.innerText.startsWith('Error displaying widget'));
  // The widget renderer hides a view whose model the kernel closed (a finished tqdm bar).
  const closed = top.filter(o => o.classList.contains('lm-mod-hidden') && !o.children.length &&
                                 !o.hasAttribute('data-mime-type'));
  const text = node.innerText;
  return {nCode: cells.length, errors, unexecuted, widgetOutputs,
          liveViews: live.length, closedViews: closed.length,
          loading: text.includes('Loading widget'),
          widgetError: text.includes('Error displaying widget'),
          jsError: text.includes('Javascript Error'),
          sliders: node.querySelectorAll('.widget-slider').length};
}"""

# Finding a panel and moving its slider: tests/_chromium.py (shared with the Voilà test).

JS_CONTENT_HEIGHT = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const outer = w.node.querySelector('.jp-WindowedPanel-outer') || w.content.node;
  const cells = w.content.node.querySelectorAll('.jp-Cell');
  outer.scrollTop = 0;
  const last = cells[cells.length - 1].getBoundingClientRect().bottom;
  return last - outer.getBoundingClientRect().top + outer.getBoundingClientRect().top + 60;
}"""


# --------------------------------------------------------------------------------------------


def _open(page, path: str) -> None:
    """Double-click `path` in the file browser, as a student does (opens its default viewer)."""
    page.keyboard.press("Escape")
    page.evaluate("() => window.jupyterapp.commands.execute('filebrowser:activate')")
    name = path.rsplit("/", 1)[-1]
    item = page.locator(".jp-DirListing-item").filter(
        has=page.locator(".jp-DirListing-itemText", has_text=re.compile(f"^{re.escape(name)}$")))
    item.dblclick()
    page.wait_for_function(JS_CURRENT_IS, arg=path, timeout=90_000)
    page.evaluate("() => window.jupyterapp.shell.leftCollapsed || "
                  "window.jupyterapp.commands.execute('application:toggle-left-area')")


def _close_all(page, lab: LabServer) -> None:
    """Close every document without saving and shut its kernel down (keeps the page for the next)."""
    try:
        page.keyboard.press("Escape")
        page.evaluate("""() => { for (const w of [...window.jupyterapp.shell.widgets('main')]) {
                           if (w.context) w.context.model.dirty = false;
                           w.dispose(); } }""")
    finally:
        lab.shutdown_kernels()


def _run_all_from_menu(page) -> None:
    page.wait_for_function(JS_KERNEL_IDLE, timeout=90_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
    page.wait_for_function(JS_RUN_DONE, timeout=RUN_TIMEOUT_S * 1000, polling=500)


def _assert_ran_cleanly(page, name: str) -> dict:
    # Widget views are attached by the widget manager after the execute reply: give them a moment.
    with contextlib.suppress(Exception):  # on timeout, the report below says what is wrong
        page.wait_for_function(
            """() => { const n = window.jupyterapp.shell.currentWidget.content.node;
                 return !n.innerText.includes('Loading widget') &&
                        !!n.querySelector('.widget-slider'); }""", timeout=30_000)
    report = page.evaluate(JS_REPORT, WIDGET_VIEW)
    assert not report["errors"], f"{name}: error outputs {report['errors']}"
    assert not report["unexecuted"], f"{name}: code cells without execution count " \
                                     f"{report['unexecuted']}"
    assert not report["loading"], f"{name}: a widget still says 'Loading widget...'"
    assert not report["widgetError"], f"{name}: 'Error displaying widget' in an output"
    assert not report["jsError"], f"{name}: 'Javascript Error' in an output"
    assert report["widgetOutputs"] > 0, f"{name}: no widget output at all (no panel?)"
    assert report["liveViews"] + report["closedViews"] == report["widgetOutputs"], \
        f"{name}: {report['widgetOutputs']} widget outputs, {report['liveViews']} rendered live, " \
        f"{report['closedViews']} closed by the kernel"
    assert report["sliders"] > 0, f"{name}: no ipywidgets slider rendered"
    return report


def _move_slider_and_check_redraw(page, name: str) -> None:
    move_slider_and_wait_for_redraw(page, name, timeout_s=REDRAW_TIMEOUT_S,
                                    root_js="window.jupyterapp.shell.currentWidget.content.node")
    page.wait_for_function(JS_KERNEL_IDLE, timeout=REDRAW_TIMEOUT_S * 1000)


def _screenshot(page, filename: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = int(min(page.evaluate(JS_CONTENT_HEIGHT), 15_000))
    page.set_viewport_size({"width": 1280, "height": max(height, 900)})
    page.wait_for_timeout(500)  # let Lumino re-layout
    page.evaluate("() => { const o = document.querySelector("
                  "'.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer'); "
                  "if (o) o.scrollTop = 0; }")
    page.wait_for_timeout(200)
    page.screenshot(path=str(SCREENSHOTS / filename), full_page=True)
    page.set_viewport_size({"width": 1280, "height": 900})


def _run_and_check(page, name: str, screenshot: str) -> None:
    t0 = time.perf_counter()
    try:
        _run_all_from_menu(page)
        t1 = time.perf_counter()
        _assert_ran_cleanly(page, name)
        _move_slider_and_check_redraw(page, name)
    except BaseException:
        with contextlib.suppress(Exception):  # a picture for whoever debugs it
            _screenshot(page, screenshot.replace(".png", ".FAILED.png"))
        raise
    t2 = time.perf_counter()
    _screenshot(page, screenshot)
    print(f"{name}: run all {t1 - t0:.1f} s, slider redraw {t2 - t1:.1f} s")


@pytest.fixture(scope="module")
def page(browser, lab):
    """One JupyterLab page for the module, its file browser in notebooks/ (loading Lab takes
    seconds; each test opens its notebook in it and closes it afterwards)."""
    page = browser.new_page()
    page.goto(f"{lab.url}/lab/tree/notebooks?reset&token={lab.token}")
    page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-DirListing-item')",
                           timeout=120_000)
    yield page
    page.close()


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_its_panel_responds(page, lab, notebook):
    try:
        _open(page, f"notebooks/{notebook.name}")
        _run_and_check(page, notebook.name, f"{notebook.stem}.png")
    finally:
        _close_all(page, lab)


@pytest.mark.parametrize("script", PY_TWINS, ids=lambda p: p.name)
def test_py_twin_opens_as_notebook(page, lab, script):
    # Compare with the .ipynb served by the same Lab (the copy taken when the server started).
    twin = lab.root / "notebooks" / script.with_suffix(".ipynb").name
    if not twin.exists():
        pytest.fail(f"{script.name} has no paired {twin.name}")
    expected = [("".join(c["source"]) if isinstance(c["source"], list) else c["source"])
                for c in json.loads(twin.read_text())["cells"]]
    try:
        _open(page, f"notebooks/{script.name}")
        if script.stem not in EXECUTE_PY_TWINS:
            _screenshot(page, f"{script.name}.png")
        info = page.evaluate(JS_DESCRIBE)
        assert info["isNotebook"] and info["isNotebookPanel"], \
            f"{script.name} opened with {info['factory']!r}, not as a notebook"
        assert info["nCells"] == len(expected), \
            f"{script.name}: {info['nCells']} cells as a notebook, {twin.name} has {len(expected)}"
        assert [s.strip() for s in info["sources"]] == [s.strip() for s in expected]
        if script.stem in EXECUTE_PY_TWINS:
            _run_and_check(page, script.name, f"{script.name}.png")
    finally:
        _close_all(page, lab)
