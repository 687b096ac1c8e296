"""PAC files: fetch one under a deadline, and evaluate ``FindProxyForURL(url, host)``.

Evaluation uses pypac's implementations of the PAC helper functions
(``shExpMatch``, ``dnsDomainIs``, ``weekdayRange``, Microsoft's ``*Ex`` IPv6
extensions, ...) on dukpy's embedded JavaScript engine. It runs in a child
Python process, so a hostile or broken PAC (an endless loop) cannot hang the
check: each URL has its own time limit, and a child that overruns it is killed
and replaced for the remaining URLs.

Two things can be pinned for "as if from elsewhere" evaluation:

- ``my_ip``: what ``myIpAddress()``/``myIpAddressEx()`` return (e.g. a home address,
  to predict what the PAC does away from the office);
- ``resolve``: the answers ``dnsResolve()``/``isResolvable()``/``isInNet()`` see; names
  missing from it do not resolve, and nothing is looked up.

Without ``resolve`` the child uses the system resolver, as a browser would.
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from netcheck.deadline import Deadline
from netcheck.errors import ConfigError, NetcheckError
from netcheck.files import read_user_text
from netcheck.models import Outcome
from netcheck.names import url_host

#: PAC files larger than this are refused (a PAC is normally a few kB).
MAX_PAC_BYTES = 2_000_000
#: Time for one ``FindProxyForURL`` call before the PAC is judged hung.
PER_URL_TIMEOUT = 2.0
#: Time for the child to start and load the PAC.
LOAD_TIMEOUT = 10.0
_MAX_RESTARTS = 3


class PacError(NetcheckError):
    """A PAC file that cannot be evaluated (syntax error, hangs, no FindProxyForURL)."""


# --- fetching -------------------------------------------------------------------------

@dataclass(frozen=True)
class PacFetch:
    """The outcome of fetching a PAC file, and where it is hosted."""

    url: str
    outcome: Outcome
    text: str | None = None
    status: int | None = None
    #: Host name in the URL, and the address it resolved to / was fetched from.
    host: str | None = None
    address: str | None = None
    content_type: str | None = None
    size: int = 0
    elapsed_ms: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def looks_like_pac(self) -> bool:
        return bool(self.text and "FindProxyForURL" in self.text)

    @property
    def timed_out(self) -> bool:
        """The fetch ran out of time before the server answered: the PAC file was not read, which is no
        evidence that it is gone (:attr:`Outcome.ran_out`)."""
        return self.outcome.ran_out


def _resolve_host(host: str, timeout: float) -> tuple[str | None, Outcome | None, str | None]:
    """First address of ``host`` within ``timeout`` (getaddrinfo runs in a thread)."""
    addresses, outcome, why = resolve_within(host, timeout)
    return (addresses[0] if addresses else None), outcome, why


def resolve_within(host: str, timeout: float) -> tuple[list[str], Outcome | None, str | None]:
    """The OS's addresses for ``host`` (the first of each family), as applications get them,
    within ``timeout`` seconds: ``(addresses, failure outcome or None, why)``.

    getaddrinfo cannot be interrupted, so it runs in a daemon thread that is left
    behind when it overruns; a name that is not a host name is refused without a lookup.
    """
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))], None, None
    except ValueError:
        pass
    from netcheck.names import ascii_host

    name = ascii_host(host)
    if name is None:
        return [], Outcome.ERROR, f"{host[:80]!r} is not a host name"
    if timeout <= 0:
        return [], Outcome.TIMEOUT, f"no time left to resolve {name}"
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["infos"] = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            box["error"] = exc

    t = threading.Thread(target=work, name="resolve", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return [], Outcome.DNS_TIMEOUT, f"resolving {name} took too long"
    if "error" in box:
        outcome, why = resolve_failure(name, box["error"])
        return [], outcome, why
    seen: dict[int, str] = {}
    for family, _, _, _, sockaddr in box.get("infos") or []:
        seen.setdefault(int(family), str(sockaddr[0]))
    return list(seen.values()), None, None


def resolve_failure(host: str, exc: BaseException) -> tuple[Outcome, str]:
    """What a getaddrinfo error means for a PAC host."""
    if isinstance(exc, socket.gaierror) and exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
        return Outcome.NXDOMAIN, f"{host} does not resolve"
    if isinstance(exc, socket.gaierror):
        return Outcome.NO_RESOLVER, f"resolving {host} failed: {exc}"
    return Outcome.ERROR, f"resolving {host} failed: {exc}"


def _connect_outcome(exc: BaseException) -> tuple[Outcome, str]:
    import errno

    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return Outcome.CONNECT_REFUSED, "connection refused"
        if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return Outcome.NETWORK_UNREACHABLE, cause.strerror or "network unreachable"
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if "refused" in low:
        return Outcome.CONNECT_REFUSED, "connection refused"
    if "unreachable" in low:
        return Outcome.NETWORK_UNREACHABLE, text
    return Outcome.ERROR, text


def fetch_pac(url: str, deadline: Deadline, *, max_bytes: int = MAX_PAC_BYTES,
              transport: Any = None) -> PacFetch:
    """Fetch ``url`` directly (never through a proxy), within ``deadline``.

    An ``https`` PAC URL is verified against the machine's trust store (honouring
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), as the OS's own PAC fetcher does: a PAC file
    served with the organisation's certificate is fetched, not reported unreachable.
    Network failures are outcomes, never exceptions. ``transport`` is an
    ``httpx`` transport for tests.
    """
    started = time.monotonic()

    def ms() -> float:
        return round((time.monotonic() - started) * 1000, 1)

    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "file":
        path = unquote(parts.path)
        if parts.netloc and len(parts.netloc) == 2 and parts.netloc[1] == ":":
            path = parts.netloc + path
        try:
            text = read_user_text(path, limit=max_bytes, what="the PAC file")
        except ConfigError as exc:
            return PacFetch(url, Outcome.ERROR, error=str(exc))
        return PacFetch(url, Outcome.OK, text=text, size=len(text.encode("utf-8")), elapsed_ms=ms())
    if scheme not in ("http", "https") or not parts.hostname:
        return PacFetch(url, Outcome.ERROR, error="not an http(s) or file URL")
    host = parts.hostname
    if deadline.expired:
        return PacFetch(url, Outcome.TIMEOUT, host=host, error="no time left to fetch the PAC")
    address, failure, why = _resolve_host(host, deadline.step(5.0))
    if failure is not None:
        return PacFetch(url, failure, host=host, error=why, elapsed_ms=ms())

    import httpx

    timeout = httpx.Timeout(deadline.step(10.0), connect=deadline.step(5.0))
    cutter = _Cutter(deadline)
    # verified against the machine's store (honours SSL_CERT_FILE / SSL_CERT_DIR), as the OS and browsers fetch
    # a PAC file: not only the public roots, so an HTTPS PAC file on an enterprise-issued certificate loads
    machine = ssl.create_default_context()
    try:
        with cutter, httpx.Client(trust_env=False, verify=machine, timeout=timeout, follow_redirects=True,
                                  transport=transport) as client, \
                client.stream("GET", url, extensions={"trace": cutter.trace}) as resp:
            stream = resp.extensions.get("network_stream")
            peer = stream.get_extra_info("server_addr") if stream is not None else None
            if isinstance(peer, tuple) and peer:
                address = str(peer[0])
            body = bytearray()
            for chunk in resp.iter_bytes():
                body.extend(chunk)
                if deadline.expired:
                    raise httpx.ReadTimeout("the deadline passed")
                if len(body) > max_bytes:
                    return PacFetch(url, Outcome.ERROR, status=resp.status_code, host=host,
                                    address=address, size=len(body), elapsed_ms=ms(),
                                    error=f"larger than {max_bytes} bytes")
            ctype = resp.headers.get("content-type")
            if resp.status_code != 200:
                return PacFetch(url, Outcome.HTTP_STATUS, status=resp.status_code, host=host,
                                address=address, content_type=ctype, size=len(body), elapsed_ms=ms(),
                                error=f"HTTP {resp.status_code} {resp.reason_phrase}".strip())
            text = bytes(body).decode(resp.charset_encoding or "utf-8", "replace")
            return PacFetch(url, Outcome.OK, text=text, status=200, host=host, address=address,
                            content_type=ctype, size=len(body), elapsed_ms=ms())
    except httpx.HTTPError as exc:
        if isinstance(exc, httpx.ConnectTimeout):
            outcome, why = Outcome.CONNECT_TIMEOUT, "connecting timed out"
        elif cutter.fired or isinstance(exc, httpx.TimeoutException):
            outcome, why = Outcome.TIMEOUT, "the server did not send the PAC before the deadline"
        elif isinstance(exc, httpx.ConnectError):
            outcome, why = _connect_outcome(exc)
        else:
            outcome, why = Outcome.HTTP_NO_RESPONSE, str(exc) or type(exc).__name__
        return PacFetch(url, outcome, host=host, address=address, elapsed_ms=ms(), error=why)

class _Cutter:
    """Shuts a download's connections when ``deadline`` passes.

    httpx's read timeout holds per read, so a server trickling one byte a second
    would keep a download going for ever; this bounds the whole exchange. The
    sockets are learnt from httpx's "trace" extension as each connection opens.
    """

    def __init__(self, deadline: Deadline) -> None:
        self._deadline = deadline
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.fired = False

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with self._lock:
                self._sockets.append(sock)
                late = self.fired
            if late:
                self._cut()

    def _cut(self) -> None:
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed

    def __enter__(self) -> _Cutter:
        self._timer = threading.Timer(self._deadline.remaining(), self._cut)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()


def discover_wpad(candidates: Iterable[str], deadline: Deadline) -> tuple[PacFetch, ...]:
    """Try DNS WPAD URLs in order (see :func:`netcheck.proxy.settings.wpad_urls`); stop at the
    first that serves a PAC. Every attempt is returned, the hit last."""
    tried: list[PacFetch] = []
    for url in candidates:
        if deadline.expired:
            break
        got = fetch_pac(url, deadline)
        tried.append(got)
        if got.ok and got.looks_like_pac:
            break
    return tuple(tried)


# --- evaluating -------------------------------------------------------------------------

@dataclass(frozen=True)
class PacDecision:
    """What ``FindProxyForURL`` said for one URL."""

    url: str
    proxies: tuple[str, ...]  # ("PROXY 10.0.0.5:3128", "DIRECT")
    raw: str | None = None
    error: str | None = None

    @property
    def direct(self) -> bool:
        """DIRECT is the first choice."""
        return bool(self.proxies) and self.proxies[0] == "DIRECT"


def split_result(raw: str) -> tuple[str, ...]:
    """``"PROXY a:1; DIRECT"`` -> ``("PROXY a:1", "DIRECT")`` (keywords upper-cased)."""
    out: list[str] = []
    for part in raw.split(";"):
        words = part.split()
        if not words:
            continue
        out.append(" ".join([words[0].upper(), *words[1:]]))
    return tuple(out)


def evaluate_each(pac_text: str, urls: Sequence[str], my_ip: str | None = None,
                  resolve: Mapping[str, str | Sequence[str]] | None = None, *,
                  per_url_timeout: float = PER_URL_TIMEOUT, load_timeout: float = LOAD_TIMEOUT,
                  deadline: Deadline | None = None) -> dict[str, PacDecision]:
    """Evaluate ``FindProxyForURL`` for every URL; per-URL failures are in the decisions.

    Raises :class:`PacError` when the PAC cannot be loaded at all.
    """
    request: dict[str, Any] = {"pac": pac_text, "my_ip": my_ip,
                               "resolve": _norm_resolve(resolve) if resolve is not None else None}
    todo = list(dict.fromkeys(urls))
    out: dict[str, PacDecision] = {}
    restarts = 0
    while todo:
        if restarts > _MAX_RESTARTS or (deadline is not None and deadline.expired):
            why = "not evaluated: the PAC kept hanging" if restarts > _MAX_RESTARTS \
                else "not evaluated: no time left"
            out.update({u: PacDecision(u, (), error=why) for u in todo})
            break
        done, hung = _run_child({**request, "urls": todo}, per_url_timeout, load_timeout, deadline)
        out.update(done)
        todo = [u for u in todo if u not in out]
        if hung is not None and hung in todo:
            out[hung] = PacDecision(hung, (), error=f"FindProxyForURL did not return within "
                                                    f"{per_url_timeout:g} s (an endless loop?)")
            todo.remove(hung)
        restarts += 1
    return {u: out[u] for u in dict.fromkeys(urls)}


def evaluate(pac_text: str, urls: Sequence[str], my_ip: str | None = None,
             resolve: Mapping[str, str | Sequence[str]] | None = None, *,
             per_url_timeout: float = PER_URL_TIMEOUT, load_timeout: float = LOAD_TIMEOUT,
             deadline: Deadline | None = None) -> dict[str, list[str]]:
    """``{url: ["PROXY 10.0.0.5:3128", "DIRECT"], ...}``; :class:`PacError` on any failure."""
    decisions = evaluate_each(pac_text, urls, my_ip, resolve, per_url_timeout=per_url_timeout,
                              load_timeout=load_timeout, deadline=deadline)
    for d in decisions.values():
        if d.error:
            raise PacError(f"PAC evaluation failed for {d.url}: {d.error}")
    return {u: list(d.proxies) for u, d in decisions.items()}


def _norm_resolve(resolve: Mapping[str, str | Sequence[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in resolve.items():
        values = [value] if isinstance(value, str) else list(value)
        out[name.lower().rstrip(".")] = [str(v) for v in values]
    return out


def _child_env() -> dict[str, str]:
    """A minimal environment: the PAC's JavaScript can read process.env.

    The temporary directory stays: a frozen one-file build unpacks itself there (on Windows,
    without TEMP, into the Windows directory, which a standard user cannot write).
    """
    keep = ("PATH", "SYSTEMROOT", "PYTHONPATH", "PYTHONHOME", "COVERAGE_PROCESS_START", "TMPDIR", "TEMP", "TMP")
    return {k: os.environ[k] for k in keep if k in os.environ}


#: The argument that makes a frozen netcheck executable the PAC child (netcheck/__main__.py).
CHILD_ARG = "--pac-sandbox-child"


def child_argv() -> list[str]:
    """How to start the child: this module under the same Python, or the frozen executable itself.

    A frozen build (PyInstaller) has no ``-m``: its ``sys.executable`` is netcheck, whose entry
    point turns into the child when given ``CHILD_ARG`` alone.
    """
    if getattr(sys, "frozen", False):
        return [sys.executable, CHILD_ARG]
    return [sys.executable, "-m", "netcheck.proxy.pac"]


def _run_child(request: Mapping[str, Any], per_url_timeout: float, load_timeout: float,
               deadline: Deadline | None) -> tuple[dict[str, PacDecision], str | None]:
    """One child run: (decisions it produced, the URL it hung on or None)."""
    try:
        proc = subprocess.Popen(
            child_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=_child_env(),
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))  # where `netcheck` imports from
    except OSError as exc:  # the interpreter cannot be started (permissions, resources): not a crash
        raise PacError(f"the PAC evaluator cannot start: {exc.strerror or exc}") from exc
    lines: queue.Queue[str | None] = queue.Queue()

    def reader(stream: IO[bytes]) -> None:
        for raw in stream:
            lines.put(raw.decode("utf-8", "replace"))
        lines.put(None)

    assert proc.stdin is not None and proc.stdout is not None
    t = threading.Thread(target=reader, args=(proc.stdout,), name="pac-reader", daemon=True)
    t.start()
    out: dict[str, PacDecision] = {}
    urls: list[str] = list(request["urls"])
    try:
        try:
            proc.stdin.write(json.dumps(request).encode("utf-8"))
            proc.stdin.close()
        except OSError:
            pass

        def wait(limit: float) -> str | None | bool:
            if deadline is not None:
                limit = min(limit, deadline.remaining())
            try:
                return lines.get(timeout=max(0.0, limit))
            except queue.Empty:
                return False

        first = wait(load_timeout + per_url_timeout)
        if first is False:
            raise PacError(f"the PAC file did not load within {load_timeout + per_url_timeout:g} s "
                           f"(an endless loop at the top level?)")
        if first is None or not isinstance(first, str):
            raise PacError("the PAC evaluator stopped unexpectedly")
        msg = json.loads(first)
        if "fatal" in msg:
            raise PacError(str(msg["fatal"]))
        for url in urls:
            line = wait(per_url_timeout)
            if line is False:
                return out, url
            if line is None or not isinstance(line, str):
                return out, url
            msg = json.loads(line)
            if msg.get("error") is not None:
                out[url] = PacDecision(url, (), error=str(msg["error"]))
            else:
                raw = str(msg.get("result"))
                out[url] = PacDecision(url, split_result(raw), raw=raw)
        return out, None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        t.join(1.0)
        proc.stdout.close()


# --- the child side ---------------------------------------------------------------------

def _pac_functions(my_ip: str | None, resolve: Mapping[str, list[str]] | None
                   ) -> dict[str, Callable[..., Any]]:
    """pypac's PAC helpers, with name resolution and myIpAddress made pinnable."""
    # pypac and dukpy ship no type information (pyproject could list them under ignore_missing_imports)
    from pypac.parser_functions import function_injections as base
    from pypac.parser_functions_ex import function_injections as ex

    funcs: dict[str, Callable[..., Any]] = {**base, **ex}

    def lookup(host: Any) -> list[str]:
        name = str(host or "").strip().lower().rstrip(".")
        if not name:
            return []
        try:
            return [str(ipaddress.ip_address(name.strip("[]")))]
        except ValueError:
            pass
        if resolve is not None:
            return list(resolve.get(name, []))
        try:
            return [str(i[4][0]) for i in socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)]
        except OSError:
            return []

    def dns_resolve(host: Any) -> str:
        v4 = [a for a in lookup(host) if ":" not in a]
        return v4[0] if v4 else ""

    def dns_resolve_ex(host: Any) -> str:
        return ";".join(dict.fromkeys(lookup(host)))

    def is_in_net(host: Any, pattern: Any, mask: Any) -> bool:
        addr = dns_resolve(host)
        try:
            net = ipaddress.IPv4Network(f"{pattern}/{mask}", strict=False)
            return bool(addr) and ipaddress.IPv4Address(addr) in net
        except ValueError:
            return False

    def is_in_net_ex(host: Any, prefix: Any) -> bool:
        try:
            net = ipaddress.ip_network(str(prefix), strict=False)
        except ValueError:
            return False
        for a in lookup(host):
            try:
                if ipaddress.ip_address(a) in net:
                    return True
            except ValueError:
                continue
        return False

    funcs.update({
        "dnsResolve": dns_resolve, "dnsResolveEx": dns_resolve_ex,
        "isResolvable": lambda h: bool(dns_resolve(h)), "isResolvableEx": lambda h: bool(lookup(h)),
        "isInNet": is_in_net, "isInNetEx": is_in_net_ex, "alert": lambda *_a: None,
    })
    if my_ip is not None:
        funcs["myIpAddress"] = lambda: my_ip
        funcs["myIpAddressEx"] = lambda: my_ip
    return funcs


def _js_error(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def serve(stdin: IO[str], stdout: IO[str], clear_environ: bool = True) -> int:
    """The child: read one request, print one JSON line when loaded, then one per URL.

    ``clear_environ`` empties this process's environment first, because the PAC's
    JavaScript can read it (``process.env``); the child also starts with a minimal one.
    """
    def say(obj: Mapping[str, Any]) -> None:
        stdout.write(json.dumps(obj) + "\n")
        stdout.flush()

    try:
        request = json.loads(stdin.read())
        from dukpy import JSInterpreter
    except (ValueError, ImportError) as exc:
        say({"fatal": f"the PAC evaluator cannot start: {exc}"})
        return 0
    if clear_environ:
        os.environ.clear()
    ctx = JSInterpreter()
    resolve = request.get("resolve")
    for name, fn in _pac_functions(request.get("my_ip"), resolve).items():
        ctx.export_function(name, fn)
        ctx.evaljs(f"{name} = function() {{ var a = Array.prototype.slice.call(arguments); "
                   f"a.unshift('{name}'); return call_python.apply(null, a); }}; void 0;")
    try:
        ctx.evaljs(str(request.get("pac", "")) + "\n;void 0;")
        entry = ctx.evaljs("typeof FindProxyForURL === 'function' ? 'FindProxyForURL' : "
                           "(typeof FindProxyForURLEx === 'function' ? 'FindProxyForURLEx' : '')")
    except Exception as exc:  # dukpy raises JSRuntimeError for syntax and runtime errors
        say({"fatal": f"the PAC file does not load: {_js_error(exc)}"})
        return 0
    if not entry:
        say({"fatal": "the PAC file defines no FindProxyForURL function"})
        return 0
    say({"ready": True, "entry": entry})
    for url in request.get("urls", []):
        try:
            result = ctx.evaljs(f"{entry}(dukpy.url, dukpy.host)", url=url, host=url_host(url) or "")
        except Exception as exc:  # a JavaScript error inside FindProxyForURL
            say({"url": url, "error": _js_error(exc)})
            continue
        if not isinstance(result, str):
            say({"url": url, "error": f"FindProxyForURL returned {json.dumps(result)}, not a string"})
        else:
            say({"url": url, "result": result})
    return 0


if __name__ == "__main__":  # pragma: no cover - the child entry point, exercised through evaluate()
    raise SystemExit(serve(sys.stdin, sys.stdout))
