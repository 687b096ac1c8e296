"""Debian's headless Chromium driven by Playwright for Python (no browser download), offline by
construction: load a page (its DOM and the requests it made), take a screenshot, read the PNG.

Generic (nothing about netcheck's report here): the HTML report's tests and the collector
dashboard's end-to-end tests use it. Chromium sends every request it makes to a loopback
recorder (``RequestRecorder``) that refuses it, and resolves no names itself, so no packet leaves
the machine; with ``direct_loopback`` the pages of a server on loopback (the dashboard) are
reached directly, everything else still goes to the recorder. The PNG reader uses only the
standard library (zlib), no Pillow.

    binary = find_chromium()                    # None: skip the test, citing INSTALL_HINT
    with Browser(binary) as browser:
        run = browser.load(file_url(page))      # run.dom, run.page_requests, run.proxied
        png = read_png(browser.screenshot(file_url(page), width=1280, height=900))
"""

from __future__ import annotations

import os
import shutil
import socket
import socketserver
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.servers import ServedInThread

#: Looked up in this order on PATH; ``NETCHECK_CHROMIUM`` overrides.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install Debian's chromium: apt-get install -y --no-install-recommends chromium"

#: Flags that work as root in a container: no sandbox, no GPU, no first-run or background traffic
#: (Playwright adds its own headless flag).
BASE_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--mute-audio",
    "--hide-scrollbars", "--force-device-scale-factor=1",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate",
    # resolve no name: whatever is not loopback can only go to the proxy (the recorder)
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE ::1",
)
#: what the dashboard's tests reach directly (their collector); everything else goes to the recorder
LOOPBACK = "127.0.0.1,[::1],localhost"


def find_chromium() -> str | None:
    """The Chromium binary to use, or None when there is none (callers skip with ``INSTALL_HINT``)."""
    override = os.environ.get("NETCHECK_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def file_url(path: Path) -> str:
    return path.resolve().as_uri()


@dataclass(frozen=True)
class Run:
    """One page load: its DOM, what reached the loopback recorder meanwhile, and what the page asked for."""

    dom: str
    proxied: tuple[str, ...]  # request lines that reached the recorder during the load
    page_requests: tuple[str, ...]  # URLs the page itself requested (not the page's own URL)


class Browser:
    """Chromium under Playwright; a context manager. ``new_page`` gives a fresh context's page whose
    ``requests_seen`` lists every URL it requested."""

    def __init__(self, binary: str, *, direct_loopback: bool = False, timeout_s: float = 60.0) -> None:
        self.binary = binary
        self.direct_loopback = direct_loopback
        self.timeout_ms = timeout_s * 1000
        self.recorder = RequestRecorder()
        self._pw: Any = None
        self._browser: Any = None

    def __enter__(self) -> Browser:
        from playwright.sync_api import sync_playwright

        self.recorder.__enter__()
        proxy = {"server": f"http://127.0.0.1:{self.recorder.port}",
                 "bypass": LOOPBACK if self.direct_loopback else "<-loopback>"}
        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(executable_path=self.binary, args=list(BASE_ARGS),
                                                     proxy=proxy, timeout=self.timeout_ms)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._pw is not None:
            self._pw.stop()
        self.recorder.__exit__()

    def new_page(self, width: int = 1280, height: int = 900, *, ignore_https_errors: bool = False) -> Any:
        """``ignore_https_errors``: accept a loopback server's test certificate (an identity provider's)."""
        context = self._browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True,
                                            ignore_https_errors=ignore_https_errors)
        context.set_default_timeout(self.timeout_ms)
        page = context.new_page()
        page.requests_seen = []
        page.on("request", lambda r: page.requests_seen.append(r.url))
        return page

    def load(self, url: str, width: int = 1280, height: int = 900) -> Run:
        """Load ``url`` and let it settle: its DOM and the requests it made."""
        page = self.new_page(width, height)
        before = len(self.recorder.requests)
        try:
            page.goto(url, wait_until="load")
            page.wait_for_load_state("networkidle")
            dom = page.content()
        finally:
            page.context.close()
        asked = tuple(u for u in page.requests_seen if u != url)
        return Run(dom, tuple(self.recorder.requests[before:]), asked)

    def screenshot(self, url: str, *, width: int = 1280, height: int = 900) -> bytes:
        """A ``width`` x ``height`` PNG screenshot of ``url``."""
        page = self.new_page(width, height)
        try:
            page.goto(url, wait_until="load")
            data: bytes = page.screenshot(type="png")
        finally:
            page.context.close()
        return data


# --- keeping Chromium off the network ----------------------------------------------------------------------------


class RequestRecorder:
    """A loopback HTTP proxy that answers every request with 403 and remembers its request line.

    ``Browser`` makes Chromium send every http/https/ws request it
    makes here (including to IP literals, and CONNECT for https) and resolves no names itself.
    """

    def __init__(self) -> None:
        self.requests: list[str] = []
        lock = threading.Lock()
        requests = self.requests

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline(8192).decode("latin-1").strip()
                while self.rfile.readline(8192).strip():
                    pass
                if line:
                    with lock:
                        requests.append(line)
                self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            address_family = socket.AF_INET

        self._serving = ServedInThread(Server(("127.0.0.1", 0), Handler), "request-recorder")
        self.port: int = self._serving.server.server_address[1]

    def __enter__(self) -> RequestRecorder:
        self._serving.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._serving.stop()



# --- reading PNG screenshots without Pillow --------------------------------------------------------------------


@dataclass(frozen=True)
class Png:
    width: int
    height: int
    channels: int  # 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
    rows: tuple[bytes, ...]  # unfiltered scanlines, ``channels`` bytes per pixel

    def pixels(self, step: int = 1) -> Iterator[tuple[int, ...]]:
        """Every ``step``-th pixel of every ``step``-th row, as a tuple of channel values."""
        c = self.channels
        for row in self.rows[::step]:
            for x in range(0, self.width, step):
                yield tuple(row[x * c:(x + 1) * c])

    def colours(self, step: int = 1) -> set[tuple[int, ...]]:
        return set(self.pixels(step))


_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def read_png(data: bytes, max_rows: int | None = None) -> Png:
    """Decode an 8-bit, non-interlaced PNG (what Chromium writes); ``max_rows`` stops early."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, bytearray(), None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, colour_type, _, _, interlace = header
    if depth != 8 or interlace or colour_type not in _CHANNELS:
        raise ValueError(f"unsupported PNG: depth {depth}, colour type {colour_type}, interlace {interlace}")
    channels = _CHANNELS[colour_type]
    stride = width * channels
    wanted = height if max_rows is None else min(height, max_rows)
    inflater = zlib.decompressobj()
    raw = inflater.decompress(bytes(idat), wanted * (stride + 1))
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(wanted):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        if len(line) != stride + 1:
            raise ValueError("truncated PNG data")
        previous = _unfilter(line[0], line[1:], previous, channels)
        rows.append(previous)
    return Png(width, height, channels, tuple(rows))


def _unfilter(kind: int, line: bytes, up: bytes, bpp: int) -> bytes:
    if kind == 0:
        return bytes(line)
    out = bytearray(line)
    n = len(out)
    if kind == 1:
        for i in range(bpp, n):
            out[i] = (out[i] + out[i - bpp]) & 0xFF
    elif kind == 2:
        for i in range(n):
            out[i] = (out[i] + up[i]) & 0xFF
    elif kind == 3:
        for i in range(n):
            left = out[i - bpp] if i >= bpp else 0
            out[i] = (out[i] + ((left + up[i]) >> 1)) & 0xFF
    elif kind == 4:
        for i in range(n):
            a = out[i - bpp] if i >= bpp else 0
            b = up[i]
            c = up[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            out[i] = (out[i] + pred) & 0xFF
    else:
        raise ValueError(f"bad PNG filter type {kind}")
    return bytes(out)
