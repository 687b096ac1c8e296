"""The collector's policy document: what agents are told to use, and the one schema it must fit.

The collector validates every ``netcheck admin policy set`` against ``SCHEMA`` (and refuses what
does not fit); the agent validates what it receives again, key by key (``usable_policy``), and
keeps its own default for any value it cannot use, so that no policy, however it got into the
database, stops a check. ``thresholds`` holds ``endpoints/policy.toml``'s tables under their
own names (``{"check": {"concurrency": 64}}``), checked by ``netcheck.policy.THRESHOLDS``.

This module belongs to the agent (no collector dependency); the collector imports it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from netcheck.errors import ConfigError
from netcheck.policy import THRESHOLDS, THRESHOLDS_SCHEMA, check_schema, problem, threshold_problem, usable_thresholds

DEFAULTS: dict[str, Any] = {
    "tenant": None,
    "instance": "Worldwide",
    "user_domain": None,
    "schedule": {"interval_s": 4 * 3600, "jitter_s": 15 * 60},
    "deadline_s": 30.0,
    "thresholds": {},
    "site_profiles": [],
    "endpoints_url": None,
}

_HOSTS = {"type": "array", "maxItems": 256, "items": {"type": "string", "minLength": 1, "maxLength": 260}}
_PREFIX = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$"}

SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": sorted(DEFAULTS),
    "properties": {
        "tenant": {"anyOf": [{"type": "null"}, {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}]},
        "instance": {"enum": ["Worldwide", "China", "USGovDoD", "USGovGCCHigh"]},
        "user_domain": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 253,
                                                     "pattern": "^[A-Za-z0-9.-]+$"}]},
        "schedule": {
            "type": "object", "additionalProperties": False, "required": ["interval_s", "jitter_s"],
            "properties": {"interval_s": {"type": "integer", "minimum": 60, "maximum": 7 * 86400},
                           "jitter_s": {"type": "integer", "minimum": 0, "maximum": 86400}},
        },
        "deadline_s": {"type": "number", "minimum": 5, "maximum": 3600},
        "thresholds": THRESHOLDS_SCHEMA,
        "site_profiles": {"type": "array", "maxItems": 256, "items": {
            # the keys of a --site-profile file's [site] table (netcheck.site_profile), which also
            # checks what a schema cannot say (a /33 prefix, vpn_exclude without vpn_mode)
            "type": "object", "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200},
                "networks": {"type": "array", "maxItems": 1024, "items": _PREFIX},
                "vpn_gateways": _HOSTS, "dns_servers": _HOSTS, "proxies": _HOSTS, "pac_hosts": _HOSTS,
                "federation_hosts": _HOSTS,
                # other profiles' names (checked by netcheck.site_profile.check_site_names)
                "vpn_failover": {"type": "array", "maxItems": 256,
                                 "items": {"type": "string", "minLength": 1, "maxLength": 200}},
                "internet_via": {"anyOf": [{"type": "null"}, {"type": "string", "minLength": 1, "maxLength": 200}]},
                "vpn_on_site_down": {"enum": [None, "stays", "drops"]},
                "pac_unreachable": {"enum": ["direct", "fail", "cached"]},
                "vpn_mode": {"enum": [None, "none", "full", "split"]},
                "vpn_exclude": {"type": "array", "maxItems": 1024, "items": {"anyOf": [
                    {"enum": ["Optimize", "Allow", "Default"]}, {"type": "integer", "minimum": 0}, _PREFIX]}},
            },
        }},
        # https, or plain http to this machine only (as `netcheck enroll` allows for the collector)
        "endpoints_url": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 2048, "pattern":
                                    "^(https://[^\\s]+|http://(127\\.0\\.0\\.1|localhost|\\[::1\\])(:[0-9]+)?(/[^\\s]*)?)$"}]},
    },
}
#: ``service_health``, which the collector adds to the policy it serves when it polls Microsoft's
#: service health (``netcheck.collector.health.served_health``); not a stored key, so not in
#: DEFAULTS or KEYS, and agents that do not know it only log that they ignore it
_TIME = {"type": "string", "maxLength": 40, "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(Z|[+-][0-9:]+)$"}
_LINE = {"type": "string", "minLength": 1, "maxLength": 1000}
SCHEMA["properties"]["service_health"] = {
    "type": "object", "additionalProperties": False, "required": ["as_of", "issues"],
    "properties": {
        "as_of": {"anyOf": [{"type": "null"}, _TIME]},
        "issues": {"type": "array", "maxItems": 100, "items": {
            "type": "object", "additionalProperties": False,
            "required": ["id", "service", "title", "classification", "status", "start"],
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 64},
                "service": {"type": "string", "minLength": 1, "maxLength": 200},
                "feature": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 200}]},
                "title": _LINE,
                "classification": {"enum": ["incident", "advisory"]},
                "status": {"type": "string", "minLength": 1, "maxLength": 64},
                "start": _TIME,
                "last_modified": {"anyOf": [{"type": "null"}, _TIME]},
            },
        }},
    },
}
check_schema(SCHEMA)

#: what ``netcheck admin policy set KEY`` accepts: every key, and every member of the objects
KEYS: tuple[str, ...] = (
    "tenant", "instance", "user_domain", "schedule.interval_s", "schedule.jitter_s", "deadline_s",
    "thresholds", *(f"thresholds.{table}.{key}" for table, key in THRESHOLDS), "site_profiles", "endpoints_url",
)


def document_problem(doc: Mapping[str, Any]) -> str | None:
    """Why a whole policy document cannot be served, or None (the collector's check)."""
    found = problem(dict(doc), SCHEMA)
    if found:
        return found
    for table, entries in doc["thresholds"].items():
        for key, value in entries.items():
            found = threshold_problem(table, key, value)  # what the schema cannot say
            if found:
                return f"thresholds.{found}"
    from netcheck.site_profile import check_site_names, site_profile_from_mapping

    profiles = []
    for index, item in enumerate(doc["site_profiles"]):
        try:
            profiles.append(site_profile_from_mapping(item, f"site_profiles[{index}]"))
        except ConfigError as exc:
            return str(exc)
    try:
        check_site_names(profiles, "site_profiles")
    except ConfigError as exc:
        return str(exc)
    return None


def usable_policy(doc: object) -> tuple[dict[str, Any], list[str]]:
    """The policy an agent can use: each key of ``doc`` that fits the schema, the default for
    each one that does not (a line in the returned list says which, and why).

    ``schedule`` and ``thresholds`` are checked member by member (a bad concurrency leaves the
    other thresholds in force); ``site_profiles`` is passed on as it came: the check reads each
    entry on its own and skips the ones it cannot use (``netcheck.agent.loop.check_options``).
    """
    out = copy.deepcopy(DEFAULTS)
    if not isinstance(doc, dict):
        return out, [] if doc is None else ["the policy is not a JSON object; using the defaults"]
    problems = [f"{str(key)[:64]}: unknown policy key" for key in doc if key not in SCHEMA["properties"]]
    for key, value in doc.items():
        if key not in SCHEMA["properties"]:
            continue
        if key == "thresholds":
            _, bad = usable_thresholds(value)
            problems += [f"thresholds.{line}" for line in bad]
            out[key] = _good_thresholds(value)
        elif key == "schedule" and isinstance(value, dict):
            sub = SCHEMA["properties"]["schedule"]["properties"]
            for name, item in value.items():
                found = problem(item, sub[name], f"schedule.{name}") if name in sub else \
                    f"schedule.{str(name)[:64]}: unknown key"
                if found:
                    problems.append(found)
                else:
                    out[key][name] = item
        elif key == "site_profiles":
            out[key] = value  # read entry by entry, with the reason for each one skipped
        else:
            found = problem(value, SCHEMA["properties"][key], key)
            if found:
                problems.append(found)
            else:
                out[key] = value
    return out, problems


def _good_thresholds(value: object) -> dict[str, dict[str, Any]]:
    """The members of a ``thresholds`` object that fit the schema, under their table names."""
    if not isinstance(value, dict):
        return {}
    good: dict[str, dict[str, Any]] = {}
    for table, entries in value.items():
        if not isinstance(entries, dict):
            continue
        for key, item in entries.items():
            if threshold_problem(str(table), str(key), item) is None:
                good.setdefault(table, {})[key] = item
    return good
