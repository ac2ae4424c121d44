"""Open the report in headless Chromium and check that it renders cleanly.

At 1400 x 900 (a laptop screen): every figure loads, no table scrolls sideways, sections
without data are listed at the end instead of shown empty; screenshots of the first screen
and of the whole page are kept when REPORT_SCREENSHOT_DIR is set. Talks the Chrome DevTools
Protocol over a WebSocket with a small client written on the standard library (no
browser-automation package). Skipped when ``/usr/bin/chromium`` is
absent (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} not found: install Debian's chromium to run the browser test",
    ),
]


def _fixture_module():
    spec = importlib.util.spec_from_file_location(
        "_report_fixture", Path(__file__).with_name("test_report.py")
    )
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------- minimal WebSocket


class WebSocket:
    """Just enough of RFC 6455 for a client: text frames, fragmentation, ping, close."""

    def __init__(self, url: str, timeout: float) -> None:
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buf = bytearray()
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise ConnectionError(f"WebSocket handshake refused: {status!r}")

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("WebSocket closed by peer")
        self.buf += chunk

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        header = bytearray([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 1 << 16:
            header.append(0x80 | 126)
            header += struct.pack(">H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(bytes(header) + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        message = bytearray()
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("WebSocket closed by peer")
            if opcode == 0x9:
                self._send_frame(0xA, data)
                continue
            if opcode == 0xA:
                continue
            message += data
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send_frame(0x8, b"")
        self.sock.close()


class DevTools:
    """Commands and events of one page target."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e["method"] == event:
                    return e
            if time.monotonic() > deadline:
                raise TimeoutError(event)
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")


@pytest.fixture
def browser(tmp_path: Path):
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    log = (tmp_path / "chromium.log").open("wb")
    proc = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            "about:blank",
        ],
        stdout=log,
        stderr=log,
    )
    ws = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 20
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start; see {tmp_path / 'chromium.log'}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
            targets = json.load(resp)
        page = next(t for t in targets if t.get("type") == "page")
        ws = WebSocket(page["webSocketDebuggerUrl"], timeout=20)
        yield DevTools(ws)
    finally:
        if ws is not None:
            ws.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


#: The window the page is checked and captured at: a laptop screen.
WIDTH, HEIGHT = 1400, 900


def _open(cdp: DevTools, report: Path) -> None:
    """Load ``report`` in a WIDTH x HEIGHT window and wait for it."""
    for domain in ("Page", "Runtime", "Log", "Network"):
        cdp.call(f"{domain}.enable")
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        width=WIDTH,
        height=HEIGHT,
        deviceScaleFactor=1,
        mobile=False,
    )
    cdp.call("Page.navigate", url=report.resolve().as_uri())
    cdp.wait_for("Page.loadEventFired", timeout=20)


#: Tables wider than their box: those that would hide columns behind a sideways scroll.
OVERFLOWING_TABLES = (
    "Array.from(document.querySelectorAll('.scroll')).filter(d => d.scrollWidth > "
    "d.clientWidth + 1).map(d => d.closest('section').id + ': ' + "
    "(d.previousElementSibling ? d.previousElementSibling.textContent : '?'))"
)


def test_report_renders_in_chromium(browser: DevTools, tmp_path_factory, tmp_path: Path) -> None:
    started = time.monotonic()
    fixture = _fixture_module()
    report = fixture.shared_report(tmp_path_factory)
    cdp = browser
    _open(cdp, report)

    images = cdp.evaluate(
        "Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && "
        "i.naturalWidth > 0 && i.naturalHeight > 0}))"
    )
    assert len(images) >= 10
    assert [i["alt"] for i in images if not i["ok"]] == []
    headings = cdp.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
    # every section with data; the fixture has no distributed cell
    assert headings == list(fixture.SECTION_TITLES) + ["Not shown"]
    assert cdp.evaluate("document.getElementById('synthetic-banner') !== null")

    assert cdp.evaluate(OVERFLOWING_TABLES) == []
    assert cdp.evaluate("document.documentElement.scrollWidth") <= WIDTH

    # the first screen as a reader sees it, then the whole page in parts of at most 8000 px
    # (a browser limit on one capture)
    first = tmp_path / "report-first-screen.png"
    first.write_bytes(base64.b64decode(cdp.call("Page.captureScreenshot", format="png")["data"]))
    metrics = cdp.call("Page.getLayoutMetrics")
    height = int((metrics.get("cssContentSize") or metrics["contentSize"])["height"])
    shots = [first]
    for i, top in enumerate(range(0, height, 8000)):
        shot = cdp.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": top, "width": WIDTH, "height": min(8000, height - top), "scale": 1},
        )
        path = tmp_path / ("report.png" if i == 0 else f"report-{i + 1}.png")
        path.write_bytes(base64.b64decode(shot["data"]))
        shots.append(path)
    assert all(path.stat().st_size > 10_000 for path in shots[:2])
    keep = os.environ.get("REPORT_SCREENSHOT_DIR")
    if keep:
        for path in shots:
            shutil.copyfile(path, Path(keep) / path.name)

    def is_error(e: dict) -> bool:
        m, p = e["method"], e["params"]
        return (
            m == "Runtime.exceptionThrown"
            or (m == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"))
            or (m == "Log.entryAdded" and p["entry"]["level"] == "error")
        )

    errors = [e["params"] for e in cdp.events if is_error(e)]
    assert errors == []
    requested = [
        e["params"]["request"]["url"]
        for e in cdp.events
        if e["method"] == "Network.requestWillBeSent"
    ]
    assert requested, "the page load was not observed"
    assert all(u.startswith(("file:", "data:")) for u in requested), requested
    print(f"browser test: {time.monotonic() - started:.1f}s, screenshots {shots}")


def test_sections_without_data_are_listed_not_shown(browser: DevTools, tmp_path: Path) -> None:
    """Records like the quick preset's (one batch size, no profile, one process): the
    sections left out of the page and of its navigation, listed once at the end."""
    fixture = _fixture_module()
    records = fixture.generate_records(
        workloads=("transformer-multi30k",), seeds=(0,), failures=False
    )
    fixture.write_records(tmp_path / "in", records)
    report = fixture.build_report([tmp_path / "in"], tmp_path / "out" / "report.html")
    _open(browser, report)
    headings = browser.evaluate(
        "Array.from(document.querySelectorAll('h2')).map(h => h.textContent)"
    )
    left_out = ("Cost against batch size", "Distributed runs", "Profile")
    assert headings == [t for t in fixture.SECTION_TITLES if t not in left_out] + ["Not shown"]
    links = browser.evaluate("Array.from(document.querySelectorAll('nav a')).map(a => a.text)")
    assert links == headings
    listed = browser.evaluate(
        "Array.from(document.querySelectorAll('#not-shown li strong')).map(s => s.textContent)"
    )
    assert listed == list(left_out)
    assert browser.evaluate("document.querySelectorAll('.missing').length") == 0
    assert browser.evaluate(OVERFLOWING_TABLES) == []


def test_summary_is_the_first_screen(browser: DevTools, tmp_path_factory, tmp_path: Path) -> None:
    """At 1400 × 900 the page opens on the summary, and its table quotes the verdict CSV."""
    import pandas as pd

    fixture = _fixture_module()
    report = fixture.shared_report(tmp_path_factory)
    cdp = browser
    for domain in ("Page", "Runtime"):
        cdp.call(f"{domain}.enable")
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        width=1400,
        height=900,
        deviceScaleFactor=1,
        mobile=False,
    )
    cdp.call("Page.navigate", url=report.resolve().as_uri())
    cdp.wait_for("Page.loadEventFired", timeout=20)

    first = cdp.evaluate(
        "(() => { const s = document.querySelector('main > section');"
        " return {id: s.id, title: s.querySelector('h2').textContent,"
        " top: s.getBoundingClientRect().top,"
        " findings: s.querySelectorAll('ul.findings li').length,"
        " firstFinding: (s.querySelector('ul.findings li') || {}).textContent || ''}; })()"
    )
    assert (first["id"], first["title"]) == ("verdict", "Summary")
    assert first["top"] < 900 / 2, "the summary starts below the first half of the first screen"
    # it opens with the forest plot: the page's first figure, begun on the first screen,
    # then at most three sentences, then the rest
    forest = cdp.evaluate(
        "(() => { const img = document.querySelector('img');"
        " const r = img.getBoundingClientRect();"
        " const words = document.querySelector('#verdict ul.findings').getBoundingClientRect();"
        " return {id: img.id, alt: img.alt, loaded: img.complete && img.naturalWidth > 0,"
        " inVerdict: img.closest('section').id, top: r.top, bottom: r.bottom,"
        " words: words.top}; })()"
    )
    assert forest["id"] == "forest-plot" and forest["alt"].startswith("Forest plot")
    assert forest["loaded"] and forest["inVerdict"] == "verdict"
    assert forest["top"] < 900 / 2
    assert forest["bottom"] <= forest["words"], "the sentences come after the figure"
    assert 0 < first["findings"] <= 3
    assert cdp.evaluate(
        "Array.from(document.querySelector('#verdict').children).findIndex("
        " e => e.tagName === 'FIGURE') === 2"  # h2, intro, the figure
    )

    # each row with the setting of the group row above it
    rows = cdp.evaluate(
        "(() => { let group = ''; const out = [];"
        " for (const r of document.querySelector('#verdict table.data').tBodies[0].rows) {"
        "  if (r.classList.contains('group')) {"
        "   group = r.textContent.replace('SYNTHETIC DATA', '').trim(); continue; }"
        "  out.push([group, ...Array.from(r.cells).map(c => c.textContent.trim())]); }"
        " return out; })()"
    )
    headers = cdp.evaluate(
        "Array.from(document.querySelector('#verdict table.data').querySelectorAll('thead th'))"
        ".map(h => h.textContent)"
    )
    assert headers == ["FNGD", "against", "seeds", "per step", "later epochs", "to target",
                       "final metric"]  # fmt: skip
    shown = {(r[0], r[1], r[2]): dict(zip(headers, r[1:], strict=True)) for r in rows}
    csv = pd.read_csv(report.parent / f"{report.stem}_verdict.csv")
    column = {
        "step_time": "per step",
        "later_epoch_time": "later epochs",
        "time_to_target": "to target",
        "final_metric": "final metric",
    }
    checked = 0
    for _, r in csv.iterrows():
        if pd.isna(r["ratio"]):
            continue
        group = f"{r['workload']} ({r['size']}) · {r['device_name']} · batch {r['batch_size']}"
        row = shown[(group, r["optimizer"], r["baseline"])]
        if pd.isna(r["ci_low"]):
            want = f"{r['ratio']:.2f}× (n=1, no interval)"
        else:
            want = f"{r['ratio']:.2f}× [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        assert row[column[r["metric"]]].startswith(want), (group, want, row)
        checked += 1
    assert checked >= 20

    shot = cdp.call("Page.captureScreenshot", format="png")
    path = tmp_path / "first-screen.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000
    keep = os.environ.get("REPORT_SCREENSHOT_DIR")
    if keep:
        shutil.copyfile(path, Path(keep) / path.name)
