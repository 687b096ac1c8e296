"""Proxy discovery: every source's parser (in netcheck/platform/<os>.py) on captured output, matching, and the real
desktop tools (gsettings, kreadconfig5) where they are installed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
from plat_support import FIXTURES, MISSING, Replay, ok, read_fixture

from netcheck.platform import linux, macos, windows
from netcheck.platform._run import ToolResult, default_runner
from netcheck.proxy import settings as p

# --- environment and combining ---------------------------------------------------------


def test_environment_lower_case_wins_and_credentials_are_dropped() -> None:
    s = p.from_environment({"https_proxy": "http://user:secret@proxy.corp.example:3128",
                            "HTTPS_PROXY": "http://other:1", "HTTP_PROXY": "proxy.corp.example:8080",
                            "ALL_PROXY": "socks5://192.0.2.50:1080", "NO_PROXY": "localhost, .corp.example,10.0.0.0/8"})
    assert s.source == "environment"
    assert s.proxies == {"https": "http://proxy.corp.example:3128", "http": "http://proxy.corp.example:8080",
                         "all": "socks5://192.0.2.50:1080"}
    assert "secret" not in repr(s) and "user" not in repr(s)
    assert "credentials in HTTPS_PROXY were not recorded" in s.evidence
    assert s.bypass == ("localhost", ".corp.example", "10.0.0.0/8")
    assert s.proxy_for("https://outlook.office365.com/") == "http://proxy.corp.example:3128"
    assert s.proxy_for("http://x.test/") == "http://proxy.corp.example:8080"
    assert s.proxy_for("ftp://x.test/") == "socks5://192.0.2.50:1080"
    assert s.proxy_for("https://intranet.corp.example/") is None
    assert s.proxy_for("https://10.1.2.3/") is None


def test_environment_without_proxies() -> None:
    s = p.from_environment({"HTTPS_PROXY": "http://[bad", "NO_PROXY": "x"})
    assert s.source == "none" and not s.configured
    assert "HTTPS_PROXY is set but is not a usable proxy URL" in s.evidence
    assert s.proxy_for("https://a.test/") is None


def test_combine_prefers_the_environment_and_applies_the_pac_override() -> None:
    env = p.from_environment({"HTTPS_PROXY": "http://192.0.2.8:3128"})
    os_side = p.ProxySettings(source="WinINET", pac_url="http://pac.corp.example/p.pac",
                              others=(p.ProxySettings(source="WinHTTP", proxies={"http": "http://192.0.2.9:80"}),))
    both = p.combine(env, os_side, {"NETCHECK_PAC_URL": "http://127.0.0.1:9/x.pac"})
    assert both.source == "environment" and [o.source for o in both.others] == ["WinINET", "WinHTTP"]
    assert both.pac_url == "http://127.0.0.1:9/x.pac"
    assert "PAC URL from NETCHECK_PAC_URL: http://127.0.0.1:9/x.pac" in both.evidence
    only_pac = p.combine(p.from_environment({}), p.NO_PROXY_SETTINGS, {"NETCHECK_PAC_URL": "http://a/p.pac"})
    assert only_pac.source == "environment" and only_pac.configured
    assert p.combine(p.from_environment({}), os_side, {}) is os_side


@pytest.mark.parametrize(("pattern", "host", "port", "style", "want"), [
    ("*", "anything.test", None, "suffix", True),
    ("<local>", "intranet", None, "wildcard", True),
    ("<local>", "intranet.corp", None, "wildcard", False),
    ("10.0.0.0/8", "10.9.8.7", None, "suffix", True),
    ("10.0.0.0/8", "outlook.office.com", None, "suffix", False),
    ("169.254/16", "169.254.3.4", None, "suffix", True),
    ("bad/99", "10.0.0.1", None, "suffix", False),
    ("[::1]", "::1", 443, "suffix", True),
    ("[::1]:8080", "::1", 443, "suffix", False),
    ("corp.example:8443", "corp.example", 443, "suffix", False),
    ("corp.example:8443", "corp.example", 8443, "suffix", True),
    ("*.corp.example", "a.corp.example", None, "wildcard", True),
    ("10.*", "10.1.2.3", None, "wildcard", True),
    ("corp.example", "a.corp.example", None, "wildcard", False),
    ("corp.example", "a.corp.example", None, "suffix", True),
    (".corp.example", "corp.example", None, "suffix", True),
    ("", "x", None, "suffix", False),
])
def test_bypass_patterns(pattern: str, host: str, port: int | None, style: str, want: bool) -> None:
    s = p.ProxySettings(source="x", bypass=(pattern,), bypass_style=style)
    assert s.bypasses(host, port) is want


def test_bypass_local_and_reversed_lists() -> None:
    s = p.ProxySettings(source="scutil", proxies={"https": "http://p:1"}, bypass_local=True)
    assert s.proxy_for("https://intranet/") is None and s.proxy_for("https://a.b/") == "http://p:1"
    r = p.ProxySettings(source="kde", proxies={"https": "http://p:1"}, bypass=(".corp.example",),
                        bypass_reversed=True)
    assert r.proxy_for("https://a.corp.example/") == "http://p:1" and r.proxy_for("https://a.test/") is None
    assert p.ProxySettings(source="x", proxies={"https": "http://p:1"}).proxy_for("https://h:bad/") == "http://p:1"


def test_proxy_server_syntax() -> None:
    assert windows.parse_proxy_server("proxy:8080") == {"http": "http://proxy:8080", "https": "http://proxy:8080",
                                                  "ftp": "http://proxy:8080"}
    assert windows.parse_proxy_server("http=10.0.0.5:3128;https=https://10.0.0.5:3129;socks=10.0.0.6:1080") == {
        "http": "http://10.0.0.5:3128", "https": "https://10.0.0.5:3129", "socks": "socks://10.0.0.6:1080"}
    assert windows.parse_proxy_server(" ;; ") == {}
    assert windows.parse_proxy_server("http=") == {}
    assert windows.parse_proxy_server("[::1]:3128")["http"] == "http://[::1]:3128"


# --- Windows -------------------------------------------------------------------------------

def test_reg_query_parsing() -> None:
    v = windows.parse_reg_query(read_fixture("windows/reg-query-internet-settings.txt"))
    assert v["ProxyEnable"] == 1 and v["ProxyServer"] == "proxy.corp.example:8080"
    assert v["User Agent"] == "Mozilla/4.0 (compatible; MSIE 8.0; Win32)"
    assert v["SecureProtocols"] == 0xA80 and "ZoneMap" not in v
    d = windows.parse_reg_query(read_fixture("windows/reg-query-internet-settings-disabled.txt"))
    assert d["ProxyOverride"] == "" and "(Default)" not in d
    assert windows.parse_reg_query("    Weird    REG_DWORD    0xZZ\n    Q    REG_QWORD    12\n") == {"Q": 12}


def test_wininet_explicit_proxy_pac_and_autodetect() -> None:
    user = windows.parse_reg_query(read_fixture("windows/reg-query-internet-settings.txt"))
    blob = windows.parse_reg_query(read_fixture("windows/reg-query-connections.txt"))["DefaultConnectionSettings"]
    assert isinstance(blob, str) and windows.connection_flags(blob) == 0x0D
    s = windows.wininet_settings(user, None, blob)
    assert s.source == "WinINET" and s.bypass_style == "wildcard" and s.bypass_local
    assert s.proxies["https"] == "http://proxy.corp.example:8080"
    assert s.pac_url == "http://pac.corp.example/proxy.pac" and s.auto_detect
    assert s.proxy_for("https://outlook.office365.com/") == "http://proxy.corp.example:8080"
    assert s.proxy_for("https://share.corp.example/") is None and s.proxy_for("http://10.2.3.4/") is None
    assert s.proxy_for("https://intranet/") is None


def test_wininet_policy_and_disabled_values() -> None:
    user = windows.parse_reg_query(read_fixture("windows/reg-query-internet-settings-disabled.txt"))
    s = windows.wininet_settings(user)
    assert s.proxies == {} and s.pac_url == "http://pac.corp.example/proxy.pac"
    assert any("ProxyEnable is 0" in e for e in s.evidence)
    policy = windows.parse_reg_query(read_fixture("windows/reg-query-policies.txt"))
    forced = windows.wininet_settings(user, policy)
    assert forced.proxies["socks"] == "socks://10.0.0.6:1080" and "ProxyEnable set by Group Policy" in forced.evidence
    # the "use setup script" box cleared: the AutoConfigURL left in the registry is not used
    cleared = windows.wininet_settings(user, None, "46000000" "0A000000" "03000000")
    assert cleared.pac_url is None and cleared.source == "none"
    assert windows.connection_flags("4600") is None and windows.connection_flags("zz" * 9) is None


@pytest.mark.parametrize(("name", "source", "server", "bypass"), [
    ("netsh-winhttp-direct.txt", "none", None, ()),
    ("netsh-winhttp-proxy.txt", "WinHTTP", "http://proxy.corp.example:8080", ("*.corp.example", "<local>")),
    ("netsh-winhttp-proxy-nobypass.txt", "WinHTTP", "http://10.0.0.5:3129", ()),
    ("netsh-winhttp-fr.txt", "WinHTTP", "http://proxy.local:8080", ()),
    ("netsh-winhttp-fr-direct.txt", "none", None, ()),
])
def test_netsh_winhttp(name: str, source: str, server: str | None, bypass: tuple[str, ...]) -> None:
    s = windows.parse_netsh_winhttp(read_fixture(f"windows/{name}"))
    assert s.source == source and s.bypass == bypass
    assert s.proxies.get("https") == server
    if name == "netsh-winhttp-fr.txt":
        assert "WinHTTP output is not in English; read by position" in s.evidence
    assert windows.parse_netsh_winhttp("").error == "netsh winhttp printed nothing"


def test_read_windows_orchestration() -> None:
    replay = Replay({("reg", "query"): ok(read_fixture("windows/reg-query-internet-settings-disabled.txt")),
                     ("netsh",): ok(read_fixture("windows/netsh-winhttp-proxy.txt"))})
    s = windows.read_windows(replay)
    assert s.source == "WinINET" and s.pac_url and s.others[0].source == "WinHTTP"
    only_winhttp = Replay({("reg", "query"): ok("\r\nHKEY_CURRENT_USER\\x\r\n"),
                           ("netsh",): ok(read_fixture("windows/netsh-winhttp-proxy.txt"))})
    s = windows.read_windows(only_winhttp)
    assert s.source == "WinHTTP" and s.others == ()
    broken = Replay({("reg",): MISSING, ("netsh",): MISSING})
    s = windows.read_windows(broken)
    assert s.error and s.others[0].error == "netsh is not available on this system"


# --- macOS -------------------------------------------------------------------------------

def test_scutil_dictionary_parser() -> None:
    d = macos.parse_scutil_dict(read_fixture("macos/scutil-proxy-manual.txt"))
    assert d["ExceptionsList"] == ["*.local", "169.254/16", "*.corp.example", "10.0.0.0/8"]
    assert d["__SCOPED__"]["en0"]["HTTPProxy"] == "proxy.corp.example"
    assert macos.parse_scutil_dict("garbage\n") == {}
    assert macos.parse_scutil_dict("<dictionary> {\n  no separator\n}\n}\n") == {}


def test_scutil_settings() -> None:
    manual = macos.scutil_settings(macos.parse_scutil_dict(read_fixture("macos/scutil-proxy-manual.txt")))
    assert manual.proxies == {"http": "http://proxy.corp.example:3128", "https": "http://proxy.corp.example:3128",
                              "socks": "socks5://192.0.2.50:1080"}
    assert manual.bypass_local and manual.proxy_for("https://build.corp.example/") is None
    assert manual.proxy_for("https://10.1.1.1/") is None
    assert manual.proxy_for("https://teams.microsoft.com/") == "http://proxy.corp.example:3128"
    pac = macos.scutil_settings(macos.parse_scutil_dict(read_fixture("macos/scutil-proxy-pac.txt")))
    assert pac.pac_url == "http://pac.corp.example/proxy.pac" and pac.auto_detect and not pac.proxies
    none = macos.scutil_settings(macos.parse_scutil_dict(read_fixture("macos/scutil-proxy-none.txt")))
    assert none.source == "none" and not none.configured
    odd = macos.scutil_settings({"HTTPEnable": "1", "HTTPProxy": "<NULL>", "HTTPSEnable": "1", "HTTPSProxy": "h",
                             "HTTPSPort": "0", "ProxyAutoConfigEnable": "1"})
    assert odd.proxies == {"https": "http://h"} and odd.pac_url is None


def test_read_macos() -> None:
    assert macos.read_macos(Replay({("scutil",): ok(read_fixture("macos/scutil-proxy-pac.txt"))})).source == "scutil"
    assert macos.read_macos(Replay({})).error == "scutil is not available on this system"


# --- GNOME and KDE -------------------------------------------------------------------------

def test_gsettings_captures() -> None:
    manual = linux.parse_gsettings(read_fixture("desktop/gsettings-manual.txt"))
    assert manual.source == "gsettings"
    assert manual.proxies == {"http": "http://proxy.corp.example:3128", "https": "http://proxy.corp.example:3129",
                              "socks": "socks5://192.0.2.50:1080"}
    assert manual.proxy_for("https://x.corp.example/") is None and manual.proxy_for("https://10.2.2.2/") is None
    auto = linux.parse_gsettings(read_fixture("desktop/gsettings-auto.txt"))
    assert auto.pac_url == "http://pac.corp.example/proxy.pac" and not auto.auto_detect
    wpad = linux.parse_gsettings(read_fixture("desktop/gsettings-auto-wpad.txt"))
    assert wpad.pac_url is None and wpad.auto_detect
    assert linux.parse_gsettings(read_fixture("desktop/gsettings-none.txt")).source == "none"
    assert linux.parse_gsettings("").error == "gsettings has no org.gnome.system.proxy schema"
    empty_manual = linux.parse_gsettings("org.gnome.system.proxy mode 'manual'\n"
                                     "org.gnome.system.proxy.http port uint32 8080\n"
                                     "org.gnome.system.proxy ignore-hosts @as []\n")
    assert empty_manual.source == "none" and empty_manual.bypass == ()
    assert linux._gvariant("not a literal") == "not a literal"


def test_kde_values() -> None:
    manual = linux.kde_settings({"ProxyType": "1", "httpProxy": "http://proxy.corp.example 3128",
                             "httpsProxy": "proxy.corp.example:3129", "socksProxy": "",
                             "NoProxyFor": "localhost,.corp.example", "ReversedException": "false"})
    assert manual.proxies == {"http": "http://proxy.corp.example:3128", "https": "http://proxy.corp.example:3129"}
    assert manual.bypass == ("localhost", ".corp.example")
    reversed_ = linux.kde_settings({"ProxyType": "1", "httpsProxy": "http://p 1", "ReversedException": "true"})
    assert reversed_.bypass_reversed and "ReversedException" in reversed_.evidence[-1]
    assert linux.kde_settings({"ProxyType": "2", "Proxy Config Script": "http://pac/x.pac"}).pac_url == "http://pac/x.pac"
    assert linux.kde_settings({"ProxyType": "2"}).error
    assert linux.kde_settings({"ProxyType": "3"}).auto_detect
    assert linux.kde_settings({"ProxyType": "4"}).source == "none"
    assert linux.kde_settings({}).source == "none"
    assert linux.kde_settings({"ProxyType": "1"}).source == "none"


def test_linux_desktop_orchestration() -> None:
    values = {"ProxyType": "3\n"}

    def kread(args: Sequence[str], _stdin: str | None) -> ToolResult:
        return ToolResult(tuple(args), 0, values.get(args[-1], "\n"), "")

    kde = Replay({("kreadconfig6",): MISSING, ("kreadconfig5",): kread})  # type: ignore[dict-item]
    s = linux.read_linux_desktop(kde, {"XDG_CURRENT_DESKTOP": "KDE"})
    assert s.source == "kde" and s.auto_detect
    assert ("kreadconfig5", "--file", "kioslaverc", "--group", "Proxy Settings", "--key", "ProxyType") in kde.calls
    gnome = Replay({("gsettings",): ok(read_fixture("desktop/gsettings-auto.txt"))})
    assert linux.read_linux_desktop(gnome, {"XDG_CURRENT_DESKTOP": "GNOME"}).pac_url
    assert linux.read_linux_desktop(Replay({}), {}).source == "none"
    failing = Replay({("gsettings",): ok("", "No such schema", 1)})
    assert linux.read_linux_desktop(failing, {}).error


@pytest.mark.skipif(shutil.which("gsettings") is None, reason="needs gsettings (Debian: libglib2.0-bin)")
def test_real_gsettings_reads_a_keyfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keyfile = tmp_path / "glib-2.0" / "settings" / "keyfile"
    keyfile.parent.mkdir(parents=True)
    keyfile.write_text(read_fixture("desktop/gsettings-keyfile-manual"))
    monkeypatch.setenv("GSETTINGS_BACKEND", "keyfile")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    s = linux.read_linux_desktop(default_runner, {"XDG_CURRENT_DESKTOP": "GNOME"})
    if s.error and "schema" in s.error:  # pragma: no cover - gsettings without GNOME's schemas
        pytest.skip("gsettings is installed without the org.gnome.system.proxy schema")
    assert s.source == "gsettings" and s.proxies["https"] == "http://proxy.corp.example:3129"


@pytest.mark.skipif(shutil.which("kreadconfig5") is None, reason="needs kreadconfig5 (Debian: libkf5config-bin)")
def test_real_kreadconfig5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kioslaverc").write_text((FIXTURES / "desktop" / "kioslaverc-manual").read_text())
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    s = linux.read_linux_desktop(default_runner, {"XDG_CURRENT_DESKTOP": "KDE"})
    assert s.source == "kde" and s.proxies["http"] == "http://proxy.corp.example:3128"
    assert s.bypass == ("localhost", "127.0.0.1", ".corp.example")
    (tmp_path / "kioslaverc").write_text((FIXTURES / "desktop" / "kioslaverc-pac").read_text())
    assert linux.read_linux_desktop(default_runner, {"XDG_CURRENT_DESKTOP": "KDE"}).pac_url == \
        "http://pac.corp.example/proxy.pac"
    assert os.environ["XDG_CONFIG_HOME"] == str(tmp_path)


# --- WPAD and describe ------------------------------------------------------------------------

def test_wpad_candidates_stop_at_the_registrable_domain() -> None:
    assert p.wpad_urls(["eu.corp.contoso.co.uk", "corp.example.", "single", ""]) == (
        "http://wpad.eu.corp.contoso.co.uk/wpad.dat", "http://wpad.corp.contoso.co.uk/wpad.dat",
        "http://wpad.contoso.co.uk/wpad.dat", "http://wpad.corp.example/wpad.dat")


def test_describe() -> None:
    assert p.describe(p.ProxySettings(source="WinHTTP", error="boom")) == ["WinHTTP: could not be read (boom)"]
    assert p.describe(p.NO_PROXY_SETTINGS) == ["none: no proxy"]
    lines = p.describe(p.ProxySettings(source="scutil", proxies={"https": "http://p:1"}, pac_url="http://x/p.pac",
                                       auto_detect=True))
    assert lines == ["scutil: https -> http://p:1", "scutil: PAC http://x/p.pac", "scutil: automatic detection (WPAD)"]


# --- from captured settings to the one decision ------------------------------------------------------

def _kioslaverc(rel: str) -> dict[str, str]:
    """The [Proxy Settings] values of a kioslaverc fixture, as kreadconfig prints them one by one."""
    lines = read_fixture(rel).splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("["))


def test_decisions_from_captured_settings() -> None:
    """The readers' output is what netcheck.proxy.decision decides from: the PAC file first, the manual
    settings (with their own bypass style) when it is gone, DIRECT when a PAC answer fails."""
    from netcheck.proxy.decision import PacState, decide
    from netcheck.proxy.pac import PacDecision

    url = "https://outlook.office365.com/"
    gone = PacState("http://pac.corp.example/proxy.pac", problem="the PAC file could not be fetched")
    said = PacState("http://pac.corp.example/proxy.pac", {url: PacDecision(url, ("PROXY 10.0.0.9:3128", "DIRECT"))})
    user = windows.parse_reg_query(read_fixture("windows/reg-query-internet-settings.txt"))
    blob = windows.parse_reg_query(read_fixture("windows/reg-query-connections.txt"))["DefaultConnectionSettings"]
    assert isinstance(blob, str)
    win = windows.wininet_settings(user, None, blob)
    assert decide(url, win, said).proxy == "http://10.0.0.9:3128"
    assert (decide(url, win, gone).proxy, decide(url, win, gone).source) == ("http://proxy.corp.example:8080", "os")
    assert decide("https://share.corp.example/", win, gone).proxy is None  # ProxyOverride *.corp.example
    mac = macos.scutil_settings(macos.parse_scutil_dict(read_fixture("macos/scutil-proxy-pac-and-manual.txt")))
    assert mac.pac_url == "http://pac.corp.example/proxy.pac" and not mac.auto_detect
    assert decide(url, mac, gone).proxy == "http://proxy.corp.example:8443"
    assert decide("http://outlook.office365.com/", mac, gone).proxy is None  # only a Secure (HTTPS) proxy is set
    assert decide("https://a.corp.example/", mac, gone).proxy is None  # exception corp.example covers subdomains
    assert decide("https://intranet/", mac, gone).proxy is None  # ExcludeSimpleHostnames
    kde = linux.kde_settings(_kioslaverc("desktop/kioslaverc-wpad"))
    assert kde.auto_detect and not kde.proxies
    assert decide(url, kde).pac_problem == "no PAC file was found (automatic detection)"
