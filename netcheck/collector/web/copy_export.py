"""Exports made by PostgreSQL: a list's CSV or JSON text written by the database, byte for byte what
the Python path (``export.table_csv``, ``json.dumps`` per row) writes from the same rows, without a
Python object per row or cell (100,000 devices: the Python path spent seconds per export in the
collector).

What the SQL reproduces, cell by cell:

- CSV: ``str()`` of the value (times as ``store.iso``, booleans ``True``/``False``, tags ``k=v;k=v``
  by key), neutralised as ``export.neutralise`` does (a ``'`` before a cell that a spreadsheet would
  run as a formula: the same characters, found by one regular expression built from the same
  Unicode tests), quoted as Python's ``csv`` quotes (only a cell with a comma, quote, CR or LF, its
  quotes doubled; an empty cell bare), rows ended by CR LF;
- JSON: each row an object in the row's key order, ``json.dumps``' separators (``", "``, ``": "``),
  its escapes (``to_json``: the same set, non-ASCII as it is), times as ``store.iso``.

The list is read in keyset batches, as ``queries.export_batches`` does: each batch one statement in
its own short transaction, answering one row (the batch's text, joined by the database, and its
last key), so no connection is held while a client downloads and the collector handles one string
per batch. (``COPY ... TO STDOUT`` was tried first: one message per row, 0.25 s of Python per
100,000 rows, and a second statement per batch to find its last key.)
"""

from __future__ import annotations

import functools
import json
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine import Connection

from netcheck.collector.db import UTCDateTime
from netcheck.collector.export import CONTROL_START, FORMULA_START, blank, table_csv
from netcheck.collector.web.queries import Listing, Tags

#: rows a batch holds (each batch one statement in one transaction, its text in memory: a few MB)
BATCH = 10_000
#: code points that may hold formula-relevant characters: the planes beyond are CJK ideographs,
#: unassigned or private use (no space, no invisible format character, no NFKC form of ``= + - @``)
_PLANES = (range(0, 0x30000), range(0xE0000, 0xF0000))


def _ranges(points: Sequence[int]) -> str:
    """Code points as a regular expression's bracket contents (``\\Uxxxxxxxx`` ranges)."""
    out: list[str] = []
    start = prev = -2
    for cp in [*points, -2]:
        if cp == prev + 1:
            prev = cp
            continue
        if start >= 0:
            out.append(f"\\U{start:08X}" if start == prev else f"\\U{start:08X}-\\U{prev:08X}")
        start = prev = cp
    return "".join(out)


@functools.cache
def formula_pattern() -> str:
    """A PostgreSQL regular expression matching the cells ``export.neutralise`` prefixes: blanks
    (that are not control starts), then a control start or a formula start."""
    blanks: list[int] = []
    formulas: list[int] = []
    for plane in _PLANES:
        for cp in plane:
            ch = chr(cp)
            if 0xD800 <= cp <= 0xDFFF or ch in CONTROL_START:
                continue
            if blank(ch):
                blanks.append(cp)
            elif unicodedata.normalize("NFKC", ch).startswith(FORMULA_START):
                formulas.append(cp)
    starts = sorted([*formulas, *(ord(c) for c in CONTROL_START)])
    return f"^[{_ranges(blanks)}]*[{_ranges(starts)}]"


def _iso(value: Any) -> Any:
    """``store.iso`` in SQL: ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` in UTC (the fraction only when not zero)."""
    utc = sa.func.timezone("UTC", value)
    fraction = sa.case((sa.func.date_trunc("second", value) == value, sa.literal("")),
                       else_=sa.func.to_char(utc, ".US"))
    return sa.func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS').op("||")(fraction).op("||")(sa.literal("Z"))


def _json(value: Any) -> Any:
    return sa.func.coalesce(sa.cast(sa.func.to_json(value), sa.Text), sa.literal("null"))


def _text(value: Any) -> Any:
    """``str()`` of the value as the Python path writes it in a CSV cell (NULL for None)."""
    if isinstance(value.type, UTCDateTime):
        return _iso(value)
    if isinstance(value.type, sa.Boolean):
        return sa.case((value.is_(True), sa.literal("True")), (value.is_(False), sa.literal("False")))
    return sa.cast(value, sa.Text)


def _cell(text: Any) -> Any:
    """A neutralised cell; NULL when empty."""
    pattern = sa.literal(formula_pattern())
    first = sa.func.ascii(text)
    # most cells start with a letter or digit (ASCII 48-57, 65-126 hold no blank and no formula
    # start): no regular expression for them
    plain = sa.or_(first.between(48, 57), first.between(65, 126))
    neutral = sa.case((plain, text), (text.op("~")(pattern), sa.literal("'").op("||")(text)), else_=text)
    return sa.func.nullif(neutral, sa.literal(""))


def _pairs(text: Any, pair: Callable[[Any, Any], Any], separator: str, order: Any) -> Any:
    """The tags kept as ``store.pairs_text`` (a JSON object), each (key, value) as ``pair`` writes it,
    joined by ``separator`` in key order (``order`` makes the key an ordering)."""
    each = sa.func.json_each_text(sa.cast(text, sa.JSON)).table_valued("key", "value")
    return (sa.select(sa.func.string_agg(pair(each.c.key, each.c.value),
                                         aggregate_order_by(sa.literal(separator), order(each.c.key))))
            .scalar_subquery())


def _csv_pairs(text: Any) -> Any:
    """``k=v;k=v`` by key (``table_csv``: sorted by code point, the "C" collation)."""
    return _pairs(text, lambda k, v: k.op("||")(sa.literal("=")).op("||")(v), ";", lambda k: k.collate("C"))


def _json_pairs(text: Any) -> Any:
    """The tags as the Python path's dict: keys in the database's order (``store.tags_of``)."""
    inner = _pairs(text, lambda k, v: sa.cast(sa.func.to_json(k), sa.Text).op("||")(sa.literal(": "))
                   .op("||")(sa.cast(sa.func.to_json(v), sa.Text)), ", ", lambda k: k)
    return sa.func.coalesce(sa.literal("{").op("||")(inner).op("||")(sa.literal("}")), sa.literal("{}"))


def _columns(listing: Listing, sub: Any, pairs: Callable[[Any], Any]) -> tuple[Any, dict[str, Any]]:
    """What the rows are read from, and every column a row has in the Python path's key order: the
    query's, then the derived ones. Tags are written once per distinct text in the batch (``pairs``:
    a few dozen texts for 10,000 devices), then joined to the rows."""
    source = sub
    out = {name: sub.c[name] for name in sub.c.keys()}
    for name, make in listing.derived.items():
        if isinstance(make, Tags):
            texts = sa.select(sub.c[make.of].label("tags")).distinct().subquery()
            written = sa.select(texts.c.tags, pairs(texts.c.tags).label("text")).subquery()
            source = source.outerjoin(written, written.c.tags == sub.c[make.of])
            out[name] = written.c.text
        else:
            out.setdefault(name, make(sub))
    return source, out


def _quoted(cell: Any) -> Any:
    """A CSV cell as Python's ``csv`` writes it (minimal quoting): in quotes, its quotes doubled, when
    it holds a comma, a quote, CR or LF; empty for NULL."""
    quoted = sa.literal('"').op("||")(sa.func.replace(cell, '"', '""')).op("||")(sa.literal('"'))
    # four searches for one character cost 100,000 devices' 7 cells 65 ms, a regular expression 165
    special = sa.or_(*(sa.func.strpos(cell, sa.literal(c)) > 0 for c in (",", '"', "\r", "\n")))
    return sa.case((special, quoted), else_=sa.func.coalesce(cell, ""))


def _csv_lines(listing: Listing, sub: Any) -> Any:
    """(key, line): the cells' texts first, in a subquery kept as it is (``OFFSET 0``: PostgreSQL
    would otherwise inline each text into every place ``_cell`` names it), then neutralised, quoted
    and joined, the line ended by CR LF."""
    source, cols = _columns(listing, sub, _csv_pairs)
    texts = [_text(cols[name]).label(f"c{i}") for i, name in enumerate(listing.columns)]
    inner = sa.select(sub.c[listing.key_name].label("k"), *texts).select_from(source).offset(0).subquery()
    cells = sa.select(inner.c.k, *(_cell(inner.c[f"c{i}"]).label(f"c{i}") for i in range(len(texts)))
                      ).offset(0).subquery()
    line = sa.func.concat_ws(",", *(_quoted(cells.c[f"c{i}"]) for i in range(len(texts)))).op("||")(
        sa.literal("\r\n"))
    return sa.select(cells.c.k, line.label("line"))


def _json_lines(listing: Listing, sub: Any) -> Any:
    """(key, line): the row as ``json.dumps`` writes it."""
    source, cols = _columns(listing, sub, _json_pairs)
    parts: list[Any] = []
    for i, (name, col) in enumerate(cols.items()):
        parts.append(sa.literal(("{" if i == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": "))
        parts.append(col if name in listing.derived and isinstance(listing.derived[name], Tags) else
                     _json(_iso(col) if isinstance(col.type, UTCDateTime) else col))
    parts.append(sa.literal("}"))
    text = parts[0]
    for p in parts[1:]:
        text = text.op("||")(p)
    return sa.select(sub.c[listing.key_name].label("k"), text.label("line")).select_from(source)


def _batches(connect: Callable[[], AbstractContextManager[Connection]], listing: Listing,
             lines: Callable[[Listing, Any], Any], separator: str, batch: int) -> Iterator[str]:
    """The list's rows as ``lines`` writes them, in key order, ``batch`` at a time: each batch one
    statement in its own transaction, which answers one row (how many rows, the last key, and their
    lines joined by ``separator``)."""
    last = None
    while True:
        part = listing if last is None else listing.after(last)
        rows = lines(listing, part.query.order_by(listing.key).limit(batch).cte("batch").prefix_with("MATERIALIZED")
                     ).subquery()
        joined = sa.func.string_agg(rows.c.line, aggregate_order_by(sa.literal(separator), rows.c.k))
        with connect() as conn:
            # compiling each batch's expressions to machine code costs more than it saves (0.8 s)
            conn.exec_driver_sql("SET LOCAL jit = off")
            count, bound, text = conn.execute(sa.select(sa.func.count(), sa.func.max(rows.c.k), joined)).one()
        if count == 0:
            return
        yield text
        if count < batch:
            return
        last = bound


def supports(conn: Connection) -> bool:
    """Whether this database can write the exports (PostgreSQL, its text in UTF-8)."""
    if conn.dialect.name != "postgresql":
        return False
    return str(conn.exec_driver_sql("SHOW server_encoding").scalar_one()) == "UTF8"


def csv_chunks(connect: Callable[[], AbstractContextManager[Connection]], listing: Listing,
               batch: int = BATCH) -> Iterator[bytes]:
    """The list as ``export.table_csv`` writes it (header, then a row a line), a batch a chunk."""
    yield table_csv(listing.columns, []).encode()
    for text in _batches(connect, listing, _csv_lines, "", batch):
        yield text.encode()


def json_chunks(connect: Callable[[], AbstractContextManager[Connection]], listing: Listing, name: str,
                batch: int = BATCH) -> Iterator[bytes]:
    """``{"<name>": [row, ...]}``, a row a line, as the Python path writes it."""
    yield ("{" + json.dumps(name, ensure_ascii=False) + ": [").encode()
    first = True
    for text in _batches(connect, listing, _json_lines, ",\n", batch):
        yield (("\n" if first else ",\n") + text).encode()
        first = False
    yield b"\n]}\n"
