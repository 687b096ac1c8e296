"""A5 disk full, A6 bounded spool, A7 corrupt record: the spool under real file-system faults.

A5 mounts a real 5 MB tmpfs (we run as root in CI); where mounting is not allowed
it falls back to an injected writer that fails with ENOSPC, and says so in the
test output. A6 replays 14+ days offline with an injected clock. A5 and A7 upload
to a real collector afterwards.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import netcheck.agent.spool as spool_module
from netcheck.agent.loop import CheckLane, Shared
from netcheck.agent.schedule import Schedule
from netcheck.agent.spool import Spool, encode_record
from netcheck.deadline import Deadline
from tests.agent.conftest import Real, Rig
from tests.agent.helpers import FakeClock, fake_report
from tests.collector.conftest import sql


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[bool]:
    """Mount a tmpfs of ``size`` on ``where`` if allowed (root); yields whether it did."""
    where.mkdir()
    mounted = shutil.which("mount") is not None and os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True, check=False).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A 5 MB file system, or (fallback) a directory whose writes fail with ENOSPC once 'full'."""
    with tmpfs(tmp_path / "vol", "5m") as mounted:
        yield tmp_path / "vol", "tmpfs" if mounted else "injected"


def _fill(mnt: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    filler = mnt / "filler"
    if mode == "tmpfs":
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        assert shutil.disk_usage(mnt).free < 8192
    else:  # pragma: no cover - fallback: every record write fails like a full disk
        real_os = os

        def write(fd: int, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device (injected)")

        fake = types.SimpleNamespace(**{k: getattr(real_os, k) for k in dir(real_os) if not k.startswith("__")})
        fake.write = write
        monkeypatch.setattr(spool_module, "os", fake)
        filler.write_bytes(b"")
    return filler


def test_a5_disk_full_checks_keep_running_drops_are_counted_and_reported(
        small_volume: tuple[Path, str], real: Callable[..., Real], rigs: Callable[..., Rig],
        monkeypatch: pytest.MonkeyPatch) -> None:
    mnt, mode = small_volume
    print(f"\nA5: spool on a 5 MB volume ({mode})")
    collector = real()
    rig = rigs(collector.url, collector.secret, spool_kwargs={})
    spool = Spool(mnt / "spool")
    before = [spool.append(fake_report()).report_id for _ in range(5)]
    filler = _fill(mnt, mode, monkeypatch)

    # checks keep running on a full disk: each report is dropped and counted, nothing raises
    lane = CheckLane(lambda req: fake_report(), spool, Shared(Schedule(60, 0), mnt / "spool"),
                     clock=FakeClock(), rng=__import__("random").Random(0))
    results = [lane.check_and_spool(None) for _ in range(20)]
    assert results == [False] * 20 and lane.checks == 20 and lane.failures == 0
    assert spool.counters().dropped == 20 and spool.counters().spool_full
    # the counters reached the disk although it is full (in-place slot writes), and the spool is intact
    reopened = Spool(mnt / "spool")
    assert reopened.counters().dropped == 20 and reopened.counters().full_events == 20
    integrity = reopened.check_integrity()
    assert integrity.ok and integrity.records == 5

    # space comes back; the next upload carries the drop count and spool_full, then they reset
    if mode != "tmpfs":  # pragma: no cover
        monkeypatch.setattr(spool_module, "os", os)
    filler.unlink()
    after = spool.append(fake_report())
    assert after.spooled
    from netcheck.agent.upload import open_uploader
    client, uploader = open_uploader(rig.store, spool)
    with client:
        got = uploader.drain(Deadline.after(60))
    assert got.stored == 6
    rows = sql(collector.database_url, "SELECT report_id, dropped, spool_full FROM reports ORDER BY id")
    assert [r.report_id for r in rows] == before + [after.report_id]
    assert (rows[0].dropped, bool(rows[0].spool_full)) == (20, True)
    assert all((r.dropped, bool(r.spool_full)) == (0, False) for r in rows[1:])
    assert spool.counters().dropped == 0 and not spool.counters().spool_full
    print(f"A5: dropped while full=20, first upload carried dropped={rows[0].dropped} "
          f"spool_full={bool(rows[0].spool_full)}")


def _record_size() -> int:
    return len(encode_record({"seq": 1, "report_id": "x" * 36, "spooled_at": 1764000000.123,
                              "sweep_id": None, "report": fake_report()}))


@pytest.mark.parametrize(("days", "every_s", "max_bytes", "bound"), [
    (16, 600, 20 * 1024 * 1024, "age"),      # default byte cap never reached: the 14-day age cap binds
    (14, 600, 1024 * 1024, "bytes"),         # 1 MB cap: the byte cap binds
])
def test_a6_bounded_spool_offline_for_weeks(tmp_path: Path, days: int, every_s: int, max_bytes: int,
                                            bound: str) -> None:
    # on tmpfs where possible: this is about the bounds, and thousands of fsyncs on a busy CI disk are slow
    with tmpfs(tmp_path / "vol", "64m"):
        _bounded(tmp_path / "vol", days, every_s, max_bytes, bound)


def _bounded(root: Path, days: int, every_s: int, max_bytes: int, bound: str) -> None:
    clock = FakeClock()
    spool = Spool(root / "sp", max_bytes=max_bytes, wall=clock)
    generated: list[str] = []
    peak = 0
    for _ in range(days * 86400 // every_s):
        got = spool.append(fake_report(measured_at=clock.now))
        assert got.spooled
        generated.append(got.report_id)
        peak = max(peak, sum(r.size for r in spool.pending()))
        clock.advance(every_s)
    refs = spool.pending()
    kept = [spool.load(r) for r in refs]
    kept_ids = [k.report_id for k in kept if k]
    dropped = spool.counters().dropped
    print(f"\nA6 ({bound} bound): generated={len(generated)} retained={len(kept_ids)} dropped={dropped} "
          f"peak_bytes={peak} cap={max_bytes} oldest_age_days={(clock.now - refs[0].spooled_at) / 86400:.2f}")
    assert peak <= max_bytes
    assert kept_ids == generated[-len(kept_ids):]  # the newest survive, in order; the oldest went first
    assert dropped == len(generated) - len(kept_ids) > 0
    assert clock.now - every_s - refs[0].spooled_at <= spool.max_age_s
    if bound == "bytes":
        assert len(kept_ids) == max_bytes // _record_size() or len(kept_ids) == max_bytes // _record_size() - 1
    else:
        assert len(kept_ids) == pytest.approx(14 * 86400 / every_s, abs=2)


def test_a7_a_corrupt_record_is_quarantined_the_others_delivered_no_retry_loop(
        real: Callable[..., Real], rigs: Callable[..., Rig]) -> None:
    collector = real()
    rig = rigs(collector.url, collector.secret)
    ids = [rig.spool.append(fake_report()).report_id for _ in range(10)]
    victim = rig.spool.pending()[4]
    raw = bytearray(victim.path.read_bytes())
    for i in (200, 201, 202):
        raw[i] ^= 0x5A
    victim.path.write_bytes(bytes(raw))

    first = rig.uploader.drain(Deadline.after(60))
    again = rig.uploader.drain(Deadline.after(60))
    rows = sql(collector.database_url, "SELECT report_id FROM reports")
    assert sorted(r.report_id for r in rows) == sorted(ids[:4] + ids[5:])
    assert (first.stored, first.quarantined, first.remaining) == (9, 1, 0)
    assert again.sent == 0  # no retry loop
    assert [p.name for p in rig.spool.quarantined()] == [victim.path.name + ".corrupt"]
    assert rig.spool.counters().quarantined == 1
