"""Exports of the fleet's latest reports: pure functions from rows to text.

CSV cells that a spreadsheet would run as a formula (starting with ``= + - @``, a tab or a
carriage return, after any leading spaces) are prefixed with ``'`` so they stay text.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

CSV_COLUMNS = ("device_id", "name", "tags", "last_seen_at", "report_id", "measured_at", "verdict")


def neutralise(cell: str) -> str:
    """A CSV cell that cannot start a formula in Excel, LibreOffice or Google Sheets."""
    if cell.lstrip(" ").startswith(_FORMULA_START):
        return "'" + cell
    return cell


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per device; one ``workload:<id>`` column per workload seen in any row."""
    workloads = sorted({w for row in rows for w in row["workloads"]})
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow([*CSV_COLUMNS, *(f"workload:{w}" for w in workloads)])
    for row in rows:
        tags = ";".join(f"{k}={v}" for k, v in sorted(row["tags"].items()))
        cells = [_text(row[c]) for c in CSV_COLUMNS if c != "tags"]
        cells.insert(CSV_COLUMNS.index("tags"), tags)
        cells += [_text(row["workloads"].get(w)) for w in workloads]
        writer.writerow([neutralise(c) for c in cells])
    return buf.getvalue()


def to_json(rows: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps({"devices": list(rows)}, indent=2, ensure_ascii=False) + "\n"
