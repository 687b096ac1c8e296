"""Helpers for the dashboard's tests: accounts made with the real CLI, a signed-in HTTP client,
and a hostile report (every free-text string the schema accepts carries HTML, script and a formula)."""

from __future__ import annotations

import copy
import os
import re
import secrets
import subprocess
import sys
from typing import Any

import httpx

from netcheck.collector.validate import ApiError, Validators
from tests.collector.conftest import sample_report

#: a formula first (for the CSV export), then markup that would run or load if it were not escaped
PAYLOAD = '=HYPERLINK("/x","y")<script>window.pwned=1</script><img src=/x onerror="window.pwned=2">"\'&'


def admin_cli(database_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netcheck", "admin", *args, "--database-url", database_url],
                          input=stdin, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if not k.startswith("NETCHECK_")})


def add_user(database_url: str, role: str, name: str | None = None) -> tuple[str, str]:
    """A new dashboard account through ``netcheck admin user add`` (password on stdin); (name, password)."""
    name = name or f"{role.replace('-', '')}{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    done = admin_cli(database_url, "user", "add", name, "--role", role, stdin=password + "\n")
    assert done.returncode == 0, done.stderr
    return name, password


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html[:2000]
    return found.group(1)


def sign_in(base_url: str, name: str, password: str) -> tuple[httpx.Client, str]:
    """A client with a dashboard session, and the session's CSRF token."""
    client = httpx.Client(base_url=base_url, timeout=30.0)
    form = client.get("/ui/login")
    done = client.post("/ui/login", data={"csrf": csrf_of(form.text), "name": name, "password": password,
                                          "next": "/ui/"})
    assert done.status_code == 303, done.text
    return client, csrf_of(client.get("/ui/").text)


def hostile_report() -> dict[str, Any]:
    """The sample report with ``PAYLOAD`` in every string the report schema still accepts with it."""
    validators = Validators()
    report = sample_report()

    def accepted(candidate: dict[str, Any]) -> bool:
        try:
            validators.report.check(candidate)
        except ApiError:
            return False
        return True

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in list(items):
            if isinstance(value, str) and key not in ("report_id", "verdict", "status"):
                trial = copy.deepcopy(report)
                target = trial
                for step in path:
                    target = target[step]
                target[key] = PAYLOAD
                if accepted(trial):
                    node[key] = PAYLOAD
            else:
                walk(value, (*path, key))

    walk(report, ())
    return report
