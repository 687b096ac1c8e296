"""The collector's group commit (``app._Batcher``): requests that queue for the database go
together, and each gets its own answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from netcheck.collector.app import _Api, _Batcher
from netcheck.collector.db import checkpoint_wal, make_engine, migrate, rate_counters
from netcheck.collector.settings import Settings
from netcheck.collector.validate import ApiError


def test_uploads_that_wait_go_together_and_each_gets_its_answer() -> None:
    batches: list[list[str]] = []
    release = asyncio.Event()

    async def run(batch: list[str]) -> list[str | ApiError]:
        batches.append(batch)
        await release.wait()
        return [ApiError("report_id_conflict", "no", status=422) if device == "bad" else f"stored:{device}"
                for device in batch]

    async def main() -> list[str | BaseException]:
        batcher: _Batcher[str, str] = _Batcher(run, slots=1, limit=3)
        tasks = [asyncio.create_task(batcher.submit(device)) for device in ("a", "b", "bad", "c", "d")]
        await asyncio.sleep(0)
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    # the first alone (the slot was free), then the waiting ones at most three at a time
    assert batches == [["a"], ["b", "bad", "c"], ["d"]]
    assert results[:2] == ["stored:a", "stored:b"] and results[3:] == ["stored:c", "stored:d"]
    assert isinstance(results[2], ApiError) and results[2].status == 422


async def _settle() -> None:
    """Let every ready task run until each waits (a few turns of the loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_with_a_linger_a_free_slot_waits_for_a_fuller_batch_while_another_runs() -> None:
    """``linger``: while a batch runs, the next waits for ``fill`` uploads rather than taking the
    free slot alone; when none runs, the waiting go at once (the linger is an hour: no clock)."""
    batches: list[list[str]] = []
    releases: dict[str, asyncio.Event] = {}

    async def run(batch: list[str]) -> list[str | ApiError]:
        batches.append(batch)
        await releases.setdefault(batch[0], asyncio.Event()).wait()
        return [f"stored:{device}" for device in batch]

    async def main() -> list[str]:
        batcher: _Batcher[str, str] = _Batcher(run, slots=2, linger=3600, fill=3)
        tasks = [asyncio.create_task(batcher.submit("a"))]
        await _settle()
        tasks += [asyncio.create_task(batcher.submit(device)) for device in ("b", "c")]
        await _settle()
        assert batches == [["a"]]  # a slot is free, but b and c wait for a third
        tasks.append(asyncio.create_task(batcher.submit("d")))
        await _settle()
        assert batches == [["a"], ["b", "c", "d"]]
        tasks.append(asyncio.create_task(batcher.submit("e")))
        await _settle()
        for first in ("a", "b"):
            releases.setdefault(first, asyncio.Event()).set()
        await asyncio.gather(*tasks[:4])
        await _settle()
        assert batches[-1] == ["e"]  # nothing runs: e goes at once, alone
        releases.setdefault("e", asyncio.Event()).set()
        return await asyncio.gather(*tasks)

    assert asyncio.run(main()) == [f"stored:{device}" for device in "abcde"]


def test_a_database_failure_reaches_every_upload_of_its_batch_and_no_other() -> None:
    async def run(batch: list[str]) -> list[str | ApiError]:
        await asyncio.sleep(0)
        if "x" in batch:
            raise OSError("database down")
        return ["stored"] * len(batch)

    async def main() -> list[str | BaseException]:
        batcher: _Batcher[str, str] = _Batcher(run, slots=1)
        first = asyncio.create_task(batcher.submit("a"))
        await asyncio.sleep(0)
        rest = [asyncio.create_task(batcher.submit(device)) for device in ("x", "y")]
        return await asyncio.gather(first, *rest, return_exceptions=True)

    first, x, y = asyncio.run(main())
    assert first == "stored"
    assert isinstance(x, OSError) and isinstance(y, OSError)
    with pytest.raises(OSError):
        raise x


def test_on_sqlite_a_writer_waits_for_its_turn_and_gives_up_with_the_database_timeout(tmp_path: Path) -> None:
    """The gate's and the store's batches of a process take turns on one lock (SQLite); a batch
    that waits past the database timeout fails as a database that cannot be reached (503)."""
    url = f"sqlite:///{tmp_path / 'collector.db'}"
    engine = make_engine(url, timeout_s=0.2)
    migrate(engine)
    try:
        api = _Api(Settings(database_url=url, db_timeout_s=0.2), engine)
        assert api._writer is not None
        assert api._gate_batch([("198.18.0.1", None)])[0].status == 401  # type: ignore[union-attr]
        with api._writer, pytest.raises(sa.exc.TimeoutError):  # another batch of this process writes
            api._gate_batch([("198.18.0.1", None)])
        assert api._gate_batch([("198.18.0.1", None)])[0].status == 401  # type: ignore[union-attr]
    finally:
        engine.dispose()


def test_on_sqlite_a_commit_leaves_the_log_to_the_checkpoint_task(tmp_path: Path) -> None:
    """The collector's commits do not copy SQLite's write-ahead log into the database (an upload's
    acknowledgement would wait for it); ``checkpoint_wal``, which each process runs every second, does."""
    path = tmp_path / "collector.db"
    migrated = make_engine(f"sqlite:///{path}")
    migrate(migrated)
    migrated.dispose()
    engine = make_engine(f"sqlite:///{path}")
    try:
        _Api(Settings(database_url=f"sqlite:///{path}"), engine)
        empty = path.stat().st_size
        with engine.begin() as conn:  # some 2,000 pages: past SQLite's 1,000, where a commit would checkpoint
            conn.execute(sa.insert(rate_counters), [{"bucket": f"{i:0>150}", "minute": i, "count": 1}
                                                    for i in range(40_000)])
        assert path.stat().st_size == empty  # all of it still in the log
        checkpoint_wal(engine)
        assert path.stat().st_size > empty + 4_000_000
    finally:
        engine.dispose()
