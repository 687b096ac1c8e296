"""The collector's group commit (``app._Batcher``): requests that queue for the database go
together, and each gets its own answer."""

from __future__ import annotations

import asyncio

import pytest

from netcheck.collector.app import _Batcher
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
