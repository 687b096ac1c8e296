"""Make the preset dictionary of the collector's reduced reports (``netcheck/collector/reduced-1.zdict``).

    .venv/bin/python bench/make_dictionary.py [--check]

From the reduced forms of the reports the repository stores, except the lab's worldwide report
(``bench/bench_storage.py`` stores that one's days, so its figures are for a report the dictionary
was not made from). ``--check``: exit 1 if the shipped dictionary is not what this makes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netcheck.collector import compact  # noqa: E402
from netcheck.collector.validate import canonical  # noqa: E402
from netcheck.render.reduced import reduce_report  # noqa: E402

#: most alike the fleet's reports last (nearest to what deflate compresses)
SOURCES = (ROOT / "tests" / "golden" / "report.json", ROOT / "tests" / "fixtures" / "report-outage-sample.json",
           ROOT / "tests" / "fixtures" / "report-sample.json")


def dictionary() -> bytes:
    return compact.build_dictionary([canonical(reduce_report(json.loads(p.read_text("utf-8")))) for p in SOURCES])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped dictionary")
    args = parser.parse_args()
    made = dictionary()
    if args.check:
        sys.exit(0 if compact.DICTIONARY.read_bytes() == made else 1)
    compact.DICTIONARY.write_bytes(made)
    print(f"{compact.DICTIONARY}: {len(made)} bytes")


if __name__ == "__main__":
    main()
