"""C2: property-based fuzzing of the API from its OpenAPI document (Schemathesis), and
Hypothesis-made invalid reports that must each get a 4xx naming the field.

Both run against a real collector process. Examples are bounded so CI stays fast; raise
NETCHECK_FUZZ_EXAMPLES for a longer run (C14).
"""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from starlette.routing import Route

from netcheck.collector.app import create_app
from netcheck.collector.openapi import build_document
from netcheck.collector.settings import Settings
from tests.collector.conftest import Device, Fleet, check_log, make_fleet, sample_report, upload
from tests.collector.harness import CollectorProcess

EXAMPLES = int(os.environ.get("NETCHECK_FUZZ_EXAMPLES", "200"))


@pytest.fixture(scope="session")
def fuzz_target(new_database: Any, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[CollectorProcess, Fleet, Device]]:
    proc = CollectorProcess(new_database(), workdir=tmp_path_factory.mktemp("fuzz"), env={
        "NETCHECK_RATE_DEVICE": "0", "NETCHECK_RATE_ADDRESS": "0", "NETCHECK_RATE_ENROLL_ADDRESS": "0",
        "NETCHECK_RATE_ENROLL_GLOBAL": "0"})
    fleet = make_fleet(proc)
    device = fleet.enroll()
    yield proc, fleet, device
    fleet.client.close()
    proc.stop()
    check_log(proc)


# The document the collector serves (test_served_document_is_the_one_fuzzed checks it is the same);
# loaded at import time because Schemathesis' lazy fixture loader does not work with pytest 9.
schema = schemathesis.openapi.from_dict(build_document())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=EXAMPLES, deterministic=True, allow_x00=False)
# (NUL characters are refused with 400, as the document says: they cannot be stored.)
# schema-valid uploads may reuse a report id with another body: that is the documented 422
schema.config.checks.positive_data_acceptance.expected_statuses = ["2xx", "401", "403", "413", "422", "429"]
# ... and invalid ones may be too large to read at all
schema.config.checks.negative_data_rejection.expected_statuses = ["400", "401", "403", "404", "405", "413", "415",
                                                                  "422", "429"]


def test_served_document_is_the_one_fuzzed_and_covers_every_route(
        fuzz_target: tuple[CollectorProcess, Fleet, Device], tmp_path: Path) -> None:
    proc, fleet, _ = fuzz_target
    served = fleet.client.get("/api/v1/openapi.json")
    assert served.status_code == 200
    assert served.json() == build_document()
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/unused.db"))
    routes = {(route.path, method.lower()) for route in app.routes if isinstance(route, Route)
              for method in route.methods or () if method != "HEAD"}
    documented = {(path, method) for path, item in served.json()["paths"].items() for method in item}
    assert routes == documented


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES, derandomize=True)
def test_api_conforms_and_never_fails(case: Any, fuzz_target: tuple[CollectorProcess, Fleet, Device]) -> None:
    proc, _, device = fuzz_target
    headers = None if case.operation.path == "/api/v1/enroll" else device.auth
    case.call_and_validate(base_url=proc.url, headers=headers)


# --- invalid reports, generated ---------------------------------------------------------------

def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _paths(sub, (*prefix, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _paths(sub, (*prefix, i))


def _field(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


BASE = upload(sample_report())
#: paths whose value the schema constrains (free-form facts would accept anything)
PATHS = [p for p in _paths(BASE) if p and not (len(p) > 2 and p[1] in ("network",))
         and "detail" not in p and p[:2] != ("report", "network")]
WRONG = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                  st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=5000),
                  st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=8), st.integers(), max_size=2))


def _valid_at(path: tuple[str | int, ...], value: Any) -> bool:
    """Would ``value`` at ``path`` still be valid? (a small oracle: same type and plausible)"""
    original: Any = BASE
    for part in path:
        original = original[part]
    return type(value) is type(original) and value == original


@st.composite
def broken_uploads(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[str | int, ...], str]:
    body = copy.deepcopy(BASE)
    path = draw(st.sampled_from(PATHS))
    parent: Any = body
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["wrong_type", "delete", "extra"] if isinstance(parent, dict)
                                  else ["wrong_type", "extra_item"]))
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "extra":
        extra = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)
                     .filter(lambda k: k not in parent and k != "device_id"))
        parent[extra] = draw(WRONG)
        path = (*path[:-1], extra)
    elif action == "extra_item":
        value = draw(WRONG)
        parent[last] = value
    else:
        value = draw(WRONG)
        if _valid_at(path, value):
            value = {"unexpected": True}
        parent[last] = value
    return body, path, action


@given(case=broken_uploads())
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_invalid_reports_get_4xx_naming_the_field(case: tuple[dict[str, Any], tuple[str | int, ...], str],
                                                   fuzz_target: tuple[CollectorProcess, Fleet, Device]) -> None:
    body, path, action = case
    proc, _, device = fuzz_target
    if isinstance(body.get("report"), dict) and path[:2] != ("report", "report_id"):
        body["report"]["report_id"] = str(uuid.uuid4())  # valid mutations must not collide
    with httpx.Client(base_url=proc.url, timeout=30) as client:
        response = client.post("/api/v1/reports", json=body, headers=device.auth)
    if response.status_code == 200:  # a mutation the schema allows (e.g. a longer string, null where allowed)
        return
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["code"] in ("validation_failed", "invalid_json"), error
    # the error names the changed field, an enclosing one (an anyOf that rejected it, the object
    # that lacks a required member) or, for a bad value inside an added one, a field within it
    assert "field" in error, (path, error)
    named, changed = error["field"], _field(path)
    assert changed.startswith(named) or named.startswith(changed), (path, error)
