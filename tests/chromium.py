"""Run Debian's headless Chromium from tests: dump a page's DOM, take a screenshot, read the PNG.

Generic (nothing about netcheck's report here), so the collector dashboard's
tests can reuse it. Every run gets a fresh profile directory, and every request
Chromium makes goes to a loopback recorder (``RequestRecorder``), so no packet
leaves the machine; Chromium's NetLog tells which requests the page itself made,
so a test can prove that a page loads nothing. The PNG reader uses only the
standard library (zlib), no Pillow.

    binary = find_chromium()              # None: skip the test, citing INSTALL_HINT
    run = Chromium(binary).load(file_url(page))       # run.dom, run.page_requests
    png = read_png(Chromium(binary).screenshot(file_url(page), out, width=1280, height=900))
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Looked up in this order on PATH; ``NETCHECK_CHROMIUM`` overrides.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
INSTALL_HINT = "install Debian's chromium: apt-get install -y --no-install-recommends chromium"

#: Flags that work as root in a container: no sandbox, no GPU, no first-run or background traffic.
BASE_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check", "--mute-audio",
    "--hide-scrollbars", "--force-device-scale-factor=1",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate",
)


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


class ChromiumError(RuntimeError):
    """Chromium failed or timed out; the message carries the tail of its stderr."""


@dataclass(frozen=True)
class Run:
    """One Chromium run: its output, what reached the loopback proxy, and what the page asked for."""

    stdout: bytes
    proxied: tuple[str, ...]  # request lines of every request Chromium made (all went to the loopback proxy)
    page_requests: tuple[str, ...]  # URLs requested by the page itself (from Chromium's NetLog)

    @property
    def dom(self) -> str:
        return self.stdout.decode("utf-8", "replace")


@dataclass
class Chromium:
    """Headless Chromium, offline by construction.

    Every run gets a fresh profile and sends all its traffic to a ``RequestRecorder`` on
    loopback (``offline_args``), including Chromium's own background requests, which
    survive every switch (component updates, account checks): no packet leaves the
    machine. A NetLog tells the page's own requests apart from Chromium's.
    """

    binary: str
    timeout_s: float = 90.0
    extra_args: Sequence[str] = field(default_factory=tuple)

    def run(self, *args: str) -> Run:
        """Run Chromium once; kill its whole process group on timeout."""
        with tempfile.TemporaryDirectory(prefix="netcheck-chromium-") as profile, RequestRecorder() as recorder:
            net_log = Path(profile) / "netlog.json"
            env = {**os.environ, "HOME": profile, "XDG_CONFIG_HOME": profile, "XDG_CACHE_HOME": profile}
            cmd = [self.binary, *BASE_ARGS, f"--user-data-dir={profile}", *offline_args(recorder.port),
                   f"--log-net-log={net_log}", *self.extra_args, *args]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                    start_new_session=True)
            try:
                out, err = proc.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
                raise ChromiumError(f"chromium timed out after {self.timeout_s:g} s: {_tail(err)}") from None
            finally:
                _reap_group(proc.pid)
            if proc.returncode != 0:
                raise ChromiumError(f"chromium exited with {proc.returncode}: {_tail(err)}")
            return Run(out, tuple(recorder.requests), page_requests(net_log))

    def dump_dom(self, url: str) -> str:
        """The DOM after loading ``url``, serialised (``--dump-dom``)."""
        return self.load(url).dom

    def load(self, url: str) -> Run:
        """Load ``url``: the DOM (``Run.dom``) and the requests the page made (``Run.page_requests``)."""
        return self.run("--dump-dom", url)

    def screenshot(self, url: str, png: Path, *, width: int = 1280, height: int = 900) -> bytes:
        """A ``width`` x ``height`` screenshot of ``url`` written to ``png``; returns the PNG bytes."""
        if png.exists():
            png.unlink()
        self.run(f"--screenshot={png}", f"--window-size={width},{height}", url)
        if not png.exists():
            raise ChromiumError(f"chromium wrote no screenshot to {png}")
        return png.read_bytes()


def _tail(err: bytes, lines: int = 5) -> str:
    useful = [ln for ln in err.decode("utf-8", "replace").splitlines() if "dbus" not in ln and ln.strip()]
    return " | ".join(useful[-lines:]) or "(no output)"


def _reap_group(pgid: int) -> None:
    """Chromium's helper processes share its process group; end any left behind (ours only)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def page_requests(net_log: Path) -> tuple[str, ...]:
    """URLs that a page (not the browser itself) asked the network stack for, from a NetLog file.

    A page's request carries its origin as ``initiator`` (``"null"`` for a file:// page);
    Chromium's own service requests have ``"not an origin"`` or none.
    """
    try:
        log = json.loads(net_log.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        raise ChromiumError(f"cannot read Chromium's NetLog {net_log}: {exc}") from exc
    start_job = log.get("constants", {}).get("logEventTypes", {}).get("URL_REQUEST_START_JOB")
    urls = []
    for event in log.get("events", []):
        params = event.get("params") or {}
        by_page = params.get("initiator") not in (None, "not an origin")
        if event.get("type") == start_job and "url" in params and by_page:
            urls.append(str(params["url"]))
    return tuple(urls)


# --- keeping Chromium off the network ----------------------------------------------------------------------------


class RequestRecorder:
    """A loopback HTTP proxy that answers every request with 403 and remembers its request line.

    Chromium started with ``offline_args(recorder.port)`` sends every http/https/ws request it
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

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="request-recorder", daemon=True)

    def __enter__(self) -> RequestRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def offline_args(proxy_port: int) -> tuple[str, ...]:
    """Send every request to the loopback proxy and resolve no names: nothing leaves the machine."""
    return (f"--proxy-server=http://127.0.0.1:{proxy_port}", "--proxy-bypass-list=<-loopback>",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")


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


def write_png(png: Png, rows: int | None = None) -> bytes:
    """Encode ``png`` (optionally only its first ``rows`` rows) as a PNG, e.g. to crop a screenshot."""
    keep = png.rows[: rows or len(png.rows)]
    colour_type = {v: k for k, v in _CHANNELS.items()}[png.channels]

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", png.width, len(keep), 8, colour_type, 0, 0, 0)
    body = zlib.compress(b"".join(b"\x00" + r for r in keep), 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def content_height(png: Png) -> int:
    """Rows down to the last one that differs from the bottom row (the page's trailing background)."""
    bottom = png.rows[-1]
    for y in range(len(png.rows) - 1, -1, -1):
        if png.rows[y] != bottom:
            return y + 1
    return len(png.rows)
