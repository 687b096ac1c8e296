"""Exports made by PostgreSQL: a list's CSV or JSON text written by the database, byte for byte what
the Python path (``export.table_csv``, ``json.dumps`` per row) writes from the same rows, without a
Python object per row or cell (100,000 devices: the Python path spent seconds per export in the
collector).

The lists of devices format nothing: each row is a line the database keeps or joins from kept
pieces (``Listing.lines``): every device's whole CSV line and JSON object (``devices.export_csv``,
``export_json``, kept by every write of a column they hold: ``db.export_lines``), or, for a sweep's
lists and the devices behind a Sites number, the device's kept pieces (``devices.row_*``:
``db.row_pieces``) around the row's own cells (a sweep answer's, kept with it, ``sweep_responses.tail_*``;
a missing device's state; the device's system's kept texts).

What the SQL reproduces for the other columns, cell by cell:

- CSV: ``str()`` of the value (times as ``store.iso``, booleans ``True``/``False``), neutralised as
  ``export.neutralise`` does (a ``'`` before a cell that a spreadsheet would run as a formula: the
  same characters, found by one regular expression built from the same Unicode tests), quoted as
  Python's ``csv`` quotes (only a cell with a comma, quote, CR or LF, its quotes doubled; an empty
  cell bare), rows ended by CR LF;
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
import itertools
import json
import queue
import threading
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netcheck.collector.db import UTCDateTime
from netcheck.collector.export import CONTROL_START, FORMULA_START, blank, table_csv
from netcheck.collector.web.queries import Listing

#: rows a batch holds (each batch one statement in one transaction, its text in memory: a few MB)
BATCH = 10_000
#: rows a batch of kept lines holds (``Listing.lines``: 6.5 MB of JSON for 25,000 devices): the
#: fewer batches, the fewer round trips and transactions (100,000 devices in one process, load 2:
#: 10-15 % faster than in batches of 10,000; no faster in batches of 50,000)
LINES_BATCH = 25_000
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
    """``store.iso`` in SQL: ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` in UTC (the fraction only when not zero:
    written, then taken out; one ``to_char`` a time, where a test of the fraction and a second one
    cost 60,000 answers' times 40 % more)."""
    written = sa.func.to_char(sa.func.timezone("UTC", value), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    return sa.func.replace(written, sa.literal(".000000Z"), sa.literal("Z"))


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


def _columns(listing: Listing, sub: Any) -> dict[str, Any]:
    """Every column a row has, in the Python path's key order (the query's, then those ``finish``
    adds: ``derived``'s), each as the row's expression in ``sub`` (the query as a subquery: a
    ``derived`` function of it)."""
    out: dict[str, Any] = {name: sub.c[name] for name in listing.query.selected_columns.keys()}
    for name, make in listing.derived.items():
        out.setdefault(name, make(sub))
    return out


def _kept(listing: Listing, form: str) -> list[Any]:
    """The kept line the query answers besides its columns (``Listing.lines``), in ``form`` (``csv``
    or ``json``), as ``<form>_line``."""
    if listing.lines is None:
        return []
    return [getattr(listing.lines, form).label(f"{form}_line")]


def _quoted(cell: Any) -> Any:
    """A CSV cell as Python's ``csv`` writes it (minimal quoting): in quotes, its quotes doubled, when
    it holds a comma, a quote, CR or LF; empty for NULL."""
    quoted = sa.literal('"').op("||")(sa.func.replace(cell, '"', '""')).op("||")(sa.literal('"'))
    # four searches for one character cost 100,000 devices' 7 cells 65 ms, a regular expression 165
    special = sa.or_(*(sa.func.strpos(cell, sa.literal(c)) > 0 for c in (",", '"', "\r", "\n")))
    return sa.case((special, quoted), else_=sa.func.coalesce(cell, ""))


def _csv_lines(listing: Listing, sub: Any) -> Any:
    """(key, line), in key order: a kept cell as it is; a time as ``store.iso`` writes it (digits,
    dashes, colons, a dot and letters: nothing to neutralise or quote); any other cell's text first,
    in a subquery kept as it is (``OFFSET 0``: PostgreSQL would otherwise inline each text into every
    place ``_cell`` names it), then neutralised and quoted; the line joined, ended by CR LF. (Only a
    list with such cells has those subqueries: through them PostgreSQL no longer sees the rows come
    in key order, and sorts them again.)"""
    if listing.lines is not None:
        return _kept_lines(listing, sub, "csv")
    cols = _columns(listing, sub)
    cells: dict[int, Any] = {}
    texts: dict[int, Any] = {}
    for i, name in enumerate(listing.columns):
        col = cols[name]
        if isinstance(col.type, UTCDateTime):
            cells[i] = sa.func.coalesce(_iso(col), sa.literal(""))
        else:
            texts[i] = _text(col)
    key = sub.c[listing.key_name]
    if texts:
        inner = sa.select(key.label("k"), *(c.label(f"p{i}") for i, c in cells.items()),
                          *(t.label(f"c{i}") for i, t in texts.items())).offset(0).subquery()
        fenced = sa.select(inner.c.k, *(inner.c[f"p{i}"] for i in cells),
                           *(_cell(inner.c[f"c{i}"]).label(f"c{i}") for i in texts)).offset(0).subquery()
        key = fenced.c.k
        cells = {**{i: fenced.c[f"p{i}"] for i in cells}, **{i: _quoted(fenced.c[f"c{i}"]) for i in texts}}
    line = sa.func.concat_ws(",", *(cells[i] for i in range(len(listing.columns)))).op("||")(sa.literal("\r\n"))
    return sa.select(key.label("k"), line.label("line")).order_by(key)


def _kept_lines(listing: Listing, sub: Any, form: str) -> Any:
    """(key, line), in key order: the row's kept line (``Listing.lines``) as it is."""
    key = sub.c[listing.key_name]
    return sa.select(key.label("k"), sub.c[f"{form}_line"].label("line")).order_by(key)


def _json_lines(listing: Listing, sub: Any) -> Any:
    """(key, line), in key order: the row as ``json.dumps`` writes it."""
    if listing.lines is not None:
        return _kept_lines(listing, sub, "json")
    parts: list[Any] = []
    for i, (name, col) in enumerate(_columns(listing, sub).items()):
        parts.append(sa.literal(("{" if i == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": "))
        parts.append(_json(_iso(col) if isinstance(col.type, UTCDateTime) else col))
    parts.append(sa.literal("}"))
    text = parts[0]
    for p in parts[1:]:
        text = text.op("||")(p)
    key = sub.c[listing.key_name]
    return sa.select(key.label("k"), text.label("line")).order_by(key)


#: each batch's transaction: compiling its expressions to machine code costs more than it saves
#: (0.8 s); it walks its tables' indexes from the last key and stops after ``batch`` rows, where
#: PostgreSQL would otherwise hash the rest of a joined table for each batch (a sweep's answers, the
#: devices' states: 100,000 devices' states hashed 10 times), in parallel workers the two cores
#: cannot spare; and each batch is planned for its own last key (the driver prepares a statement
#: run five times, and PostgreSQL's generic plan for it read the devices behind a Sites number in
#: 0.8-1.1 s instead of 0.4)
_BATCH_SETTINGS = sa.select(*(sa.func.set_config(name, value, True) for name, value in (
    ("jit", "off"), ("enable_hashjoin", "off"), ("max_parallel_workers_per_gather", "0"),
    ("plan_cache_mode", "force_custom_plan"))))


def _walk(connect: Callable[[], AbstractContextManager[Connection]], listing: Listing,
          lines: Callable[[Listing, Any], Any], form: str, separator: str, batch: int) -> Iterator[str]:
    """The list's rows as ``lines`` writes them, in key order, ``batch`` at a time: each batch one
    statement in its own transaction, which answers one row (how many rows, the last key, and their
    lines joined by ``separator``).

    The lines are joined in the order their subquery gives them (sorted by key, as the index walks
    the list: no sort), which PostgreSQL's documentation gives as the way to feed an aggregate
    sorted input ("Aggregate Expressions"); an ``ORDER BY`` inside ``string_agg`` sorted each batch's
    lines again (on disk past ``work_mem``: 50,000 lines 122 ms against 54). The limit under the
    aggregate keeps it from being split across parallel workers."""
    last = None
    while True:
        part = listing if last is None else listing.after(last)
        query = part.query.add_columns(*_kept(listing, form)).order_by(listing.key).limit(batch)
        rows = lines(listing, query.subquery()).subquery()
        joined = sa.func.string_agg(rows.c.line, sa.literal(separator))
        with connect() as conn:
            conn.execute(_BATCH_SETTINGS)
            count, bound, text = conn.execute(sa.select(sa.func.count(), sa.func.max(rows.c.k), joined)).one()
        if count == 0:
            return
        yield text
        if count < batch:
            return
        last = bound


#: ranges of a list (``Listing.splits``) written at once, each walked by a thread of its own, one
#: statement at a time on one pooled connection: the database's work on both cores (100,000
#: devices as JSON, 26 MB: see docs/dashboard.md)
LANES = 2
#: a range's texts written ahead of the one being sent (each a batch: a few MB)
_AHEAD = 1
#: how often a lane that waits for room looks whether the export was abandoned (s)
_LOOK_S = 0.05
_END = object()


def _batches(connect: Callable[[], AbstractContextManager[Connection]], listing: Listing,
             lines: Callable[[Listing, Any], Any], form: str, separator: str, batch: int) -> Iterator[str]:
    """``_walk`` of the whole list, or, when ``splits`` cut it, of each range, ``LANES`` ranges at
    a time, in the order of the ranges: each lane keeps at most ``_AHEAD`` texts waiting, so memory
    stays a few batches whatever the size of the list. An export abandoned (the client gone) or
    failed stops its lanes: each ends after the batch it is writing, and gives its connection back
    to the pool. It does not wait for them: an abandoned export is closed wherever its generator
    is collected, which may be the event loop."""
    if not listing.splits:
        yield from _walk(connect, listing, lines, form, separator, batch)
        return
    edges = [None, *listing.splits, None]
    ranges = list(itertools.pairwise(edges))
    stop = threading.Event()
    waiting: list[queue.Queue[Any]] = [queue.Queue(maxsize=_AHEAD) for _ in ranges]

    def put(i: int, item: Any) -> bool:
        while not stop.is_set():
            try:
                waiting[i].put(item, timeout=_LOOK_S)
                return True
            except queue.Full:
                continue
        return False

    def lane(i: int) -> None:
        try:
            for text in _walk(connect, listing.within(*ranges[i]), lines, form, separator, batch):
                if not put(i, text):
                    return
            put(i, _END)
        except BaseException as e:  # raised again where the texts are read
            put(i, e)

    # a pool runs its tasks in the order given: a range's lane has started before the next one's
    pool = ThreadPoolExecutor(max_workers=LANES, thread_name_prefix="netcheck-export")
    try:
        for i in range(len(ranges)):
            pool.submit(lane, i)
        for w in waiting:
            while (item := w.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


def supports(conn: Connection) -> bool:
    """Whether this database can write the exports (PostgreSQL, its text in UTF-8)."""
    if conn.dialect.name != "postgresql":
        return False
    return str(conn.exec_driver_sql("SHOW server_encoding").scalar_one()) == "UTF8"


def _batch(listing: Listing, batch: int | None) -> int:
    return batch or (BATCH if listing.lines is None else LINES_BATCH)


def csv_chunks(connect: Callable[[], AbstractContextManager[Connection]], listing: Listing,
               batch: int | None = None) -> Iterator[bytes]:
    """The list as ``export.table_csv`` writes it (header, then a row a line), a batch a chunk
    (``batch`` rows: by default ``BATCH``, or ``LINES_BATCH`` of kept lines)."""
    yield table_csv(listing.columns, []).encode()
    for text in _batches(connect, listing, _csv_lines, "csv", "", _batch(listing, batch)):
        yield text.encode()


def json_chunks(connect: Callable[[], AbstractContextManager[Connection]], listing: Listing, name: str,
                batch: int | None = None) -> Iterator[bytes]:
    """``{"<name>": [row, ...]}``, a row a line, as the Python path writes it."""
    yield ("{" + json.dumps(name, ensure_ascii=False) + ": [").encode()
    first = True
    for text in _batches(connect, listing, _json_lines, "json", ",\n", _batch(listing, batch)):
        yield (("\n" if first else ",\n") + text).encode()
        first = False
    yield b"\n]}\n"
