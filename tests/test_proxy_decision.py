"""The one proxy decision (netcheck.proxy.decision): a table of pure cases, one per rule, including
each rule on which the four former deciders disagreed; then the PAC file fetched and evaluated for
real (a file on disk, netcheck's sandboxed evaluator), and the adapters that call it."""

from __future__ import annotations

from pathlib import Path

import pytest

from netcheck.deadline import Deadline
from netcheck.models import Outcome
from netcheck.proxy import decision as pd
from netcheck.proxy.decision import PacLookup, PacState, ProxyDecision, decide
from netcheck.proxy.pac import PacDecision, PacFetch, fetch_pac, split_result
from netcheck.proxy.settings import ProxySettings, from_environment

PAC = "http://pac.corp.example/proxy.pac"
URL = "https://outlook.office365.com/"
HTTP_URL = "http://outlook.office365.com/"

#: The system's settings: an explicit proxy (no port given) with a Windows bypass list, and a PAC file.
WININET = ProxySettings(source="WinINET", proxies={"http": "http://proxy.corp.example", "https": "http://proxy.corp.example"},
                        bypass=("*.corp.example", "<local>"), pac_url=PAC, bypass_style="wildcard", bypass_local=True)
MANUAL_ONLY = ProxySettings(source="scutil", proxies={"https": "http://proxy.corp.example:3128"},
                            bypass=("corp.example",))
PAC_ONLY = ProxySettings(source="gsettings", pac_url=PAC)


def answers(raw: str | None, url: str = URL, error: str | None = None) -> PacState:
    """The PAC file loaded and said ``raw`` for ``url`` (or failed with ``error``)."""
    proxies = split_result(raw) if raw is not None else ()
    return PacState(PAC, {url: PacDecision(url, proxies, raw, error)})


GONE = PacState(PAC, problem=f"the PAC file {PAC} could not be fetched (connection refused)")
BROKEN = PacState(PAC, problem=f"the PAC file {PAC} could not be evaluated (SyntaxError)", load_error="SyntaxError")


@pytest.mark.parametrize(("name", "url", "settings", "pac", "proxy", "source", "pac_problem"), [
    # no PAC: the manual settings (rule 5), scheme by scheme, with their bypass list
    ("nothing set", URL, ProxySettings(source="none"), None, None, "none", None),
    ("system proxy", URL, MANUAL_ONLY, None, "http://proxy.corp.example:3128", "os", None),
    ("system bypass (suffix)", "https://a.corp.example/", MANUAL_ONLY, None, None, "none", None),
    ("system bypass (the domain itself)", "https://corp.example/", MANUAL_ONLY, None, None, "none", None),
    ("scheme-specific: no https proxy for http", HTTP_URL, MANUAL_ONLY, None, None, "none", None),
    # the PAC file answers (rule 4): the first valid entry, the rest is failover
    ("PAC proxy then DIRECT", URL, WININET, answers("PROXY 10.0.0.5:3128; DIRECT"), "http://10.0.0.5:3128", "pac",
     None),
    ("PAC DIRECT", URL, WININET, answers("DIRECT"), None, "pac", None),
    ("PAC HTTPS proxy", URL, WININET, answers("HTTPS secure.corp.example:8443"), "https://secure.corp.example:8443",
     "pac", None),
    ("PAC SOCKS first is SOCKS, not DIRECT", URL, WININET, answers("SOCKS5 s.corp.example:1080; PROXY a:1"),
     "socks5://s.corp.example:1080", "pac", None),
    ("PAC SOCKS (v4)", URL, WININET, answers("SOCKS s:1080"), "socks4://s:1080", "pac", None),
    ("PAC invalid entry skipped", URL, WININET, answers("PROXY; BOGUS x:1; PROXY [::1:3; PROXY a.corp.example:1"),
     "http://a.corp.example:1", "pac", None),
    ("PAC bypass list does not apply", "https://x.corp.example/", WININET,
     answers("PROXY 10.0.0.5:3128", "https://x.corp.example/"), "http://10.0.0.5:3128", "pac", None),
    # the PAC file fails for one URL (rule 3): DIRECT, whatever the manual settings say
    ("PAC throws", URL, WININET, answers(None, error="ReferenceError: x is not defined"), None, "pac",
     "FindProxyForURL failed (ReferenceError: x is not defined)"),
    ("PAC no valid entry", URL, WININET, answers("PROXY"), None, "pac",
     "FindProxyForURL gave no usable answer ('PROXY')"),
    ("PAC empty answer", URL, WININET, answers(""), None, "pac", "FindProxyForURL gave no usable answer ('')"),
    ("PAC not asked about this URL", "https://other.test/", WININET, answers("PROXY a:1"), None, "pac",
     "it was not asked about this URL"),
    # the PAC file is not in use (rule 2): the manual settings with their bypass list, else DIRECT
    ("PAC gone, manual settings", URL, WININET, GONE, "http://proxy.corp.example", "os", GONE.problem),
    ("PAC gone, bypassed", "https://intranet/", WININET, GONE, None, "none", GONE.problem),
    ("PAC does not load", URL, WININET, BROKEN, "http://proxy.corp.example", "os", BROKEN.problem),
    ("PAC gone, nothing else", URL, PAC_ONLY, GONE, None, "none", GONE.problem),
    ("PAC never fetched", URL, PAC_ONLY, None, None, "none", f"the PAC file {PAC} was not consulted"),
    ("WPAD found none", URL, ProxySettings(source="WinINET", auto_detect=True), None, None, "none",
     "no PAC file was found (automatic detection)"),
])
def test_the_decision(name: str, url: str, settings: ProxySettings, pac: PacState | None, proxy: str | None,
                      source: str, pac_problem: str | None) -> None:
    d = decide(url, settings, pac)
    assert (d.proxy, d.source, d.pac_problem) == (proxy, source, pac_problem), name
    assert d.url == url and d.source in pd.SOURCES and d.why
    uses_pac = bool(settings.pac_url or settings.auto_detect)
    assert (d.pac_url == PAC) is bool(settings.pac_url)
    assert d.when_pac_gone == ("unknown" if uses_pac else None)
    if uses_pac:  # what the manual settings choose without the PAC file, whatever the PAC said
        assert d.without_pac == decide(url, ProxySettings(source=settings.source, proxies=settings.proxies,
                                                          bypass=settings.bypass, bypass_style=settings.bypass_style,
                                                          bypass_local=settings.bypass_local)).proxy


def test_the_words_say_what_decided() -> None:
    assert decide(URL, WININET, answers("PROXY a:1; DIRECT")).why == f"the PAC file {PAC} says PROXY a:1"
    assert decide(URL, PAC_ONLY, GONE).why.endswith("(connection refused); going direct")
    assert "using the system's proxy settings instead (http://proxy.corp.example)" in decide(URL, WININET, GONE).why
    env = from_environment({"HTTPS_PROXY": "http://192.0.2.8:3128"})
    assert decide(URL, env).why == "the environment's proxy settings (environment) say http://192.0.2.8:3128"
    assert decide(URL, ProxySettings(source="none")).why == "direct (no proxy configured for it)"


@pytest.mark.parametrize(("policy", "want"), [("direct", "direct"), ("fail", "fail"), ("cached", "cached"),
                                              (None, "unknown"), ("retry", "unknown")])
def test_what_happens_when_the_pac_file_is_gone_is_the_profiles_policy(policy: str | None, want: str) -> None:
    assert decide(URL, WININET, answers("PROXY a:1"), policy).when_pac_gone == want
    assert decide(URL, MANUAL_ONLY, None, policy).when_pac_gone is None  # no PAC file: nothing to lose


@pytest.mark.parametrize(("environ", "url", "want"), [
    # libcurl / urllib: scheme-specific variables, ALL_PROXY for the rest, lower case wins
    ({"HTTPS_PROXY": "http://s:1", "HTTP_PROXY": "http://h:1"}, URL, "http://s:1"),
    ({"HTTPS_PROXY": "http://s:1", "HTTP_PROXY": "http://h:1"}, HTTP_URL, "http://h:1"),
    ({"HTTPS_PROXY": "http://s:1"}, HTTP_URL, None),
    ({"ALL_PROXY": "a:1"}, URL, "http://a:1"),
    ({"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:1"}, URL, "http://low:1"),
    # NO_PROXY: suffixes with or without the leading dot, the domain itself, *, CIDR, host:port
    ({"HTTPS_PROXY": "http://s:1", "NO_PROXY": "office365.com"}, URL, None),
    ({"HTTPS_PROXY": "http://s:1", "NO_PROXY": ".office365.com"}, URL, None),
    ({"HTTPS_PROXY": "http://s:1", "NO_PROXY": ".office365.com"}, "https://office365.com/", None),
    ({"HTTPS_PROXY": "http://s:1", "NO_PROXY": "365.com"}, URL, "http://s:1"),
    ({"HTTPS_PROXY": "http://s:1", "NO_PROXY": "*"}, URL, None),
    ({"HTTPS_PROXY": "http://s:1", "NO_PROXY": "10.0.0.0/8"}, "https://10.1.2.3/", None),
    ({"HTTPS_PROXY": "http://s:1", "NO_PROXY": "outlook.office365.com:8443"}, URL, "http://s:1"),
    ({"HTTPS_PROXY": "http://s:1", "NO_PROXY": "outlook.office365.com:443"}, URL, None),
])
def test_environment_rules(environ: dict[str, str], url: str, want: str | None) -> None:
    d = decide(url, from_environment(environ))
    assert d.proxy == want and d.source == ("environment" if want else "none")


@pytest.mark.parametrize(("proxy", "want"), [
    ("http://proxy.corp.example", "proxy.corp.example:80"),  # was 8080 in the outage facts
    ("https://proxy.corp.example", "proxy.corp.example:443"),
    ("socks5://s.corp.example", "s.corp.example:1080"),
    ("http://[2001:db8::5]:3128", "[2001:db8::5]:3128"),
    ("proxy.corp.example:3128", "proxy.corp.example:3128"),
])
def test_endpoint_fills_the_schemes_default_port(proxy: str, want: str) -> None:
    assert pd.endpoint(proxy) == want
    assert ProxyDecision(URL, proxy, "os", "").endpoint == want


def test_url_for_is_what_the_probes_and_the_map_share() -> None:
    assert pd.url_for("HTTPS", "Outlook.Office365.com.", 443) == URL
    assert pd.url_for("http", "outlook.office365.com", 80) == HTTP_URL
    assert pd.url_for("https", "a.test", 8443) == "https://a.test:8443/"
    assert pd.url_for("https", "2001:db8::1") == "https://[2001:db8::1]/"


@pytest.mark.parametrize(("entry", "want"), [
    ("DIRECT", (True, None)), ("PROXY a:1", (True, "http://a:1")), ("HTTP a:1", (True, "http://a:1")),
    ("HTTPS a:1", (True, "https://a:1")), ("SOCKS5 a", (True, "socks5://a")), ("PROXY", (False, None)),
    ("DIRECT x", (False, None)), ("QUIC a:1", (False, None)), ("PROXY http://a:1", (False, None)),
    ("PROXY u:p@a:1", (False, None)), ("PROXY a:99999", (False, None)),
])
def test_pac_entries(entry: str, want: tuple[bool, str | None]) -> None:
    assert pd.pac_entry(entry) == want


# --- the facts the check's findings are made from -------------------------------------------------

def _facts(settings: ProxySettings, fetch: PacFetch | None, pac: PacState | None,
           urls: tuple[str, ...] = (URL,), wpad: tuple[PacFetch, ...] = (),
           detected: bool = False) -> dict[str, object]:
    decisions = {u: decide(u, settings, pac) for u in urls}
    return dict(pd.pac_facts(PacLookup(fetch, wpad, detected), pac, decisions, settings))


def test_pac_facts() -> None:
    refused = PacFetch(PAC, Outcome.CONNECT_REFUSED, error="connection refused")
    assert _facts(WININET, refused, GONE) == {
        "pac_url": PAC, "pac_fetch": "connect_refused", "pac_error": "connection refused",
        "pac_fallback": "the explicit proxy settings"}
    assert _facts(PAC_ONLY, refused, GONE)["pac_fallback"] == "DIRECT (no proxy)"
    loaded = PacFetch(PAC, Outcome.OK, text="x")
    assert _facts(WININET, loaded, BROKEN) == {"pac_url": PAC, "pac_fetch": "ok", "pac_load_error": "SyntaxError",
                                               "pac_fallback": "the explicit proxy settings"}
    bad = _facts(WININET, loaded, answers(None, error="boom"))
    # a runtime failure went DIRECT, not to the explicit settings
    assert bad["pac_fallback"] == "DIRECT (no proxy)"
    assert bad["pac_bad_results"] == ["outlook.office365.com: FindProxyForURL failed (boom)"]
    assert "pac_fallback" not in _facts(WININET, loaded, answers("PROXY a:1"))
    hit = PacFetch("http://wpad.corp.example/wpad.dat", Outcome.OK, text="FindProxyForURL")
    found = _facts(WININET, hit, PacState(hit.url, {URL: PacDecision(URL, ("DIRECT",))}), wpad=(hit,), detected=True)
    assert found == {"wpad": hit.url, "pac_fetch": "ok"}
    assert _facts(WININET, None, None, detected=True) == {"wpad": "no PAC file found (0 WPAD address(es) tried)"}


# --- for real: the PAC file fetched and evaluated by netcheck's sandboxed child ---------------------

REAL_PAC = """function FindProxyForURL(url, host) {
  if (host == "boom.test") return undefined_function();
  if (host == "socks.test") return "SOCKS5 192.0.2.9:1080; PROXY 192.0.2.8:3128";
  if (url.substring(0, 5) == "http:") return "PROXY 192.0.2.7:8080";
  if (isPlainHostName(host)) return "DIRECT";
  return "PROXY 192.0.2.8:3128; DIRECT";
}
"""


def test_decide_all_with_a_real_pac_file(tmp_path: Path) -> None:
    path = tmp_path / "proxy.pac"
    path.write_text(REAL_PAC)
    settings = ProxySettings(source="WinINET", proxies={"https": "http://192.0.2.1:80"}, pac_url=path.as_uri())
    fetched = fetch_pac(path.as_uri(), Deadline.after(10))
    urls = [URL, HTTP_URL, "https://intranet/", "https://boom.test/", "https://socks.test/"]
    got = pd.decide_all(urls, settings, fetched, Deadline.after(30), pac_unreachable="cached")
    assert got[URL].proxy == "http://192.0.2.8:3128" and got[URL].source == "pac"
    assert got[URL].without_pac == "http://192.0.2.1:80" and got[URL].when_pac_gone == "cached"
    assert got[HTTP_URL].proxy == "http://192.0.2.7:8080"  # the PAC file sees the scheme
    assert got["https://intranet/"].proxy is None and got["https://intranet/"].pac_problem is None
    boom = got["https://boom.test/"]
    assert boom.proxy is None and boom.source == "pac" and "FindProxyForURL failed" in (boom.pac_problem or "")
    assert got["https://socks.test/"].proxy == "socks5://192.0.2.9:1080"
    gone = pd.decide_all([URL], settings, fetch_pac((tmp_path / "missing.pac").as_uri(), Deadline.after(5)),
                         Deadline.after(10))
    assert gone[URL].proxy == "http://192.0.2.1:80" and gone[URL].source == "os" and gone[URL].pac_problem


def test_find_pac_tries_automatic_detection_before_the_configured_url(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Rule 1, as WinINET and Chromium order it (the old code fetched the configured URL and skipped WPAD)."""
    import netcheck.proxy.pac

    configured = tmp_path / "configured.pac"
    configured.write_text('function FindProxyForURL(u, h) { return "PROXY 192.0.2.1:1"; }')
    wpad = tmp_path / "wpad.dat"
    wpad.write_text('function FindProxyForURL(u, h) { return "PROXY 192.0.2.2:2"; }')
    asked: list[tuple[str, ...]] = []

    def discover(candidates: tuple[str, ...], deadline: Deadline) -> tuple[PacFetch, ...]:
        asked.append(tuple(candidates))  # DNS WPAD names: never looked up from a test
        return (fetch_pac(wpad.as_uri(), deadline),) if wpad.exists() else ()

    monkeypatch.setattr(netcheck.proxy.pac, "discover_wpad", discover)
    both = ProxySettings(source="WinINET", pac_url=configured.as_uri(), auto_detect=True)
    found = pd.find_pac(both, lambda: ("corp.example",), Deadline.after(10))
    assert asked == [("http://wpad.corp.example/wpad.dat",)]
    assert found.fetch is not None and found.fetch.url == wpad.as_uri() and found.detected
    assert pd.decide_all([URL], both, found.fetch, Deadline.after(20))[URL].proxy == "http://192.0.2.2:2"
    wpad.unlink()
    found = pd.find_pac(both, lambda: ("corp.example",), Deadline.after(10))
    assert found.fetch is not None and found.fetch.url == configured.as_uri() and found.wpad_tried == ()
    assert pd.find_pac(ProxySettings(source="none"), lambda: (), Deadline.after(1)) == PacLookup(None)


def test_the_outage_facts_use_the_decision(tmp_path: Path) -> None:
    """site_facts' adapter: "host:port" with the scheme's default port, the decision's source and PAC host, and
    the manual settings' proxy for when the PAC file is gone."""
    from netcheck.site_facts import _proxy_paths
    from netcheck.site_profile import SiteProfile

    hosts = ["outlook.office365.com", "intranet"]
    got = _proxy_paths(WININET, hosts, None, Deadline.after(5), SiteProfile())
    assert got["outlook.office365.com"] == ("proxy.corp.example:80", "pac.corp.example", "os", PAC,
                                             "proxy.corp.example:80")
    assert got["intranet"] == (None, "pac.corp.example", "none", PAC, None)
    path = tmp_path / "proxy.pac"
    path.write_text(REAL_PAC)
    settings = ProxySettings(source="gsettings", pac_url=path.as_uri())
    got = _proxy_paths(settings, hosts, fetch_pac(path.as_uri(), Deadline.after(5)), Deadline.after(20), SiteProfile())
    assert got["outlook.office365.com"] == ("192.0.2.8:3128", None, "pac", path.as_uri(), None)
    assert got["intranet"] == (None, None, "pac", path.as_uri(), None)


def test_the_checks_proxy_map_holds_the_status_page_as_the_pac_file_decides_it(tmp_path: Path) -> None:
    """The status page's request follows the PAC file like every probe, from the map: a URL missing
    from the map would be decided from the settings alone, read from the OS a second time."""
    from netcheck.check import _proxy_map
    from netcheck.m365.catalog import TargetPlan

    path = tmp_path / "proxy.pac"
    path.write_text('function FindProxyForURL(u, h) { return h == "status.test" ? "PROXY 192.0.2.8:3128" : "DIRECT"; }')
    settings = ProxySettings(source="os", proxies={"https": "http://192.0.2.1:80"}, pac_url=path.as_uri())
    lookup = PacLookup(fetch_pac(path.as_uri(), Deadline.after(10)))
    plan = TargetPlan((), {}, (), (), 0)
    got = _proxy_map(plan, {"sign-in": ("login.test",)}, settings, lookup, Deadline.after(30), {},
                     ("https://status.test/incidents?x=1",))
    assert got["https://status.test/"] == ("http://192.0.2.8:3128", "pac")
    assert got["https://login.test/"] == (None, "pac")
