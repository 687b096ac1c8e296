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
