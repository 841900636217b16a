"""The demo page in a real headless Chromium: upload an image, drag a box, see a mask overlay.

Chromium is driven over the Chrome DevTools Protocol (a websocket to its remote-debugging
port), so no webdriver package is needed. Needs the Debian packages `chromium` (and
`chromium-driver` for other tools): `apt-get install -y chromium chromium-driver`.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peers import peer_missing
from tests.processes import stop_process
from tests.server.conftest import LiveServer, png_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    if CHROMIUM is None:
        peer_missing("needs headless Chromium: apt-get install -y chromium chromium-driver "
                     "(`make test-tools` does it as root)")


class DevTools:
    """A minimal CDP client: send a command, wait for its answer (events are skipped)."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)

    def __call__(self, method: str, **params: Any) -> dict:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str) -> Any:
        result = self("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        # The page may still be loading: an element not there yet means "not yet", not an error.
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        while time.monotonic() < deadline:
            value = self.js(guarded)
            if value:
                return value
            time.sleep(0.1)
        status = self.js("document.getElementById('status')?.textContent")
        raise AssertionError(f"timed out waiting for {expression!r}; page status: {status!r}")

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def browser(tmp_path: Path):
    profile = tmp_path / "profile"
    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
         "--remote-debugging-port=0", "--window-size=1000,900", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start (exit code {process.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
                 if t["type"] == "page"]
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        yield tools
        tools.close()
    finally:
        stop_process(process, timeout=15)


def test_drawing_a_box_on_the_demo_page_overlays_a_mask(
        live_server: LiveServer, browser: DevTools, tmp_path: Path) -> None:
    image = tmp_path / "scene.png"
    image.write_bytes(png_bytes(h=240, w=320, seed=4))
    browser("Page.enable")
    browser("Page.navigate", url=f"{live_server.url}/")
    browser.wait_for("document.getElementById('model').options.length > 0 && "
                     "document.getElementById('label').options.length > 1")
    labels = browser.js("[...document.getElementById('label').options].map(o => o.value)")
    names = [c["name"] for c in httpx.get(f"{live_server.url}/v1/models").json()
             ["models"][0]["categories"]]
    assert labels == ["", *names]
    browser.js(f"document.getElementById('label').value = {json.dumps(names[0])}")

    root = browser("DOM.getDocument")["root"]["nodeId"]
    file_input = browser("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
    browser("DOM.setFileInputFiles", nodeId=file_input, files=[str(image)])
    browser.wait_for("document.getElementById('status').textContent.includes('Drag a box')")

    rect = browser.js("(() => { const r = document.getElementById('overlay')"
                      ".getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()")
    left, top, width, _height = rect
    scale = width / 320  # the canvas may be shown smaller than the image

    def mouse(kind: str, x: float, y: float) -> None:
        browser("Input.dispatchMouseEvent", type=kind, x=left + x * scale, y=top + y * scale,
                button="left", buttons=1 if kind != "mouseReleased" else 0, clickCount=1)

    mouse("mousePressed", 40, 30)
    for step in range(1, 6):
        mouse("mouseMoved", 40 + step * 30, 30 + step * 24)
    mouse("mouseReleased", 190, 150)

    browser.wait_for("document.querySelectorAll('#instances li').length === 1")
    item = browser.js("(() => { const li = document.querySelector('#instances li');"
                      " return [li.dataset.label, Number(li.dataset.area)]; })()")
    assert item[0] == names[0]
    # The mask canvas (the image's own pixels) really has the mask painted.
    painted = _painted_mask_pixels(browser)
    assert item[1] > 0 and abs(painted - item[1]) <= 0.02 * item[1]
    shot = browser("Page.captureScreenshot", format="png")["data"]
    (tmp_path / "demo.png").write_bytes(base64.b64decode(shot))
    assert (tmp_path / "demo.png").stat().st_size > 1000


def test_the_first_ten_seconds_a_sample_click_and_a_box_give_a_mask_on_the_bundled_model(
        bundled_live_server: LiveServer, browser: DevTools) -> None:
    # `make run`'s server: no --model-dir, the bundled demo model. The page says what the model
    # knows and offers samples of its own domain; one click loads one, no upload dialog.
    browser("Page.enable")
    browser("Page.navigate", url=f"{bundled_live_server.url}/")
    browser.wait_for("document.querySelectorAll('#samples button.sample img').length >= 3")
    (model,) = httpx.get(f"{bundled_live_server.url}/v1/models").json()["models"]
    knows = browser.js("document.getElementById('knows').textContent")
    for c in model["categories"]:
        assert c["name"] in knows
    assert "learned from masks" in knows and "learned from boxes only" in knows
    browser.js("document.querySelector('#samples button.sample').click()")
    browser.wait_for("document.getElementById('status').textContent.includes('Drag a box')")
    size = browser.js("[document.getElementById('image').width, document.getElementById('image').height]")
    assert size == [128, 128]  # the sample itself, not a placeholder
    rect = browser.js("(() => { const r = document.getElementById('overlay')"
                      ".getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()")
    left, top, width, _ = rect
    scale = width / 128

    def mouse(kind: str, x: float, y: float) -> None:
        browser("Input.dispatchMouseEvent", type=kind, x=left + x * scale, y=top + y * scale,
                button="left", buttons=1 if kind != "mouseReleased" else 0, clickCount=1)

    mouse("mousePressed", 20, 20)
    mouse("mouseMoved", 60, 60)
    mouse("mouseReleased", 100, 100)
    browser.wait_for("document.querySelectorAll('#instances li').length === 1")
    area = browser.js("Number(document.querySelector('#instances li').dataset.area)")
    assert 0 < area <= 80 * 80  # a mask inside the drawn box


def _painted_mask_pixels(browser: DevTools) -> int:
    """Translucent pixels of the mask canvas, which has the image's own size."""
    return browser.js("""(() => {
        const c = document.getElementById('masks');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] === 140) n++;
        return n; })()""")


def _open_image(browser: DevTools, path: Path) -> None:
    root = browser("DOM.getDocument")["root"]["nodeId"]
    file_input = browser("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
    browser.js("document.getElementById('status').textContent = ''")
    browser("DOM.setFileInputFiles", nodeId=file_input, files=[str(path)])
    browser.wait_for("document.getElementById('status').textContent.includes('Drag a box')")


def _stage(browser: DevTools) -> dict:
    """The stage on screen (CSS pixels) and the window it must fit in."""
    return browser.js("""(() => { const r = document.getElementById('overlay').getBoundingClientRect();
        return {left: r.left, top: r.top, width: r.width, height: r.height,
                windowWidth: window.innerWidth, windowHeight: window.innerHeight}; })()""")


def _drag(browser: DevTools, start: tuple[float, float], end: tuple[float, float]) -> None:
    """A mouse drag between two screen points (CSS pixels of the viewport)."""
    def mouse(kind: str, x: float, y: float) -> None:
        browser("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                buttons=1 if kind != "mouseReleased" else 0, clickCount=1)

    mouse("mousePressed", *start)
    for step in range(1, 5):
        mouse("mouseMoved", start[0] + (end[0] - start[0]) * step / 4,
              start[1] + (end[1] - start[1]) * step / 4)
    mouse("mouseReleased", *end)


# Window sizes the page must fit: a wide laptop screen and a small window.
WINDOWS = [(1280, 900), (800, 600)]
# A 128-px image, as the demo samples (shown larger), and a photo bigger than either window.
IMAGES = [(128, 128), (1200, 900)]


@pytest.mark.parametrize(("window_w", "window_h"), WINDOWS)
def test_the_image_fits_the_window_and_boxes_drawn_on_screen_reach_the_server_in_image_pixels(
        live_server: LiveServer, browser: DevTools, tmp_path: Path, window_w: int, window_h: int
) -> None:
    browser("Emulation.setDeviceMetricsOverride", width=window_w, height=window_h,
            deviceScaleFactor=1, mobile=False)
    browser("Page.enable")
    browser("Page.navigate", url=f"{live_server.url}/")
    browser.wait_for("document.getElementById('model').options.length > 0 && "
                     "document.getElementById('label').options.length > 1")
    # Which model answers, and what it knows, is said on the page.
    (model,) = httpx.get(f"{live_server.url}/v1/models").json()["models"]
    knows = browser.js("document.getElementById('knows').textContent")
    assert knows.startswith(f"Masks come from model {model['name']}, which knows")
    name = model["categories"][0]["name"]
    browser.js(f"document.getElementById('label').value = {json.dumps(name)}")

    for image_w, image_h in IMAGES:
        image = tmp_path / f"scene_{image_w}x{image_h}.png"
        image.write_bytes(png_bytes(h=image_h, w=image_w, seed=image_w))
        _open_image(browser, image)
        stage = _stage(browser)
        scale = stage["width"] / image_w
        # The whole image is on screen at once, as large as the window allows: one side
        # takes the window's width (less the page margins) or its height (less the lines
        # above the stage: the model line and the status).
        assert stage["top"] >= 0 and stage["top"] + stage["height"] <= window_h + 0.5, stage
        assert stage["left"] >= 0 and stage["left"] + stage["width"] <= window_w + 0.5, stage
        assert abs(stage["height"] / image_h - scale) < 0.01  # not stretched
        assert stage["width"] >= window_w - 80 or stage["height"] >= window_h - 120, stage
        if image_w < 300:
            assert scale >= 3, stage  # a 128-px image is shown large enough to box
        else:
            assert scale < 1, stage  # a photo larger than the window is shown whole

        # Two boxes with the same top-left corner, drawn in screen pixels: the server answers
        # each in image pixels, and the two labels do not cover each other.
        wanted = []
        for fx1, fy1, fx2, fy2 in ((0.20, 0.25, 0.60, 0.70), (0.20, 0.25, 0.45, 0.50)):
            start = (stage["left"] + fx1 * stage["width"], stage["top"] + fy1 * stage["height"])
            end = (stage["left"] + fx2 * stage["width"], stage["top"] + fy2 * stage["height"])
            _drag(browser, start, end)
            wanted.append([fx1 * image_w, fy1 * image_h, fx2 * image_w, fy2 * image_h])
            browser.wait_for(f"document.querySelectorAll('#instances li').length === {len(wanted)}")
        got = browser.js("[...document.querySelectorAll('#instances li')].map(li => JSON.parse(li.dataset.box))")
        # Mouse events land on whole screen pixels: at most one screen pixel off, in image pixels.
        tolerance = 1.0 / scale + 0.1
        for box, want in zip(got, wanted, strict=True):
            assert all(abs(a - b) <= tolerance
                       for a, b in zip(box, want, strict=True)), (box, want, scale)
        shot = browser("Page.captureScreenshot", format="png")["data"]
        (tmp_path / f"demo_{window_w}x{window_h}_{image_w}.png").write_bytes(base64.b64decode(shot))
        labels = json.loads(browser.js("document.getElementById('overlay').dataset.labels"))
        assert len(labels) == 2
        (ax, ay, aw, ah), (bx, by, bw, bh) = labels
        assert not (ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah), labels
        assert min(ah, bh) >= 16  # screen pixels, whatever the image's scale

        # Undo takes back the last box only, its mask with it.
        areas = browser.js("[...document.querySelectorAll('#instances li')].map(li => Number(li.dataset.area))")
        browser.js("document.getElementById('undo').click()")
        browser.wait_for("document.querySelectorAll('#instances li').length === 1")
        assert abs(_painted_mask_pixels(browser) - areas[0]) <= 0.02 * max(areas[0], 50)
        assert browser.js("JSON.parse(document.querySelector('#instances li').dataset.box)") == got[0]
        browser.js("document.getElementById('undo').click()")
        browser.wait_for("document.querySelectorAll('#instances li').length === 0")
        assert _painted_mask_pixels(browser) == 0
        assert browser.js("document.getElementById('undo').disabled") is True
