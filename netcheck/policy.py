"""Readiness rules and thresholds, read from ``endpoints/policy.toml``, and the one schema their
values must fit.

``THRESHOLDS`` names every setting as ``policy.toml`` does (``[check] concurrency`` is
``check.concurrency``) with the JSON Schema its value must match: types, ranges, no unknown keys.
The same schema checks the bundled file (a bad local edit is a ``ConfigError``), a collector's
``thresholds`` at ``netcheck admin policy set`` (refused there) and again on the agent, key by
key, where a value it cannot use is logged and the local value kept: no policy can stop a check.

``problem(value, schema)`` is a small validator for the subset of JSON Schema these schemas use
(the agent does not carry the collector's jsonschema-rs); the collector publishes the same
schemas in its OpenAPI document. A keyword it does not know is refused when the module loads, so
a schema cannot say more than what is enforced.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netcheck.errors import ConfigError
from netcheck.files import load_user_toml
from netcheck.m365.catalog import data_dir

Schema = Mapping[str, Any]


@dataclass(frozen=True)
class Policy:
    deadline_s: float = 30.0
    concurrency: int = 96
    dns_concurrency: int = 40
    tcp_samples: int = 3
    tcp_samples_thorough: int = 10
    whoami_name: str | None = None
    exchange_score_points: tuple[tuple[float, float], ...] = (
        (10, 100), (25, 80), (100, 60), (200, 40), (300, 20), (350, 0))
    exchange_degraded_below: int = 60
    slow_latency_ms: float = 100.0
    slow_dns_ms: float = 150.0
    media_rtt_ms: float = 100.0
    media_loss_pct: float = 1.0
    media_jitter_ms: float = 30.0
    media_stride_ms: float = 20.0
    media_window_s: float = 1.0
    media_window_s_thorough: float = 10.0

    def with_thresholds(self, doc: object) -> tuple[Policy, list[str]]:
        """This policy with the values of ``doc`` (``policy.toml``'s tables, as a collector's
        ``thresholds`` sends them) that fit the schema; returns it and one line per value left out."""
        values, problems = usable_thresholds(doc)
        return replace(self, **values), problems


def _number(low: float, high: float, *, exclusive_low: bool = False) -> dict[str, Any]:
    return {"type": "number", ("exclusiveMinimum" if exclusive_low else "minimum"): low, "maximum": high}


def _integer(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"

#: (table, key) of policy.toml -> (Policy field, schema of the value). The ranges keep a check
#: useful: at least one probe at a time, a deadline a check can finish in, no more sockets than
#: a laptop can open, no pass mark that nothing (or everything) passes.
THRESHOLDS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {
    ("check", "deadline_s"): ("deadline_s", _number(5, 3600)),
    ("check", "concurrency"): ("concurrency", _integer(1, 512)),
    ("check", "dns_concurrency"): ("dns_concurrency", _integer(1, 150)),
    ("check", "tcp_samples"): ("tcp_samples", _integer(1, 20)),
    ("check", "tcp_samples_thorough"): ("tcp_samples_thorough", _integer(1, 50)),
    ("check", "whoami_name"): ("whoami_name", {"anyOf": [{"type": "null"}, {
        "type": "string", "maxLength": 253, "pattern": f"^{_LABEL}(\\.{_LABEL})+\\.?$"}]}),
    ("exchange_score", "points"): ("exchange_score_points", {
        "type": "array", "minItems": 2, "maxItems": 32, "items": {
            "type": "array", "minItems": 2, "maxItems": 2,
            "items": {"type": "number", "minimum": 0, "maximum": 100000}}}),
    ("exchange_score", "degraded_below"): ("exchange_degraded_below", _integer(0, 100)),
    ("latency", "slow_ms"): ("slow_latency_ms", _number(0, 60000, exclusive_low=True)),
    ("dns", "slow_ms"): ("slow_dns_ms", _number(0, 60000, exclusive_low=True)),
    ("teams_media", "rtt_ms"): ("media_rtt_ms", _number(0, 60000, exclusive_low=True)),
    ("teams_media", "loss_pct"): ("media_loss_pct", _number(0, 100)),
    ("teams_media", "jitter_ms"): ("media_jitter_ms", _number(0, 60000, exclusive_low=True)),
    ("teams_media", "stride_ms"): ("media_stride_ms", _number(5, 200)),
    ("teams_media", "window_s"): ("media_window_s", _number(0.2, 60)),
    ("teams_media", "window_s_thorough"): ("media_window_s_thorough", _number(0.2, 300)),
}


def _points_in_order(points: list[list[float]]) -> str | None:
    xs = [p[0] for p in points]
    if any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
        return "the latencies (first of each pair) must increase"
    if any(not 0 <= p[1] <= 100 for p in points):
        return "the scores (second of each pair) must be between 0 and 100"
    return None


#: what a JSON Schema cannot say, checked after it
_EXTRA: dict[tuple[str, str], Callable[[Any], str | None]] = {("exchange_score", "points"): _points_in_order}

THRESHOLD_TABLES = tuple(dict.fromkeys(table for table, _ in THRESHOLDS))

#: ``thresholds`` as a collector sends it: policy.toml's tables, every key optional
THRESHOLDS_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "properties": {table: {"type": "object", "additionalProperties": False,
                           "properties": {key: schema for (t, key), (_, schema) in THRESHOLDS.items() if t == table}}
                   for table in THRESHOLD_TABLES},
}


# --- the validator -------------------------------------------------------------------------------

_KEYWORDS = frozenset({"type", "enum", "anyOf", "minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength",
                       "pattern", "items", "minItems", "maxItems", "properties", "additionalProperties",
                       "required", "maxProperties"})
_TYPES: dict[str, Callable[[object], bool]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}
_TYPE_WORDS = {"null": "null", "boolean": "true or false", "integer": "a whole number", "number": "a finite number",
               "string": "a string", "array": "a list", "object": "an object"}


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _join(where: str, key: str | int) -> str:
    return f"{where}[{key}]" if isinstance(key, int) else (f"{where}.{key}" if where else key)


def problem(value: object, schema: Schema, where: str = "") -> str | None:
    """Why ``value`` does not match ``schema`` (one line naming the path), or None.

    Stricter than JSON Schema where an agent would be hurt: a number must be finite, an integer
    must be written as one (5, not 5.0), and true/false are not numbers.
    """
    at = f"{where}: " if where else ""
    if "anyOf" in schema:
        if all(problem(value, sub, where) for sub in schema["anyOf"]):
            return f"{at}{_show(value)} is none of the allowed forms"
        return None
    kind = schema.get("type")
    if kind is not None and not _TYPES[kind](value):
        return f"{at}{_show(value)} is not {_TYPE_WORDS[kind]}"
    if "enum" in schema and not any(value == e and type(value) is type(e) for e in schema["enum"]):
        return f"{at}{_show(value)} is not one of {', '.join(map(repr, schema['enum']))}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{at}{_show(value)} is below the minimum {schema['minimum']}"
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            return f"{at}{_show(value)} must be more than {schema['exclusiveMinimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{at}{_show(value)} is above the maximum {schema['maximum']}"
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{at}{_show(value)} is too short"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{at}the string is longer than {schema['maxLength']} characters"
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            return f"{at}{_show(value)} is not in the expected form"
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return f"{at}the list needs at least {schema['minItems']} items"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return f"{at}the list has more than {schema['maxItems']} items"
        if "items" in schema:
            for index, item in enumerate(value):
                found = problem(item, schema["items"], _join(where, index))
                if found:
                    return found
    if isinstance(value, dict):
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            return f"{at}more than {schema['maxProperties']} members"
        for name in schema.get("required", ()):
            if name not in value:
                return f"{at}{name!r} is missing"
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                found = problem(item, props[key], _join(where, key))
                if found:
                    return found
            elif schema.get("additionalProperties", True) is False:
                return f"{_join(where, str(key)[:64])}: unknown key (known: {', '.join(props)})"
    return None


def _check_keywords(schema: object) -> None:
    if isinstance(schema, dict):
        unknown = set(schema) - _KEYWORDS
        if unknown:
            raise AssertionError(f"schema keyword(s) the validator does not enforce: {sorted(unknown)}")
        for name in ("items", "additionalProperties"):
            if isinstance(schema.get(name), dict):
                _check_keywords(schema[name])
        for sub in (*schema.get("properties", {}).values(), *schema.get("anyOf", ())):
            _check_keywords(sub)


def check_schema(schema: Schema) -> None:
    """Refuse a schema that uses a keyword ``problem`` does not enforce (at import time)."""
    _check_keywords(schema)


check_schema(THRESHOLDS_SCHEMA)


# --- thresholds ----------------------------------------------------------------------------------

def threshold_problem(table: str, key: str, value: object) -> str | None:
    """Why ``[table] key = value`` cannot be used, or None."""
    name = f"{table}.{key}"
    if (table, key) not in THRESHOLDS:
        return f"{name}: unknown setting (known: {', '.join(f'{t}.{k}' for t, k in THRESHOLDS)})"
    found = problem(value, THRESHOLDS[(table, key)][1], name)
    extra = _EXTRA.get((table, key))
    if found is None and extra is not None:
        said = extra(value)
        found = f"{name}: {said}" if said else None
    return found


def usable_thresholds(doc: object) -> tuple[dict[str, Any], list[str]]:
    """The Policy fields set by ``doc`` (tables of policy.toml) whose values fit the schema, and
    one line for each value left out (unknown, wrong type, out of range)."""
    if doc is None or doc == {}:
        return {}, []
    if not isinstance(doc, dict):
        return {}, [f"{_show(doc)} is not an object of policy.toml tables"]
    values: dict[str, Any] = {}
    problems: list[str] = []
    for table, entries in doc.items():
        if not isinstance(entries, dict):
            problems.append(f"{str(table)[:64]}: not a table of settings (known tables: {', '.join(THRESHOLD_TABLES)})")
            continue
        for key, value in entries.items():
            found = threshold_problem(str(table), str(key), value)
            if found:
                problems.append(found)
                continue
            field_name = THRESHOLDS[(table, key)][0]
            values[field_name] = _as_field(field_name, value)
    return values, problems


def _as_field(name: str, value: Any) -> Any:
    if name == "exchange_score_points":
        return tuple((float(a), float(b)) for a, b in value)
    if name == "whoami_name":
        return value or None
    return value


def load_policy(path: Path | None = None) -> Policy:
    path = path or data_dir() / "policy.toml"
    doc = load_user_toml(path, limit=1_000_000, what="the policy")
    values, problems = usable_thresholds(doc)
    if problems:
        raise ConfigError(f"{path}: {problems[0]}")
    return Policy(**values)


def exchange_score(p50_ms: float, points: tuple[tuple[float, float], ...]) -> int:
    """The admin center's Exchange network score: piecewise linear in P50 TCP latency."""
    if p50_ms <= points[0][0]:
        return int(round(points[0][1]))
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if p50_ms <= x1:
            return int(round(y0 + (y1 - y0) * (p50_ms - x0) / (x1 - x0)))
    return int(round(points[-1][1]))
