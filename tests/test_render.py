"""Renderers: golden files, and the JSON report against its schema.

Regenerate the golden files after an intended change with
``NETCHECK_UPDATE_GOLDEN=1 pytest tests/test_render.py`` and review the diff.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from netcheck.models import Status
from netcheck.render.json import SCHEMA_PATH, render_json, report_to_dict, schema_path
from netcheck.render.text import render_text
from tests.sample_report import sample_report

GOLDEN = Path(__file__).parent / "golden"
# Read at import: the autouse fixture in conftest.py clears NETCHECK_* inside tests.
UPDATE_GOLDEN = bool(os.environ.get("NETCHECK_UPDATE_GOLDEN"))


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.write_text(text)
    assert text == path.read_text()


def _validator(version: int | None = None) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_PATH if version is None else schema_path(version)).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_json_report_matches_golden_file() -> None:
    _golden("report.json", render_json(sample_report(), pretty=True))


def test_compact_and_pretty_json_hold_the_same_report() -> None:
    assert json.loads(render_json(sample_report())) == json.loads(render_json(sample_report(), pretty=True))


def test_text_report_matches_golden_file() -> None:
    _golden("report.txt", render_text(sample_report(), verbose=True))


def test_text_report_has_verdict_first_and_no_ansi_without_color() -> None:
    text = render_text(sample_report())
    assert text.splitlines()[0] == "netcheck verdict: AT RISK"
    assert "\x1b[" not in text
    assert "\x1b[" in render_text(sample_report(), color=True)


def test_json_report_is_valid_against_its_schema() -> None:
    _validator().validate(report_to_dict(sample_report()))


def test_sample_fixture_used_by_collector_tests_is_valid() -> None:
    data = json.loads((Path(__file__).parent / "fixtures" / "report-sample.json").read_text())
    _validator(data["schema_version"]).validate(data)  # a version 1 report: still valid against its schema


@pytest.mark.parametrize("path", [(), ("host",), ("workloads", 0), ("probes", 0), ("findings", 0)])
def test_schema_rejects_any_field_outside_the_allow_list(path: tuple[object, ...]) -> None:
    data = report_to_dict(sample_report())
    node = data
    for key in path:
        node = node[key]  # type: ignore[index]
    node["user_name"] = "alice"  # type: ignore[index]
    with pytest.raises(jsonschema.ValidationError, match="user_name"):
        _validator().validate(data)


def test_schema_rejects_detail_values_that_are_objects() -> None:
    data = copy.deepcopy(report_to_dict(sample_report()))
    data["probes"][0]["detail"]["nested"] = {"ssid": "HomeWifi"}
    with pytest.raises(jsonschema.ValidationError):
        _validator().validate(data)


def test_every_split_tunnel_class_and_route_kind_the_code_emits_is_allowed_by_the_schema() -> None:
    """The prediction's vocabulary and the schema's enums cannot drift apart (a report with a class the
    schema lacks is refused by every collector: that happened with "no_route")."""
    from netcheck.assess import site_decisions as site_facts
    from netcheck.platform import base

    schema = json.loads(SCHEMA_PATH.read_text())
    outage = schema["$defs"]["outage"]["properties"]
    split = outage["split_tunnel"]["items"]["properties"]
    classes = {site_facts.SPLIT_OUT, site_facts.SELECTIVE, site_facts.TUNNELED, site_facts.NO_VPN,
               site_facts.NOT_TESTED, site_facts.NO_ROUTE}
    for family in ("ipv4", "ipv6"):
        assert classes <= set(split[family]["enum"]), family
    kinds = set(schema["$defs"]["route"]["properties"]["kind"]["enum"])
    assert set(base.EGRESS_KINDS) <= kinds


def test_a_hedged_status_is_in_the_schema_and_reads_as_both() -> None:
    """A workload whose status hangs on something unread (``possible``): JSON lists every status it could
    be, the text shows them in one cell; a certain status carries no ``possible`` at all."""
    report = sample_report()
    first = replace(report.assessment.workloads[0], status=Status.OK, possible=(Status.OK, Status.FAILED))
    hedged = replace(report, assessment=replace(report.assessment,
                                                workloads=(first, *report.assessment.workloads[1:])))
    data = report_to_dict(hedged)
    _validator().validate(data)
    assert data["workloads"][0]["possible"] == ["ok", "failed"]
    assert all("possible" not in w for w in data["workloads"][1:])
    assert "ok or FAILED" in render_text(hedged)
