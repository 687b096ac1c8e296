"""Shared helpers for agent tests: fake reports, a fake clock, a simulated-time driver."""

from __future__ import annotations

import copy
import heapq
import json
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from netcheck.agent.loop import Lane

SAMPLE = Path(__file__).resolve().parent.parent / "fixtures" / "report-sample.json"
_SAMPLE_DOC: dict[str, Any] = json.loads(SAMPLE.read_text())


def fake_report(measured_at: float | None = None, **changes: Any) -> dict[str, Any]:
    """The sample report with a fresh report_id (a valid schema-v1 report)."""
    doc = copy.deepcopy(_SAMPLE_DOC)
    doc["report_id"] = str(uuid.uuid4())
    if measured_at is not None:
        doc["measured_at"] = datetime.fromtimestamp(measured_at, UTC).isoformat(timespec="seconds") \
            .replace("+00:00", "Z")
    doc.update(changes)
    return doc


class FakeClock:
    """A clock the test moves; used for both the monotonic and the wall clock."""

    def __init__(self, start: float = 1_764_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def simulate(clock: FakeClock, lanes: Iterable[Lane], until: float,
             stop: Callable[[], bool] = lambda: False, max_steps: int = 10_000_000) -> int:
    """Discrete-event simulation: repeatedly step the lane that is due first, moving the clock to it."""
    lanes = list(lanes)
    steps = 0
    while steps < max_steps and not stop():
        heap = [(lane.due(), i) for i, lane in enumerate(lanes)]
        heapq.heapify(heap)
        due, i = heap[0]
        if due > until:
            clock.now = max(clock.now, until)
            return steps
        clock.now = max(clock.now, due)
        lanes[i].step(clock.now)
        steps += 1
    return steps
