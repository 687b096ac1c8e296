"""The Sites pages under ``/ui/sites``: each site's blast radius and the what-if over the fleet.

Both come from each device's latest report and the function the agent itself uses
(:func:`netcheck.assess.what_if.what_if` over the report's ``outage.facts``), so the dashboard and the
laptop never disagree.

Cost. A report is stored as one compressed blob; a page never decompresses the fleet's. Ingest
keeps each report's prediction facts once per distinct set (``netcheck.collector.site_facts``:
``site_fact_sets`` holds each set once: laptops of one site and setup share them) and each
device's latest state points at the digest of its latest report's facts
(``device_states.facts_digest``). A page groups the devices' states by digest (one scan of one
row per device, no join) and runs ``what_if`` once per distinct set of facts and set of sites
down, remembered in memory: the cost of a view is the number of distinct fact sets, not the
number of devices.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import importlib.util
import json
import threading
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from netcheck.assess.outage import UNNAMED, Cause, CauseKind, Fate, remedy
from netcheck.assess.what_if import FactsError, what_if
from netcheck.collector import site_facts, store
from netcheck.collector.db import (
    Kept,
    device_states,
    devices,
    dialect_insert,
    joined,
    reports,
    site_fact_sets,
    site_predictions,
)
from netcheck.collector.web.queries import (
    PAGE_SIZE,
    UUID_SPLITS,
    Listing,
    not_revoked,
    states_counted,
)

#: the fates ``what_if`` answers, best first
FATES = ("works", "degraded", "uncertain", "fails")
BEHAVIOURS = ("stays", "drops")
#: a site list's most sites a what-if takes at once
MAX_DOWN = 16
_MEMO_MAX = 100_000
#: the most missing sets of facts one view makes again from reports (one report decoded each)
REBUILD_MAX = 50
_KINDS = frozenset(str(k) for k in CauseKind)


@cache
def workload_names() -> dict[str, str]:
    """Workload id -> its short name (``endpoints/workloads.toml``)."""
    from netcheck.m365.catalog import data_dir, load_workload_map

    return {w.id: w.name.split(" (")[0] for w in load_workload_map(data_dir() / "workloads.toml").workloads}


@dataclass(frozen=True)
class FactSet:
    digest: str
    devices: int
    facts: Mapping[str, Any]
    sites: Sequence[Mapping[str, Any]]


@dataclass
class Fleet:
    sets: list[FactSet]
    without_facts: int


class Memo:
    """Fact bodies by digest and ``what_if`` answers by (digest, sites down): both never change for a
    key, so they are kept until the memo is full (then it starts afresh). Thread-safe."""

    def __init__(self, limit: int = _MEMO_MAX) -> None:
        self.limit = limit
        self._values: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        with self._lock:
            return self._values.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            if len(self._values) >= self.limit:
                self._values.clear()
            self._values[key] = value


@dataclass
class Sites:
    """The Sites pages' reads, with their memory."""

    memo: Memo = field(default_factory=Memo)

    def fleet(self, conn: Connection) -> Fleet:
        """The devices (not revoked) by the facts of their latest report, and those whose has none."""
        counted = conn.execute(states_counted(device_states.c.facts_digest)).all()
        bodies = {d: self.memo.get(("body", d)) for d, _ in counted if d is not None}
        missing = [d for d, b in bodies.items() if b is None]
        for i in range(0, len(missing), 500):
            for digest, body in conn.execute(sa.select(site_fact_sets.c.digest, site_fact_sets.c.body)
                                             .where(site_fact_sets.c.digest.in_(missing[i:i + 500]))):
                bodies[digest] = json.loads(body)
                self.memo.put(("body", digest), bodies[digest])
        gone = [d for d, b in bodies.items() if b is None]
        for digest, body in _rebuilt(conn, gone[:REBUILD_MAX]):
            bodies[digest] = body
            self.memo.put(("body", digest), body)
        sets = [FactSet(d, int(n), bodies[d]["facts"], bodies[d]["sites"]) for d, n in counted
                if d is not None and bodies.get(d) is not None]
        without = sum(int(n) for d, n in counted if d is None)
        return Fleet(sorted(sets, key=lambda s: s.digest), without)

    def predict(self, s: FactSet, down: frozenset[str]) -> list[dict[str, Any]]:
        key = ("what_if", s.digest, down)
        found = self.memo.get(key)
        if found is None:
            found = _what_if(s, down)
            self.memo.put(key, found)
        rows: list[dict[str, Any]] = found
        return rows

    def prepare(self, conn: Connection, fleet: Fleet, downs: Iterable[frozenset[str]], now: dt.datetime) -> None:
        """Every set's prediction with each of ``downs`` in memory: read from ``site_predictions``
        (kept by an earlier view, in any worker process), else computed and kept there."""
        wanted = {prediction_key(s.digest, d): (s, d) for d in set(downs) for s in fleet.sets
                  if self.memo.get(("what_if", s.digest, d)) is None}
        keys = sorted(wanted)
        for i in range(0, len(keys), 500):
            for key, body in conn.execute(sa.select(site_predictions.c.key, site_predictions.c.body)
                                          .where(site_predictions.c.key.in_(keys[i:i + 500]))):
                s, d = wanted.pop(key)
                self.memo.put(("what_if", s.digest, d), json.loads(body))
        made = []
        for key, (s, d) in sorted(wanted.items()):
            body = json.dumps(_what_if(s, d), separators=(",", ":"))
            self.memo.put(("what_if", s.digest, d), json.loads(body))  # as a later read gets it
            made.append({"key": key, "facts_digest": s.digest, "body": body, "created_at": now})
        if made:
            conn.execute(dialect_insert(conn.dialect.name, site_predictions).on_conflict_do_nothing(), made)


def _rebuilt(conn: Connection, digests: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """Sets of facts the devices' states name but ``site_fact_sets`` lacks (emptied by hand, or a
    restore): each made again from the latest report of one device that names it, and kept."""
    out = []
    for digest in digests:
        blob = conn.execute(sa.select(reports.c.report_lz4).where(reports.c.id == (
            sa.select(device_states.c.report_pk).where(device_states.c.facts_digest == digest).limit(1)
            .scalar_subquery()))).scalar_one_or_none()
        found = site_facts.entry(store.decode_report(blob)) if blob is not None else None
        if found is not None and found[0] == digest:
            site_facts.keep_sets(conn, [found], store.utcnow())
            out.append((digest, json.loads(found[1])))
    return out


def _what_if(s: FactSet, down: frozenset[str]) -> list[dict[str, Any]]:
    try:
        return what_if({"outage": {"facts": s.facts}}, down)
    except FactsError:
        return []


#: Where the prediction code starts; every ``netcheck`` module it imports, directly or not, is part of it.
_PREDICTION_ENTRY = "netcheck.assess.what_if"


def prediction_modules(entry: str = _PREDICTION_ENTRY) -> tuple[str, ...]:
    """The ``netcheck`` modules the prediction code is made of: ``entry`` and every package module it
    imports, followed through the source (absolute and relative imports, at any depth of the file), so a
    module added to the prediction's imports joins the digest without a list to keep by hand."""
    return tuple(sorted(_prediction_sources(entry)))


def _prediction_sources(entry: str) -> dict[str, bytes]:
    """Each module of the prediction code (see ``prediction_modules``) and its source, each file read once."""
    sources: dict[str, bytes] = {}
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in sources or name.partition(".")[0] != "netcheck":
            continue
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # a name imported from a module, not a submodule
            continue
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        source = sources[name] = Path(spec.origin).read_bytes()
        is_package = spec.submodule_search_locations is not None
        todo.append(name.rpartition(".")[0])  # a module's packages run first: their code counts too
        package = name if is_package else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(source, spec.origin)):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                    if node.level else node.module or ""
                todo += [base, *(f"{base}.{a.name}" for a in node.names)]  # a name may be a submodule
    return sources


@cache
def prediction_code_digest() -> str:
    """A digest of the code that makes the predictions (its modules' source), part of every key."""
    h = hashlib.sha256()
    for name, source in sorted(_prediction_sources(_PREDICTION_ENTRY).items()):
        h.update(name.encode() + b"\0" + source + b"\0")
    return h.hexdigest()


def prediction_key(digest: str, down: frozenset[str]) -> str:
    """``site_predictions.key``: a digest of every input of one prediction (the code, the facts'
    digest, the sites down). What the policy says (its site profiles) is no input: it names which
    sites a page asks about, read at every view; the facts carry what the laptop knew."""
    text = json.dumps([prediction_code_digest(), digest, sorted(down)], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def known_sites(fleet: Fleet, policy: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The sites in the devices' latest reports and in the policy's site profiles: name, whether a
    profile names it (told), how many devices know it."""
    out: dict[str, dict[str, Any]] = {}
    for p in policy.get("site_profiles") or ():
        if isinstance(p, Mapping) and isinstance(p.get("name"), str):
            out.setdefault(p["name"], {"name": p["name"], "told": True, "devices": 0, "policy": True})
    for s in fleet.sets:
        for site in s.sites:
            name = str(site.get("name"))
            row = out.setdefault(name, {"name": name, "told": bool(site.get("told")), "devices": 0, "policy": False})
            row["devices"] += s.devices
            row["told"] = row["told"] or bool(site.get("told"))
    return sorted(out.values(), key=lambda r: (r["name"] == UNNAMED, not r["told"], r["name"].casefold()))


def unnamed_systems(fleet: Fleet) -> list[dict[str, Any]]:
    """The systems no profile claims (the sites reported with told=false): kind, name, the networks
    seen for them, and how many devices use them, most used first, so IT can name their site."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for s in fleet.sets:
        for site in s.sites:
            if site.get("told"):
                continue
            networks = [str(n) for n in site.get("networks") or ()]
            for system in site.get("systems") or ():
                key = (str(system.get("kind")), str(system.get("name")))
                row = out.setdefault(key, {"kind": key[0], "name": key[1], "site": str(site.get("name")),
                                           "networks": {}, "devices": 0})
                row["devices"] += s.devices
                row["networks"].update(dict.fromkeys(networks))
    rows = sorted(out.values(), key=lambda r: (-r["devices"], r["kind"], r["name"]))
    for r in rows:
        r["networks"] = list(r["networks"])
    return rows


def _worse(row: Mapping[str, Any], base: Mapping[str, Mapping[str, Any]], behaviour: str) -> bool:
    """The workload fares worse in ``behaviour`` than with every site up (an impairment measured now,
    which no site changes, is not the site's loss)."""
    before = base.get(str(row["id"]), {}).get(behaviour, "works")
    return Fate(str(row[behaviour])).rank > Fate(str(before)).rank


def fleet_case(sites: Sites, fleet: Fleet, down: frozenset[str]) -> dict[str, Any]:
    """The fleet with the sites ``down`` down together: per workload, devices per fate in each VPN
    behaviour, how many lose it (worse than with every site up), and the causes by kind (devices,
    subjects, sites, the remedy), worst hit first."""
    names = workload_names()
    workloads: dict[str, dict[str, Any]] = {}
    hit = dict.fromkeys(BEHAVIOURS, 0)
    for s in fleet.sets:
        rows = sites.predict(s, down)
        base = {str(r["id"]): r for r in sites.predict(s, frozenset())}
        for b in BEHAVIOURS:
            hit[b] += s.devices if any(_worse(r, base, b) for r in rows) else 0
        for r in rows:
            w = workloads.setdefault(r["id"], {"id": r["id"], "name": names.get(r["id"], r["id"]),
                                               **{b: dict.fromkeys(FATES, 0) for b in BEHAVIOURS},
                                               "lost": dict.fromkeys(BEHAVIOURS, 0), "causes": {}})
            for b in BEHAVIOURS:
                w[b][str(r[b])] = w[b].get(str(r[b]), 0) + s.devices
                w["lost"][b] += s.devices if _worse(r, base, b) else 0
            for kind in dict.fromkeys(str(c["kind"]) for c in r["causes"]):
                cause = w["causes"].setdefault(kind, {"kind": kind, "devices": 0, "samples": {}})
                cause["devices"] += s.devices
                for c in r["causes"]:
                    if c["kind"] == kind and len(cause["samples"]) < 5:
                        cause["samples"].setdefault((c["subject"], c["site"]), c)
    out = []
    for w in workloads.values():
        causes = []
        for c in sorted(w["causes"].values(), key=lambda c: (-c["devices"], c["kind"])):
            samples = list(c["samples"].values())
            records = [Cause(CauseKind(x["kind"]), str(x["subject"]), x["site"], str(x["text"]), str(x["behaviour"]))
                       for x in samples if x["kind"] in _KINDS]
            causes.append({"kind": c["kind"], "devices": c["devices"],
                           "subjects": list(dict.fromkeys(str(x["subject"]) for x in samples)),
                           "sites": list(dict.fromkeys(str(x["site"]) for x in samples if x["site"])),
                           "text": samples[0]["text"] if samples else "",
                           "remedy": remedy(CauseKind(c["kind"]), w["name"], records) if records else ""})
        out.append({**w, "causes": causes, "worst": max(w["lost"].values())})
    out.sort(key=lambda w: (-w["worst"], w["id"]))
    return {"down": sorted(down), "workloads": out, "hit": hit, "devices": sum(s.devices for s in fleet.sets)}


def blast_radius(sites: Sites, fleet: Fleet, names: Iterable[str]) -> list[dict[str, Any]]:
    """Each site alone: devices that would lose something in each VPN behaviour, and the workloads lost."""
    out = []
    for name in names:
        case = fleet_case(sites, fleet, frozenset((name,)))
        out.append({"name": name, "hit": case["hit"],
                    "workloads": [{"id": w["id"], "name": w["name"], "lost": w["lost"], "worst": w["worst"]}
                                  for w in case["workloads"] if w["worst"]]})
    return out


def matching_digests(sites: Sites, fleet: Fleet, down: frozenset[str], workload: str, *, kind: str | None = None,
                     behaviour: str | None = None, fate: str | None = None) -> list[str]:
    """The fact sets behind one number of the what-if, for ``workload`` with the sites ``down``: its
    ``fate`` (in ``behaviour``, or either); else a cause of ``kind``; else it is lost (worse than
    with every site up)."""
    behaviours = (behaviour,) if behaviour in BEHAVIOURS else BEHAVIOURS
    out = []
    for s in fleet.sets:
        base = {str(r["id"]): r for r in sites.predict(s, frozenset())}
        for r in sites.predict(s, down):
            if r["id"] != workload:
                continue
            if fate is not None:
                found = any(str(r[b]) == fate for b in behaviours)
            elif kind is not None:
                found = any(c["kind"] == kind and (c["behaviour"] in behaviours or not c["behaviour"])
                            for c in r["causes"])
            else:
                found = any(_worse(r, base, b) for b in behaviours)
            if found:
                out.append(s.digest)
    return out


DEVICE_COLUMNS = ("device_id", "name", "os", "last_seen_at", "last_verdict")


def devices_listing(conn: Connection, digests: Collection[str]) -> Listing:
    """The devices (not revoked) whose latest report has one of these fact sets (their
    ``devices.facts_digest``, kept with ``device_states.facts_digest``): the devices are read in the
    list's order, so a page stops after its rows instead of joining and sorting the fleet."""
    query = (sa.select(devices.c.id.label("device_id"), devices.c.name, devices.c.os, devices.c.last_seen_at,
                       devices.c.last_verdict)
             .where(not_revoked(conn), devices.c.facts_digest.in_(sorted(digests)) if digests else sa.false()))
    # its rows: the devices' kept pieces around their system's texts (``db.row_pieces``)
    lines = Kept(joined([devices.c.row_head_csv, devices.c.os_csv, devices.c.row_seen_csv, sa.literal("\r\n")]),
                 joined([devices.c.row_head_json, sa.literal(', "os": '), devices.c.os_json, devices.c.row_seen_json,
                          sa.literal("}")]))
    return Listing(query, devices.c.id, "device_id", DEVICE_COLUMNS, lines=lines, splits=UUID_SPLITS)


def _query_down(down: Iterable[str]) -> str:
    return urlencode([("down", d) for d in sorted(down)])


# --- pages ---------------------------------------------------------------------------------------

class SitePages:
    """``/ui/sites`` (every site's blast radius, the systems no profile claims), ``/ui/sites/whatif``
    (``?down=A&down=B``: the fleet with those sites down) and ``/ui/sites/devices`` (the devices
    behind one of its numbers); GET only, so every view is a link for a ticket."""

    def __init__(self, dashboard: Any) -> None:
        self.ui = dashboard
        self.sites = Sites()

    def _fleet(self, conn: Connection) -> tuple[Fleet, list[dict[str, Any]]]:
        # the devices grouped by fact set: a fleet-wide count, reused and recounted in the
        # background as the overview's are (NETCHECK_UI_CACHE_S)
        fleet: Fleet = self.ui.recent.get(("sites",), conn, self.sites.fleet)
        return fleet, known_sites(fleet, store.get_policy(conn))

    @staticmethod
    def _down(request: Any, known: Sequence[Mapping[str, Any]]) -> tuple[frozenset[str], list[str]]:
        """The sites asked for (``down``, repeated), and the ones that are not known."""
        asked = list(dict.fromkeys(v for v in request.query_params.getlist("down") if v))[:MAX_DOWN]
        names = {s["name"] for s in known}
        return frozenset(a for a in asked if a in names), [a for a in asked if a not in names]

    def prepared(self, conn: Connection) -> tuple[Fleet, list[dict[str, Any]]]:
        """The fleet and its sites, with what the Sites page shows in memory: each set's prediction
        with no site down and with each site down alone. Also run ahead of the page's first view
        (``Dashboard.ready``, after start-up): after an upgrade of the prediction's code every kept
        prediction is made again (100,000 devices in 200 sets of facts: that first view took 455 ms
        instead of 85)."""
        fleet, known = self._fleet(conn)
        self.sites.prepare(conn, fleet, [frozenset(), *(frozenset((s["name"],)) for s in known)], store.utcnow())
        return fleet, known

    async def index(self, request: Any, session: Any) -> Any:
        def read(conn: Connection) -> dict[str, Any]:
            fleet, known = self.prepared(conn)
            radius = {r["name"]: r for r in blast_radius(self.sites, fleet, [s["name"] for s in known])}
            return {"fleet": fleet, "known": known, "radius": radius, "unnamed": unnamed_systems(fleet)}

        data = await self.ui._db(read)
        return self.ui.render("sites.html", session=session, behaviours=BEHAVIOURS, **data)

    async def whatif(self, request: Any, session: Any) -> Any:
        def read(conn: Connection) -> dict[str, Any]:
            fleet, known = self._fleet(conn)
            down, unknown = self._down(request, known)
            self.sites.prepare(conn, fleet, [frozenset(), down], store.utcnow())
            case = fleet_case(self.sites, fleet, down) if down else None
            return {"fleet": fleet, "known": known, "down": down, "unknown": unknown, "case": case}

        data = await self.ui._db(read)
        status = 400 if data["unknown"] else 200
        return self.ui.render("whatif.html", status, session=session, behaviours=BEHAVIOURS, fates=FATES,
                              query_down=_query_down(data["down"]), **data)

    async def devices(self, request: Any, session: Any) -> Any:
        q = request.query_params
        workload, kind, behaviour = q.get("workload", ""), q.get("kind") or None, q.get("behaviour") or None
        fate = q.get("fate") if q.get("fate") in FATES else None
        page = self.ui._page_no(request)

        def read(conn: Connection) -> dict[str, Any]:
            fleet, known = self._fleet(conn)
            down, unknown = self._down(request, known)
            self.sites.prepare(conn, fleet, [frozenset(), down], store.utcnow())
            digests = (matching_digests(self.sites, fleet, down, workload, kind=kind, behaviour=behaviour, fate=fate)
                       if down else [])
            listing = devices_listing(conn, digests)
            return {"down": down, "unknown": unknown, "listing": listing,
                    "result": None if request.query_params.get("format") else
                    listing.page(conn, (devices.c.name, devices.c.id), page, PAGE_SIZE)}

        data = await self.ui._db(read)
        exported = self.ui._stream(request, "site-devices", data.pop("listing"))
        if exported is not None:
            return exported
        return self.ui.render("site_devices.html", session=session, workload=workload, kind=kind,
                              behaviour=behaviour, fate=fate, links=self.ui._links(request, data["result"]),
                              workload_name=workload_names().get(workload, workload),
                              query_down=_query_down(data["down"]), **data)

    def routes(self) -> list[Any]:
        from starlette.routing import Route

        p = self.ui.page
        return [Route("/sites", p(self.index), methods=["GET"]),
                Route("/sites/whatif", p(self.whatif), methods=["GET"]),
                Route("/sites/devices", p(self.devices), methods=["GET"])]
