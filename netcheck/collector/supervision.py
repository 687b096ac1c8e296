"""Worker processes of ``netcheck serve --workers N`` stop when the process that started them is gone.

uvicorn's supervisor (the master) starts the workers; if it is killed (``kill -9``, the OOM
killer), the workers kept serving on the inherited socket and a restarted collector could not
bind its port. Each worker therefore watches its parent:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: the kernel sends SIGTERM when the parent dies;
- everywhere, a watchdog thread that compares ``os.getppid()`` with the master's pid every
  ``WATCH_INTERVAL_S`` and sends the worker SIGTERM when they differ.

SIGTERM is uvicorn's graceful shutdown: requests in flight finish (up to the graceful timeout),
nothing is acknowledged that was not committed. The master's pid is in ``SUPERVISOR_ENV``; a
single-process collector (no master) sets nothing and watches nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading

log = logging.getLogger(__name__)

SUPERVISOR_ENV = "NETCHECK_SUPERVISOR_PID"
WATCH_INTERVAL_S = 1.0
_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _watch(master: int, stop: threading.Event) -> None:
    while not stop.wait(WATCH_INTERVAL_S):
        if os.getppid() != master:
            log.warning("the collector's master process %d is gone; this worker stops", master)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def follow_master(environ: dict[str, str] | None = None) -> threading.Event | None:
    """In a worker process: stop (SIGTERM) when the master is gone. Returns the watchdog's stop
    event, or None when this process has no master to follow."""
    raw = (os.environ if environ is None else environ).get(SUPERVISOR_ENV, "")
    if not raw.isdigit() or int(raw) == os.getpid():
        return None  # the master itself, or a single-process collector
    master = int(raw)
    _set_parent_death_signal()
    if os.getppid() != master:  # it died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
    stop = threading.Event()
    threading.Thread(target=_watch, args=(master, stop), name="netcheck-master-watch", daemon=True).start()
    return stop
