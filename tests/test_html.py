"""The HTML report: golden file, content, self-containment, escaping, and a real headless Chromium.

Regenerate the golden file after an intended change with
``NETCHECK_UPDATE_GOLDEN=1 pytest tests/test_html.py`` and look at the page (and a
screenshot) before committing. The Chromium tests need Debian's ``chromium``.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from netcheck.policy import Policy
from netcheck.render.html import render_html
from netcheck.render.json import report_to_dict, schema_path
from tests.browser import INSTALL_HINT, Browser, file_url, find_chromium, read_png
from tests.sample_report import sample_report

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"
#: Read at import: the autouse ``clean_environ`` fixture removes NETCHECK_* variables before each test.
UPDATE_GOLDEN = bool(os.environ.get("NETCHECK_UPDATE_GOLDEN"))
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def _fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def _probe(kind: str, host: str, address: str | None, workloads: list[str], outcome: str, reason: str,
           detail: dict[str, Any], port: int | None = 443) -> dict[str, Any]:
    family = None if address is None else ("ipv6" if ":" in address else "ipv4")
    return {"kind": kind, "host": host, "port": port, "scheme": None, "address": address, "family": family,
            "category": "Optimize", "workloads": workloads, "endpoint_sets": [1], "outcome": outcome,
            "reason": reason, "phases": {}, "detail": detail}


def rich_report() -> dict[str, Any]:
    """The outage fixture plus TCP and STUN probes, so that every section of the page is drawn."""
    data = _fixture("report-outage-sample.json")
    data["workloads"][1:1] = [
        {"id": "sharepoint", "name": "SharePoint and OneDrive (files)", "status": "ok", "reasons": [],
         "latency_ms": 34.0, "score": None, "probes_ok": 2, "probes_total": 2},
        {"id": "teams", "name": "Teams (chat, meetings signalling)", "status": "ok", "reasons": [],
         "latency_ms": 128.4, "score": None, "probes_ok": 2, "probes_total": 2},
        {"id": "identity", "name": "Sign-in (Microsoft Entra ID)", "status": "ok", "reasons": [],
         "latency_ms": 18.2, "score": None, "probes_ok": 1, "probes_total": 1},
    ]
    tcp = [("outlook.office365.com", "198.18.0.10", ["exchange"], 21.0, "192.0.2.10"),
           ("outlook.office365.com", "2001:db8::10", ["exchange"], 23.5, "2001:db8:ff::10"),
           ("contoso.sharepoint.com", "198.18.1.10", ["sharepoint"], 34.0, "192.0.2.10"),
           ("teams.microsoft.com", "198.18.2.5", ["teams"], 128.4, "10.99.0.2"),
           ("login.microsoftonline.com", "198.18.3.1", ["identity"], 18.2, "192.0.2.10")]
    for host, address, workloads, median, local in tcp:
        data["probes"].append(_probe("tcp", host, address, workloads, "ok", f"Connected in {median} ms.",
                                     {"median_ms": median, "samples_ms": [median], "local_address": local}))
    data["probes"].append(_probe("tcp", "outlook.office.com", "198.18.0.11", ["exchange"], "connect_timeout",
                                 "No answer within 3 s.", {"median_ms": None, "samples_ms": []}))
    data["probes"].append(_probe("stun", "worldaz.tr.teams.microsoft.com", "198.18.4.1", ["teams_media"], "ok",
                                 "STUN answered on UDP 3478.",
                                 {"rtt_ms": 142.5, "jitter_ms": 12.25, "loss_pct": 0.0, "port": 3478}, 3478))
    return data


def _validate(data: dict[str, Any]) -> None:
    schema = json.loads(schema_path(data["schema_version"]).read_text())
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(data)


class _Tags(HTMLParser):
    """Every start tag with its attributes, the text, and the style sheets."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag):]

    def handle_data(self, data: str) -> None:
        (self.styles if self._open and self._open[-1] == "style" else self.text).append(data)


def _parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


# --- golden file and content -----------------------------------------------------------------------------------


def test_test_data_is_valid_against_the_report_schema() -> None:
    _validate(rich_report())
    _validate(_fixture("report-outage-sample.json"))


def test_html_report_matches_golden_file() -> None:
    page = render_html(rich_report())
    path = GOLDEN / "report.html"
    if UPDATE_GOLDEN:
        path.write_text(page)
    assert page == path.read_text()


def test_outage_report_answers_the_site_outage_question_per_workload_and_vpn_behaviour() -> None:
    page = render_html(_fixture("report-outage-sample.json"))
    text = " ".join(" ".join(_parse(page).text).split())
    assert "NOT READY" in text
    assert "No: if the site went down, Teams calls would stop working for you." in text
    assert "If the site went down" in text
    assert "If the VPN stays connected" in text and "If the VPN disconnects" in text
    # Teams audio and video: fails while the tunnel stays, works when it drops; evidence in <details>.
    row = re.search(r'<tr class="fate"><th scope="row">Teams audio and video</th>(.*?)</tr>', page)
    assert row is not None
    assert re.findall(r'pill tone-(\w+)">(\w+)<', row.group(1)) == [("bad", "Fails"), ("good", "Works")]
    assert ("<details><summary>If the site went down: Teams audio and video fails if the VPN stays connected "
            "and works if the VPN disconnects. <b>Why?</b></summary>") in page
    assert "worldaz.tr.teams.microsoft.com 198.18.4.1 via wg0: leaves through the VPN to the site" in text
    # Split tunnel, site systems, remediation.
    for prefix in ("52.112.0.0/14", "52.122.0.0/15", "2603:1063::/38"):
        assert f"<code>{prefix}</code>" in page
    assert "Add these prefixes to the VPN&#x27;s split-tunnel exclusions" in page
    assert "resolver reached via wg0" in text and "10.10.0.53" in text
    # Findings with their fix.
    assert "Teams media cannot use UDP" in text and "Allow UDP 3478-3481 to the Teams media ranges." in text


def test_outage_paths_are_drawn_and_those_through_the_site_are_highlighted() -> None:
    page = render_html(_fixture("report-outage-sample.json"))
    figures = re.findall(r'<figure class="path( crosses)?">.*?</figure>', page, re.S)
    assert len(figures) == 3
    by_host = {re.search(r'\u00b7 ([^<]+)</span>', f).group(1): f  # type: ignore[union-attr]
               for f in re.findall(r'<figure class="path.*?</figure>', page, re.S)}
    exchange = by_host["outlook.office365.com"]
    assert 'class="path"' in exchange and "Direct, independent of the site" in exchange
    assert 'class="node site"' not in exchange
    media = by_host["worldaz.tr.teams.microsoft.com"]
    assert 'class="path crosses"' in media and "Goes through the site" in media
    assert media.count("<title>VPN tunnel (to the site)</title>") == 2  # IPv4 and IPv6 routes
    assert "wg0 (VPN \u00b7 WireGuard)" in media and "2001:db8:4::1" in media
    sign_in = by_host["adfs.corp.example"]
    assert "Proxy 10.10.0.8:3128 (set by the PAC file)" in sign_in
    assert "Proxy chosen by the PAC file http://pac.corp.example/proxy.pac." in sign_in
    # Text alternatives: each diagram is an image with a label that names every step.
    labels = [attrs["aria-label"] for tag, attrs in _parse(exchange).tags if tag == "svg"]
    assert labels == ["Exchange Online (Outlook, mail, calendar), outlook.office365.com: This laptop (away from the "
                      "office) \u2192 eth0 (physical network) \u2192 Direct (over the internet) \u2192 "
                      "outlook.office365.com (198.18.0.10). Does not depend on the site."]


def test_without_outage_section_the_direct_paths_come_from_the_probes() -> None:
    data = _fixture("report-sample.json")
    data["probes"][2]["detail"].update({"via_proxy": True, "proxy": "proxy.example:8080", "proxy_source": "os"})
    data["probes"].append(_probe("tcp", "outlook.office365.com", "198.18.0.10", ["exchange"], "ok", "ok",
                                 {"median_ms": 20.0, "local_address": "192.0.2.10"}))
    page = render_html(data)
    assert 'id="outage"' not in page and 'id="split-tunnel"' not in page and 'id="site-systems"' not in page
    assert "AT RISK" in page and "You can work, but Teams calls may be poor." in page
    figure = re.search(r'<figure class="path">.*?</figure>', page, re.S)
    assert figure is not None
    label = [a["aria-label"] for t, a in _parse(figure.group(0)).tags if t == "svg"][0]
    assert label == ("Exchange Online (Outlook, mail, calendar), outlook.office365.com: This laptop \u2192 "
                     "192.0.2.10 (local address) \u2192 Direct (route not analysed) \u2192 Proxy proxy.example:8080 "
                     "(set in system settings) \u2192 outlook.office365.com (198.18.0.10).")
    assert "Goes through the site" not in page


def test_latency_chart_has_a_bar_per_front_door_and_the_100_ms_mark() -> None:
    page = render_html(rich_report())
    chart = re.search(r'<section id="latency".*?</section>', page, re.S)
    assert chart is not None
    bars = re.findall(r'<rect class="bar (\w+)"[^>]*><title>([^<]*)</title>', chart.group(0))
    assert bars == [("good", "Exchange Online \u00b7 outlook.office365.com: 21 ms"),
                    ("good", "Exchange Online \u00b7 outlook.office365.com (IPv6): 24 ms"),
                    ("good", "SharePoint and OneDrive \u00b7 contoso.sharepoint.com: 34 ms"),
                    ("warn", "Teams \u00b7 teams.microsoft.com: 128 ms"),
                    ("good", "Sign-in \u00b7 login.microsoftonline.com: 18 ms")]
    assert chart.group(0).count('class="mark"') == 1
    assert ">100 ms</text>" in chart.group(0)
    assert "outlook.office.com: no connection (No answer within 3 s.)" in chart.group(0)


def test_latency_mark_comes_from_the_policy() -> None:
    page = render_html(rich_report(), policy=Policy(slow_latency_ms=30.0))
    chart = re.search(r'<section id="latency".*?</section>', page, re.S)
    assert chart is not None
    assert re.findall(r'<rect class="bar (\w+)"', chart.group(0)) == ["good", "good", "warn", "warn", "good"]


def test_teams_media_chart_against_microsofts_marks() -> None:
    page = render_html(rich_report())
    media = re.search(r'<section id="media".*?</section>', page, re.S)
    assert media is not None
    label = [a["aria-label"] for t, a in _parse(media.group(0)).tags if t == "svg"][0]
    assert label == ("Teams media quality against Microsoft's marks. Round trip: 142 ms, not under 100 ms; "
                     "Jitter: 12 ms, under 30 ms; Packet loss: 0.0 %, under 1 %")
    assert re.findall(r'<rect class="bar (\w+)"', media.group(0)) == ["warn", "good", "good"]


def test_no_media_section_without_a_stun_probe_and_a_reason_when_udp_is_blocked() -> None:
    assert 'id="media"' not in render_html(_fixture("report-outage-sample.json"))
    data = _fixture("report-sample.json")
    data["probes"].append(_probe("stun", "relay.example", "198.18.4.1", ["teams_media"], "udp_blocked",
                                 "No answer over UDP 3478-3481: Teams falls back to TCP.", {}, 3478))
    page = render_html(data)
    media = re.search(r'<section id="media".*?</section>', page, re.S)
    assert media is not None
    assert "No media over UDP" in media.group(0) and "Teams falls back to TCP." in media.group(0)
    assert "<svg" not in media.group(0)


def test_report_from_the_live_renderer_and_a_minimal_report_render() -> None:
    page = render_html(report_to_dict(sample_report()))
    assert "AT RISK" in page and "Microsoft 365 traffic is decrypted and inspected by Corp Inspection CA" in page
    minimal = {"verdict": "UNKNOWN", "summary": "No network: could not assess.", "workloads": [], "findings": [],
               "probes": [], "network": {}}
    page = render_html(minimal)
    assert "COULD NOT ASSESS" in page and "No network: could not assess." in page
    assert "No workload was assessed." in page


def test_page_is_accessible_headings_table_headers_and_labelled_diagrams() -> None:
    tags = _parse(render_html(rich_report())).tags
    names = [t for t, _ in tags]
    assert names.count("h1") == 1 and names.index("h1") < names.index("h2")
    assert ("html", {"lang": "en"}) in tags
    for tag, attrs in tags:
        if tag == "svg":
            assert attrs.get("role") == "img" and attrs.get("aria-label")
        if tag == "th":
            assert attrs.get("scope") in ("col", "row")
    assert names.count("svg") == 5  # 3 paths, latency, media


# --- self-containment and escaping -----------------------------------------------------------------------------


def hostile_report() -> dict[str, Any]:
    data = rich_report()
    data["summary"] = HOSTILE
    data["workloads"][0]["name"] = HOSTILE
    data["workloads"][0]["reasons"] = [HOSTILE]
    data["findings"][0].update({"title": HOSTILE, "detail": HOSTILE, "remediation": HOSTILE, "evidence": [HOSTILE]})
    for probe in data["probes"]:
        probe["host"] = f"{HOSTILE}.example"
        probe["reason"] = HOSTILE
    data["network"]["note"] = HOSTILE
    outage = data["outage"]
    outage["summary"] = HOSTILE
    outage["notes"] = [HOSTILE]
    outage["workloads"][0]["evidence"] = [f"[VPN stays] {HOSTILE}", HOSTILE]
    outage["site_systems"][0].update({"name": HOSTILE, "evidence": HOSTILE})
    outage["paths"][0].update({"host": HOSTILE, "proxy": HOSTILE, "proxy_source": "pac",
                               "pac_url": 'javascript:alert(1)" onload="alert(2)'})
    outage["paths"][0]["routes"][0]["interface"] = HOSTILE
    outage["split_tunnel"][0]["tunneled_prefixes"] = [HOSTILE]
    outage["remediation"] = [HOSTILE]
    data["interfaces"][0].update({"name": HOSTILE, "vpn_product": HOSTILE, "evidence": [HOSTILE]})
    data["catalog"]["version"] = HOSTILE
    data["tool"]["version"] = HOSTILE
    data["report_id"] = HOSTILE
    data["measured_at"] = HOSTILE
    return data


def test_a_hedged_status_names_every_status_it_could_be() -> None:
    """``workloads[].possible`` (the check could not tell, e.g. a media sample too small to show loss): the
    pill says so, in a warning's tone at least, as the text report does; a certain status is unchanged."""
    data = rich_report()
    data["workloads"][1]["possible"] = ["ok", "degraded"]
    data["workloads"][2]["possible"] = ["failed", "ok"]  # the status (ok) first, whatever the order
    page = render_html(data)

    def pill(name: str) -> list[tuple[str, str]]:
        row = re.search(rf'<tr><th scope="row">{re.escape(name)}</th><td>(.*?)</td>', page)
        assert row is not None, name
        return re.findall(r'pill tone-(\w+)">([^<]+)<', row.group(1))

    assert pill("SharePoint and OneDrive (files)") == [("warn", "OK or Degraded")]
    assert pill("Teams (chat, meetings signalling)") == [("warn", "OK or Failed")]
    assert pill("Sign-in (Microsoft Entra ID)") == [("good", "OK")]


def test_hostile_strings_render_as_text_not_markup() -> None:
    page = render_html(hostile_report())
    parsed = _parse(page)
    assert "script" not in [t for t, _ in parsed.tags]
    assert "img" not in [t for t, _ in parsed.tags]
    for _, attrs in parsed.tags:
        assert not [a for a in attrs if a.startswith("on")], attrs
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") > 20
    # The hostile text is there, as text, in each place it came from.
    text = "".join(parsed.text)
    assert text.count('<script>alert("x")</script>') > 20


def test_hostile_strings_cannot_break_out_of_svg_attributes() -> None:
    page = render_html(hostile_report())
    for tag, attrs in _parse(page).tags:
        if tag == "svg":
            assert set(attrs) == {"viewbox", "width", "height", "role", "aria-label", "preserveaspectratio"}


#: Attributes that make a browser fetch something.
_FETCHING = {"src", "href", "xlink:href", "srcset", "action", "formaction", "poster", "data", "background",
             "ping", "manifest", "codebase", "cite", "longdesc", "icon"}
#: Elements that load something (or run script) whatever their attributes.
_LOADING_TAGS = {"link", "script", "iframe", "frame", "object", "embed", "img", "image", "use", "base", "audio",
                 "video", "source", "track", "portal", "input"}
_CSS_FETCH = re.compile(r"url\s*\(|@import|image-set\s*\(", re.I)


def _external_references(page: str) -> list[str]:
    """Everything in the markup (never the text) that would make a browser load something."""
    parsed = _parse(page)
    found = [f"<{tag} {name}={value!r}>" for tag, attrs in parsed.tags for name, value in attrs.items()
             if name in _FETCHING]
    found += [f"<{tag}>" for tag, attrs in parsed.tags
              if tag in _LOADING_TAGS or (tag == "meta" and "http-equiv" in attrs)]
    styles = parsed.styles + [a["style"] or "" for _, a in parsed.tags if "style" in a]
    found += [m.group(0) for css in styles for m in _CSS_FETCH.finditer(css)]
    return found


@pytest.mark.parametrize("make", [rich_report, hostile_report, lambda: _fixture("report-sample.json")],
                         ids=["rich", "hostile", "sample"])
def test_page_is_self_contained(make: Any) -> None:
    page = render_html(make())
    assert _external_references(page) == []
    lowered = page.lower()
    assert "<link" not in lowered and not re.search(r"<script[^>]*\bsrc", lowered)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", lowered)


@pytest.mark.parametrize("bad", ['<link rel="stylesheet" href="https://cdn.example/x.css">',
                                 '<p><img src="http://x.example/a.png"></p>',
                                 "<style>@font-face{src:url(https://fonts.example/f.woff)}</style>",
                                 '<svg><image href="https://x.example/i.svg"/></svg>',
                                 '<div style="background:url(//x.example/b.png)"></div>',
                                 '<script src="https://x.example/a.js"></script>'])
def test_self_containment_check_catches_an_external_resource(bad: str) -> None:
    """The check above can fail: each of these is found."""
    assert _external_references(f"<!DOCTYPE html><html><body>{bad}</body></html>")


# --- a real browser -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    binary = find_chromium()
    if binary is None:
        pytest.skip(f"no Chromium binary found ({INSTALL_HINT})")
    with Browser(binary) as browser:
        yield browser


def _write(tmp_path: Path, page: str, name: str = "report.html") -> Path:
    path = tmp_path / name
    path.write_text(page, encoding="utf-8")
    return path


@pytest.mark.chromium
def test_chromium_renders_the_verdict_and_loads_nothing(chromium: Browser, tmp_path: Path) -> None:
    path = _write(tmp_path, render_html(rich_report()))
    run = chromium.load(file_url(path))
    assert '<h1 id="verdict">NOT READY</h1>' in run.dom
    assert "No: if the site went down, Teams calls would stop working for you." in run.dom
    assert "Teams audio and video" in run.dom and "<svg" in run.dom
    assert run.page_requests == ()


@pytest.mark.chromium
def test_chromium_sees_a_page_that_loads_external_resources(chromium: Browser, tmp_path: Path) -> None:
    """The 'loads nothing' check can fail: an external image and stylesheet are caught, and stay local."""
    path = _write(tmp_path, '<!DOCTYPE html><link rel="stylesheet" href="https://netcheck-test.invalid/x.css">'
                            '<p>x</p><img src="http://198.51.100.7/a.png">', "bad.html")
    run = chromium.load(file_url(path))
    assert sorted(run.page_requests) == ["http://198.51.100.7/a.png", "https://netcheck-test.invalid/x.css"]
    # Both went to the loopback proxy (which refused them), not to the network.
    assert "GET http://198.51.100.7/a.png HTTP/1.1" in run.proxied
    assert "CONNECT netcheck-test.invalid:443 HTTP/1.1" in run.proxied


@pytest.mark.chromium
def test_chromium_keeps_hostile_strings_as_text(chromium: Browser, tmp_path: Path) -> None:
    path = _write(tmp_path, render_html(hostile_report()))
    run = chromium.load(file_url(path))
    assert "<script" not in run.dom.lower() and "<img" not in run.dom.lower()
    assert "&lt;script&gt;alert(\"x\")&lt;/script&gt;" in run.dom
    assert run.page_requests == ()


@pytest.mark.chromium
def test_chromium_screenshot_is_not_blank_and_shows_the_verdict_colour(chromium: Browser, tmp_path: Path) -> None:
    path = _write(tmp_path, render_html(rich_report()))
    data = chromium.screenshot(file_url(path), width=1100, height=700)
    png = read_png(data, max_rows=400)
    assert (png.width, png.height) == (1100, 700)
    colours = png.colours(step=3)
    assert len(colours) > 50
    # The NOT READY banner: a red (#b42318-ish) verdict and its light red background are on screen.
    assert any(r > 150 and g < 70 and b < 60 for r, g, b, *_ in colours)
    assert any(r > 240 and 225 <= g <= 240 and 225 <= b <= 240 for r, g, b, *_ in colours)


@pytest.mark.chromium
def test_chromium_screenshot_of_a_ready_report_is_green(chromium: Browser, tmp_path: Path) -> None:
    data = copy.deepcopy(_fixture("report-sample.json"))
    data.update({"verdict": "READY", "exit_code": 0, "summary": "Yes: you can work from here."})
    path = _write(tmp_path, render_html(data))
    png = read_png(chromium.screenshot(file_url(path), width=1000, height=300))
    colours = png.colours(step=2)
    assert any(g > 100 and r < 60 and b < 80 for r, g, b, *_ in colours)  # the green verdict
    assert not any(r > 150 and g < 70 and b < 60 for r, g, b, *_ in colours)  # no red anywhere
