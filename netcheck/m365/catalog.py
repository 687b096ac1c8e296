"""Microsoft's endpoint data, loaded, validated and turned into probe targets.

The JSON is Microsoft's web-service format as published; netcheck's grouping of
it into workloads comes from ``endpoints/workloads.toml``. Nothing here names a
Microsoft host: every name comes from the data.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from netcheck.errors import CatalogError
from netcheck.files import load_user_json, load_user_toml
from netcheck.models import Category, Target

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def in_networks(address: str, networks: Iterable[Network]) -> bool:
    """Is ``address`` (a zone index such as ``%eth0`` aside) in one of ``networks``? False for text that is
    not an address."""
    ip = _parsed(address)
    return ip is not None and any(ip.version == n.version and ip in n for n in networks)


@functools.lru_cache(maxsize=4096)
def _parsed(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Read once per address: a check asks of the same few hundred addresses some 600 times."""
    try:
        return ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return None

INSTANCES: tuple[str, ...] = ("Worldwide", "China", "USGovDoD", "USGovGCCHigh")
_KNOWN_KEYS = {"id", "serviceArea", "serviceAreaDisplayName", "urls", "ips", "tcpPorts",
               "udpPorts", "expressRoute", "category", "required", "notes"}


def data_dir() -> Path:
    """Where the bundled endpoint data lives (inside the wheel, or the source tree)."""
    package = Path(__file__).resolve().parent.parent  # netcheck/
    for candidate in (package / "endpoints", package.parent / "endpoints"):
        if (candidate / "workloads.toml").is_file():
            return candidate
    raise CatalogError("netcheck's bundled endpoint data is missing; reinstall netcheck")


def canonical_instance(name: str) -> str:
    for inst in INSTANCES:
        if inst.lower() == name.lower():
            return inst
    raise CatalogError(f"unknown instance {name!r}; choose one of {', '.join(INSTANCES)}")


@dataclass(frozen=True)
class PortRange:
    low: int
    high: int

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def ports(self) -> range:
        return range(self.low, self.high + 1)

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def parse_ports(text: str, where: str) -> tuple[PortRange, ...]:
    """Parse ``"80,443"``, ``"143, 587"``, ``"443,80"`` or ``"3478-3481"``; sorted, deduplicated."""
    out: set[PortRange] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        low_s, _, high_s = part.partition("-")
        try:
            low = int(low_s)
            high = int(high_s) if high_s else low
        except ValueError:
            raise CatalogError(f"{where}: bad port {part!r}") from None
        if not (0 < low <= high <= 65535):
            raise CatalogError(f"{where}: port {part!r} is out of range")
        out.add(PortRange(low, high))
    return tuple(sorted(out, key=lambda r: (r.low, r.high)))


@dataclass(frozen=True)
class EndpointSet:
    id: int
    service_area: str
    display_name: str
    urls: tuple[str, ...]
    ips: tuple[Network, ...]
    tcp_ports: tuple[PortRange, ...]
    udp_ports: tuple[PortRange, ...]
    category: Category
    express_route: bool
    required: bool
    notes: str = ""

    def tcp_has(self, port: int) -> bool:
        return any(port in r for r in self.tcp_ports)


def _str_list(raw: Any, key: str, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) and x.strip() for x in raw):
        raise CatalogError(f"{where}: {key!r} must be a list of non-empty strings")
    return tuple(x.strip().lower() if key == "urls" else x.strip() for x in raw)


def parse_endpoint_set(raw: Any, origin: str) -> EndpointSet:
    """One endpoint set; errors name ``origin`` (the file) and the set id."""
    if not isinstance(raw, dict):
        raise CatalogError(f"{origin}: every entry must be an object")
    set_id = raw.get("id")
    if not isinstance(set_id, int) or isinstance(set_id, bool) or set_id < 0:
        raise CatalogError(f"{origin}: an endpoint set has a missing or bad 'id' ({set_id!r})")
    where = f"{origin}: endpoint set {set_id}"
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        # The service may add attributes; tolerate them (Microsoft's versioning rule).
        pass
    area = raw.get("serviceArea")
    if not isinstance(area, str) or not area:
        raise CatalogError(f"{where}: 'serviceArea' is missing")
    try:
        category = Category(str(raw.get("category")))
    except ValueError:
        raise CatalogError(f"{where}: unknown category {raw.get('category')!r}") from None
    ips: list[Network] = []
    for text in _str_list(raw.get("ips"), "ips", where):
        try:
            ips.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise CatalogError(f"{where}: bad IP prefix {text!r}") from None
    for key in ("tcpPorts", "udpPorts"):
        if key in raw and not isinstance(raw[key], str):
            raise CatalogError(f"{where}: {key!r} must be a string like \"80,443\"")
    for key in ("expressRoute", "required"):
        value = raw.get(key, False)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            raw = {**raw, key: value.lower() == "true"}
        elif not isinstance(value, bool):
            raise CatalogError(f"{where}: {key!r} must be true or false")
    notes = raw.get("notes", "")
    if not isinstance(notes, str):
        raise CatalogError(f"{where}: 'notes' must be a string")
    urls = _str_list(raw.get("urls"), "urls", where)
    tcp = parse_ports(raw.get("tcpPorts", ""), where)
    udp = parse_ports(raw.get("udpPorts", ""), where)
    if not urls and not ips:
        raise CatalogError(f"{where}: has neither 'urls' nor 'ips'")
    if not tcp and not udp:
        raise CatalogError(f"{where}: has neither 'tcpPorts' nor 'udpPorts'")
    return EndpointSet(
        id=set_id, service_area=area,
        display_name=str(raw.get("serviceAreaDisplayName") or area),
        urls=urls, ips=tuple(ips), tcp_ports=tcp, udp_ports=udp, category=category,
        express_route=bool(raw.get("expressRoute", False)),
        required=bool(raw.get("required", False)), notes=notes.strip(),
    )


def parse_endpoint_sets(data: Any, origin: str) -> tuple[EndpointSet, ...]:
    if not isinstance(data, list):
        raise CatalogError(f"{origin}: expected a JSON array of endpoint sets")
    sets = tuple(parse_endpoint_set(raw, origin) for raw in data)
    seen: set[int] = set()
    for s in sets:
        if s.id in seen:
            raise CatalogError(f"{origin}: endpoint set {s.id} appears twice")
        seen.add(s.id)
    if not sets:
        raise CatalogError(f"{origin}: holds no endpoint sets")
    return sets


#: Endpoint files larger than this are refused (Microsoft's data is about 100 kB per instance).
MAX_ENDPOINT_FILE_BYTES = 16 * 1024 * 1024


def read_endpoint_file(path: Path) -> tuple[EndpointSet, ...]:
    data = load_user_json(path, limit=MAX_ENDPOINT_FILE_BYTES, what="the endpoint file", error=CatalogError)
    return parse_endpoint_sets(data, str(path))


# --- workloads -----------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    id: str
    name: str
    service_areas: tuple[str, ...] = ()
    media: bool = False
    only_listed: bool = False
    core: bool = True
    #: Sign-in: its key host answers the realm question, and a federation server (AD FS) it is
    #: federated to is one of its dependencies (role "federation").
    sign_in: bool = False
    #: the services of Microsoft's service health (Graph's ``service`` names) that carry this
    #: workload: their incidents are shown when it fails (netcheck.assess.service_health)
    health_services: tuple[str, ...] = ()


@dataclass(frozen=True)
class WorkloadMap:
    workloads: tuple[Workload, ...]
    fallback: str
    listed: Mapping[str, Mapping[str, tuple[int, ...]]]  # instance -> workload -> set ids
    tenant_names: Mapping[str, tuple[str, ...]]
    key_hosts: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    media_relay: Mapping[str, str] = field(default_factory=dict)
    #: per instance, Microsoft's service status page (the backup channel when there is no collector)
    status_site: Mapping[str, str] = field(default_factory=dict)

    @property
    def sign_in(self) -> str | None:
        """The workload marked ``sign_in = true`` (None: none is)."""
        return next((w.id for w in self.workloads if w.sign_in), None)

    def by_id(self, workload_id: str) -> Workload:
        for w in self.workloads:
            if w.id == workload_id:
                return w
        raise KeyError(workload_id)

    def for_set(self, instance: str, endpoint_set: EndpointSet) -> tuple[str, ...]:
        listed = self.listed.get(instance, {})
        out = [w for w, ids in listed.items() if endpoint_set.id in ids]
        for w in self.workloads:
            if w.id in out or w.only_listed:
                continue
            if endpoint_set.service_area in w.service_areas:
                out.append(w.id)
        if not out:
            out.append(self.fallback)
        order = [w.id for w in self.workloads]
        return tuple(sorted(set(out), key=order.index))


def load_workload_map(path: Path) -> WorkloadMap:
    doc = load_user_toml(path, what="the workload map", error=CatalogError)
    try:
        workloads = tuple(
            Workload(id=wid, name=str(w["name"]), service_areas=tuple(w.get("service_areas", ())),
                     media=bool(w.get("media", False)), only_listed=bool(w.get("only_listed", False)),
                     core=bool(w.get("core", True)), sign_in=bool(w.get("sign_in", False)),
                     health_services=tuple(str(x) for x in w.get("health_services", ())))
            for wid, w in doc["workloads"].items()
        )
        listed: dict[str, dict[str, tuple[int, ...]]] = {
            canonical_instance(inst): {w: tuple(int(i) for i in ids) for w, ids in m.items()}
            for inst, m in doc.get("instances", {}).items()}
        tenant_names: dict[str, tuple[str, ...]] = {
            k.lower(): tuple(v) for k, v in doc.get("tenant_names", {}).items()}
        fallback = str(doc["fallback"])
        key_hosts: dict[str, dict[str, tuple[str, ...]]] = {
            canonical_instance(inst): {w: tuple(str(h).lower() for h in hosts) for w, hosts in m.items()}
            for inst, m in doc.get("key_hosts", {}).items()}
        media_relay = {canonical_instance(k): str(v) for k, v in doc.get("media_relay", {}).items()}
        status_site = {canonical_instance(k): str(v) for k, v in doc.get("status_site", {}).items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise CatalogError(f"{path}: malformed ({exc})") from exc
    ids = {w.id for w in workloads}
    if fallback not in ids:
        raise CatalogError(f"{path}: fallback workload {fallback!r} is not defined")
    for section, per_instance in (("instances", listed), ("key_hosts", key_hosts)):
        for inst, names in per_instance.items():
            for w in names:
                if w not in ids:
                    raise CatalogError(f"{path}: [{section}.{inst}] names unknown workload {w!r}")
    for inst, url in status_site.items():
        if not url.startswith("https://"):
            raise CatalogError(f"{path}: [status_site] {inst} must be an https:// URL")
    return WorkloadMap(workloads, fallback, listed, tenant_names, key_hosts, media_relay, status_site)


# --- targets -------------------------------------------------------------------

@dataclass(frozen=True)
class NotTestable:
    pattern: str
    endpoint_sets: tuple[int, ...]
    workloads: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class MediaTarget:
    """UDP media reached by IP prefix only (no host name), e.g. Teams relays."""

    networks: tuple[Network, ...]
    udp_ports: tuple[int, ...]
    workloads: tuple[str, ...]
    endpoint_sets: tuple[int, ...]
    category: Category


@dataclass(frozen=True)
class TargetPlan:
    """What a check probes: concrete host names (with their TCP ports), media
    prefixes, and the wildcard patterns that cannot be tested."""

    hosts: tuple[Target, ...]
    ports: Mapping[str, tuple[int, ...]]  # host -> TCP ports published for it
    media: tuple[MediaTarget, ...]
    not_testable: tuple[NotTestable, ...]
    skipped_optional: int


def expand_url(pattern: str, tenant: str | None, tenant_names: Mapping[str, tuple[str, ...]]
               ) -> tuple[str, ...]:
    """Concrete names for a published URL pattern; () when only a wildcard is known."""
    if "*" not in pattern:
        return (pattern,)
    if tenant and pattern in tenant_names:
        return tuple(t.format(tenant=tenant.lower()) for t in tenant_names[pattern])
    return ()


@dataclass
class _HostAcc:
    category: Category
    sets: set[int] = field(default_factory=set)
    workloads: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class Catalog:
    instance: str
    version: str
    source: str
    sets: tuple[EndpointSet, ...]
    workloads: WorkloadMap

    def set_by_id(self, set_id: int) -> EndpointSet:
        for s in self.sets:
            if s.id == set_id:
                return s
        raise KeyError(set_id)

    def workloads_of(self, endpoint_set: EndpointSet) -> tuple[str, ...]:
        return self.workloads.for_set(self.instance, endpoint_set)

    def key_hosts(self, tenant: str | None) -> Mapping[str, tuple[str, ...]]:
        """Per workload, the hosts without which it does not work at all."""
        out: dict[str, tuple[str, ...]] = {}
        for w, hosts in self.workloads.key_hosts.get(self.instance, {}).items():
            names = tuple(h.format(tenant=tenant.lower()) if tenant else h
                          for h in hosts if tenant or "{tenant}" not in h)
            if names:
                out[w] = names
        return out

    def category_hosts(self, tenant: str | None) -> Mapping[str, tuple[str, ...]]:
        """Per workload with key hosts, one probed host for each endpoint category it has that none of its key
        hosts is in: the first of that category in the plan's order (by name). A workload needs them to work
        fully, not to work at all: losing one leaves it degraded (docs/lab.md, "one meaning of works")."""
        plan = self.plan(tenant)
        keys = self.key_hosts(tenant)
        category = {t.host: t.category for t in plan.hosts}
        out: dict[str, dict[Category, str]] = {}
        for t in plan.hosts:
            for w in (w for w in t.workloads if w in keys):
                covered = {category.get(h) for h in keys.get(w, ())}
                if t.category not in covered:
                    out.setdefault(w, {}).setdefault(t.category, t.host)
        return {w: tuple(hosts.values()) for w, hosts in out.items()}

    def tenant_from_urls(self, urls: Iterable[str]) -> str | None:
        """The tenant whose names (``tenant_names`` in workloads.toml) these URLs use, e.g. the
        OneDrive client's SharePoint URLs; None when none does."""
        templates = sorted({t for ts in self.workloads.tenant_names.values() for t in ts if "{tenant}" in t},
                           key=len, reverse=True)  # "{tenant}-my.x" before "{tenant}.x"
        patterns = [re.compile(re.escape(t).replace(re.escape("{tenant}"), "([a-z0-9][a-z0-9-]{0,62})") + "$")
                    for t in templates]
        for url in urls:
            try:
                host = (urlsplit(url.strip()).hostname or "").rstrip(".").lower()
            except ValueError:
                continue
            for pattern in patterns:
                m = pattern.match(host)
                if m:
                    return m.group(1)
        return None

    def tenant_workloads(self) -> tuple[str, ...]:
        """The workloads whose key hosts all need a tenant name (left out without one)."""
        raw = self.workloads.key_hosts.get(self.instance, {})
        return tuple(w for w, hosts in raw.items() if hosts and all("{tenant}" in h for h in hosts))

    @property
    def media_relay(self) -> str | None:
        return self.workloads.media_relay.get(self.instance)

    def networks(self, category: Category | None = None) -> tuple[Network, ...]:
        """Every published prefix (of one category, if given), deduplicated, in order."""
        seen: dict[Network, None] = {}
        for s in self.sets:
            if category is None or s.category is category:
                for n in s.ips:
                    seen.setdefault(n, None)
        return tuple(seen)

    def filtered(self, categories: Iterable[Category] = (), workloads: Iterable[str] = ()
                 ) -> tuple[EndpointSet, ...]:
        cats, wls = set(categories), set(workloads)
        return tuple(s for s in self.sets
                     if (not cats or s.category in cats)
                     and (not wls or wls & set(self.workloads_of(s))))

    def plan(self, tenant: str | None = None, required_only: bool = True) -> TargetPlan:
        media_ids = {w.id for w in self.workloads.workloads if w.media}
        hosts: dict[str, _HostAcc] = {}
        media: list[MediaTarget] = []
        untestable: dict[str, NotTestable] = {}
        skipped = 0
        for s in self.sets:
            if required_only and not s.required:
                skipped += 1
                continue
            wls = self.workloads_of(s)
            media_wls = tuple(w for w in wls if w in media_ids)
            web_wls = tuple(w for w in wls if w not in media_ids)
            if media_wls and s.udp_ports and s.ips:
                media.append(MediaTarget(
                    networks=s.ips,
                    udp_ports=tuple(p for r in s.udp_ports for p in r.ports()),
                    workloads=media_wls, endpoint_sets=(s.id,), category=s.category))
            if not web_wls or not s.tcp_ports:
                continue
            for pattern in s.urls:
                names = expand_url(pattern, tenant, self.workloads.tenant_names)
                if not names:
                    prev = untestable.get(pattern)
                    untestable[pattern] = NotTestable(
                        pattern=pattern,
                        endpoint_sets=tuple(sorted(set(prev.endpoint_sets if prev else ()) | {s.id})),
                        workloads=tuple(sorted(set(prev.workloads if prev else ()) | set(web_wls))),
                        reason=("a wildcard with no concrete host name to test"
                                + ("" if tenant or pattern not in self.workloads.tenant_names
                                   else "; give --tenant to test it")))
                    continue
                for name in names:
                    acc = hosts.get(name)
                    if acc is None:
                        acc = hosts[name] = _HostAcc(s.category)
                    elif s.category.rank < acc.category.rank:
                        acc.category = s.category
                    acc.sets.add(s.id)
                    acc.workloads.update(web_wls)
                    acc.ports.update(p for r in s.tcp_ports for p in r.ports() if p in (80, 443))
        order = [w.id for w in self.workloads.workloads]
        targets = tuple(
            Target(host=name, category=acc.category,
                   workloads=tuple(sorted(acc.workloads, key=order.index)),
                   endpoint_sets=tuple(sorted(acc.sets)), required=True)
            for name, acc in sorted(hosts.items(), key=lambda kv: (kv[1].category.rank, kv[0]))
        )
        ports = {name: tuple(sorted(acc.ports)) for name, acc in hosts.items()}
        return TargetPlan(targets, ports, tuple(media), tuple(untestable.values()), skipped)


def load_versions(directory: Path) -> Mapping[str, str]:
    path = directory / "versions.toml"
    return {canonical_instance(k): str(v)
            for k, v in load_user_toml(path, what="the versions file", error=CatalogError).items()}


def bundled_path(instance: str) -> Path:
    return data_dir() / f"{canonical_instance(instance).lower()}.json"


def bundled_version(instance: str) -> str:
    """The version of the snapshot shipped with netcheck for ``instance``, else "unknown"."""
    return load_versions(data_dir()).get(canonical_instance(instance), "unknown")


def make_catalog(instance: str, sets: tuple[EndpointSet, ...], version: str, source: str) -> Catalog:
    """The one place a :class:`Catalog` is assembled: endpoint sets from any source (the bundled
    snapshot, the cache, a file the user names) with the bundled workload map."""
    workloads = load_workload_map(data_dir() / "workloads.toml")
    return Catalog(canonical_instance(instance), version, source, sets, workloads)


def load_catalog(instance: str = "Worldwide", path: Path | None = None, version: str | None = None,
                 source: str | None = None) -> Catalog:
    """Load an instance's endpoint data.

    ``path`` overrides the bundled snapshot (a file the user names); ``version`` and
    ``source`` describe where it came from.
    """
    if path is None:
        return make_catalog(instance, read_endpoint_file(bundled_path(instance)),
                            version or bundled_version(instance), source or "bundled")
    return make_catalog(instance, read_endpoint_file(path), version or "unknown", source or "file")


def sets_to_json(sets: Sequence[EndpointSet]) -> list[dict[str, Any]]:
    """A compact JSON view of endpoint sets (for `endpoints show --json`)."""
    return [
        {"id": s.id, "serviceArea": s.service_area, "category": str(s.category),
         "required": s.required, "urls": list(s.urls), "ips": [str(n) for n in s.ips],
         "tcpPorts": ",".join(map(str, s.tcp_ports)), "udpPorts": ",".join(map(str, s.udp_ports))}
        for s in sets
    ]
