"""How a report is stored, and how an older one is reduced (``reports.form``, ``reports.report_lz4``).

Every blob says which form it is in (an LZ4 frame or a zlib stream), so ``decode`` needs
nothing else; the column ``reports.form`` is there for queries (what compaction has yet to
rewrite, which reports are complete). Three forms, one blob column:

- ``lz4``: the report's canonical JSON in one LZ4 frame. What ingest writes: it costs 0.1 ms of
  CPU for a 237 KiB report (29 KiB stored), where zlib at level 9 costs 4 ms, and ingest is
  what a fleet-wide sweep waits for.
- ``zlib``: the same canonical JSON, zlib level 9 (16 KiB for that report). The compaction pass
  (``store.compact_all``, run by each collector process after its pruning) rewrites ``lz4``
  reports into it, away from the uploads. Lossless: ``decode`` gives back the report the agent
  sent, byte for byte once re-encoded canonically.
- ``reduced``: what is kept of a report older than the device's newest ``full_history`` ones,
  and how a reduced upload is stored as it came: every member of the report as it was except
  the detail of its successful probes (``netcheck.render.reduced``), so the verdict and every
  fact the report states come out of it unchanged. Compressed with zlib and a preset dictionary
  (``DICTIONARY``: the reduced forms of a few stored reports, the words every report repeats: the
  schema's keys, the workloads, the findings' titles), which the stream's header names by its
  Adler-32, so a blob still says all ``decode`` needs: the lab report's reduced form is 1.4 KiB
  with it (a dictionary made without that report), 2.1 KiB without one.

Grouping probes per host with their repeated fields factored out was measured and not kept: on
the lab report it saves 3 % after zlib (15.9 against 16.4 KiB), for 3 ms of Python per report;
deflate already finds the repeats.
"""

from __future__ import annotations

import functools
import json
import zlib
from pathlib import Path
from typing import Any

import lz4.frame

from netcheck.collector.validate import canonical
from netcheck.render import reduced
from netcheck.render.reduced import reduce_report

FORM_LZ4 = "lz4"
FORM_FULL = "zlib"
FORM_REDUCED = "reduced"
FORMS = (FORM_LZ4, FORM_FULL, FORM_REDUCED)
ZLIB_LEVEL = 9
#: the member a reduced report carries to say so (``netcheck.render.reduced``)
REDUCED_KEY = reduced.REDUCED_KEY


#: the preset dictionary of ``FORM_REDUCED`` blobs (made by ``bench/make_dictionary.py``). A new one
#: gets a new file beside it, and the old one stays in ``DICTIONARIES``: stored blobs name theirs.
DICTIONARY = Path(__file__).with_name("reduced-1.zdict")
DICTIONARIES = (DICTIONARY,)


@functools.cache
def _dictionaries() -> dict[int, bytes]:
    """Every dictionary a stored blob may name, by its Adler-32 (what a zlib header carries)."""
    found = [path.read_bytes() for path in DICTIONARIES]
    return {zlib.adler32(d): d for d in found}


@functools.cache
def _preset() -> bytes:
    return DICTIONARY.read_bytes()


def build_dictionary(reduced_reports: list[bytes]) -> bytes:
    """A preset dictionary from reduced reports' canonical JSON: deflate looks back 32 KiB at most,
    and a nearer match costs fewer bits: the last 32 KiB, so the reports most alike a fleet's go last."""
    return b"".join(reduced_reports)[-32768:]


def encode(canonical_json: bytes, form: str) -> bytes:
    """A report's canonical JSON as stored in ``form`` (``FORM_LZ4``, ``FORM_FULL``, or
    ``FORM_REDUCED`` for a report already reduced: zlib with ``DICTIONARY``)."""
    if form == FORM_LZ4:
        return bytes(lz4.frame.compress(canonical_json))
    if form == FORM_REDUCED:
        packer = zlib.compressobj(ZLIB_LEVEL, zdict=_preset())
        return packer.compress(canonical_json) + packer.flush()
    return zlib.compress(canonical_json, ZLIB_LEVEL)


#: how every LZ4 frame starts; a zlib stream never does (its first byte is 0x78 at our settings)
_LZ4_MAGIC = b"\x04\x22\x4d\x18"


#: the FDICT bit of a zlib header's second byte: a dictionary's Adler-32 follows (RFC 1950)
_FDICT = 0x20


def inflate(blob: bytes) -> bytes:
    """A stored blob's JSON, whatever its form: the blob says which (an LZ4 frame, or a zlib stream
    with or without a preset dictionary, named in its header)."""
    if blob[:4] == _LZ4_MAGIC:
        return bytes(lz4.frame.decompress(blob))
    if len(blob) > 6 and blob[1] & _FDICT:
        unpacker = zlib.decompressobj(zdict=_dictionaries()[int.from_bytes(blob[2:6], "big")])
        return unpacker.decompress(blob) + unpacker.flush()
    return zlib.decompress(blob)


def decode(blob: bytes) -> dict[str, Any]:
    """A stored report in any form: the report the agent sent, or its reduction (``REDUCED_KEY``)."""
    report: dict[str, Any] = json.loads(inflate(blob))
    return report


def reduce_blob(blob: bytes) -> bytes:
    """A stored report rewritten as ``FORM_REDUCED``."""
    return encode(canonical(reduce_report(decode(blob))), FORM_REDUCED)


def recompress(blob: bytes) -> bytes:
    """A stored report rewritten as ``FORM_FULL`` (no parsing: the same JSON inside)."""
    return zlib.compress(inflate(blob), ZLIB_LEVEL)


def outage_verdict(report: dict[str, Any]) -> str | None:
    """The report's outage verdict (``outage.verdict``), if it has one."""
    outage = report.get("outage")
    verdict = outage.get("verdict") if isinstance(outage, dict) else None
    return str(verdict)[:16] if verdict is not None else None
