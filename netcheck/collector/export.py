"""Exports of the fleet's latest reports: pure functions from rows to text.

CSV cells that a spreadsheet would run as a formula (starting with ``= + - @`` or their full-width
and small forms such as ``＝＋－＠``, or a tab, carriage return or line feed, after any leading
Unicode spaces or invisible characters) are prefixed with ``'`` so they stay text.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

#: what a spreadsheet reads as the start of a formula (after NFKC, which maps the full-width
#: and small forms such as ＝＋－＠ to these), and the controls that start a cell
FORMULA_START = ("=", "+", "-", "@")
CONTROL_START = ("\t", "\r", "\n")

CSV_COLUMNS = ("device_id", "name", "tags", "last_seen_at", "report_id", "measured_at", "verdict")


def blank(ch: str) -> bool:
    """Characters a spreadsheet may skip before a formula: any Unicode space (no-break, ideographic,
    em...), and invisible format characters (zero-width space and joiners, BOM)."""
    return ch.isspace() or unicodedata.category(ch) == "Cf"


def neutralise(cell: str) -> str:
    """A CSV cell that cannot start a formula in Excel, LibreOffice or Google Sheets."""
    if cell[:1].isalnum() and cell[0].isascii():  # most cells (ids, names, times): nothing to look at
        return cell
    for ch in cell:
        if ch in CONTROL_START:
            return "'" + cell
        if blank(ch):
            continue
        return "'" + cell if unicodedata.normalize("NFKC", ch).startswith(FORMULA_START) else cell
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


def table_csv(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], *, header: bool = True) -> str:
    """Any dashboard table as CSV: one line per row (after a header line, unless ``header`` is false:
    the next part of a streamed table); tags (a mapping) as ``k=v;k=v``; every cell neutralised."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell_text(row.get(c)) for c in columns])
    return buf.getvalue()


def _cell_text(value: Any) -> str:
    if isinstance(value, Mapping):
        value = ";".join(f"{k}={v}" for k, v in sorted(value.items()))
    return neutralise(_text(value))


def csv_cell(value: Any) -> str:
    """``value`` as ``table_csv`` writes its cell inside a row (neutralised, quoted only when it must
    be): what the database keeps for the exports it writes (``devices.name_csv``...). Written by the
    same ``csv`` writer, in a row of two cells (a row's only cell, when empty, is quoted)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow([_cell_text(value), ""])
    return buf.getvalue()[:-len(",\r\n")]


def json_value(value: Any) -> str:
    """``value`` as a dashboard JSON export writes it in a row (``json.dumps``, non-ASCII as it is)."""
    return json.dumps(value, ensure_ascii=False)
