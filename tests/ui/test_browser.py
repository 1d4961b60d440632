"""The page in a real headless browser (Debian's ``chromium``): a screenshot checked pixel by pixel; the DOM.

The app is served by uvicorn on 127.0.0.1 (outside the api-server, so without Airflow's login) with
the fake fleet of ``ui_fixtures``: one stale cluster, one failed drill, one never backed up.
Skipped, saying so, when no chromium binary is installed (``apt-get install -y chromium``).
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest
import uvicorn
from test_app import fleet_collector

from hcp_etcd.ui.app import create_app
from hcp_etcd.ui.page import STATE_COLOURS

WIDTH, HEIGHT = 1280, 720
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (Debian: apt-get install -y chromium)"
)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA PNG with zlib (no Pillow here): width, height, rows of RGB bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG format {header}"
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if ftype == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif ftype == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif ftype == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif ftype == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        prev = line
        rows.append(bytes(line) if bpp == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3))
    return width, height, rows


@pytest.fixture
def served(fleet):
    """The app on a free loopback port, for the duration of the test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(fleet_collector(*fleet), require_auth=False, cache_seconds=0)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def chromium_command(tmp_path: Path, *args: str) -> list[str]:
    """Headless chromium with a profile of its own under ``tmp_path``, a fixed window and sRGB colours."""
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    return [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        "--force-color-profile=srgb", f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", *args,
    ]  # fmt: skip


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(chromium_command(tmp_path, *args), capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


def test_screenshot_shows_the_page_with_the_stale_cluster_highlighted(served, tmp_path):
    shot = tmp_path / "page.png"
    result = chromium(tmp_path, f"--screenshot={shot}", served)
    assert shot.exists(), f"no screenshot (rc={result.returncode}):\n{result.stderr[-3000:]}"
    width, height, rows = read_png(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    pixels = Counter(tuple(row[i : i + 3]) for row in rows for i in range(0, len(row), 3))
    assert len(pixels) > 50, "a uniform image: the page did not render"
    assert pixels.most_common(1)[0][0] in {(255, 255, 255), _rgb(STATE_COLOURS["ok"][1])}
    stale_badge, stale_row = (_rgb(c) for c in STATE_COLOURS["stale"])
    # The badge is ~90x25 px of solid colour; text antialiasing eats some of it.
    assert pixels[stale_badge] > 500, f"stale badge colour {stale_badge} not on screen"
    assert pixels[stale_row] > 5000, f"stale row background {stale_row} not on screen"
    assert pixels[_rgb(STATE_COLOURS["drill-failed"][0])] > 500, "drill-failed badge not on screen"
    # The stale row is first: its background lies above the ok row's badge colour.
    first_stale = next(y for y, row in enumerate(rows) if bytes(stale_row) * 20 in row)
    first_ok = next(y for y, row in enumerate(rows) if bytes(_rgb(STATE_COLOURS["ok"][0])) * 20 in row)
    assert first_stale < first_ok


def test_dom_as_the_browser_built_it(served, tmp_path):
    result = chromium(tmp_path, "--dump-dom", served)
    dom = result.stdout
    assert "<table" in dom, f"no DOM (rc={result.returncode}):\n{result.stderr[-3000:]}"
    assert 'data-cluster="clusters/stale" data-state="stale"' in dom
    assert dom.count('data-state="no-backup"') == 1 and dom.count("<tr class=") == 5
    assert 'data-count="stale"><b>1</b>' in dom
