"""Reading files that a user or IT hands to netcheck: the one way to do it.

Endpoint files, site profiles, policy and agent configuration, enrollment secrets
and ``file://`` PAC files all go through :func:`read_user_file`, so each of them
gets the same answers to hostile input:

- only regular files are read: a FIFO, a device (``/dev/zero``) or a directory is
  refused at once (the file is opened non-blocking, then ``fstat``-ed, so opening a
  FIFO with no writer never blocks);
- the size is checked before reading, and no more than ``limit`` bytes are read
  even if the file grows meanwhile;
- text is strict UTF-8 (a leading byte order mark is allowed);
- JSON and TOML nested deeper than :data:`MAX_DEPTH` are refused, whether the
  parser itself would overflow the stack or the result would;

and every failure is one :class:`~netcheck.errors.ConfigError` (exit code 4) that
names the file.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from netcheck.errors import ConfigError, NetcheckError

#: The default size limit: far above any real configuration or endpoint file.
DEFAULT_LIMIT = 8_000_000
#: A certificate bundle (PEM) larger than this is not one (the whole Mozilla root set is about 0.3 MB).
PEM_BUNDLE_LIMIT = 16_000_000
#: Deepest nesting of lists and tables accepted in a JSON or TOML file.
MAX_DEPTH = 64

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)


def read_user_file(path: Path | str, *, limit: int = DEFAULT_LIMIT, what: str = "file",
                   error: type[NetcheckError] = ConfigError) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    ``what`` names the file in messages ("the site profile"); ``error`` is the
    exception raised (a :class:`ConfigError` unless the caller has a narrower one).
    """
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a pipe (FIFO)" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                    else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
            raise error(f"{path}: cannot read {what}: it is {kind}, not a regular file")
        if st.st_size > limit:
            raise error(f"{path}: {what} is larger than {limit} bytes ({st.st_size} bytes)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise error(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)
    if got > limit:
        raise error(f"{path}: {what} is larger than {limit} bytes")
    return b"".join(chunks)


def decode_text(data: bytes, *, where: str, what: str = "file",
                error: type[NetcheckError] = ConfigError) -> str:
    """Strict UTF-8 (a byte order mark is dropped)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{where}: {what} is not UTF-8 text (bad byte at offset {exc.start}); "
                    "save it as UTF-8") from None


def read_user_text(path: Path | str, *, limit: int = DEFAULT_LIMIT, what: str = "file",
                   error: type[NetcheckError] = ConfigError) -> str:
    return decode_text(read_user_file(path, limit=limit, what=what, error=error), where=str(path), what=what,
                       error=error)


def depth(value: object) -> int:
    """How deeply lists and dicts nest in ``value`` (0 for a scalar); iterative, never recurses."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        level += 1
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        stack.extend((child, level) for child in children)
    return deepest


def _too_deep(where: str, what: str, error: type[NetcheckError]) -> NetcheckError:
    return error(f"{where}: {what} nests lists or tables more than {MAX_DEPTH} levels deep")


def parse_json(data: bytes | str, *, where: str, what: str = "file",
               error: type[NetcheckError] = ConfigError) -> Any:
    """JSON text (strict UTF-8 when bytes) -> value, with bounded nesting; NaN and Infinity refused."""
    text = data if isinstance(data, str) else decode_text(data, where=where, what=what, error=error)

    def no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        value = json.loads(text, parse_constant=no_constant)
    except RecursionError:
        raise _too_deep(where, what, error) from None
    except json.JSONDecodeError as exc:
        raise error(f"{where}: {what} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except ValueError as exc:
        raise error(f"{where}: {what} is not valid JSON ({exc})") from None
    if depth(value) > MAX_DEPTH:
        raise _too_deep(where, what, error)
    return value


def parse_toml(text: str, *, where: str, what: str = "file",
               error: type[NetcheckError] = ConfigError) -> dict[str, Any]:
    """TOML text -> table, with bounded nesting."""
    try:
        doc = tomllib.loads(text)
    except RecursionError:
        raise _too_deep(where, what, error) from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{where}: {what} is not valid TOML ({exc})") from None
    if depth(doc) > MAX_DEPTH:
        raise _too_deep(where, what, error)
    return doc


def load_user_json(path: Path | str, *, limit: int = DEFAULT_LIMIT, what: str = "file",
                   error: type[NetcheckError] = ConfigError) -> Any:
    return parse_json(read_user_file(path, limit=limit, what=what, error=error), where=str(path), what=what,
                      error=error)


def load_user_toml(path: Path | str, *, limit: int = DEFAULT_LIMIT, what: str = "file",
                   error: type[NetcheckError] = ConfigError) -> dict[str, Any]:
    return parse_toml(read_user_text(path, limit=limit, what=what, error=error), where=str(path), what=what,
                      error=error)


__all__ = ["DEFAULT_LIMIT", "MAX_DEPTH", "decode_text", "depth", "load_user_json", "load_user_toml",
           "parse_json", "parse_toml", "read_user_file", "read_user_text"]
