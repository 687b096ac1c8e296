"""`netcheck check` leaves the interpreter's exit little to scan (netcheck.commands.check.freeze_at_exit)."""

from __future__ import annotations

import subprocess
import sys

# An atexit function registered first runs last: it sees what the exit's collections will see.
_PROGRAM = """
import atexit, gc
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, flush=True))
from netcheck.commands.check import freeze_at_exit
freeze_at_exit()
freeze_at_exit()
print("frozen now:", gc.get_freeze_count() > 0, flush=True)
"""


def test_everything_is_frozen_at_exit_and_only_then() -> None:
    out = subprocess.run([sys.executable, "-c", _PROGRAM], capture_output=True, text=True, check=True,
                         timeout=60).stdout.splitlines()
    assert out == ["frozen now: False", "frozen at exit: True"]
