"""Item 8: without --tenant the outage section says SharePoint was left out, and the tenant is found
where the laptop already knows it: the OneDrive client's account settings (captured files)."""

from __future__ import annotations

import json
import plistlib
from pathlib import Path

import pytest

from netcheck.check import _tenant_from_onedrive
from netcheck.m365.catalog import load_catalog
from netcheck.platform.macos import MacPlatform, parse_onedrive_plist
from netcheck.platform.windows import ONEDRIVE_ACCOUNTS_KEY, WindowsPlatform, parse_onedrive_accounts
from tests.hostile.sandbox import needs_sandbox, run_sandboxed
from tests.platform.plat_support import Replay, ok, read_fixture

MACOS_PLIST = Path(__file__).resolve().parents[1] / "platform/fixtures/macos/onedrive-standalone-suite.plist"


def test_hostile_windows_onedrive_accounts_give_the_business_sharepoint_urls() -> None:
    urls = parse_onedrive_accounts(read_fixture("windows/reg-query-onedrive-accounts.txt"))
    assert urls == ("https://contoso-my.sharepoint.com/personal/alex_contoso_com/_api",
                    "https://contoso-my.sharepoint.com/", "https://contoso.sharepoint.com/",
                    "https://fabrikam-my.sharepoint.com/personal/alex_contoso_com/_api",
                    "https://fabrikam-my.sharepoint.com/")
    assert not any("@" in u for u in urls)  # never the user's e-mail
    assert parse_onedrive_accounts(read_fixture("windows/reg-query-onedrive-personal-only.txt")) == ()


def test_hostile_macos_onedrive_preferences_give_the_business_sharepoint_urls() -> None:
    xml = MACOS_PLIST.read_bytes()
    binary = plistlib.dumps(plistlib.loads(xml), fmt=plistlib.FMT_BINARY)  # as the client stores it
    for data in (xml, binary):
        assert set(parse_onedrive_plist(data)) == {
            "https://contoso-my.sharepoint.com/", "https://contoso.sharepoint.com/",
            "https://contoso-my.sharepoint.com/personal/alex_contoso_com/_api"}
    assert parse_onedrive_plist(b"not a plist") == ()


def test_hostile_catalog_maps_sharepoint_urls_to_the_tenant() -> None:
    catalog = load_catalog("Worldwide")
    assert catalog.tenant_from_urls(["https://contoso-my.sharepoint.com/"]) == "contoso"
    assert catalog.tenant_from_urls(["https://contoso.sharepoint.com/sites/x"]) == "contoso"
    assert catalog.tenant_from_urls(["https://api.onedrive.com/v1.0", "https://[::1"]) is None


def test_hostile_check_takes_the_tenant_from_the_windows_onedrive_client() -> None:
    text = read_fixture("windows/reg-query-onedrive-accounts.txt")
    windows = WindowsPlatform(run=Replay({("reg", "query", ONEDRIVE_ACCOUNTS_KEY, "/s"): ok(text)}))
    assert _tenant_from_onedrive(windows, load_catalog("Worldwide")) == "contoso"


def test_hostile_check_takes_the_tenant_from_the_macos_onedrive_client(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    prefs = tmp_path / "Library" / "Preferences"
    prefs.mkdir(parents=True)
    (prefs / "com.microsoft.OneDrive.plist").write_bytes(MACOS_PLIST.read_bytes())
    monkeypatch.setenv("HOME", str(tmp_path))
    assert _tenant_from_onedrive(MacPlatform(run=Replay({})), load_catalog("Worldwide")) == "contoso"


@needs_sandbox
@pytest.mark.timeout(180)
def test_hostile_without_a_tenant_the_outage_section_says_sharepoint_was_left_out(tmp_path: Path) -> None:
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress", "--json", "--deadline", "5"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    report = json.loads(proc.stdout)
    assert report["tenant"] is None
    note = [n for n in report["outage"]["notes"] if n.startswith("Left out of this prediction")]
    assert note and "SharePoint and OneDrive" in note[0] and "--tenant" in note[0]
    assert note[0] in report["summary"]
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress", "--json", "--deadline", "5", "--tenant",
                          "contoso"], tmp_path)
    report = json.loads(proc.stdout)
    assert not any(n.startswith("Left out") for n in report["outage"]["notes"])
    assert report["network"]["tenant_source"] == "option"
