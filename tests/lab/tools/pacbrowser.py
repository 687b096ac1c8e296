"""Load URLs in Debian's headless Chromium configured with a PAC URL: a lab truth tool.

The PAC client whose behaviour the lab measures when the PAC file cannot be
fetched: Chromium decides itself whether to go DIRECT or, when its managed
policy makes the PAC mandatory (``ProxySettings.ProxyPacMandatory``), to fail
closed. Runs under the lab's Python (it needs Playwright), inside the laptop's
namespace as the laptop's user, so Chromium uses the laptop's routes and
resolver and reads the policy the lab put in the laptop's ``/etc/chromium``::

    python pacbrowser.py --pac-url URL [--timeout 12] URL [URL...]

One Chromium launch loads every URL at once, each in its own page, and waits
for the response headers. Prints a JSON object: ``browser`` (Chromium's
version), ``policy`` (the managed policy files Chromium could read) and
``results``, per URL: ``ok`` (headers came back), ``status``, ``remote_ip``
(the address Chromium talked to: the server's, or the proxy's), the lab
servers' ``x-lab-server`` / ``x-lab-client`` headers, the start of the
``body``, and ``error`` (Chromium's ``net::ERR_...`` code, or ``timeout``). Any failure of the tool itself prints
``{"error": ...}`` and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

#: Where Debian's Chromium reads its managed policies (the lab bind-mounts the laptop's over it).
POLICY_DIR = Path("/etc/chromium/policies/managed")
#: No sandbox (setpriv --no-new-privs forbids its setuid helper), no GPU, no background traffic.
ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-default-browser-check",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate",
)
#: Enough of a page for the lab's small JSON answers (the user realm).
BODY_CHARS = 4000
NET_ERROR = re.compile(r"net::(ERR_[A-Z_]+)")
START = time.monotonic()


async def load(context: Any, url: str, timeout_s: float) -> dict[str, Any]:
    page = await context.new_page()
    try:
        result = await _navigate(page, url, timeout_s)
    finally:
        await _bounded(page.close(), 5)
    _log(f"{url}: {result.get('error') or result.get('status')}")
    return result


async def _bounded(step: Any, seconds: float) -> None:
    """Closing a page or the browser while connections hang must not hang the tool."""
    try:
        await asyncio.wait_for(step, seconds)
    except Exception as exc:  # recorded on stderr; the results are already in
        _log(f"close: {type(exc).__name__}")


def _log(text: str) -> None:
    print(f"pacbrowser {time.monotonic() - START:6.1f}s {text}", file=sys.stderr, flush=True)


async def _navigate(page: Any, url: str, timeout_s: float) -> dict[str, Any]:
    try:
        response = await page.goto(url, wait_until="commit", timeout=timeout_s * 1000)
    except Exception as exc:  # Playwright raises for every failed navigation: an outcome, recorded
        text = str(exc)
        found = NET_ERROR.search(text)
        error = found.group(1) if found else ("timeout" if "Timeout" in type(exc).__name__ else text[:200])
        return {"url": url, "ok": False, "error": error}
    if response is None:
        return {"url": url, "ok": False, "error": "no response"}
    headers = await response.all_headers()
    server = await response.server_addr()
    try:
        body = (await response.text())[:BODY_CHARS]
    except Exception as exc:  # the body did not come: the headers still say who answered
        body = f"(no body: {str(exc)[:100]})"
    return {
        "url": url,
        "ok": True,
        "status": response.status,
        "remote_ip": str((server or {}).get("ipAddress") or "").strip("[]") or None,  # IPv6 comes bracketed
        "x-lab-server": headers.get("x-lab-server"),
        "x-lab-client": headers.get("x-lab-client"),
        "body": body,
    }


async def run(pac_url: str, urls: list[str], timeout_s: float, binary: str) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=binary, args=[*ARGS, f"--proxy-pac-url={pac_url}"], timeout=60_000
        )
        _log(f"chromium {browser.version} up")
        try:
            context = await browser.new_context()
            tasks = {asyncio.create_task(load(context, u, timeout_s)): u for u in urls}
            done, pending = await asyncio.wait(tasks, timeout=timeout_s + 15)  # the tool's own deadline
            for task in pending:
                task.cancel()
            results = [t.result() for t in done]
            results += [{"url": tasks[t], "ok": False, "error": "timeout (the tool's deadline)"} for t in pending]
            version = browser.version
        finally:
            await _bounded(browser.close(), 10)
    policy = {p.name: json.loads(p.read_text()) for p in sorted(POLICY_DIR.glob("*.json"))}
    return {"browser": version, "pac_url": pac_url, "policy": policy, "results": {r["url"]: r for r in results}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="load URLs in headless Chromium with a PAC URL")
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--pac-url", required=True)
    parser.add_argument("--timeout", type=float, default=12.0, help="seconds per URL, for the headers")
    parser.add_argument("--chromium", default=os.environ.get("NETCHECK_CHROMIUM") or shutil.which("chromium") or "")
    args = parser.parse_args(argv)
    if not args.chromium:
        print(json.dumps({"error": "no chromium (apt-get install --no-install-recommends chromium)"}))
        return 1
    try:
        out = asyncio.run(run(args.pac_url, args.urls, args.timeout, args.chromium))
    except Exception as exc:  # the tool failed: the lab reports a lab problem, never "fails"
        print(json.dumps({"error": f"{type(exc).__name__}: {str(exc)[:300]}"}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
