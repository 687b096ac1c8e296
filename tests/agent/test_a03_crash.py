"""A3 crash safety: `kill -9` at random points while the agent spools and uploads.

A child process (tests/agent/crash_child.py) loops check -> spool -> upload to a
real collector; the test kills it with SIGKILL at a random moment, 100 times
(the anchor: 1,000), restarting it on the same spool each time, then drains what
is left. Kills land inside record writes, state updates, HTTP exchanges before and
after the collector commits, and the acknowledgement bookkeeping.

Pass: the spool always opens (no child ever fails to start or logs a traceback);
every report the agent logged as spooled is in the database exactly once, with
the very report that was spooled, in full or in its reduced form (the same
canonical SHA-256 as one of them: no partial record was ever uploaded); nothing was quarantined as corrupt.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from netcheck.agent.uploader import drain_with_retries
from netcheck.deadline import Deadline
from tests.agent.conftest import Real, Rig
from tests.collector.conftest import sql

ITERATIONS = 100
REPO = Path(__file__).resolve().parents[2]


def test_a3_kill_9_anywhere_loses_nothing_and_duplicates_nothing(real: Callable[..., Real],
                                                                 rigs: Callable[..., Rig], tmp_path: Path) -> None:
    collector = real()
    rig = rigs(collector.url, collector.secret)
    log_file = tmp_path / "spooled.log"
    rng = random.Random(3)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for i in range(ITERATIONS):
        child = subprocess.Popen([sys.executable, "-m", "tests.agent.crash_child", str(rig.store.directory),
                                  str(rig.spool.root), str(log_file)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
        assert child.stdout is not None and child.stderr is not None
        line = child.stdout.readline()
        assert line == b"ready\n", f"iteration {i}: the agent did not start: {child.stderr.read()[-3000:]!r}"
        time.sleep(rng.uniform(0.0, 0.25))
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        err = child.stderr.read().decode("utf-8", "replace")
        child.stdout.close()
        child.stderr.close()
        assert "Traceback" not in err, f"iteration {i}:\n{err[-3000:]}"

    integrity = rig.spool.check_integrity()
    leftover = drain_with_retries(rig.uploader, Deadline.after(120), sleep=lambda s: None)

    claimed: dict[str, tuple[str, str]] = {}  # report id: its hashes in full and reduced
    for line_text in log_file.read_text().splitlines():
        _, rid, full, reduced = line_text.split()
        claimed[rid] = (full, reduced)
    rows = sql(collector.database_url, "SELECT report_id, body_sha256 FROM reports")
    stored = {}
    for r in rows:
        assert r.report_id not in stored, f"{r.report_id} stored twice"
        stored[r.report_id] = r.body_sha256
    print(f"\nA3: kills={ITERATIONS} spooled_claims={len(claimed)} db_rows={len(rows)} "
          f"left_after_kills={integrity.records} drained_at_end={leftover.acked} "
          f"quarantined={len(rig.spool.quarantined())}")

    assert integrity.ok, integrity.corrupt
    assert len(claimed) >= ITERATIONS  # the kills really interrupted a working agent
    assert not rig.spool.pending()
    missing = set(claimed) - set(stored)
    assert not missing, f"{len(missing)} spooled report(s) never delivered"
    for rid, forms in claimed.items():
        assert stored[rid] in forms, f"{rid}: the collector stored a different body"
    # a report spooled right before a kill may be stored without its log line; nothing else may appear
    assert len(set(stored) - set(claimed)) <= ITERATIONS
    assert rig.spool.quarantined() == []
