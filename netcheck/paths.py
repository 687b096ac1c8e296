"""Per-user directories (cache, config, data), following each OS's convention.

The only module that decides where netcheck keeps files on the laptop.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP = "netcheck"


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def _base(kind: str) -> Path:
    if sys.platform == "win32":
        root = os.environ.get("LOCALAPPDATA") or str(_home() / "AppData" / "Local")
        return Path(root) / APP / ("Cache" if kind == "cache" else kind.capitalize())
    if sys.platform == "darwin":
        sub = {"cache": "Library/Caches", "config": "Library/Application Support",
               "data": "Library/Application Support"}[kind]
        return _home() / sub / APP
    env = {"cache": "XDG_CACHE_HOME", "config": "XDG_CONFIG_HOME", "data": "XDG_DATA_HOME"}[kind]
    default = {"cache": ".cache", "config": ".config", "data": ".local/share"}[kind]
    root = os.environ.get(env) or str(_home() / default)
    return Path(root) / APP


def cache_dir() -> Path:
    return _base("cache")


def config_dir() -> Path:
    return _base("config")


def data_dir() -> Path:
    return _base("data")


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so readers see the old or the new file, never half.

    The bytes are fsynced before the rename, and the directory after it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if sys.platform != "win32":
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_output(path: Path, data: bytes) -> None:
    """Write a report the user asked for (``-o FILE``, ``--html FILE``).

    A regular file (or a new one) is replaced atomically (:func:`atomic_write`).
    Anything else is written through and left in place: a symlink keeps pointing
    where it pointed, ``/dev/null`` and ``/dev/stdout`` stay devices, and a named
    pipe gets the bytes (an error at once if no process reads it, rather than a
    hang). Raises OSError.
    """
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is None or stat.S_ISREG(st.st_mode):
        atomic_write(path, data)
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "is a directory", str(path))
    try:
        target = os.stat(path)
    except FileNotFoundError:
        target = None  # a dangling symlink: create what it points to
    flags = os.O_WRONLY | getattr(os, "O_BINARY", 0)
    if target is None:
        flags |= os.O_CREAT
    elif stat.S_ISREG(target.st_mode):
        flags |= os.O_TRUNC
    elif stat.S_ISFIFO(target.st_mode):
        flags |= getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags, 0o644)
    try:
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
