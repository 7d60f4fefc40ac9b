"""What the browser tests share: finding Chromium, a free port, a headless Chromium context,
and the JavaScript that finds a panel (a slider next to an Output widget showing a figure),
moves its slider with the keyboard and waits for the figure to change.

Chromium is Debian's (``/usr/bin/chromium`` or ``$TOOLKIT_CHROMIUM``), driven by the
``playwright`` package (never ``playwright install``); the fixtures skip with the reason when
either is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket

import pytest

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

# A panel = a widget box holding a slider and an Output widget that shows an image. `root` is
# the element to search (JupyterLab's current notebook, or a Voilà page's body).
JS_FOCUS_PANEL_SLIDER = """(root) => {
  root = root || document.body;
  for (const box of root.querySelectorAll('.widget-vbox, .widget-box')) {
    const handle = box.querySelector('.widget-slider .noUi-handle');
    const img = box.querySelector('.widget-output img');
    if (handle && img) {
      handle.scrollIntoView({block: 'center'});
      handle.focus();
      window.__panelBox = box;
      return {src: img.getAttribute('src'),
              readout: box.querySelector('.widget-slider .widget-readout').innerText};
    }
  }
  return null;
}"""

JS_READOUT = "() => window.__panelBox.querySelector('.widget-slider .widget-readout').innerText"

JS_IMAGE_CHANGED = """(before) => {
  const img = window.__panelBox && window.__panelBox.querySelector('.widget-output img');
  return !!img && img.complete && img.getAttribute('src') !== before;
}"""


def chromium_path() -> str | None:
    for candidate in (os.environ.get("TOOLKIT_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def chromium_context(profile_dir):
    """A persistent headless Chromium context, or ``pytest.skip`` with the reason."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the `playwright` package is not installed (pip install -e '.[dev]'); "
                    "browser tests need it to drive Chromium")
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium not found (/usr/bin/chromium); install it with "
                    "`apt-get install chromium chromium-driver` or set TOOLKIT_CHROMIUM")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile_dir), executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900})
        try:
            yield context
        finally:
            context.close()


def move_slider_and_wait_for_redraw(page, name: str, *, root_js: str = "document.body",
                                    timeout_s: float = 120) -> None:
    """Move the first panel's slider one step with the keyboard; wait until its figure changes."""
    panel = page.evaluate(f"() => ({JS_FOCUS_PANEL_SLIDER})({root_js})")
    assert panel is not None, f"{name}: no panel (a slider next to an Output widget showing a figure)"
    page.keyboard.press("ArrowRight")
    if page.evaluate(JS_READOUT) == panel["readout"]:  # slider at its maximum: step left instead
        page.keyboard.press("ArrowLeft")
    after = page.evaluate(JS_READOUT)
    assert after != panel["readout"], f"{name}: the slider did not move with the keyboard"
    page.wait_for_function(JS_IMAGE_CHANGED, arg=panel["src"], timeout=timeout_s * 1000,
                           polling=250)
