"""The OpenAPI 3.1 document of the collector, served at ``/api/v1/openapi.json``.

Built from the same schema objects the collector validates with (``validate.py``, the report
schema file, the policy schema), so the document cannot drift from what the server enforces.
The report schema's ``$defs`` become ``components/schemas/Report_*``.
"""

from __future__ import annotations

import copy
from typing import Any

from netcheck import __version__
from netcheck.collector.validate import ENROLL_SCHEMA, REPORT_ENVELOPE_SCHEMA, load_report_schema
from netcheck.fleet_policy import SCHEMA as POLICY_SCHEMA

_JSON = "application/json"


def _rewrite_refs(node: Any, prefix: str) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = f"#/components/schemas/{prefix}{value[len('#/$defs/'):]}"
            else:
                out[key] = _rewrite_refs(value, prefix)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, prefix) for v in node]
    return node


def _report_components() -> dict[str, Any]:
    schema = load_report_schema()
    defs = schema.pop("$defs", {})
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    components = {"Report": _rewrite_refs(schema, "Report_")}
    for name, sub in defs.items():
        components[f"Report_{name}"] = _rewrite_refs(sub, "Report_")
    return components


def _error_response(description: str, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry_after:
        response["headers"] = {"Retry-After": {"description": "seconds to wait before retrying",
                                               "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
    return response


def _ok(ref: str) -> dict[str, Any]:
    return {"description": "OK", "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


_COMMON = {
    "400": _error_response("Malformed request: invalid JSON, a schema violation (``field`` names it), "
                           "or a query string (tokens in URLs are refused)"),
    "413": _error_response("Body larger than the limit (1 MiB by default), also after gzip decompression"),
    "415": _error_response("Not application/json, or a Content-Encoding other than gzip"),
    "429": _error_response("Rate limited; retry after Retry-After seconds", retry_after=True),
    "503": _error_response("Database unavailable: nothing was stored; retry later", retry_after=True),
}

_AUTHED_GET = {
    "401": _error_response("Missing, malformed, unknown or revoked token (one identical body for all)"),
    "400": _COMMON["400"], "413": _COMMON["413"], "429": _COMMON["429"], "503": _COMMON["503"],
}


def build_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object", "required": ["error"], "additionalProperties": False,
            "properties": {"error": {
                "type": "object", "required": ["code", "message"], "additionalProperties": False,
                "properties": {"code": {"type": "string", "pattern": "^[a-z_]+$"}, "message": {"type": "string"},
                               "field": {"type": "string"}},
            }},
        },
        "Enroll": copy.deepcopy(ENROLL_SCHEMA),
        "Enrolled": {"type": "object", "required": ["device_id", "token"], "additionalProperties": False,
                     "properties": {"device_id": {"type": "string"}, "token": {"type": "string"}}},
        "ReportUpload": copy.deepcopy(REPORT_ENVELOPE_SCHEMA),
        "ReportAck": {
            "type": "object", "required": ["status", "report_id", "device_id"], "additionalProperties": False,
            "properties": {"status": {"enum": ["stored", "duplicate"]}, "report_id": {"type": "string"},
                           "device_id": {"type": "string"}},
        },
        "Policy": copy.deepcopy(POLICY_SCHEMA),
        "PendingSweeps": {
            "type": "object", "required": ["sweeps"], "additionalProperties": False,
            "properties": {"sweeps": {"type": "array", "items": {
                "type": "object", "required": ["id", "created_at", "expires_at", "thorough"],
                "additionalProperties": False,
                "properties": {"id": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
                               "expires_at": {"type": "string", "format": "date-time"},
                               "thorough": {"type": "boolean"}},
            }}},
        },
        "Health": {"type": "object", "required": ["status"],
                   "properties": {"status": {"type": "string"}, "schema": {"type": "string"},
                                  "version": {"type": "string", "description": "netcheck's version"}}},
        **_report_components(),
    }
    schemas["ReportUpload"]["properties"]["report"] = {"$ref": "#/components/schemas/Report"}
    schemas["ReportUpload"]["properties"]["device_id"]["description"] = (
        "optional; must be the token's device (403 otherwise), as must any device_id field in the body")
    bearer: list[dict[str, list[str]]] = [{"deviceToken": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "netcheck collector", "version": __version__,
                 "description": "Fleet collection for netcheck reports. Errors are JSON "
                                "{\"error\": {\"code\", \"message\", \"field\"}}; bodies are limited in size "
                                "and rate before they are parsed. JSON is parsed strictly: NaN, Infinity, "
                                "duplicate keys, invalid UTF-8, NUL characters and unpaired surrogates in "
                                "strings, and nesting deeper than 64 levels are refused with 400."},
        "components": {
            "securitySchemes": {"deviceToken": {"type": "http", "scheme": "bearer",
                                                "description": "the token returned by /api/v1/enroll"}},
            "schemas": schemas,
        },
        "paths": {
            "/healthz": {"get": {"operationId": "healthz", "summary": "The process is up",
                                 "responses": {"200": _ok("Health"), "413": _COMMON["413"]}}},
            "/readyz": {"get": {"operationId": "readyz", "summary": "The database is reachable and migrated",
                                "responses": {"200": _ok("Health"),
                                              "413": _COMMON["413"],
                                              "503": _error_response("Not ready")}}},
            "/api/v1/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.1 document",
                                      "content": {_JSON: {"schema": {"type": "object"}}}},
                              "400": _COMMON["400"], "413": _COMMON["413"]}}},
            "/api/v1/enroll": {"post": {
                "operationId": "enroll",
                "summary": "Exchange an enrollment secret for a device token",
                "description": "Re-enrolling the same hardware_id returns a new token for the same device; "
                               "its older tokens stay valid until the new one is first used. A device an "
                               "administrator revoked cannot enroll again until it is re-admitted.",
                "requestBody": {"required": True,
                                "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Enroll"}}}},
                "responses": {"200": _ok("Enrolled"),
                              "401": _error_response("Wrong or revoked enrollment secret"),
                              "403": _error_response("device_revoked: an administrator revoked this device "
                                                     "(netcheck admin readmit-device lets it back)"),
                              **_COMMON},
            }},
            "/api/v1/reports": {"post": {
                "operationId": "postReport", "security": bearer,
                "summary": "Upload one report; idempotent on (device, report.report_id)",
                "description": "The report may also be sent in its reduced form (the successful probes "
                               "counted under _reduced) as application/vnd.netcheck.reduced+json; it is "
                               "checked against the report schema with _reduced added and stored as it came.",
                "requestBody": {"required": True,
                                "content": {_JSON: {"schema": {"$ref": "#/components/schemas/ReportUpload"}}}},
                "responses": {"200": _ok("ReportAck"),
                              "401": _AUTHED_GET["401"],
                              "403": _error_response("A device_id in the body is not the token's device"),
                              "422": _error_response("report_id_conflict: this report id was stored with "
                                                     "a different body; unusable_timestamp: a date-time the "
                                                     "schema allows but no date can hold (e.g. in year 0 "
                                                     "once in UTC)"),
                              **_COMMON},
            }},
            "/api/v1/policy": {"get": {
                "operationId": "getPolicy", "security": bearer, "summary": "What the agent should use",
                "responses": {"200": _ok("Policy"), **_AUTHED_GET},
            }},
            "/api/v1/sweeps/pending": {"get": {
                "operationId": "pendingSweeps", "security": bearer,
                "summary": "Sweeps this device has not answered yet",
                "responses": {"200": _ok("PendingSweeps"), **_AUTHED_GET},
            }},
        },
    }
