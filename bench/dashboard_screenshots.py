"""Screenshots of the dashboard over the bench's simulated fleet, as IT sees it in a browser.

    .venv/bin/python bench/dashboard_screenshots.py --database-url URL [--out docs/images]

``URL`` is a database ``bench_dashboard.py`` filled (100,000 devices, 30 days of reports, two sites,
a sweep 60 % answered). It runs ``netcheck serve`` on it, signs in with the bench's read-only
account in Debian's headless Chromium (Playwright, no browser download) and saves the overview, the
sweep in progress, Sites and blast radius, a what-if with both sites down and the devices behind one
of its numbers, as ``dashboard-<page>.png``. Not a test: it asserts only that each page answered.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_dashboard import PASSWORD, _existing  # noqa: E402

from tests.browser import INSTALL_HINT, Browser, find_chromium  # noqa: E402
from tests.collector.harness import CollectorProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a database bench_dashboard.py filled")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    binary = find_chromium()
    if binary is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    _, sweep_id = _existing(args.database_url)
    pages = {"overview": "/ui/", "sweep-in-progress": f"/ui/sweeps/{sweep_id}", "sites": "/ui/sites",
             "whatif": "/ui/sites/whatif?down=Dublin+DC&down=Paris",
             "site-devices": "/ui/sites/devices?down=Dublin+DC&down=Paris&workload=identity"}
    args.out.mkdir(parents=True, exist_ok=True)
    # the tests' Chromium: anything not on loopback goes to a recorder that refuses it
    with CollectorProcess(args.database_url, env={}, workdir=Path(tempfile.mkdtemp(prefix="shots-")),
                          args=("--workers", "1")) as proc, Browser(binary, direct_loopback=True) as browser:
        page = browser.new_page()
        page.goto(f"{proc.url}/ui/login")
        page.fill("input[name=name]", "bench")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{proc.url}/ui/")
        for name, path in pages.items():
            got = page.goto(proc.url + path)
            assert got is not None and got.status == 200, (path, got and got.status)
            out = args.out / f"dashboard-{name}.png"
            page.screenshot(path=str(out), full_page=True)
            print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
