"""The spool on a real file system: durability format, bounds, corruption, counters."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from netcheck.agent.spool import Counters, SlotFile, Spool, decode_record, encode_record
from tests.agent.helpers import FakeClock, fake_report


def test_append_then_load_round_trips_in_seq_order(spool: Spool) -> None:
    reports = [fake_report() for _ in range(3)]
    results = [spool.append(r, sweep_id="sw1" if i == 1 else None) for i, r in enumerate(reports)]
    assert [r.spooled for r in results] == [True, True, True]
    assert [r.seq for r in results] == [1, 2, 3]
    refs = spool.pending()
    loaded = [spool.load(ref) for ref in refs]
    assert [rec.report for rec in loaded if rec] == reports
    assert [rec.sweep_id for rec in loaded if rec] == [None, "sw1", None]
    assert spool.check_integrity().ok


def test_seq_stays_monotonic_after_everything_was_sent_and_the_spool_reopened(tmp_path: Path) -> None:
    s = Spool(tmp_path / "sp")
    for _ in range(3):
        s.append(fake_report())
    for ref in s.pending():
        s.acknowledge(ref, Counters())
    again = Spool(tmp_path / "sp")
    assert again.append(fake_report()).seq == 4


def test_seq_survives_a_lost_state_file(tmp_path: Path) -> None:
    s = Spool(tmp_path / "sp")
    for _ in range(5):
        s.append(fake_report())
    (tmp_path / "sp" / "state").write_bytes(b"garbage")
    assert Spool(tmp_path / "sp").append(fake_report()).seq == 6


def test_record_format_detects_every_single_byte_flip() -> None:
    blob = encode_record({"seq": 1, "report_id": "x", "report": {"a": 1}})
    assert decode_record(blob)["seq"] == 1
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        try:
            doc = decode_record(bytes(bad))
        except ValueError:
            continue
        raise AssertionError(f"flip at byte {i} not detected: {doc}")


def test_corrupt_record_is_quarantined_and_the_rest_still_load(spool: Spool) -> None:
    for _ in range(3):
        spool.append(fake_report())
    victim = spool.pending()[1].path
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert not spool.check_integrity().ok
    loaded = [spool.load(ref) for ref in spool.pending()]
    assert [r is None for r in loaded] == [False, True, False]
    assert [p.name for p in spool.quarantined()] == [victim.name + ".corrupt"]
    assert spool.counters().quarantined == 1
    assert len(spool.pending()) == 2 and spool.check_integrity().ok


def test_torn_record_and_stray_files_are_set_aside(spool: Spool) -> None:
    spool.append(fake_report())
    spool.append(fake_report())
    first = spool.pending()[0].path
    first.write_bytes(first.read_bytes()[:100])
    (spool.records_dir / "notes.txt").write_text("hello")
    refs = spool.pending()
    assert len(refs) == 2
    assert spool.load(refs[0]) is None and spool.load(refs[1]) is not None
    names = sorted(p.name for p in spool.quarantined())
    assert names == sorted([first.name + ".corrupt", "notes.txt.stray"])


def test_temporary_files_of_a_dead_writer_are_removed_on_open(tmp_path: Path) -> None:
    s = Spool(tmp_path / "sp")
    (s.records_dir / ".tmp-7-99999").write_bytes(b"half a rec")
    Spool(tmp_path / "sp")
    assert not list(s.records_dir.glob(".tmp-*"))


def test_byte_bound_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    size = len(encode_record({"seq": 1, "report_id": "x", "spooled_at": 1.0, "sweep_id": None,
                              "report": fake_report()}))
    s = Spool(tmp_path / "sp", max_bytes=int(size * 3.5))
    ids = [fake_report()["report_id"] for _ in range(10)]
    for rid in ids:
        s.append(fake_report(report_id=rid))
    kept = [s.load(r) for r in s.pending()]
    assert [k.report_id for k in kept if k] == ids[-3:]
    assert s.counters().dropped == 7
    assert sum(r.size for r in s.pending()) <= s.max_bytes


def test_age_bound_drops_old_reports(tmp_path: Path) -> None:
    clock = FakeClock()
    s = Spool(tmp_path / "sp", max_age_s=3600, wall=clock)
    s.append(fake_report())
    clock.advance(1800)
    s.append(fake_report())
    clock.advance(1801)
    assert s.prune() == 1
    assert len(s.pending()) == 1 and s.counters().dropped == 1


def test_report_larger_than_the_spool_is_dropped_and_counted(tmp_path: Path) -> None:
    s = Spool(tmp_path / "sp", max_bytes=1000)
    got = s.append(fake_report())
    assert not got.spooled and got.reason == "report larger than the spool"
    assert s.counters().dropped == 1 and not s.pending()


def test_acknowledge_counts_off_only_what_travelled(spool: Spool) -> None:
    spool.set_values(dropped=5, full_events=2)
    spool.append(fake_report())
    ref = spool.pending()[0]
    sent = spool.counters()
    spool.set_values(dropped=7, full_events=3)  # more drops while the upload was in flight
    spool.acknowledge(ref, sent)
    assert spool.counters() == Counters(dropped=2, full_events=1)


def test_slot_file_keeps_the_previous_value_when_the_newest_slot_is_torn(tmp_path: Path) -> None:
    f = SlotFile(tmp_path / "state")
    f.write({"n": 1})
    f.write({"n": 2})
    f.write({"n": 3})
    assert SlotFile(tmp_path / "state").read() == {"n": 3}
    raw = bytearray((tmp_path / "state").read_bytes())
    newest = 3 % 2
    raw[newest * SlotFile.SLOT + 70] ^= 0xFF
    (tmp_path / "state").write_bytes(bytes(raw))
    assert SlotFile(tmp_path / "state").read() == {"n": 2}


def test_concurrent_writers_get_unique_sequence_numbers(tmp_path: Path) -> None:
    seqs: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        s = Spool(tmp_path / "sp")  # its own file descriptors: the flock really is contended
        for _ in range(20):
            got = s.append(fake_report())
            with lock:
                seqs.append(got.seq or -1)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(1, 81))


def test_records_are_private_to_the_user(spool: Spool) -> None:
    spool.append(fake_report())
    for path in [*spool.pending()] :
        assert os.stat(path.path).st_mode & 0o077 == 0
    assert spool.root.stat().st_mode & 0o077 == 0
    json.loads(spool.pending()[0].path.read_bytes().split(b"\n", 1)[1])
