"""Run netcheck on the laptop, as its unprivileged user, and read its report."""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import addressing as A
from .scenario import DOWN_SETS, SITES, Sites, split_phase
from .services import SITE_SERVICES
from .world import LAPTOP_UID, World

#: netcheck's per-workload status -> the lab's truth vocabulary.
STATUS_TO_TRUTH = {"ok": "works", "degraded": "degraded", "failed": "fails"}
EXIT_MEANING = {0: "ready", 1: "at risk", 2: "not ready", 3: "could not assess"}
TRUTH_VALUES = ("works", "degraded", "fails")


@dataclass
class NetcheckRun:
    """What happened when netcheck ran (``status``: ok | unavailable | error)."""

    status: str
    message: str = ""
    exit_code: int | None = None
    report: dict[str, Any] | None = None
    seconds: float = 0.0
    argv: list[str] = field(default_factory=list)
    stderr: str = ""
    dropped_flags: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "seconds": round(self.seconds, 2)}
        if self.message:
            out["message"] = self.message
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        if self.dropped_flags:
            out["flags_not_supported"] = self.dropped_flags
        if self.report:
            out["verdict"] = self.report.get("verdict")
            out["has_outage"] = isinstance(self.report.get("outage"), dict)
        return out


def find_netcheck(python: str) -> str | None:
    """netcheck's console script: beside the lab's Python first, then on PATH."""
    beside = Path(python).parent / "netcheck"
    if beside.exists():
        return str(beside)
    return shutil.which("netcheck")


#: Options the lab passes when netcheck supports them (with their values).
OPTIONAL_FLAGS = ("--no-progress", "--user", "--deadline", "--whoami-name", "--teams-relay", "--site-profile")


@functools.lru_cache(maxsize=8)
def supported_options(exe: str) -> frozenset[str] | None:
    """Long options ``netcheck check --help`` lists (None if help fails)."""
    try:
        res = subprocess.run([exe, "check", "--help"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        return None
    return frozenset(re.findall(r"(--[a-z][a-z0-9-]*)", res.stdout))


def netcheck_argv(world: World, exe: str) -> tuple[list[str], list[str]]:
    """The command line, and the optional flags left out because netcheck lacks them."""
    s = world.scenario
    optional = {
        "--no-progress": [],
        "--user": [s.netcheck.user],
        "--deadline": [f"{s.netcheck.deadline:g}"],
        "--whoami-name": [A.WHOAMI_NAME],
        "--teams-relay": [A.TEAMS_RELAY_NAME],
        "--site-profile": [str(world.site_profile_file())] if s.netcheck.site_profile else [],
    }
    known = supported_options(exe)
    argv = [exe, "check", "--json", "--endpoints-file", str(world.endpoints_file), "--tenant", s.netcheck.tenant]
    dropped = []
    for flag in OPTIONAL_FLAGS:
        if flag == "--site-profile" and not s.netcheck.site_profile:
            continue
        if known is None or flag in known:
            argv += [flag, *optional[flag]]
        else:
            dropped.append(flag)
    return argv + list(s.netcheck.args), dropped


#: The report's published schema (a data file, read as the collector reads it: never netcheck's code).
REPORT_SCHEMA = Path(__file__).resolve().parents[2] / "netcheck" / "schema" / "report-v2.schema.json"


@functools.cache
def _validator() -> Any:
    import jsonschema  # noqa: PLC0415 - the lab's only use of it

    return jsonschema.Draft202012Validator(json.loads(REPORT_SCHEMA.read_text()))


def schema_error(report: dict[str, Any]) -> str | None:
    """Why ``report`` does not match the schema netcheck publishes for it, or None."""
    error = next(iter(sorted(_validator().iter_errors(report), key=lambda e: list(e.absolute_path))), None)
    if error is None:
        return None
    return f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message[:200]}"


def run_netcheck(world: World, exe: str | None = None) -> NetcheckRun:
    """Run netcheck's check on the laptop: ``exe`` (e.g. the frozen executable) or the one beside the lab's Python."""
    exe = exe or find_netcheck(world.python)
    if exe is None:
        return NetcheckRun("unavailable", "netcheck unavailable: no 'netcheck' command installed (pip install -e .)")
    argv, dropped = netcheck_argv(world, exe)
    start = time.monotonic()
    res = world.laptop_run(argv, timeout=world.scenario.netcheck.deadline + 60)
    elapsed = time.monotonic() - start
    if res.returncode in (126, 127) or (not res.stdout.strip() and "Permission denied" in res.stderr):
        return NetcheckRun(
            "unavailable",
            f"netcheck unavailable: the laptop's user (uid {LAPTOP_UID}) cannot run {exe}: install the project "
            "where every user can read it",
            exit_code=res.returncode,
            seconds=elapsed,
            argv=argv,
            stderr=res.stderr[-4000:],
        )
    run = NetcheckRun(
        "ok", exit_code=res.returncode, seconds=elapsed, argv=argv, stderr=res.stderr[-4000:], dropped_flags=dropped
    )
    if res.returncode == 4 or (res.returncode == 2 and not res.stdout.strip()):
        last = (res.stderr.strip().splitlines() or ["usage error"])[-1]
        run.status, run.message = "unavailable", f"netcheck unavailable: usage/config error: {last[:300]}"
        return run
    try:
        report = json.loads(res.stdout)
    except ValueError:
        last = (res.stderr.strip().splitlines() or [res.stdout.strip()[:200] or "no output"])[-1]
        run.status, run.message = "error", f"netcheck printed no JSON report (exit {res.returncode}): {last[:300]}"
        return run
    if not isinstance(report, dict):
        run.status, run.message = "error", "netcheck's report is not a JSON object"
        return run
    invalid = schema_error(report)
    if invalid:  # a report a collector would refuse is a failure of netcheck's, counted as one
        run.status, run.message = "error", f"netcheck's report does not match its schema: {invalid[:300]}"
        return run
    run.report = report
    if res.returncode not in EXIT_MEANING:
        run.message = f"unexpected exit code {res.returncode}"
    return run


def _status(row: dict[str, Any]) -> str | None:
    """A site-up status as a truth value; a hedged one (``possible``) reads ``uncertain:works|fails``."""
    possible = [STATUS_TO_TRUTH[str(p)] for p in row.get("possible") or [] if str(p) in STATUS_TO_TRUTH]
    if len(possible) > 1:
        return "uncertain:" + "|".join(dict.fromkeys(possible))
    return STATUS_TO_TRUTH.get(str(row.get("status")))


def _possible(row: dict[str, Any], key: str) -> list[str]:
    """The fates an "uncertain" prediction allows (netcheck's ``possible`` for that behaviour)."""
    values = (row.get("possible") or {}).get(key.removeprefix("if_vpn_"))
    return [str(v) for v in values if v in TRUTH_VALUES] if isinstance(values, list) else []


#: The lab's two-site down-sets are read from ``outage.cases``; see :func:`case_workloads`.
Rows = dict[Any, dict[str, Any]]


#: The lab site whose gateway the laptop's VPN client connects to (the office's; it fails over to the DC's
#: only when the office is lost, see ``Vpn.failover``).
VPN_SITE = "office"


def lab_site_addresses(site: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses that make a lab site recognisable in netcheck's inferred sites: its public address and
    its services (resolver, proxy, web/PAC, AD FS, and the VPN gateway's public address)."""
    public = A.CORP_INET if site == "office" else A.DC_INET
    texts = [public.v4_b, public.v6_b, *(a for pair in SITE_SERVICES[site].values() for a in pair)]
    return [ipaddress.ip_address(a) for a in texts]


def _holds(nc_site: dict[str, Any], addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    nets = []
    for text in nc_site.get("networks") or []:
        try:
            nets.append(ipaddress.ip_network(str(text), strict=False))
        except ValueError:
            continue
    return any(a in n for a in addresses for n in nets if a.version == n.version)


def map_sites(outage: dict[str, Any], sites: Sites, told: bool) -> tuple[dict[str, str], dict[str, str]]:
    """Each lab site's netcheck site (by name), and why a lab site has none.

    Told: the netcheck site with ``told`` true and the name the scenario's profile gave the lab site.
    Inferred: the one unnamed netcheck site (``told`` not true) whose ``networks`` hold the lab site's
    addresses and none of the other lab site's (a netcheck site holding both does not tell the two apart).
    The lab site hosting the laptop's connected VPN gateway (:data:`VPN_SITE`), when no netcheck site holds
    its addresses, maps to netcheck's site where the VPN ends: the unnamed site without networks that holds
    the VPN tunnel (a ``vpn`` system), which netcheck infers when it cannot read the concentrator's address.
    """
    nc_sites = [x for x in outage.get("sites") or [] if isinstance(x, dict) and isinstance(x.get("name"), str)]
    found: dict[str, str] = {}
    why: dict[str, str] = {}
    for lab in SITES:
        if told:
            hits = [x for x in nc_sites if x.get("told") is True and x["name"] == sites.name(lab)]
            miss = f"netcheck's outage.sites has no told site named {sites.name(lab)!r}"
        else:
            mine = lab_site_addresses(lab)
            other = [a for o in SITES if o != lab for a in lab_site_addresses(o)]
            holding = [x for x in nc_sites if x.get("told") is not True and _holds(x, mine)]
            hits = [x for x in holding if not _holds(x, other)]
            if lab == VPN_SITE and not holding:
                hits = [x for x in nc_sites if x.get("told") is not True and not x.get("networks")
                        and any(isinstance(y, dict) and y.get("kind") == "vpn" for y in x.get("systems") or [])]
            miss = (
                f"netcheck's site {holding[0]['name']!r} holds both the office's and the dc's addresses"
                if holding
                else f"no unnamed (inferred) site in netcheck's outage.sites holds the {lab}'s addresses"
            )
        if len(hits) == 1:
            found[lab] = hits[0]["name"]
        else:
            why[lab] = miss if not hits else f"several netcheck sites match the {lab}: {[x['name'] for x in hits]}"
    return found, why


def case_workloads(report: dict[str, Any], down: tuple[str, ...], sites: Sites, told: bool) -> tuple[Rows | None, str]:
    """netcheck's prediction rows (by workload id) for the lab sites ``down``, and where they came from
    (or None and why there are none: a miss).

    The case of ``outage.cases`` whose ``down`` is exactly the mapped netcheck sites. For every lab site
    down, ``outage.workloads`` (the all-sites-down case) also answers when netcheck's sites are exactly
    the two lab sites.
    """
    outage = report.get("outage")
    if not isinstance(outage, dict):
        return None, "no outage section in netcheck's report"
    if not isinstance(outage.get("sites"), list) or not isinstance(outage.get("cases"), list):
        return None, "netcheck's outage has no sites and cases (a schema-1 report predicts for one site only)"
    mapping, why = map_sites(outage, sites, told)
    if any(lab not in mapping for lab in down):
        return None, "; ".join(why[lab] for lab in down if lab in why)
    want = {mapping[lab] for lab in down}
    if len(want) != len(down):
        return None, f"netcheck maps {' and '.join(down)} to one site ({sorted(want)[0]!r})"
    cases = [c for c in outage.get("cases") or [] if isinstance(c, dict) and isinstance(c.get("down"), list)]
    for case in cases:
        if set(case["down"]) == want:
            return _by_id(case), f"outage.cases[down={sorted(want)}]"
    all_sites = {x.get("name") for x in outage.get("sites") or [] if isinstance(x, dict)}
    if set(down) == set(SITES) and all_sites == want and isinstance(outage.get("workloads"), list):
        return _by_id(outage), "outage.workloads (all sites down)"
    seen = [sorted(c["down"]) for c in cases]
    return None, f"netcheck predicts no case with exactly {sorted(want)} down (its cases: {seen})"


def _by_id(section: dict[str, Any]) -> Rows:
    return {w.get("id"): w for w in section.get("workloads") or [] if isinstance(w, dict)}


def predictions(
    run: NetcheckRun, phases: tuple[str, ...], sites: Sites | None = None, told: bool = False
) -> dict[str, dict[str, tuple[str | None, str]]]:
    """Per workload and phase: (predicted truth value, where it came from).

    Site up: netcheck's status. Site down: only ``outage``, with the key of that
    behaviour (``no_vpn`` reads ``if_vpn_drops``: without a VPN the laptop is
    already in the "dropped" state). Nothing is substituted: a workload missing
    from ``outage``, or a behaviour missing from its row, is (None, why), a miss.
    An "uncertain" prediction reads ``uncertain:works|fails`` (the fates it allows).
    A two-site phase (``dc_down.vpn_stays``) reads its case (:func:`case_workloads`); a case netcheck
    does not predict is a miss for every workload, with the reason.
    """
    out: dict[str, dict[str, tuple[str | None, str]]] = {}
    if run.report is None:
        return out
    site_up = {w.get("id"): _status(w) for w in run.report.get("workloads", []) if isinstance(w, dict)}
    outage = run.report.get("outage")
    outage_rows = _by_id(outage) if isinstance(outage, dict) else {}
    by_prefix: dict[str, tuple[Rows | None, str]] = {"": (outage_rows, "outage")}
    for phase in phases:
        prefix, _ = split_phase(phase)
        if prefix and prefix not in by_prefix:
            by_prefix[prefix] = case_workloads(run.report, DOWN_SETS[prefix], sites or Sites(), told)
    case_ids = [wid for rows, _ in by_prefix.values() for wid in rows or {}]
    for wid in dict.fromkeys([*site_up, *outage_rows, *case_ids]):
        status = site_up.get(wid)
        row: dict[str, tuple[str | None, str]] = {
            "site_up": (status, "site_up_status" if wid in site_up else "not in workloads")
        }
        for phase in phases:
            prefix, behaviour = split_phase(phase)
            rows, source = by_prefix[prefix]
            o = (rows or {}).get(wid)
            key = "if_vpn_stays" if behaviour == "vpn_stays" else "if_vpn_drops"
            if not isinstance(outage, dict):
                row[phase] = (None, "no outage section in netcheck's report")
            elif rows is None:
                row[phase] = (None, source)
            elif o is None:
                row[phase] = (None, "not in netcheck's outage section" if not prefix else f"not in {source}")
            elif o.get(key) == "uncertain" and _possible(o, key):
                row[phase] = ("uncertain:" + "|".join(_possible(o, key)), source)
            elif o.get(key) not in TRUTH_VALUES:
                row[phase] = (None, f"outage row has no valid {key}" + (f" ({source})" if prefix else ""))
            else:
                row[phase] = (str(o[key]), source)
        out[str(wid)] = row
    return out
