"""The lab's copy of Microsoft's endpoint data and the DNS it implies.

Every published prefix of ``endpoints/worldwide.json`` is mapped to its own
lab prefix (IPv4 inside 198.18.0.0/16, IPv6 inside 2001:db8:f000::/40); the
same real prefix always maps to the same lab prefix, and prefixes nested in
one another stay nested.  Ids, categories, URLs, ports and notes are kept,
so netcheck runs the full real catalog against the lab.

Each concrete name resolves to an address inside a lab prefix of the
highest-category endpoint set that lists it (exactly or by wildcard); names
of sets without addresses resolve into a generic "CDN" prefix.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import addressing as A

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

CATEGORY_RANK = {"Optimize": 0, "Allow": 1, "Default": 2}

#: Real services answer through CNAME chains with unpublished intermediate
#: names; the lab does the same for a few of them.  ``{tenant}`` is filled.
CNAME_CHAINS: dict[str, tuple[str, ...]] = {
    "outlook.office365.com": ("outlook.ha.office365.com", "outlook.ms-acdc.office.com"),
    "{tenant}.sharepoint.com": ("181-ipv4v6e.clump.dprodmgd104.aa-rt.sharepoint.com",),
    "{tenant}-my.sharepoint.com": ("182-ipv4v6e.clump.dprodmgd104.aa-rt.sharepoint.com",),
    "teams.microsoft.com": ("teams-office-com.s-0005.dc-msedge.net",),
    "login.microsoftonline.com": ("login.mso.msidentity.com", "www.tm.ak.prd.aadg.trafficmanager.net"),
}

#: Concrete names the lab makes sure exist for tenant ``{tenant}``.
TENANT_NAMES = (
    "{tenant}.sharepoint.com",
    "{tenant}-my.sharepoint.com",
    "{tenant}-files.sharepoint.com",
    "{tenant}-admin.sharepoint.com",
    "autodiscover.{tenant}.onmicrosoft.com",
    "{tenant}.onmicrosoft.com",
)

#: Extra concrete names probed by the truth tools or commonly used by clients.
EXTRA_NAMES = ("www.office.com",)


@dataclass(frozen=True)
class EndpointSet:
    id: int
    category: str
    service_area: str
    urls: tuple[str, ...]
    ips: tuple[str, ...]  # real prefixes
    raw: dict[str, Any]

    @property
    def rank(self) -> tuple[int, int]:
        return (CATEGORY_RANK.get(self.category, 3), self.id)


@dataclass(frozen=True)
class Pattern:
    """A URL pattern from the catalog, compiled to a regular expression."""

    text: str
    regex: re.Pattern[str]
    literal: int  # number of non-wildcard characters: more = more specific
    set_id: int


@dataclass(frozen=True)
class WorkloadHosts:
    """The hosts that stand for one workload: without a key host it fails, without another it is degraded."""

    key: tuple[str, ...]
    other: tuple[str, ...]


@dataclass
class LabCatalog:
    """The mapped catalog plus everything the lab derives from it."""

    tenant: str
    sets: list[EndpointSet]
    prefix_map: dict[str, str]  # real prefix -> lab prefix
    patterns: list[Pattern] = field(default_factory=list)

    # -- construction -----------------------------------------------------
    @classmethod
    def from_file(cls, path: Path, tenant: str) -> LabCatalog:
        raw = json.loads(path.read_text())
        sets = [
            EndpointSet(
                id=int(s["id"]),
                category=s.get("category", "Default"),
                service_area=s.get("serviceArea", ""),
                urls=tuple(s.get("urls", [])),
                ips=tuple(s.get("ips", [])),
                raw=s,
            )
            for s in raw
        ]
        prefix_map = map_prefixes(p for s in sets for p in s.ips)
        catalog = cls(tenant=tenant, sets=sets, prefix_map=prefix_map)
        catalog.patterns = sorted(
            (
                Pattern(u, _compile(u), len(u.replace("*", "")), s.id)
                for s in sorted(sets, key=lambda s: s.rank)
                for u in s.urls
                if "*" in u
            ),
            key=lambda p: (-p.literal, catalog.set(p.set_id).rank),
        )
        return catalog

    def set(self, set_id: int) -> EndpointSet:
        for s in self.sets:
            if s.id == set_id:
                return s
        raise KeyError(set_id)

    # -- the lab endpoints file ----------------------------------------------
    def lab_endpoints(self) -> list[dict[str, Any]]:
        """The catalog as Microsoft publishes it, with lab prefixes."""
        out = []
        for s in self.sets:
            entry = dict(s.raw)
            if s.ips:
                entry["ips"] = [self.prefix_map[p] for p in s.ips]
            out.append(entry)
        return out

    # -- names -----------------------------------------------------------------
    def fill(self, text: str) -> str:
        return text.replace("{tenant}", self.tenant)

    def set_for_name(self, name: str) -> EndpointSet | None:
        """The highest-category set listing ``name`` exactly, else by the most specific pattern."""
        name = name.lower().rstrip(".")
        exact = [s for s in self.sets if name in (u.lower() for u in s.urls)]
        if exact:
            return min(exact, key=lambda s: s.rank)
        for pattern in self.patterns:
            if pattern.regex.match(name):
                return self.set(pattern.set_id)
        return None

    def concrete_names(self) -> list[str]:
        """Every concrete host name the lab serves (catalog, tenant, chains)."""
        names: set[str] = set()
        for s in self.sets:
            for url in s.urls:
                names.add(self.concretize(url))
        names.update(self.fill(n) for n in TENANT_NAMES)
        names.update(EXTRA_NAMES)
        names.update(self.fill(n) for n in CNAME_CHAINS)
        names.add(A.TEAMS_RELAY_NAME)
        return sorted(n for n in names if n)

    def concretize(self, url: str) -> str:
        """A concrete name for a URL pattern.

        A ``*`` that is a whole label becomes the tenant for tenant domains
        (``*.sharepoint.com`` -> ``contoso.sharepoint.com``) and ``lab``
        elsewhere; a ``*`` inside a label (``*cdn.onenote.net``) is dropped.
        """
        labels = url.lower().split(".")
        tenantish = any(d in url for d in ("sharepoint", "onmicrosoft"))
        out = []
        for label in labels:
            if label == "*":
                out.append(self.tenant if tenantish else "lab")
            else:
                out.append(label.replace("*", ""))
        return ".".join(out)

    def addresses(self, name: str) -> tuple[list[str], list[str]]:
        """(IPv4, IPv6) addresses the lab's DNS gives ``name``."""
        name = name.lower().rstrip(".")
        if name == A.TEAMS_RELAY_NAME:
            return [str(self.teams_relay(4))], [str(self.teams_relay(6))]
        s = self.set_for_name(name)
        v4 = [p for p in (s.ips if s else ()) if ":" not in p]
        v6 = [p for p in (s.ips if s else ()) if ":" in p]
        net4 = ipaddress.ip_network(self.prefix_map[v4[0]]) if v4 else ipaddress.ip_network(A.CDN_V4)
        net6 = ipaddress.ip_network(self.prefix_map[v6[0]]) if v6 else ipaddress.ip_network(A.CDN_V6)
        return [str(host_in(net4, name))], [str(host_in(net6, name))]

    def teams_relay(self, family: int) -> Address:
        """The Teams transport relay address: inside the media set (id 11)."""
        media = self.set(11)
        prefix = next(p for p in media.ips if (":" in p) == (family == 6))
        net = ipaddress.ip_network(self.prefix_map[prefix])
        return net.network_address + (min(net.num_addresses - 1, 250))

    # -- selectors (categories or set ids) -----------------------------------------
    def select_sets(self, selectors: Sequence[str | int]) -> list[EndpointSet]:
        chosen = []
        for s in self.sets:
            if any(sel == s.id or sel == s.category for sel in selectors):
                chosen.append(s)
        return chosen

    def prefixes(
        self, selectors: Sequence[str | int], keep: Sequence[str | int] = (), family: int | None = None
    ) -> list[str]:
        """Lab prefixes of the selected sets, minus those of ``keep`` sets."""
        kept = {p for s in self.select_sets(keep) for p in s.ips}
        out: list[str] = []
        for s in self.select_sets(selectors):
            for p in s.ips:
                if p in kept or (family is not None and (":" in p) != (family == 6)):
                    continue
                lab = self.prefix_map[p]
                if lab not in out:
                    out.append(lab)
        return out

    def url_patterns(self, selectors: Sequence[str | int]) -> list[str]:
        """URL patterns (wildcards kept) of the selected sets."""
        out: list[str] = []
        for s in self.select_sets(selectors):
            for u in s.urls:
                if u not in out:
                    out.append(u)
        return out

    # -- DNS zone -------------------------------------------------------------------
    def zone(self, extra: dict[str, dict[str, list[str]]]) -> dict[str, Any]:
        """The authoritative server's data: exact names, CNAME chains, patterns."""
        exact: dict[str, dict[str, Any]] = {}
        for name in self.concrete_names():
            v4, v6 = self.addresses(name)
            exact[name] = {"A": v4, "AAAA": v6}
        for head, chain in CNAME_CHAINS.items():
            head = self.fill(head)
            v4, v6 = self.addresses(head)
            names = [head, *chain]
            for src, dst in zip(names, names[1:], strict=False):
                exact[src] = {"CNAME": dst}
            exact[names[-1]] = {"A": v4, "AAAA": v6}
        exact.update(extra)
        patterns = []
        for p in self.patterns:
            s = self.set(p.set_id)
            v4, v6 = self.addresses(self.concretize(p.text)) if s else ([], [])
            patterns.append({"regex": p.regex.pattern, "A": v4, "AAAA": v6})
        return {"exact": exact, "patterns": patterns, "whoami": A.WHOAMI_NAME}

    # -- what each workload needs (the lab's own reading of endpoints/workloads.toml) -----------------
    def workload_hosts(self, workloads: dict[str, Any], instance: str = "Worldwide") -> dict[str, WorkloadHosts]:
        """Per HTTPS workload with key hosts: its key hosts, and one host of each endpoint category it has that
        none of its key hosts is in (the first by name among the concrete names of its required sets with TCP
        ports; wildcards only through ``tenant_names``). The rule netcheck's outage model follows, read here
        from the data files, never from netcheck's code (docs/lab.md, "one meaning of works")."""
        defined = workloads["workloads"]
        listed = {w: set(ids) for w, ids in workloads.get("instances", {}).get(instance, {}).items()}
        tenant_names = {k.lower(): v for k, v in workloads.get("tenant_names", {}).items()}
        web = [w for w, spec in defined.items() if not spec.get("media")]
        category: dict[str, str] = {}
        members: dict[str, set[str]] = {}
        for s in self.sets:
            if not s.raw.get("required") or not s.raw.get("tcpPorts"):
                continue
            owners = [w for w, ids in listed.items() if s.id in ids] + [
                w for w, spec in defined.items()
                if not spec.get("only_listed") and s.service_area in spec.get("service_areas", ())]
            owners = [w for w in (owners or [workloads["fallback"]]) if w in web]
            for url in (u.lower() for u in s.urls):
                names = [url] if "*" not in url else [self.fill(t) for t in tenant_names.get(url, ())]
                for name in names:
                    if name not in category or CATEGORY_RANK[s.category] < CATEGORY_RANK[category[name]]:
                        category[name] = s.category
                    members.setdefault(name, set()).update(owners)
        out: dict[str, WorkloadHosts] = {}
        for w, hosts in workloads.get("key_hosts", {}).get(instance, {}).items():
            keys = tuple(self.fill(h.lower()) for h in hosts)
            covered = {category.get(h) for h in keys}
            extra: dict[str, str] = {}
            for name in sorted(category, key=lambda n: (CATEGORY_RANK[category[n]], n)):
                if w in members[name] and category[name] not in covered:
                    extra.setdefault(category[name], name)
            out[w] = WorkloadHosts(keys, tuple(extra.values()))
        return out

    def certificate_names(self) -> list[str]:
        """Host names for the front doors' certificate (wildcards included)."""
        names = set(self.concrete_names())
        for s in self.sets:
            for u in s.urls:
                first, _, rest = u.lower().partition(".")
                if "*" in first and "*" not in rest:
                    names.add(f"*.{rest}")
        return sorted(names)


def _compile(pattern: str) -> re.Pattern[str]:
    """``*.x.com`` matches any name below x.com; other ``*`` match within a label."""
    pattern = pattern.lower()
    if pattern.startswith("*.") and "*" not in pattern[2:]:
        return re.compile(r"^.+\." + re.escape(pattern[2:]) + "$")
    return re.compile("^" + re.escape(pattern).replace(r"\*", "[^.]*") + "$")


def host_in(net: Network, name: str) -> Address:
    """A stable host address for ``name`` inside ``net``."""
    if net.num_addresses <= 2:
        return net.network_address + (int(hashlib.sha256(name.encode()).hexdigest(), 16) % net.num_addresses)
    span = min(net.num_addresses - 2, 2**32)
    return net.network_address + 1 + int(hashlib.sha256(name.encode()).hexdigest(), 16) % span


def map_prefixes(real: Iterable[str]) -> dict[str, str]:
    """Map each distinct real prefix to a distinct lab prefix.

    IPv4 prefixes get a /24 (or their own length if longer) in 198.18.0.0/16,
    IPv6 prefixes a /48 (or longer) in 2001:db8:f000::/40.  A prefix nested
    in another is mapped inside the other's lab prefix.
    """
    real = list(real)
    nets = sorted({ipaddress.ip_network(p, strict=False) for p in real}, key=lambda n: (n.version, n.prefixlen, n))
    pools = {
        4: _Allocator(ipaddress.ip_network(A.MAPPED_V4_POOL), 24),
        6: _Allocator(ipaddress.ip_network(A.MAPPED_V6_POOL), 48),
    }
    mapped: dict[Network, Network] = {}
    children: dict[Network, _Allocator] = {}
    for net in nets:
        parent = next((p for p in mapped if p.version == net.version and p != net and net.subnet_of(p)), None)  # type: ignore[arg-type]
        if parent is not None:
            alloc = children.setdefault(parent, _Allocator(mapped[parent], mapped[parent].prefixlen + 2))
        else:
            alloc = pools[net.version]
        mapped[net] = alloc.take(net.prefixlen)
    return {p: str(mapped[ipaddress.ip_network(p, strict=False)]) for p in real}


class _Allocator:
    """Hands out consecutive aligned blocks of at least ``min_len`` from ``pool``."""

    def __init__(self, pool: Network, block_len: int) -> None:
        self.pool, self.block_len, self.next = pool, block_len, 0

    def take(self, want_len: int) -> Network:
        length = max(want_len, self.block_len)
        block_size = 2 ** (self.pool.max_prefixlen - self.block_len)
        start = self.pool.network_address + self.next * block_size
        if start not in self.pool:
            raise ValueError(f"lab address pool {self.pool} exhausted")
        self.next += 1
        return ipaddress.ip_network(f"{start}/{length}")


def write_endpoints(catalog: LabCatalog, path: Path) -> None:
    path.write_text(json.dumps(catalog.lab_endpoints(), indent=2) + "\n")
