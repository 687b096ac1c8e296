"""Exports made by PostgreSQL: a list's CSV or JSON text written by the database (``COPY (SELECT ...)
TO STDOUT``), byte for byte what the Python path (``export.table_csv``, ``json.dumps`` per row) writes
from the same rows, without a Python object per row or cell (100,000 devices: the Python path spent
seconds per export in the collector).

What the SQL reproduces, cell by cell:

- CSV: ``str()`` of the value (times as ``store.iso``, booleans ``True``/``False``, tags ``k=v;k=v``
  by key), neutralised as ``export.neutralise`` does (a ``'`` before a cell that a spreadsheet would
  run as a formula: the same characters, found by one regular expression built from the same
  Unicode tests), an empty cell unquoted (a NULL for ``COPY``), quotes where Python's ``csv`` puts
  them (a comma, quote, CR or LF inside: ``COPY``'s rule too), rows ended by CR LF;
- JSON: each row an object in the row's key order, ``json.dumps``' separators (``", "``, ``": "``),
  its escapes (``to_json``: the same set, non-ASCII as it is), times as ``store.iso``.

The list is read in keyset batches, each batch in its own short transaction and read whole before
it is sent (no connection held while a client downloads), as ``queries.export_batches`` does.
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

#: rows a batch holds (each batch one transaction: a key bound found first, then one ``COPY``)
COPY_BATCH = 10_000
#: ``COPY`` options for one JSON text per row: quote and delimiter characters a JSON text never holds
#: raw (``to_json`` escapes every control character), so ``COPY`` writes the text as it is
_ONE_TEXT = "(FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"
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
    """A neutralised cell; NULL when empty (``COPY`` writes NULL unquoted, as ``csv`` writes "")."""
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


def _csv_select(listing: Listing, sub: Any) -> Any:
    """The cells' texts first, in a subquery kept as it is (``OFFSET 0``: PostgreSQL would otherwise
    inline each text into every place ``_cell`` names it), then neutralised."""
    source, cols = _columns(listing, sub, _csv_pairs)
    texts = [_text(cols[name]).label(f"c{i}") for i, name in enumerate(listing.columns)]
    inner = sa.select(sub.c[listing.key_name].label("k"), *texts).select_from(source).offset(0).subquery()
    return (sa.select(*(_cell(inner.c[f"c{i}"]).label(name) for i, name in enumerate(listing.columns)))
            .order_by(inner.c.k))


def _json_select(listing: Listing, sub: Any) -> Any:
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
    return sa.select(text.label("row")).select_from(source).order_by(sub.c[listing.key_name])


def _compiled(conn: Connection, statement: Any) -> tuple[str, dict[str, Any]]:
    """The statement's SQL and its parameters, as the driver would receive them (lists expanded,
    each value through its type's bind processing)."""
    expanded = statement.compile(dialect=conn.dialect).construct_expanded_state()
    params = dict(expanded.parameters)
    for name, process in expanded.processors.items():
        if name in params:
            params[name] = process(params[name])
    return str(expanded.statement), params


def _copy(conn: Connection, statement: Any, options: str) -> list[bytes]:
    """``COPY (statement) TO STDOUT``'s rows, each as the server sent it (one row a message)."""
    sql, params = _compiled(conn, statement)
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(f"COPY ({sql}) TO STDOUT {options}", params) as copy:
        return [bytes(row) for row in copy]


def _batches(connect: Callable[[], AbstractContextManager[Connection]], listing: Listing,
             select: Callable[[Listing, Any], Any], options: str, batch: int) -> Iterator[list[bytes]]:
    """The list's rows as ``select`` writes them, in key order, ``batch`` at a time, each batch in its
    own transaction: its last key found first (``bound``), then every row up to it copied."""
    last = None
    while True:
        part = listing if last is None else listing.after(last)
        keys = part.query.order_by(listing.key).limit(batch).subquery()
        with connect() as conn:
            # compiling each batch's expressions to machine code costs more than it saves (0.8 s)
            conn.exec_driver_sql("SET LOCAL jit = off")
            count, bound = conn.execute(sa.select(sa.func.count(), sa.func.max(keys.c[listing.key_name]))).one()
            if count == 0:
                return
            upto = part.query.where(*(k <= bound for k in (listing.key, *listing.twins)))
            rows = _copy(conn, select(listing, upto.cte("batch").prefix_with("MATERIALIZED")), options)
        yield rows
        if count < batch:
            return
        last = bound


def supports(conn: Connection) -> bool:
    """Whether this database can write the exports (PostgreSQL, its text in UTF-8)."""
    if conn.dialect.name != "postgresql":
        return False
    return str(conn.exec_driver_sql("SHOW server_encoding").scalar_one()) == "UTF8"


def csv_chunks(connect: Callable[[], AbstractContextManager[Connection]], listing: Listing,
               batch: int = COPY_BATCH) -> Iterator[bytes]:
    """The list as ``export.table_csv`` writes it (header, then a row a line), a batch a chunk."""
    yield table_csv(listing.columns, []).encode()
    for rows in _batches(connect, listing, _csv_select, "(FORMAT csv)", batch):
        yield b"".join(row[:-1] + b"\r\n" for row in rows)


def json_chunks(connect: Callable[[], AbstractContextManager[Connection]], listing: Listing, name: str,
                batch: int = COPY_BATCH) -> Iterator[bytes]:
    """``{"<name>": [row, ...]}``, a row a line, as the Python path writes it."""
    yield ("{" + json.dumps(name, ensure_ascii=False) + ": [").encode()
    first = True
    for rows in _batches(connect, listing, _json_select, _ONE_TEXT, batch):
        yield (b"\n" if first else b",\n") + b",\n".join(row[:-1] for row in rows)
        first = False
    yield b"\n]}\n"
