"""The Windows and macOS deployment files, which cannot run here: parsed by real parsers and
checked against each other (paths, names, the version). packaging/README.md says what was never run."""

from __future__ import annotations

import plistlib
import re
import subprocess
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netcheck import __version__
from netcheck.paths import APP
from tests.packaging.conftest import ROOT, run

pytestmark = pytest.mark.packaging

WIN = ROOT / "packaging" / "windows"
MAC = ROOT / "packaging" / "macos"
TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
SHELL_SCRIPTS = [MAC / "netcheck-agent-run", MAC / "scripts" / "preinstall", MAC / "scripts" / "postinstall",
                 MAC / "uninstall.sh", MAC / "build-pkg.sh", WIN / "stage.sh",
                 *sorted((ROOT / "packaging" / "debian").rglob("*inst")),
                 *sorted((ROOT / "packaging" / "debian").rglob("*rm")),
                 ROOT / "packaging" / "debian" / "agent" / "enroll-if-needed",
                 ROOT / "packaging" / "debian" / "collector" / "netcheck-collector",
                 *sorted((ROOT / "packaging" / "collector").glob("*.sh"))]


def powershell_errors(path: Path) -> list[str]:
    """Syntax errors in a PowerShell script, from the tree-sitter PowerShell grammar."""
    import tree_sitter
    import tree_sitter_powershell

    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    tree = parser.parse(path.read_bytes())
    errors: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            errors.append(f"{path.name}:{node.start_point[0] + 1}: {'missing' if node.is_missing else 'error'} "
                          f"near {node.text[:40]!r}" if node.text else f"{path.name}:{node.start_point[0] + 1}")
        stack.extend(node.children)
    return errors


@pytest.mark.parametrize("script", sorted(WIN.glob("*.ps1")), ids=lambda p: p.name)
def test_powershell_parses(script: Path) -> None:
    assert powershell_errors(script) == []


def test_the_powershell_parser_finds_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ps1"
    broken.write_text("param([string] $Url\nif ($Url) { Write-Output 'x'\n")
    assert powershell_errors(broken)


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT / "packaging")))
def test_shell_scripts_parse(script: Path) -> None:
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    run(["sh", "-n", str(script)])


def test_scheduled_task_xml() -> None:
    root = ET.parse(WIN / "netcheck-agent-task.xml").getroot()
    assert root.tag == f"{{{TASK_NS['t']}}}Task"
    principal = root.find("t:Principals/t:Principal", TASK_NS)
    assert principal is not None
    assert principal.findtext("t:GroupId", namespaces=TASK_NS) == "S-1-5-32-545"  # users, not SYSTEM
    assert principal.findtext("t:RunLevel", namespaces=TASK_NS) == "LeastPrivilege"
    actions = root.find("t:Actions", TASK_NS)
    assert actions is not None and actions.get("Context") == principal.get("id")
    args = actions.findtext("t:Exec/t:Arguments", namespaces=TASK_NS) or ""
    script = re.search(r'-File "%ProgramFiles%\\netcheck\\([^"]+)"', args)
    assert script and (WIN / script.group(1)).exists(), args
    assert root.findtext("t:Triggers/t:LogonTrigger/t:Repetition/t:Interval", namespaces=TASK_NS) == "PT1H"


def test_windows_scripts_agree_with_netcheck() -> None:
    install = (WIN / "Install-Netcheck.ps1").read_text()
    invoke = (WIN / "Invoke-NetcheckAgent.ps1").read_text()
    uninstall = (WIN / "Uninstall-Netcheck.ps1").read_text()
    # the task Install registers is the one Uninstall removes
    assert "-TaskPath '\\netcheck\\' -TaskName 'netcheck agent'" in install
    assert "-TaskPath '\\netcheck\\' -TaskName 'netcheck agent'" in uninstall
    # the token Invoke looks for is where netcheck keeps it on Windows (netcheck.paths, agent.config)
    assert f"Join-Path $env:LOCALAPPDATA '{APP}'" in invoke and "'Config\\token'" in invoke
    # the enrollment settings Install writes are those Invoke reads
    for key in ("collector_url", "site", "secret_file"):
        assert f"{key} =" in install and f"$config.{key}" in invoke


def test_intune_folder_is_stamped_with_the_version(tmp_path: Path) -> None:
    fake_exe = tmp_path / "netcheck.exe"
    fake_exe.write_bytes(b"MZ")
    run(["bash", str(WIN / "stage.sh"), str(fake_exe), str(tmp_path / "intune")])
    staged = sorted(p.name for p in (tmp_path / "intune").iterdir())
    assert staged == sorted(["netcheck.exe", "netcheck-agent-task.xml", "Install-Netcheck.ps1",
                             "Uninstall-Netcheck.ps1", "Detect-Netcheck.ps1", "Invoke-NetcheckAgent.ps1"])
    for script in (tmp_path / "intune").glob("*.ps1"):
        text = script.read_text()
        assert "@VERSION@" not in text
        assert powershell_errors(script) == []
    assert f"$expected = '{__version__}'" in (tmp_path / "intune" / "Detect-Netcheck.ps1").read_text()


def test_launch_agent_plist() -> None:
    with open(MAC / "org.netcheck.agent.plist", "rb") as f:
        agent = plistlib.load(f)
    assert agent["Label"] == "org.netcheck.agent" == (MAC / "org.netcheck.agent.plist").stem
    assert agent["ProgramArguments"] == ["/usr/local/netcheck/netcheck-agent-run"]
    assert agent["StartInterval"] == 3600 and agent["RunAtLoad"] is True
    assert "UserName" not in agent  # a LaunchAgent runs as the signed-in user
    # the package puts the program where the plist says, and the scripts use the same label
    build = (MAC / "build-pkg.sh").read_text()
    assert "$root/usr/local/netcheck/netcheck-agent-run" in build and "$root/Library/LaunchAgents/" in build
    for script in (MAC / "scripts" / "preinstall", MAC / "scripts" / "postinstall", MAC / "uninstall.sh"):
        assert "org.netcheck.agent" in script.read_text()


def test_configuration_profile() -> None:
    with open(MAC / "org.netcheck.agent.mobileconfig", "rb") as f:
        profile = plistlib.load(f)
    assert profile["PayloadType"] == "Configuration" and profile["PayloadScope"] == "System"
    uuids = [profile["PayloadUUID"]] + [p["PayloadUUID"] for p in profile["PayloadContent"]]
    assert len(set(uuids)) == len(uuids) and all(uuid.UUID(u) for u in uuids)
    (payload,) = profile["PayloadContent"]
    # the managed-preferences domain and keys are those the LaunchAgent's program reads
    run_script = (MAC / "netcheck-agent-run").read_text()
    assert f'prefs="/Library/Managed Preferences/{payload["PayloadType"]}"' in run_script
    for key in ("CollectorURL", "EnrollSecret", "Site"):
        assert key in payload and f"setting {key}" in run_script
    assert payload["CollectorURL"].startswith("https://")


def test_pkg_scripts_are_posix_sh() -> None:
    for script in (MAC / "scripts").iterdir():
        assert script.read_text().startswith("#!/bin/sh\n"), script
        if Path("/bin/dash").exists():  # dash knows no bashisms
            assert subprocess.run(["/bin/dash", "-n", str(script)], check=False).returncode == 0
