"""The spool: reports waiting for the collector, on disk, one file per report.

Layout under ``data_dir()/spool/``::

    records/000000000042-1764345600-3712.rec   seq, spooled-at (unix s), size; one report each
    quarantine/<record>.<reason>          set aside: corrupt, or refused by the collector
    state                                 counters (two checksummed slots, see SlotFile)
    state.lock                            held while the spool changes
    upload.lock                           held while an upload is in flight (one per agent)

Durability: a record is written to a temporary file, fsynced, renamed into
``records/`` and the directory fsynced; only then does ``append`` say "spooled".
A record is ``NCSPOOL1 <length> <sha256>\\n`` followed by that many bytes of JSON,
so a torn or bit-flipped record is detected, moved to ``quarantine/`` and never
blocks the others.

Bounds: at most ``max_bytes`` of records and nothing older than ``max_age_s``;
the oldest go first. Every report that is dropped (by the bounds, or because the
disk is full) is counted; the count travels with the next upload and is
decremented only once the collector has acknowledged that upload.

The sequence number is per device and monotonic: it is made durable before the
record that carries it, and on start it is never below the highest spooled one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

from netcheck.paths import atomic_write, data_dir

log = logging.getLogger(__name__)

MAGIC = b"NCSPOOL1"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_AGE_S = 14 * 86400.0
DEFAULT_MAX_QUARANTINE = 200
_NAME = re.compile(r"^(\d{12})-(\d{1,12})-(\d{1,12})\.rec$")
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _fsync_dir(path: Path) -> None:
    if sys.platform == "win32":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LockBusy(Exception):
    """The lock is held by another process or thread."""


class FileLock:
    """An advisory lock on a file (``flock`` on POSIX, ``msvcrt.locking`` on Windows).

    Released by the OS if the holder dies, so a ``kill -9`` never leaves it stuck.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None

    def acquire(self, blocking: bool = True) -> None:
        fh = open(self.path, "a+b")  # noqa: SIM115 - held until release()
        try:
            if sys.platform == "win32":  # pragma: no cover
                import msvcrt
                fh.seek(0)
                mode = msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK
                msvcrt.locking(fh.fileno(), mode, 1)
            else:
                import fcntl
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            fh.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise LockBusy(str(self.path)) from exc
            raise
        self._fh = fh

    def release(self) -> None:
        fh, self._fh = self._fh, None
        if fh is None:
            return
        try:
            if sys.platform == "win32":  # pragma: no cover
                import msvcrt
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
            else:
                import fcntl
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        finally:
            fh.close()

    @contextmanager
    def held(self, blocking: bool = True) -> Iterator[None]:
        self.acquire(blocking)
        try:
            yield
        finally:
            self.release()


class SlotFile:
    """A small JSON state that survives torn writes and never needs new disk blocks.

    The file holds two fixed-size slots; each write goes in place into the older
    slot with a generation number and a checksum, then fsync. A read takes the valid
    slot with the highest generation, so a torn write loses at most that one update.
    Writing in place needs no free space, so the counters of a full disk still
    reach the disk (on copy-on-write file systems the write may still fail: callers
    keep the value in memory and write it again later).
    """

    SLOT = 512

    def __init__(self, path: Path) -> None:
        self.path = path
        self._gen = 0

    @classmethod
    def _encode(cls, gen: int, data: dict[str, Any]) -> bytes:
        payload = json.dumps({"gen": gen, "data": data}, sort_keys=True, separators=(",", ":")).encode()
        line = hashlib.sha256(payload).hexdigest().encode() + b" " + payload
        if len(line) >= cls.SLOT:
            raise ValueError("spool state too large for its slot")
        return line + b"\n" * (cls.SLOT - len(line))

    @staticmethod
    def _decode(raw: bytes) -> tuple[int, dict[str, Any]] | None:
        line = raw.rstrip(b"\n\x00 ")
        digest, _, payload = line.partition(b" ")
        if not payload or hashlib.sha256(payload).hexdigest().encode() != digest:
            return None
        try:
            doc = json.loads(payload)
        except ValueError:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("gen"), int) or not isinstance(doc.get("data"), dict):
            return None
        return doc["gen"], doc["data"]

    def read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        best: tuple[int, dict[str, Any]] | None = None
        for i in range(2):
            got = self._decode(raw[i * self.SLOT:(i + 1) * self.SLOT])
            if got is not None and (best is None or got[0] > best[0]):
                best = got
        if best is None:
            if raw:
                log.warning("spool state %s is unreadable; counters restart from the records", self.path)
            return {}
        self._gen = best[0]
        return best[1]

    def write(self, data: dict[str, Any]) -> None:
        gen = self._gen + 1
        blob = self._encode(gen, data)
        if not self.path.exists() or self.path.stat().st_size < 2 * self.SLOT:
            slots = [self._encode(0, {}), self._encode(0, {})]
            slots[gen % 2] = blob
            atomic_write(self.path, b"".join(slots), mode=0o600)
        else:
            fd = os.open(self.path, os.O_RDWR | getattr(os, "O_BINARY", 0))
            try:
                os.lseek(fd, (gen % 2) * self.SLOT, os.SEEK_SET)
                os.write(fd, blob)
                os.fsync(fd)
            finally:
                os.close(fd)
        self._gen = gen


class RecordRef(NamedTuple):
    """A spooled record, by file name (seq, time and size are in it): cheap to list, read only when sent."""

    seq: int
    spooled_at: float
    size: int
    directory: Path
    name: str

    @property
    def path(self) -> Path:
        return self.directory / self.name


@dataclass(frozen=True)
class SpoolRecord:
    seq: int
    report_id: str
    spooled_at: float
    sweep_id: str | None
    report: dict[str, Any]
    #: the answer to a thorough sweep: uploaded with every probe's detail (``Uploader``)
    thorough: bool = False


@dataclass(frozen=True)
class Counters:
    """What travels with the next upload, and what the agent set aside."""

    dropped: int = 0
    full_events: int = 0
    quarantined: int = 0

    @property
    def spool_full(self) -> bool:
        return self.full_events > 0


@dataclass(frozen=True)
class AppendResult:
    spooled: bool
    seq: int | None
    report_id: str
    #: reports dropped by this append (older ones past the bounds, or this one)
    dropped: int
    reason: str | None = None


@dataclass(frozen=True)
class Integrity:
    records: int
    bytes: int
    corrupt: tuple[str, ...]
    quarantined: int

    @property
    def ok(self) -> bool:
        return not self.corrupt


def encode_record(payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=False).encode("utf-8")
    return b"%s %d %s\n" % (MAGIC, len(body), hashlib.sha256(body).hexdigest().encode()) + body


def decode_record(raw: bytes) -> dict[str, Any]:
    """The payload of a record, or ValueError saying why it is not a valid record."""
    head, nl, body = raw.partition(b"\n")
    if not nl:
        raise ValueError("no header")
    parts = head.split(b" ")
    if len(parts) != 3 or parts[0] != MAGIC or not parts[1].isdigit():
        raise ValueError("bad header")
    if int(parts[1]) != len(body):
        raise ValueError(f"length {len(body)} != {int(parts[1])} (torn record)")
    if hashlib.sha256(body).hexdigest().encode() != parts[2]:
        raise ValueError("checksum mismatch")
    doc = json.loads(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("report"), dict) \
            or not isinstance(doc.get("seq"), int) or not isinstance(doc.get("report_id"), str):
        raise ValueError("not a spool record")
    return doc


class Spool:
    """Durable, bounded, self-checking queue of reports for one device."""

    def __init__(self, root: Path | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
                 max_age_s: float = DEFAULT_MAX_AGE_S, max_quarantine: int = DEFAULT_MAX_QUARANTINE,
                 wall: Callable[[], float] = time.time) -> None:
        self.root = root if root is not None else data_dir() / "spool"
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.max_quarantine = max_quarantine
        self.wall = wall
        self.records_dir = self.root / "records"
        self.quarantine_dir = self.root / "quarantine"
        for d in (self.root, self.records_dir, self.quarantine_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._state_file = SlotFile(self.root / "state")
        self._state_lock = FileLock(self.root / "state.lock")
        self.upload_lock = FileLock(self.root / "upload.lock")
        #: the state as last read or written (kept when the disk refuses a write)
        self._state: dict[str, Any] = {}
        self._last_saved: dict[str, Any] = {}
        self._unsaved = False
        with self._locked():
            self._cleanup_temp()

    # -- state -----------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Hold the state lock with the current state loaded; save it if it changed."""
        with self._state_lock.held():
            state = self._state_file.read()
            self._last_saved = dict(state)
            if self._unsaved:
                # a write failed earlier (disk full): the counters in memory are newer
                for key in ("next_seq", "dropped", "full_events", "quarantined"):
                    state[key] = max(int(state.get(key, 0)), int(self._state.get(key, 0)))
            yield state
            self._state = state
            if state != self._last_saved or self._unsaved:
                try:
                    self._save(state)
                except OSError as exc:
                    self._unsaved = True
                    log.warning("cannot save the spool counters (%s); keeping them in memory",
                                exc.strerror or exc)

    def _save(self, state: dict[str, Any]) -> None:
        self._state_file.write(state)
        self._last_saved = dict(state)
        self._unsaved = False

    def counters(self) -> Counters:
        with self._locked() as st:
            return Counters(int(st.get("dropped", 0)), int(st.get("full_events", 0)),
                            int(st.get("quarantined", 0)))

    def get_value(self, key: str) -> Any:
        with self._locked() as st:
            return st.get(key)

    def set_values(self, **values: Any) -> None:
        """Durably store small values next to the counters (the uploader's 401 tracking)."""
        with self._locked() as st:
            for k, v in values.items():
                if v is None:
                    st.pop(k, None)
                else:
                    st[k] = v

    # -- records ---------------------------------------------------------------

    def _cleanup_temp(self) -> None:
        """Remove temporary files left by a writer that died (we hold the state lock: none is live)."""
        for entry in os.scandir(self.records_dir):
            if entry.name.startswith(".tmp-"):
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass

    def pending(self) -> list[RecordRef]:
        """Spooled records, oldest (lowest seq) first. Stray files are set aside."""
        refs: list[RecordRef] = []
        directory = self.records_dir
        for name in sorted(os.listdir(directory)):  # fixed-width seq first: name order is seq order
            if name.startswith(".tmp-"):
                continue
            m = _NAME.match(name)
            if m is None:
                self._move_aside(directory / name, "stray")
                continue
            seq, at, size = m.groups()
            refs.append(RecordRef(int(seq), float(at), int(size), directory, name))
        return refs

    def append(self, report: dict[str, Any], *, sweep_id: str | None = None, thorough: bool = False) -> AppendResult:
        """Spool one report durably. Never raises for a full or failing disk: it drops and counts.
        ``thorough``: it answers a thorough sweep (sent in full)."""
        report_id = str(report.get("report_id", ""))
        now = self.wall()
        try:
            with self._locked() as st:
                return self._append_locked(st, report, report_id, sweep_id, now, thorough)
        except OSError as exc:  # the lock file or the directory itself is unusable
            log.error("cannot spool report %s: %s", report_id, exc.strerror or exc)
            self._count_in_memory(full=exc.errno in _DISK_FULL)
            return AppendResult(False, None, report_id, 1, f"spool unusable: {exc.strerror or exc}")

    def _count_in_memory(self, *, full: bool) -> None:
        self._state["dropped"] = int(self._state.get("dropped", 0)) + 1
        if full:
            self._state["full_events"] = int(self._state.get("full_events", 0)) + 1
        self._unsaved = True

    def _append_locked(self, st: dict[str, Any], report: dict[str, Any], report_id: str,
                       sweep_id: str | None, now: float, thorough: bool = False) -> AppendResult:
        refs = self.pending()
        next_seq = max([int(st.get("next_seq", 1))] + [r.seq + 1 for r in refs])
        payload = {"seq": next_seq, "report_id": report_id, "spooled_at": round(now, 3),
                   "sweep_id": sweep_id, "report": report}
        if thorough:
            payload["thorough"] = True
        blob = encode_record(payload)
        dropped = self._enforce_bounds(st, refs, len(blob), now)
        if len(blob) > self.max_bytes:
            st["dropped"] = int(st.get("dropped", 0)) + 1
            log.warning("report %s (%d bytes) is larger than the whole spool (%d bytes); dropped",
                        report_id, len(blob), self.max_bytes)
            return AppendResult(False, None, report_id, dropped + 1, "report larger than the spool")
        # the sequence number is durable before any record carries it
        st["next_seq"] = next_seq + 1
        try:
            self._save(st)
        except OSError as exc:
            return self._drop_failed(st, report_id, exc, dropped)
        name = f"{next_seq:012d}-{int(now)}-{len(blob)}.rec"
        tmp = self.records_dir / f".tmp-{next_seq}-{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
            try:
                view = memoryview(blob)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.records_dir / name)
            _fsync_dir(self.records_dir)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return self._drop_failed(st, report_id, exc, dropped)
        log.info("spooled report %s as seq %d", report_id, next_seq)
        return AppendResult(True, next_seq, report_id, dropped)

    def _drop_failed(self, st: dict[str, Any], report_id: str, exc: OSError, dropped: int) -> AppendResult:
        full = exc.errno in _DISK_FULL
        st["dropped"] = int(st.get("dropped", 0)) + 1
        if full:
            st["full_events"] = int(st.get("full_events", 0)) + 1
        reason = "disk full" if full else f"cannot write the spool: {exc.strerror or exc}"
        log.warning("report %s not spooled (%s); dropped and counted", report_id, reason)
        return AppendResult(False, None, report_id, dropped + 1, reason)

    def _enforce_bounds(self, st: dict[str, Any], refs: list[RecordRef], incoming: int, now: float) -> int:
        """Drop the oldest records past the age limit or to make room for ``incoming`` bytes."""
        dropped = 0
        total = sum(r.size for r in refs)
        keep: list[RecordRef] = []
        for ref in refs:
            if now - ref.spooled_at > self.max_age_s:
                if self._unlink(ref):
                    dropped += 1
                total -= ref.size
            else:
                keep.append(ref)
        while keep and total + incoming > self.max_bytes:
            ref = keep.pop(0)
            if self._unlink(ref):
                dropped += 1
            total -= ref.size
        if dropped:
            st["dropped"] = int(st.get("dropped", 0)) + dropped
            log.warning("spool over its bounds: dropped the %d oldest report(s)", dropped)
        return dropped

    @staticmethod
    def _unlink(ref: RecordRef) -> bool:
        try:
            os.unlink(ref.path)
            return True
        except FileNotFoundError:
            return False  # uploaded meanwhile: not a drop

    def prune(self) -> int:
        """Apply the age bound now (the agent calls this before draining)."""
        with self._locked() as st:
            return self._enforce_bounds(st, self.pending(), 0, self.wall())

    def load(self, ref: RecordRef) -> SpoolRecord | None:
        """The record, verified; a corrupt one is quarantined and None returned."""
        try:
            raw = ref.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            if len(raw) != ref.size:
                raise ValueError(f"{len(raw)} bytes, the name says {ref.size} (torn record)")
            doc = decode_record(raw)
            if doc["seq"] != ref.seq:
                raise ValueError(f"seq {doc['seq']} does not match the file name")
        except ValueError as exc:
            log.warning("spool record %s is corrupt (%s); set aside in %s",
                        ref.path.name, exc, self.quarantine_dir)
            self.quarantine(ref, "corrupt")
            return None
        sweep = doc.get("sweep_id")
        return SpoolRecord(doc["seq"], doc["report_id"], float(doc.get("spooled_at", ref.spooled_at)),
                           sweep if isinstance(sweep, str) else None, doc["report"], doc.get("thorough") is True)

    def acknowledge(self, ref: RecordRef, sent: Counters) -> None:
        """The collector has this record: delete it, and count off the drops that went with it.

        The directory is not fsynced: if the deletion is lost to a power cut, the
        record is sent again and the collector answers "duplicate".
        """
        with self._locked() as st:
            self._unlink(ref)
            st["dropped"] = max(0, int(st.get("dropped", 0)) - sent.dropped)
            st["full_events"] = max(0, int(st.get("full_events", 0)) - sent.full_events)

    def quarantine(self, ref: RecordRef, reason: str) -> None:
        """Set a record aside (never deleted silently) and count it."""
        with self._locked() as st:
            if self._move_aside(ref.path, reason):
                st["quarantined"] = int(st.get("quarantined", 0)) + 1
            self._bound_quarantine()

    def _move_aside(self, path: Path, reason: str) -> bool:
        safe = re.sub(r"[^a-z0-9_]", "_", reason.lower())[:32]
        try:
            os.replace(path, self.quarantine_dir / f"{path.name}.{safe}")
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("cannot move %s to quarantine (%s); deleting it", path.name, exc.strerror or exc)
            try:
                os.unlink(path)
            except OSError:
                pass
            return True

    def _bound_quarantine(self) -> None:
        entries = sorted(os.scandir(self.quarantine_dir), key=lambda e: e.name)
        for entry in entries[: max(0, len(entries) - self.max_quarantine)]:
            log.warning("quarantine holds more than %d records; deleting the oldest, %s",
                        self.max_quarantine, entry.name)
            try:
                os.unlink(entry.path)
            except OSError:
                pass

    def quarantined(self) -> list[Path]:
        return sorted(Path(e.path) for e in os.scandir(self.quarantine_dir))

    def check_integrity(self) -> Integrity:
        """Read and verify every record without changing anything."""
        refs = self.pending()
        corrupt: list[str] = []
        for ref in refs:
            try:
                raw = ref.path.read_bytes()
                doc = decode_record(raw)
                if doc["seq"] != ref.seq or len(raw) != ref.size:
                    raise ValueError("name does not match the content")
            except FileNotFoundError:
                continue
            except ValueError:
                corrupt.append(ref.path.name)
        return Integrity(len(refs), sum(r.size for r in refs), tuple(corrupt), len(self.quarantined()))
