"""Child process for the A3 crash test: check, spool, upload, forever, until killed with -9.

    python -m tests.agent.crash_child CONFIG_DIR SPOOL_DIR LOG_FILE

After a report is durably spooled it appends ``spooled <report_id> <sha256> <sha256>``
to LOG_FILE: the hashes of the report in full and in its reduced form
(``netcheck.render.reduced``), each as the collector canonicalises it, since the
agent sends one or the other. The parent knows exactly which reports the agent
claimed, and what each may have been stored as.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from netcheck.agent.config import AgentStore
from netcheck.agent.spool import Spool
from netcheck.agent.upload import open_uploader
from netcheck.deadline import Deadline
from netcheck.render.reduced import reduce_report
from tests.agent.helpers import fake_report


def canonical_sha(report: dict[str, object]) -> str:
    text = json.dumps(report, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def main() -> None:
    config_dir, spool_dir, log_file = (Path(a) for a in sys.argv[1:4])
    spool = Spool(spool_dir)
    client, uploader = open_uploader(AgentStore(config_dir), spool)
    log = os.open(log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        report = fake_report()
        got = spool.append(report)
        if got.spooled:
            os.write(log, f"spooled {got.report_id} {canonical_sha(report)} {canonical_sha(reduce_report(report))}\n"
                          .encode())
        uploader.drain(Deadline.after(10), max_records=3)


if __name__ == "__main__":
    main()
