"""C3 parser hazards: against the real collector, and the strict parser on its own."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from netcheck.agent.uploader import encode_upload
from netcheck.collector import validate
from netcheck.collector.validate import (
    ENROLL_SCHEMA,
    MAX_DEPTH,
    REPORT_ENVELOPE_SCHEMA,
    ApiError,
    Validators,
    canonical,
    load_report_schema,
    strict_loads,
)
from tests.collector.conftest import Fleet, sample_report, upload


def _body() -> str:
    return json.dumps(upload(sample_report()))


HAZARDS: dict[str, bytes] = {
    "depth 10,000 arrays": b'{"report": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "depth 10,000 objects": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "depth 65": b'{"report": {"network": {"x": ' + b"[" * 63 + b"]" * 63 + b"}}}",
    "5,000-digit integer": _body().replace('"seq": 1', '"seq": ' + "9" * 5000).encode(),
    "21-digit integer": _body().replace('"seq": 1', '"seq": 123456789012345678901').encode(),
    "NaN": _body().replace('"duration_s": 2.345', '"duration_s": NaN').encode(),
    "Infinity": _body().replace('"duration_s": 2.345', '"duration_s": Infinity').encode(),
    "-Infinity": _body().replace('"duration_s": 2.345', '"duration_s": -Infinity').encode(),
    "1e999": _body().replace('"duration_s": 2.345', '"duration_s": 1e999').encode(),
    "invalid UTF-8": _body().replace("You can work", "You can w\udcffork").encode("utf-8", "surrogateescape"),
    "overlong UTF-8": _body().encode().replace(b"You can work", b"You can \xc0\xafwork"),
    "UTF-16": _body().encode("utf-16"),
    "duplicate keys": _body().replace('"verdict": "AT_RISK"', '"verdict": "READY", "verdict": "AT_RISK"').encode(),
    "lone surrogate": _body().replace("You can work", "You can \\ud800work").encode(),
    "NUL in a string": _body().replace("You can work", "You can \\u0000work").encode(),
    "trailing garbage": _body().encode() + b" {}",
    "empty": b"",
    "not an object": b"[]",
}


@pytest.mark.parametrize("name", list(HAZARDS))
def test_parser_hazards_get_400(fleet: Fleet, name: str) -> None:
    device = fleet.enroll()
    response = fleet.client.post("/api/v1/reports", content=HAZARDS[name], headers={
        **device.auth, "Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] in ("invalid_json", "validation_failed")
    assert "Traceback" not in response.text


@pytest.mark.parametrize("name", ["depth 10,000 arrays", "5,000-digit integer", "NaN", "invalid UTF-8",
                                  "duplicate keys"])
def test_enrollment_parser_hazards_get_400(fleet: Fleet, name: str) -> None:
    response = fleet.client.post("/api/v1/enroll", content=HAZARDS[name],
                                 headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text


# --- the parser on its own ---------------------------------------------------------------------

def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("depth", [1, MAX_DEPTH, MAX_DEPTH + 1, 254])
def test_the_parser_itself_takes_nesting_up_to_orjsons_limit(depth: int) -> None:
    assert strict_loads(_nested(depth)).value is not None


@pytest.mark.parametrize("depth", [255, 1000, 1100, 100_000])
def test_the_parser_refuses_absurd_nesting_without_recursing(depth: int) -> None:
    with pytest.raises(ApiError, match="nested too deeply"):
        strict_loads(_nested(depth))


def _instance_depth(schema: Any, defs: dict[str, Any], trail: tuple[str, ...] = ()) -> float:
    """The deepest instance a schema accepts (inf when some object or array is left open)."""
    if schema is True or schema == {}:
        return math.inf
    if not isinstance(schema, dict):
        return 0
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return math.inf if name in trail else _instance_depth(defs[name], defs, (*trail, name))
    deepest = 0.0
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            deepest = max(deepest, _instance_depth(sub, defs, trail))
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if "object" in types or "properties" in schema:
        extra = schema.get("additionalProperties", True)
        children = [*schema.get("properties", {}).values()] + ([] if extra is False else [extra])
        deepest = max(deepest, 1 + max((_instance_depth(c, defs, trail) for c in children), default=0))
    if "array" in types or "items" in schema:
        deepest = max(deepest, 1 + _instance_depth(schema.get("items", True), defs, trail))
    return deepest


def test_no_accepted_body_can_be_nested_deeper_than_the_limit() -> None:
    """strict_loads leaves depth to the schemas: they must stay closed and shallow."""
    report = load_report_schema()
    report_depth = _instance_depth(report, report.get("$defs", {}))
    envelope_depth = _instance_depth({**REPORT_ENVELOPE_SCHEMA, "properties": {
        **REPORT_ENVELOPE_SCHEMA["properties"], "report": {"type": "null"}}}, {}) + report_depth
    assert report_depth < 16 and envelope_depth <= MAX_DEPTH
    assert _instance_depth(ENROLL_SCHEMA, {}) <= MAX_DEPTH


@pytest.mark.parametrize("text", [
    b'{"a": "[[[[[[", "b": "\\"[[[{{{"}',
    b'["\\\\", "[", {"k]": "}"}]',
    b'{"": ""}',
])
def test_brackets_and_quotes_in_strings_are_just_text(text: bytes) -> None:
    strict_loads(text)


def test_the_watched_key_is_found_at_any_depth() -> None:
    parsed = strict_loads(b'{"device_id": "a", "x": [{"y": {"device_id": "b"}}], "device\\u005fid2": 1}',
                          watch_key="device_id")
    assert sorted(parsed.watched) == ["a", "b"]
    escaped = strict_loads(b'{"device\\u005fid": "c"}', watch_key="device_id")
    assert escaped.watched == ["c"]


def test_valid_unicode_is_kept() -> None:
    value = strict_loads('{"name": "Zürich 😀 \\ud83d\\ude00"}'.encode()).value
    assert value == {"name": "Zürich 😀 😀"}


@pytest.mark.parametrize("number", [b"-12345678901234567890", b"12345678901234567890", b"1.5e300", b"-0"])
def test_numbers_in_range_parse(number: bytes) -> None:
    strict_loads(b"[" + number + b"]")


@pytest.mark.parametrize("text", [
    b'{"a": {"seq": 1, "seq": 2}}',
    b'[{"x": 1}, {"y": {"k": "v", "k": "v"}}]',
    b'{"a\\"": 1, "a\\"": 2}',
    b'{"t": "12:00", "t" : "13:00"}',
    b'{"device_id": 1, "device\\u005fid": 2}',
])
@pytest.mark.parametrize("keep", [None, "a"])
def test_duplicate_keys_are_refused(text: bytes, keep: str | None) -> None:
    with pytest.raises(ApiError, match="duplicate"):
        strict_loads(text, keep=keep)


def test_an_agents_canonical_upload_is_checked_by_one_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    body = upload(sample_report())
    sent = encode_upload(body)
    spaced = json.dumps(body).encode()
    assert strict_loads(sent, keep="report").kept == strict_loads(spaced, keep="report").kept == canonical(
        body["report"])
    duplicated = sent.replace(b'"verdict":"AT_RISK"', b'"verdict":"READY","verdict":"AT_RISK"', 1)
    assert duplicated != sent
    with pytest.raises(ApiError, match="duplicate"):
        strict_loads(duplicated, keep="report")
    # the agent's body is never scanned for quotes; any other is
    monkeypatch.setattr(validate, "_quotes", lambda text: pytest.fail("counted the quotes"))
    strict_loads(sent, keep="report")
    with pytest.raises(pytest.fail.Exception):
        strict_loads(spaced, keep="report")


@pytest.mark.parametrize("text", [
    b'{"a\\"": {"b\\\\": ":", "c": "\\":\\""}, "d:": [":", {"e": null}]}',
    b'{"t": "12:00:00Z", "u": "http://x/", "v": {"w": "::1"}}',
])
def test_colons_and_quotes_inside_strings_are_not_members(text: bytes) -> None:
    strict_loads(text)


def test_canonical_encoding_ignores_order_and_spacing() -> None:
    a = strict_loads(b'{"b": [1, 2.5, "x"], "a": {"d": null, "c": true}}').value
    b = strict_loads(b'{"a":{"c":true,"d":null},"b":[1,2.5,"x"]}').value
    assert canonical(a) == canonical(b) == b'{"a":{"c":true,"d":null},"b":[1,2.5,"x"]}'


def test_nul_characters_are_refused_with_their_field() -> None:
    with pytest.raises(ApiError) as info:
        strict_loads(b'{"report": {"probes": [{"reason": "a\\u0000b"}]}}')
    assert info.value.field == "report.probes[0].reason"
    with pytest.raises(ApiError, match="NUL"):
        strict_loads(b'{"a\\u0000": 1}')
    assert strict_loads(b'{"a": "\\\\u0000"}').value == {"a": "\\u0000"}  # an escaped backslash, not a NUL


@pytest.mark.parametrize(("key", "value", "accepted"), [
    ("rtt_ms", 12.5, True),
    ("addresses", ["198.18.0.1", "2001:db8::1"], True),
    ("SSID", "HomeWifi", False),  # names are lower case: a fact is never a free-text label
    ("a" * 49, 1, False),
    ("nested", {"ssid": "HomeWifi"}, False),
    ("samples", list(range(257)), False),
    ("samples", [[1]], False),
])
def test_probe_facts_take_scalars_and_short_arrays_under_lower_case_names(key: str, value: Any,
                                                                         accepted: bool) -> None:
    report = sample_report()
    report["probes"][0]["detail"][key] = value
    validator = Validators().report
    if accepted:
        validator.check(report)
        return
    with pytest.raises(ApiError) as raised:
        validator.check(report)
    assert raised.value.field is not None and raised.value.field.startswith("report.probes[0].detail"), \
        raised.value.field
