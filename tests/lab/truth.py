"""Ground truth: does each workload work from the laptop right now?

Measured only with tools that share no code with netcheck: ``curl`` (with
the laptop's proxy environment, or the proxy its PAC file picks, evaluated
by Debian's pacparser), ``kdig``, a small independent STUN client, and, when
the PAC file cannot be fetched, a real PAC client: Debian's headless Chromium
(``tools/pacbrowser.py``), whose own choice (DIRECT, or fail closed under the
managed policy ``ProxyPacMandatory``) is the truth.
Everything runs inside the laptop's namespace as the laptop's unprivileged
user, with its routes, its resolv.conf and its trust store.

Per workload (see docs/lab.md for the exact rules):

* HTTPS workloads: each URL must return a response *from the lab server*
  (``X-Lab-Server`` header; a proxy's error page does not count).  The URLs
  are the workload's key hosts and one host of each other endpoint category
  it has (``http_urls``).  A key URL fails -> fails; only others fail ->
  degraded; all good -> works.  Sign-in's key steps are realm discovery, then
  AD FS when federated.
* teams_media: STUN Binding to the relay on UDP 3478 (every address the
  relay has; an address with no route is an outcome, not a crash).  A reply
  within Microsoft's media targets (loss <= 1 %, RTT <= 100 ms, jitter
  <= 30 ms) on some address -> works; replies outside them -> degraded; no
  reply -> fails.

A truth tool that fails (crashes, prints no result) gives the truth
``lab-error``: a lab problem that fails the run, never "fails".
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import statistics
import tomllib
import urllib.parse
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import addressing as A
from .netns import LabError
from .world import CHROMIUM_POLICY_FILE, REPO_ROOT, SYSTEM_PYTHON, World

CURL_TIMEOUT = 10
#: Microsoft's thresholds, from the one place they live (the lab reads the file, never imports netcheck).
POLICY = tomllib.loads((REPO_ROOT / "endpoints" / "policy.toml").read_text())
MEDIA_LIMITS = {
    "loss_pct": float(POLICY["teams_media"]["loss_pct"]),
    "rtt_ms_median": float(POLICY["teams_media"]["rtt_ms"]),
    "jitter_ms": float(POLICY["teams_media"]["jitter_ms"]),
}
#: The workloads, their key hosts and how endpoint sets map to them (read, never netcheck's code).
WORKLOADS = tomllib.loads((REPO_ROOT / "endpoints" / "workloads.toml").read_text())
#: The page the truth loads on a workload's key host, where it is not the root.
KEY_PAGES = {"exchange": "owa/", "identity": "common/userrealm/{user}?api-version=1.0"}
#: curl's remote_ip when it talked to the site's proxy.
PROXY_ADDRESSES = {A.CORP_PROXY_V4, A.CORP_PROXY_V6, A.DC_PROXY_V4, A.DC_PROXY_V6, A.CLOUD_PROXY_V4, A.CLOUD_PROXY_V6}
#: TCP connect samples per HTTPS URL that answered (fresh connections, on the family the GET used). Five: on a
#: lossy link (1.5 % each way) a lost SYN (1 s retransmit) on two of three samples made the median.
CONNECT_SAMPLES = 5
#: STUN requests per relay address, STUN_INTERVAL_S apart. The truth judges loss by its share of these
#: against Microsoft's 1 % mark, so the sample must tell a lossy link from a clean one beyond doubt: on the
#: lab's lossy home link (1.5 % each way, about 3 % for a request and its answer) 1,000 requests lose 10 or
#: fewer (1 %) about once in 100,000; 400 lost 4 or fewer about once in 120, and with two addresses (the
#: truth takes the better one, as a client would) a run of the generated subset read a lossy link as clean
#: (2026-12-07). 100 did one time in five, and 20 read one loss on a clean link as 5 %.
STUN_REQUESTS = 1000
#: 2 ms: the 1,000 requests take 2 s per address; 500 small packets a second is still far below what any
#: lab link is shaped to. Round trip and jitter are judged on every STUN_EVERY-th request, at Teams'
#: packet spacing (policy.toml's stride_ms), so jitter means what netcheck's means.
STUN_INTERVAL_S = 0.002
STUN_EVERY = max(1, round(float(POLICY["teams_media"]["stride_ms"]) / 1000 / STUN_INTERVAL_S))
#: Seconds Chromium may take per URL, PAC decision included: it gives up on a black-holed PAC host after
#: about 30 s (measured), then goes DIRECT or fails closed.
BROWSER_TIMEOUT = 40
#: Chromium's error when the managed policy makes the PAC mandatory and it cannot be fetched.
PAC_MANDATORY_FAILED = "ERR_MANDATORY_PROXY_CONFIGURATION_FAILED"


def slow(workload: str, connect_ms: float) -> str | None:
    """Why a median connect time is too slow for ``workload`` by policy.toml, or None.

    Exchange uses the admin center's network score (points interpolated from
    ``[exchange_score]``); every other workload ``[latency] slow_ms``.
    """
    if workload == "exchange":
        points = [(float(a), float(b)) for a, b in POLICY["exchange_score"]["points"]]
        score = points[0][1] if connect_ms <= points[0][0] else 0.0
        for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
            if x0 < connect_ms <= x1:
                score = y0 + (y1 - y0) * (connect_ms - x0) / (x1 - x0)
        limit = float(POLICY["exchange_score"]["degraded_below"])
        return f"Exchange score {score:.0f} < {limit:.0f} (connect {connect_ms:.0f} ms)" if score < limit else None
    limit = float(POLICY["latency"]["slow_ms"])
    return f"connect {connect_ms:.0f} ms > {limit:.0f} ms" if connect_ms > limit else None


@dataclass
class Check:
    """One probe of one workload."""

    name: str
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)
    degraded: bool = False


#: The truth of a workload whose truth tool itself failed: a lab problem, never "fails".
TOOL_ERROR = "lab-error"


@dataclass
class WorkloadTruth:
    workload: str
    truth: str  # works | degraded | fails | lab-error
    checks: list[Check]

    @property
    def modelled(self) -> bool:
        """The truth rests on the lab's model of a client (see Route.modelled), not on a measurement."""
        return any(c.detail.get("modelled") for c in self.checks)

    @property
    def pac_client(self) -> str:
        """The real PAC client whose behaviour (the PAC file unreachable) this truth rests on, or ""."""
        return next((str(c.detail["pac_client"]) for c in self.checks if c.detail.get("pac_client")), "")

    def to_json(self) -> dict[str, Any]:
        return {
            "truth": self.truth,
            "modelled": self.modelled,
            "pac_client": self.pac_client,
            "checks": [asdict(c) for c in self.checks],
        }


@dataclass
class Route:
    """How a URL is fetched: direct, through a proxy, or not at all."""

    proxies: list[str | None]  # None = DIRECT; tried in order, like a browser
    reason: str = ""
    from_pac: bool = False
    #: The truth tool that chose this route failed (e.g. pacparser crashed): a lab problem.
    tool_error: str = ""
    #: The route is the scenario's model of a client's behaviour, not measured (the PAC file could not be
    #: fetched: what the OS does then is ``proxy.pac_unreachable``). Counted apart (docs/lab.md).
    modelled: str = ""
    #: Measured, not modelled: what Chromium did with this URL when the PAC file could not be fetched
    #: (tools/pacbrowser.py's result). The check is Chromium's own load.
    browser: dict[str, Any] | None = None


def http_urls(world: World) -> dict[str, tuple[list[str], list[str]]]:
    """The HTTPS URLs that stand for each workload: (its key hosts', the others'). The others are one host of
    each endpoint category (Optimize, Allow, Default) the workload has that no key host is in, read from the
    endpoint data (``LabCatalog.workload_hosts``): a key URL that fails fails the workload, another one
    leaves it degraded. Sign-in's key URL is the realm question for the scenario's user."""
    user = urllib.parse.quote(world.scenario.netcheck.user)
    out: dict[str, tuple[list[str], list[str]]] = {}
    for w, hosts in world.catalog.workload_hosts(WORKLOADS).items():
        page = KEY_PAGES.get(w, "").format(user=user)
        out[w] = ([f"https://{h}/{page}" for h in hosts.key], [f"https://{h}/" for h in hosts.other])
    return out


def dns_names(world: World) -> dict[str, str]:
    """The host whose DNS answer is recorded as evidence for each workload."""
    tenant = world.scenario.netcheck.tenant
    return {
        "exchange": "outlook.office365.com",
        "sharepoint": f"{tenant}.sharepoint.com",
        "teams": "teams.microsoft.com",
        "teams_media": A.TEAMS_RELAY_NAME,
        "identity": "login.microsoftonline.com",
        "office": "www.office.com",
    }


def federation_url(host: str) -> str:
    """The federation server's sign-in page that the identity truth loads."""
    return f"https://{host}/adfs/ls/"


def measure(world: World) -> dict[str, WorkloadTruth]:
    """Measure every workload now, in parallel."""
    s = world.scenario
    urls = http_urls(world)
    # the federation page is routed with the rest, so that a PAC client is launched once per phase
    federation = [federation_url(s.identity.federation_host)] if s.identity.mode == "federated" else []
    routes = proxy_routes(world, [*(u for key, other in urls.values() for u in (*key, *other)), *federation])
    with ThreadPoolExecutor(max_workers=12) as pool:
        key = {
            w: [pool.submit(fetch, world, u, routes[u], quality=w) for u in us]
            for w, (us, _) in urls.items()
            if w != "identity"
        }
        other = {w: [pool.submit(fetch, world, u, routes[u], quality=w) for u in us] for w, (_, us) in urls.items()}
        identity = pool.submit(identity_checks, world, urls["identity"][0][0], routes)
        media = pool.submit(stun_check, world)
        dns = {w: pool.submit(dns_check, world, name) for w, name in dns_names(world).items()}
        results = {
            w: WorkloadTruth(w, *http_verdict([f.result() for f in fs], [f.result() for f in other[w]]))
            for w, fs in key.items()
        }
        id_checks = identity.result()
        id_others = [f.result() for f in other["identity"]]
        results["identity"] = WorkloadTruth("identity", *http_verdict(id_checks, id_others))
        media_check = media.result()
        results["teams_media"] = WorkloadTruth("teams_media", _media_truth(media_check), [media_check])
        for w, f in dns.items():  # evidence only: added after the verdicts
            results[w].checks.append(f.result())
    order = ("exchange", "sharepoint", "teams", "teams_media", "identity", "office")
    return {w: results[w] for w in order}


def _tool_error(checks: list[Check]) -> str | None:
    return TOOL_ERROR if any(c.detail.get("tool_error") for c in checks) else None


def http_verdict(key: list[Check], other: list[Check]) -> tuple[str, list[Check]]:
    """A key check that fails fails the workload (sign-in: every step is key); only others failing, or a
    check that passed on an impaired path, leave it degraded."""
    checks = [*key, *other]
    if _tool_error(checks):
        return TOOL_ERROR, checks
    if not all(c.ok for c in key):
        return "fails", checks
    return ("degraded" if not all(c.ok for c in other) or any(c.degraded for c in checks) else "works"), checks


def _media_truth(check: Check) -> str:
    if check.detail.get("tool_error"):
        return TOOL_ERROR
    if not check.ok:
        return "fails"
    return "degraded" if check.degraded else "works"


# ---------------------------------------------------------------------------
# proxy selection, as the laptop's OS would do it


def proxy_routes(world: World, urls: Sequence[str]) -> dict[str, Route]:
    """For each URL, the proxies to try: from the environment, or from the PAC file."""
    s = world.scenario
    if s.proxy.mode != "pac":
        return {u: Route([None], "system proxy settings (environment)") for u in urls}
    pac_path = world.user_home / "tmp" / f"fetched-{secrets.token_hex(4)}.pac"
    fetched = world.laptop_run(
        ["curl", "-sS", "--noproxy", "*", "--max-time", "5", "--fail", "-o", str(pac_path), s.proxy.pac_url],
        timeout=15,
    )
    try:
        modelled = ""
        if fetched.ok:
            source = "PAC fetched now"
        elif s.proxy.pac_unreachable in ("direct", "fail"):  # a real PAC client shows these: measured
            return browser_routes(world, urls)
        else:  # no client here keeps a cached PAC file across a failed fetch: the lab's model
            pac_path.write_text(world.pac_text)
            pac_path.chmod(0o644)
            source = modelled = "PAC unreachable: using the cached copy (modelled: proxy.pac_unreachable)"
        answers = evaluate_pac(world, pac_path, urls)
    finally:
        pac_path.unlink(missing_ok=True)
    return {
        u: Route(
            parse_pac_result(answers.get(u, "DIRECT")),
            f"{source}: {answers.get(u)}",
            from_pac=True,
            tool_error=answers[u] if answers.get(u, "").startswith("ERROR:") else "",
            modelled=modelled,
        )
        for u in urls
    }


def browser_routes(world: World, urls: Sequence[str]) -> dict[str, Route]:
    """What a real PAC client does with each URL when the PAC file cannot be fetched: Debian's headless
    Chromium, launched once with the PAC URL (and, for ``pac_unreachable = "fail"``, the managed policy
    that makes the PAC mandatory, put in place by the World), loads them all."""
    s = world.scenario
    mandatory = s.proxy.pac_unreachable == "fail"
    argv = [world.python, str(world.tool("pacbrowser.py")), "--pac-url", s.proxy.pac_url]
    try:
        res = world.laptop_run([*argv, "--timeout", str(BROWSER_TIMEOUT), *urls], timeout=BROWSER_TIMEOUT + 90)
        data = json.loads(res.stdout)
    except LabError as exc:  # it hung past its own deadline
        data = {"error": str(exc)[-300:]}
    except ValueError:
        data = {"error": (res.stderr or res.stdout).strip()[-300:] or "no output"}
    policy = (data.get("policy") or {}).get(CHROMIUM_POLICY_FILE, {}).get("ProxySettings", {})
    if "error" not in data and mandatory and policy.get("ProxyPacMandatory") is not True:
        data = {"error": f"Chromium's managed policy is not in place (read: {data.get('policy')})"}
    if "error" in data:  # the tool failed: a lab problem, never "fails"
        return {u: Route([], "PAC unreachable: Chromium", tool_error=f"pacbrowser: {data['error']}") for u in urls}
    client = f"chromium {data['browser']}" + (" (ProxyPacMandatory)" if mandatory else "")
    routes = {}
    for u in urls:
        seen = dict(data["results"].get(u) or {"ok": False, "error": "not loaded"}, pac_client=client)
        if seen.get("ok"):
            ip = str(seen.get("remote_ip"))
            proxies: list[str | None] = [f"http://{_host(ip)}:{A.PROXY_PORT}" if ip in PROXY_ADDRESSES else None]
            what = "went through the proxy" if proxies[0] else "went DIRECT"
        elif seen.get("error") == PAC_MANDATORY_FAILED:
            proxies, what = [], "failed closed"
        else:
            proxies, what = [], f"got no answer ({seen.get('error')})"
        reason = f"PAC unreachable: {client} {what} (measured)"
        routes[u] = Route(proxies, reason, from_pac=True, browser=seen)
    return routes


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def evaluate_pac(world: World, pac_path: Path, urls: Sequence[str]) -> dict[str, str]:
    """Run pacparser (system Python) on the laptop for each URL."""
    res = world.laptop_run([SYSTEM_PYTHON, str(world.tool("pacfind.py")), str(pac_path), *urls], timeout=60)
    try:
        data = json.loads(res.stdout)
    except ValueError:
        data = {"error": (res.stderr or res.stdout).strip()[-200:]}
    if not isinstance(data, dict) or "error" in data:
        error = data.get("error") if isinstance(data, dict) else "unexpected output"
        return {u: f"ERROR: {error}" for u in urls}
    return {str(k): str(v) for k, v in data.items()}


def parse_pac_result(result: str) -> list[str | None]:
    """``"PROXY p:3128; DIRECT"`` -> ["http://p:3128", None] (None = DIRECT)."""
    out: list[str | None] = []
    for part in result.split(";"):
        words = part.split()
        if not words:
            continue
        if words[0].upper() == "DIRECT":
            out.append(None)
        elif words[0].upper() in ("PROXY", "HTTP", "HTTPS") and len(words) > 1:
            out.append(f"http://{words[1]}")
    return out


# ---------------------------------------------------------------------------
# probes


def fetch(world: World, url: str, route: Route, keep_body: bool = False, quality: str | None = None) -> Check:
    """HTTPS GET with curl along ``route``; ok if the lab server answered.

    With ``quality`` (the workload), a URL that answered is also measured for
    what makes a working path *degraded* (docs/lab.md): the median TCP connect
    time without name lookup over CONNECT_SAMPLES connections, against
    policy.toml; TLS inspected (the extra samples verify against the public
    roots only); an Optimize URL that went through a proxy.
    """
    host = urllib.parse.urlsplit(url).hostname
    if route.tool_error:
        return Check(f"https {host}", False, {"url": url, "route": route.reason, "tool_error": route.tool_error})
    if route.browser is not None:
        return _browser_check(world, url, route, keep_body, quality)
    if not route.proxies:
        detail = {"url": url, "route": route.reason, "error": "no usable route"}
        return Check(f"https {host}", False, detail | ({"modelled": route.modelled} if route.modelled else {}))
    attempts = []
    body_file = world.user_home / "tmp" / f"body-{secrets.token_hex(4)}"
    for proxy in route.proxies:
        argv = [
            "curl",
            "-sS",
            "-o",
            str(body_file),
            "-D",
            "-",
            "--max-time",
            str(CURL_TIMEOUT),
            "--connect-timeout",
            "5",
            "-w",
            "\n%{json}",
        ]
        if route.from_pac:
            argv += ["--noproxy", "*"] if proxy is None else ["--proxy", proxy]
        res = world.laptop_run([*argv, url], timeout=CURL_TIMEOUT + 10)
        attempt = _curl_result(res.stdout, res.stderr, res.returncode)
        attempt["via"] = proxy or ("DIRECT" if route.from_pac else "environment")
        attempts.append(attempt)
        if attempt["ok"]:
            break
    detail: dict[str, Any] = {"url": url, "route": route.reason, "attempts": attempts}
    if route.modelled:
        detail["modelled"] = route.modelled
    if keep_body and body_file.exists():
        detail["body"] = body_file.read_text(errors="replace")[:4000]
    body_file.unlink(missing_ok=True)
    ok = bool(attempts[-1]["ok"])
    degraded = False
    if ok and quality:
        detail["quality"] = _quality(world, url, route, attempts[-1], quality)
        degraded = bool(detail["quality"]["degraded_by"])
    return Check(f"https {host}", ok, detail, degraded=degraded)


def _browser_check(world: World, url: str, route: Route, keep_body: bool, quality: str | None) -> Check:
    """The check is Chromium's own load (see browser_routes): ok if the lab server answered it. A URL that
    answered is sampled for quality with curl along the route Chromium took."""
    seen = route.browser or {}
    ok = bool(seen.get("ok")) and bool(seen.get("x-lab-server")) and int(seen.get("status") or 0) < 500
    attempt: dict[str, Any] = {
        "ok": ok,
        "via": (route.proxies[0] or "DIRECT") if route.proxies else "none",
        "http_code": seen.get("status"),
        "remote_ip": seen.get("remote_ip"),
        "egress": seen.get("x-lab-client"),
    }
    if not ok:
        attempt["error"] = seen.get("error") or "answer did not come from the lab server"
    detail: dict[str, Any] = {"url": url, "route": route.reason, "attempts": [attempt]}
    detail["pac_client"] = seen["pac_client"]
    if keep_body and ok:
        detail["body"] = seen.get("body") or ""
    degraded = False
    if ok and quality:
        detail["quality"] = _quality(world, url, route, attempt, quality)
        degraded = bool(detail["quality"]["degraded_by"])
    return Check(f"https {urllib.parse.urlsplit(url).hostname}", ok, detail, degraded=degraded)


def _connect_ms(attempt: dict[str, Any]) -> float | None:
    connect, lookup = attempt.get("time_connect_s"), attempt.get("time_namelookup_s")
    if not isinstance(connect, int | float) or not connect:
        return None
    return 1000 * (float(connect) - float(lookup or 0))


def _quality(world: World, url: str, route: Route, first: dict[str, Any], workload: str) -> dict[str, Any]:
    """More samples of a URL that works, on fresh connections, verified against the public roots only."""
    argv = ["curl", "-sS", "-o", "/dev/null", "--max-time", str(CURL_TIMEOUT), "--connect-timeout", "5"]
    argv += ["--cacert", str(world.pki.public_roots), "-w", "%{json}"]
    if route.from_pac:
        argv += ["--noproxy", "*"] if first["via"] == "DIRECT" else ["--proxy", first["via"]]
    # the family the GET ended up on: the path's own connect time, not a happy-eyeballs wait for a dead family
    if first.get("remote_ip"):
        argv.append("-6" if ":" in str(first["remote_ip"]) else "-4")
    samples = []
    for _ in range(CONNECT_SAMPLES):
        res = world.laptop_run([*argv, url], timeout=CURL_TIMEOUT + 10)
        samples.append(_curl_result("\n" + res.stdout, res.stderr, res.returncode))
    times = [t for a in samples if (t := _connect_ms(a)) is not None]
    median = statistics.median(times) if times else None
    degraded_by = []
    if median is not None and (why := slow(workload, median)):
        degraded_by.append(why)
    name = urllib.parse.urlsplit(url).hostname or ""
    found = world.catalog.set_for_name(name)
    # the chain verifies only with the machine's added roots: inspected (Microsoft: not for Optimize and Allow)
    if any(a.get("exit") == 60 for a in samples) and found is not None and found.category != "Default":
        degraded_by.append("TLS inspected")
    if found is not None and found.category == "Optimize" and first.get("remote_ip") in PROXY_ADDRESSES:
        degraded_by.append("Optimize traffic through a proxy")
    return {
        "connect_ms": [round(t, 1) for t in times],
        "connect_ms_median": None if median is None else round(median, 1),
        "degraded_by": degraded_by,
    }


def _curl_result(stdout: str, stderr: str, rc: int) -> dict[str, Any]:
    head, _, tail = stdout.rpartition("\n")
    try:
        info = json.loads(tail)
    except ValueError:
        info = {}
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head.splitlines()) if v}
    lab = headers.get("x-lab-server")
    result: dict[str, Any] = {
        "ok": rc == 0 and bool(lab) and int(info.get("http_code") or 0) < 500,
        "exit": rc,
        "http_code": info.get("http_code"),
        "remote_ip": info.get("remote_ip"),
        "egress": headers.get("x-lab-client"),
        "time_namelookup_s": info.get("time_namelookup"),
        "time_connect_s": info.get("time_connect"),
        "time_total_s": info.get("time_total"),
    }
    if headers.get("via"):
        result["via_header"] = headers["via"]
    if rc != 0:
        result["error"] = (info.get("errormsg") or stderr.strip())[-200:]
    elif not lab:
        result["error"] = "answer did not come from the lab server"
    return result


def identity_checks(world: World, realm_url: str, routes: dict[str, Route]) -> list[Check]:
    """Realm discovery, then the federation server when the realm says Federated."""
    realm = fetch(world, realm_url, routes[realm_url], keep_body=True, quality="identity")
    checks = [realm]
    if not realm.ok:
        return checks
    try:
        body = json.loads(realm.detail.pop("body", ""))
    except ValueError:
        realm.ok = False
        realm.detail["error"] = "realm answer is not JSON"
        return checks
    realm.detail["account_type"] = body.get("account_type")
    if str(body.get("account_type", "")).lower() == "federated":
        adfs = urllib.parse.urlsplit(body.get("federation_active_auth_url", "")).hostname or ""
        ls_url = federation_url(adfs)
        route = routes.get(ls_url) or proxy_routes(world, [ls_url])[ls_url]
        checks.append(fetch(world, ls_url, route))
    return checks


def stun_check(world: World) -> Check:
    """STUN Binding to the Teams relay; degraded when outside Microsoft's media targets."""
    res = world.laptop_run(
        [
            SYSTEM_PYTHON,
            str(world.tool("stunclient.py")),
            A.TEAMS_RELAY_NAME,
            "--port",
            str(A.STUN_PORTS[0]),
            "--count",
            str(STUN_REQUESTS),
            "--interval",
            str(STUN_INTERVAL_S),
            "--every",
            str(STUN_EVERY),
            "--timeout",
            "1.5",
        ],
        timeout=60,
    )
    try:
        data = json.loads(res.stdout)
    except ValueError:  # the tool crashed: a lab problem, not "fails"
        return Check("stun relay", False, {"tool_error": (res.stderr or res.stdout).strip()[-300:] or "no output"})
    answered = [r for r in data.get("results", []) if r.get("received")]
    good = [r for r in answered if all(r.get(k, 0) <= v for k, v in MEDIA_LIMITS.items())]
    return Check("stun relay", bool(answered), data, degraded=bool(answered) and not good)


def dns_check(world: World, name: str) -> Check:
    """kdig A lookup through the laptop's resolvers (evidence, not a verdict)."""
    res = world.laptop_run(["kdig", "+time=2", "+retry=0", "+short", name, "A"], timeout=20)
    answers = [line for line in res.stdout.split() if line]
    ok = res.ok and any(_is_ip(a) for a in answers)
    detail: dict[str, Any] = {"answers": answers, "evidence_only": True}
    if not ok:
        detail["error"] = (res.stderr or res.stdout).strip()[-200:] or "no answer"
    return Check(f"dns {name}", ok, detail)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
