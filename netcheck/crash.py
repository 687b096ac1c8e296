"""What a crash leaves behind: a log file with the traceback, one line for the user, and
(with ``--json``) a JSON object that says the check failed.

A crash is any exception that is not a :class:`~netcheck.errors.NetcheckError`: a bug.
It exits with :data:`~netcheck.errors.INTERNAL_ERROR` so that no deployment tool reads
it as a verdict. The log holds the netcheck and Python versions, the OS, the command
name and the traceback, with the home directory and the login name replaced, and no
command-line values (they may name secret files).
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from netcheck import __version__
from netcheck.errors import INTERNAL_ERROR
from netcheck.paths import cache_dir

#: Crash logs kept; older ones are removed when a new one is written.
KEEP_LOGS = 20


def _scrub(text: str) -> str:
    home = os.path.expanduser("~")
    if home and home not in ("/", "~"):
        text = text.replace(home, "~")
    try:
        user = getpass.getuser()
    except Exception:  # no user name (a container without one): nothing to hide
        user = ""
    if len(user) >= 3:
        text = text.replace(user, "<user>")
    return text


def _command(args: Sequence[str]) -> str:
    """The subcommand name only: option values may be paths or secrets."""
    return next((a for a in args if not a.startswith("-")), "")[:40]


def write_crash_log(exc: BaseException, args: Sequence[str], directory: Path | None = None) -> Path | None:
    """Write the crash log; None when it cannot be written (the message then says so)."""
    directory = directory or cache_dir() / "crashes"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    body = "\n".join([
        f"netcheck {__version__} crashed at {stamp}",
        f"command: netcheck {_command(args)}",
        f"python: {platform.python_version()} ({sys.executable and Path(sys.executable).name})",
        f"os: {platform.system()} {platform.release()} {platform.machine()}",
        "",
        "".join(traceback.format_exception(exc)),
    ])
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"crash-{stamp}-{os.getpid()}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as fh:
            fh.write(_scrub(body))
        old = sorted(directory.glob("crash-*.log"))[:-KEEP_LOGS]
        for p in old:
            p.unlink(missing_ok=True)
    except OSError:
        return None
    return path


def report_crash(exc: BaseException, args: Sequence[str], directory: Path | None = None) -> tuple[str, str | None]:
    """(the one line for stderr, the JSON document for stdout when ``--json`` was given, else None)."""
    log = write_crash_log(exc, args, directory)
    what = f"{type(exc).__name__}: {_scrub(str(exc))}".strip().rstrip(":")
    what = " ".join(what.split())[:300]
    where = (f"details in {log}; please send that file to your IT support" if log is not None
             else "and the crash log could not be written")
    message = (f"Error: internal error in netcheck ({what}); {where}. "
               f"Exit code {INTERNAL_ERROR}: netcheck did not finish its work.")
    if "--json" not in args:
        return message, None
    from netcheck.render.json import SCHEMA_VERSION

    doc = {"schema_version": SCHEMA_VERSION,
           "error": {"kind": "internal", "message": f"internal error in netcheck ({what})",
                     "crash_log": str(log) if log is not None else None, "exit_code": INTERNAL_ERROR}}
    return message, json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n"


__all__ = ["KEEP_LOGS", "report_crash", "write_crash_log"]
