"""The benchmarks still run: each on a tiny workload, its figures parsed (never judged).

Benchmarks are not tests (they assert nothing about speed), but a benchmark that no longer runs
would go unnoticed until someone needs its figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object a benchmark printed starting a line, in order (its text lines in between)."""
    decoder, out, pos = json.JSONDecoder(), [], 0
    while (start := text.find("{", pos)) >= 0:
        if start and text[start - 1] != "\n":
            pos = start + 1
            continue
        obj, pos = decoder.raw_decode(text, start)
        out.append(obj)
    return out


def test_the_ingest_benchmark_runs_and_stores_every_upload_once() -> None:
    # the collector keeps its default per-device limit (60 requests a minute): the warm-up and the
    # closed loop post for ~4 s as fast as they are answered, so there must be enough devices that
    # none of them exceeds it even on a quiet machine (CI once posted 247/s to 20 devices and got 429s)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_ingest.py"), "--db", "sqlite", "--devices", "300",
         "--seconds", "1", "--rate", "20", "--connections", "4", "--workers", "1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = _json_objects(result.stdout)  # the environment first, then one object per database
    assert "environment" in printed[0] and printed[0]["environment"]
    figures = printed[-1]
    closed, opened = figures["closed_loop"], figures["open_loop"]
    assert closed["stored"] > 0 and set(closed["statuses"]) == {"200"}
    assert opened["stored"] == 20 and set(opened["statuses"]) == {"200"}
    # the warm-up, the closed loop and the open loop: every answered upload is a row
    assert figures["rows"] >= closed["stored"] + opened["stored"]
    assert closed["cpu_ms_per_report"]["collector"] > 0


def _bench(*argv: str) -> list[dict[str, Any]]:
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = _json_objects(result.stdout)
    assert "environment" in printed[0] and printed[0]["environment"]
    return printed


def test_the_storage_benchmark_runs_and_finds_every_latest_report_whole() -> None:
    figures = _bench(str(ROOT / "bench" / "bench_storage.py"), "--devices", "2", "--days", "3",
                     "--full-history", "1")[-1]["stored_size"]
    assert figures["reports"] == 6 and figures["every_latest_report_complete"] is True
    assert figures["by_form"]["reduced"]["reports"] == 4 and figures["by_form"]["zlib"]["reports"] == 2
    assert figures["database_bytes_per_report"] > figures["blob_bytes_per_report"] > 0


def test_the_store_path_benchmark_runs() -> None:
    printed = _bench(str(ROOT / "bench" / "bench_store_path.py"), "--db", "sqlite", "--reports", "8",
                     "--batches", "1,4", "--rounds", "1")
    assert [p["batch"] for p in printed[1:]] == [1, 4]
    assert all(p["python_cpu_ms"] > 0 for p in printed[1:])
