"""`netcheck check` and the cyclic garbage collector: paused while the check runs, little to scan at exit."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest

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


def test_the_collector_waits_for_the_check_and_comes_back() -> None:
    from netcheck.commands.check import collector_paused

    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


def test_the_collector_comes_back_when_the_check_fails() -> None:
    from netcheck.commands.check import collector_paused

    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a probe bug")
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_what_the_check_made_is_not_left_young_for_the_collector_to_scan() -> None:
    """The first allocation after the collector comes back does not scan everything the check made."""
    from netcheck.commands.check import collector_paused

    with collector_paused():
        made = [[] for _ in range(20_000)]
    assert gc.isenabled() and gc.get_freeze_count() == 0
    # in the oldest generation at once, not scanned by a young collection on the way there
    assert any(o is made for o in gc.get_objects(generation=2))
