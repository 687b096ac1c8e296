"""Strict JSON parsing and schema validation of request bodies.

Parsing (``strict_loads``) is orjson's, which already refuses invalid UTF-8, a byte order mark,
NaN and Infinity, numbers that overflow to infinity (a 5,000-digit integer among them: nothing
ever runs ``int()`` on it, CVE-2020-10735), unpaired surrogates, and nesting deeper than 1,024
levels (254 when the value is re-encoded, below), without recursing on the C stack; it reads
integers past 64 bits as floats. Two checks orjson does not make are added:

- duplicate keys: orjson keeps the last one silently. Every string, key or value, is two
  unescaped quotes; dropping a duplicate member drops at least its key, so the quotes of the
  raw text and of the parsed value re-encoded are counted and must be equal. A body that is
  exactly its parsed value re-encoded (canonical JSON, as the agent sends it) cannot hold a
  duplicate, and is not counted;
- NUL characters (PostgreSQL text cannot hold them), looked for only when the raw text holds a
  ``\u0000`` escape.

Nesting: every body is then validated against a closed schema (every object lists its members,
free-form facts hold scalars or arrays of scalars), so nothing nested deeper than a few levels
(far below ``MAX_DEPTH``) is ever accepted, and deeper bodies are a 400 naming the field.

For a 240 KB report orjson parses in about 1 ms and the duplicate check adds about 0.35 ms
(0.03 ms for a canonical body); the standard library's parser with hooks for the same checks
took 3 ms. The re-encoding the duplicate check needs is the canonical one, and with ``keep``
the member the caller stores (the report of an upload) is encoded on its own, so the caller
gets its canonical bytes without encoding it a second time.

Validation (``BodyValidator``) uses the compiled JSON Schema validator from ``jsonschema-rs``:
a 170 KB report validates in about half a millisecond, where the pure-Python ``jsonschema`` takes
over 100 ms. Every failure is an ``ApiError`` whose ``field`` names the offending path, such as
``report.probes[3].outcome``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import orjson

from netcheck.render.json import ACCEPTED_VERSIONS, SCHEMA_PATH, schema_path
from netcheck.render.reduced import reduced_schema

#: deepest nesting any accepted body can have (the schemas allow far less)
MAX_DEPTH = 64
#: largest integer a JSON number can carry exactly in every client (2**53 - 1)
MAX_SAFE_INT = 9007199254740991

_ESCAPE = re.compile(rb"\\.", re.S)
_NUL_ESCAPE = re.compile(rb"\\u0000")
#: an escape that could spell an ASCII key such as device_id
_ASCII_ESCAPE = re.compile(rb"\\u00[0-7][0-9a-fA-F]")


class ApiError(Exception):
    """A refusal the client should see: HTTP status, stable code, message, and the field if any."""

    def __init__(self, code: str, message: str, field: str | None = None, status: int = 400,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status
        self.headers = headers or {}


@dataclass
class Parsed:
    value: Any
    #: every value found under the watched key, anywhere in the document
    watched: list[Any] = field(default_factory=list)
    #: ``canonical(value[keep])`` when a top-level member ``keep`` was asked for and present
    kept: bytes | None = None


def _quotes(text: bytes) -> int:
    """Unescaped double quotes in valid JSON text: two for every string, key or value."""
    if b"\\" in text:
        text = _ESCAPE.sub(b"", text)
    return text.count(b'"')


def _walk(value: Any) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every (path, value) of the document, keys included as values, without recursion."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                yield path, key  # a bad key is reported at its object, never echoed
                stack.append(((*path, key), sub))
        elif isinstance(item, list):
            stack.extend(((*path, i), sub) for i, sub in enumerate(item))
        else:
            yield path, item


def strict_loads(raw: bytes, *, watch_key: str | None = None, keep: str | None = None) -> Parsed:
    """Parse a request body strictly; raises ``ApiError`` (code ``invalid_json``).

    ``keep``: a top-level member whose canonical encoding the caller needs (``Parsed.kept``).
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if "depth limit" in message:
            message = "nested too deeply"
        raise ApiError("invalid_json", f"invalid JSON: {message[:200]}") from exc
    kept: bytes | None = None
    try:
        if keep is not None and isinstance(value, dict) and keep in value:
            kept = canonical(value[keep])
            members = [canonical(k) + b":" + (kept if k == keep else canonical(v)) for k, v in sorted(value.items())]
            # a body sent in canonical form (the agent's) is the encoding of what it parses to, so
            # it holds no duplicate: one comparison instead of counting the quotes of both
            unique = raw == b"{" + b",".join(members) + b"}" or _quotes(raw) == sum(map(_quotes, members))
        else:
            unique = _quotes(raw) == _quotes(canonical(value))
    except TypeError as exc:  # orjson encodes at most 254 levels
        raise ApiError("invalid_json", "invalid JSON: nested too deeply") from exc
    if not unique:
        raise ApiError("invalid_json", "duplicate keys in a JSON object")
    watched: list[Any] = []
    # Without a backslash (a memchr away) there is no escape at all, so no NUL and no spelled-out key
    escaped = b"\\" in raw
    has_nul = escaped and _NUL_ESCAPE.search(raw) is not None
    could_watch = watch_key is not None and (
        watch_key.encode() in raw or (escaped and _ASCII_ESCAPE.search(raw) is not None))
    if has_nul:
        for path, item in _walk(value):
            if isinstance(item, str) and "\x00" in item:
                where = format_path("", path)
                raise ApiError("invalid_json", f"{where or 'body'}: strings must not contain NUL characters",
                               field=where or None)
    if could_watch and isinstance(value, dict | list):
        stack: list[Any] = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                if watch_key in item:
                    watched.append(item[watch_key])
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return Parsed(value, watched, kept)


def canonical(value: Any) -> bytes:
    """The canonical encoding of a parsed value (sorted keys, compact, UTF-8)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def format_path(prefix: str, parts: list[str | int] | tuple[str | int, ...]) -> str:
    """``("probes", 3, "outcome")`` under ``report`` -> ``report.probes[3].outcome``."""
    out = prefix
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


class BodyValidator:
    """A compiled JSON Schema; ``check`` raises ``ApiError`` naming the failing field."""

    def __init__(self, schema: dict[str, Any], prefix: str = "") -> None:
        self._validator = jsonschema_rs.validator_for(schema, validate_formats=True)
        self._prefix = prefix

    def check(self, value: Any) -> None:
        try:
            self._validator.validate(value)
        except jsonschema_rs.ValidationError as exc:
            path = list(exc.instance_path)
            kind = exc.kind
            if isinstance(kind, jsonschema_rs.ValidationErrorKind.Required):
                path.append(kind.property)
            elif isinstance(kind, jsonschema_rs.ValidationErrorKind.AdditionalProperties) and kind.unexpected:
                path.append(kind.unexpected[0])
            where = format_path(self._prefix, path) or None
            message = exc.message if len(exc.message) <= 300 else exc.message[:297] + "..."
            raise ApiError("validation_failed", f"{where or 'body'}: {message}", field=where) from exc
        except ValueError as exc:  # e.g. the validator's own recursion limit
            raise ApiError("validation_failed", f"body rejected: {exc}", field=self._prefix or None) from exc


def parse_timestamp(value: str, where: str) -> dt.datetime:
    """An RFC 3339 timestamp (already format-checked) as an aware UTC datetime; one the schema allows but no
    date can hold (``0001-01-01T01:00:00+01:01`` is in year 0 in UTC) is refused with 422, as documented."""
    text = value.strip().upper().replace(" ", "T")
    try:
        parsed = dt.datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            raise ValueError("no time zone")
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise ApiError("unusable_timestamp", f"{where}: {value[:40]!r} is not a usable RFC 3339 date-time",
                       field=where, status=422) from exc


# --- the schemas of the v1 API -------------------------------------------------------------

_TAGS = {
    "type": "object", "maxProperties": 16,
    "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"},
    "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 128,
                             "pattern": "^[^\\u0000-\\u001f\\u007f]*$"},
}

ENROLL_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["secret", "device"],
    "properties": {
        "secret": {"type": "string", "minLength": 1, "maxLength": 256},
        "device": {
            "type": "object", "additionalProperties": False,
            "required": ["hardware_id", "os", "agent_version"],
            "properties": {
                "hardware_id": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
                "name": {"anyOf": [{"type": "null"},
                                   {"type": "string", "minLength": 1, "maxLength": 255,
                                    "pattern": "^[^\\u0000-\\u001f\\u007f]*$"}]},
                "os": {"enum": ["linux", "macos", "windows", "other"]},
                "agent_version": {"type": "string", "minLength": 1, "maxLength": 64,
                                  "pattern": "^[^\\u0000-\\u001f\\u007f]*$"},
                "tags": _TAGS,
            },
        },
    },
}

_COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INT}

REPORT_ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["report", "agent"],
    "properties": {
        "report": {"type": "object"},
        "agent": {
            "type": "object", "additionalProperties": False,
            "required": ["seq", "dropped", "spool_full", "sent_at"],
            "properties": {
                "seq": _COUNT, "dropped": _COUNT, "spool_full": {"type": "boolean"},
                "sent_at": {"type": "string", "format": "date-time", "maxLength": 40},
            },
        },
        "sweep_id": {"anyOf": [{"type": "null"}, {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}]},
        "device_id": {"type": "string", "maxLength": 64},
    },
}


def load_report_schema(version: int | None = None) -> dict[str, Any]:
    """The report schema of ``version`` (None: the one the agent emits now)."""
    path = SCHEMA_PATH if version is None else schema_path(version)
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


class ReportValidator:
    """Every accepted report schema version (``ACCEPTED_VERSIONS``): a report is checked against the schema
    of the version it declares; any other version is checked against the newest (which names the field).
    ``reduced``: the schemas of the reduced form (``netcheck.render.reduced``)."""

    def __init__(self, prefix: str = "report", *, reduced: bool = False) -> None:
        def schema(version: int) -> dict[str, Any]:
            loaded = load_report_schema(version)
            return reduced_schema(loaded) if reduced else loaded

        self._by_version = {v: BodyValidator(schema(v), prefix=prefix) for v in ACCEPTED_VERSIONS}
        self._newest = self._by_version[max(ACCEPTED_VERSIONS)]

    def check(self, value: Any) -> None:
        version = value.get("schema_version") if isinstance(value, dict) else None
        chosen = self._by_version.get(version) if isinstance(version, int) and not isinstance(version, bool) else None
        (chosen or self._newest).check(value)


class Validators:
    """The compiled validators of the API, built once per process."""

    def __init__(self) -> None:
        self.enroll = BodyValidator(ENROLL_SCHEMA)
        self.envelope = BodyValidator(REPORT_ENVELOPE_SCHEMA)
        self.report = ReportValidator(prefix="report")
        self.reduced_report = ReportValidator(prefix="report", reduced=True)
