"""Scenario files: a small declarative TOML description of one lab world.

Every key is documented in ``docs/lab.md``.  Parsing is strict: an unknown
key, a wrong type or an impossible combination is an error that names the
file and the key, so a typo never silently builds a different world.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import addressing as A

WORKLOADS = ("exchange", "sharepoint", "teams", "teams_media", "identity", "office")
TRUTH_VALUES = ("works", "degraded", "fails")
CATEGORIES = ("Optimize", "Allow", "Default")
FAMILIES = ("ipv4", "ipv6")
LINKS = ("wifi", "home", "site", "office")

#: Phases in which ground truth is measured (a single-site world; "the site" is the office).
PHASES = ("site_up", "no_vpn", "vpn_stays", "vpn_drops")
#: The lab's sites in a two-site world, and the sets that can be down (each alone, then both).
SITES = ("office", "dc")
DOWN_SETS: dict[str, tuple[str, ...]] = {"office_down": ("office",), "dc_down": ("dc",), "both_down": ("office", "dc")}
#: The office's name in the site profile netcheck is told (the single-site world's name, kept).
OFFICE_NAME = "Contoso site (lab)"


class ScenarioError(Exception):
    """A scenario file is invalid; the message names the file and key."""


@dataclass(frozen=True)
class Link:
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0

    @property
    def shaped(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.loss_pct)


@dataclass(frozen=True)
class Laptop:
    location: str = "home"  # home | office | branch (a branch LAN whose only link is the datacentre)
    ipv6: bool = True


@dataclass(frozen=True)
class Vpn:
    mode: str = "none"  # none | full | split | selective
    families: tuple[str, ...] = FAMILIES
    exclude: tuple[str | int, ...] = ()
    keep: tuple[str | int, ...] = ()
    exclude_families: tuple[str, ...] = FAMILIES
    on_site_down: tuple[str, ...] = ("stays", "drops")
    cgnat: bool = False  # tunnel addresses in 100.64.0.0/10 instead of 10.66.0.0/24
    failover: bool = False  # the client fails over to the datacentre's gateway when the office's is gone

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def net(self) -> A.LinkNet:
        return A.VPN_NET_CGNAT if self.cgnat else A.VPN_NET


@dataclass(frozen=True)
class Dns:
    servers: tuple[str, ...] = ("home",)


@dataclass(frozen=True)
class Proxy:
    mode: str = "none"  # none | explicit | pac
    direct: tuple[str | int, ...] = ()
    tls_inspection: bool = False
    inspection_bypass: tuple[str | int, ...] = ()
    pac_unreachable: str = "direct"  # direct | fail | cached
    where: str = "site"  # site | dc | cloud: where the proxy lives
    #: site | dc | cloud: where the PAC file lives ("" = with the proxy; a cloud proxy's is in the cloud). cloud
    #: with a proxy at a site: the site's PAC file hosted on the internet (it outlives the site, its proxy not).
    pac_where: str = ""

    @property
    def name(self) -> str:
        return A.CLOUD_PROXY_NAME if self.where == "cloud" else A.PROXY_NAME

    @property
    def pac_url(self) -> str:
        if self.where == "cloud":
            return A.CLOUD_PAC_URL
        return A.SITE_PAC_INTERNET_URL if self.pac_where == "cloud" else A.PAC_URL

    @property
    def pac_site(self) -> str:
        """Where the PAC file is: site, dc or cloud."""
        return self.pac_where or self.where


@dataclass(frozen=True)
class Identity:
    mode: str = "managed"  # managed | federated
    adfs_public: bool = False
    provider: str = "site"  # site (AD FS at the office) | dc (AD FS in the datacentre) | cloud (on the internet)

    @property
    def federation_host(self) -> str:
        return A.CLOUD_IDP_NAME if self.provider == "cloud" else A.ADFS_NAME


@dataclass(frozen=True)
class Sites:
    """A two-site world when ``dc`` is set: the names netcheck's site profile gives the office and the DC."""

    office: str = OFFICE_NAME
    dc: str = ""
    down: tuple[str, ...] = tuple(DOWN_SETS)  # which down-sets are measured

    @property
    def two(self) -> bool:
        return bool(self.dc)

    def name(self, site: str) -> str:
        return self.office if site == "office" else self.dc


@dataclass(frozen=True)
class NetcheckOptions:
    deadline: float = 20.0
    user: str = "alice@contoso.example"
    tenant: str = "contoso"
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    site_profile: bool = False


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    description: str = ""
    laptop: Laptop = Laptop()
    vpn: Vpn = Vpn()
    dns: Dns = Dns()
    proxy: Proxy = Proxy()
    identity: Identity = Identity()
    links: Mapping[str, Link] = field(default_factory=dict)
    netcheck: NetcheckOptions = NetcheckOptions()
    expect: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    sites: Sites = Sites()

    def link(self, name: str) -> Link:
        return self.links.get(name, Link())

    def behaviours(self) -> tuple[str, ...]:
        """What the VPN does when a site goes down: ``no_vpn``, or ``vpn_stays`` / ``vpn_drops``."""
        if not self.vpn.enabled:
            return ("no_vpn",)
        return tuple(f"vpn_{b}" for b in self.vpn.on_site_down)

    def down_cases(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(phase prefix, lab sites down) per case: one case, the office, in a single-site world."""
        if not self.sites.two:
            return (("", ("office",)),)
        return tuple((d, DOWN_SETS[d]) for d in self.sites.down)

    def outage_phases(self) -> tuple[str, ...]:
        """The site-down phases this scenario measures, in order (``dc_down.vpn_stays`` in a two-site world)."""
        return tuple(
            f"{prefix}.{b}" if prefix else b for prefix, _ in self.down_cases() for b in self.behaviours()
        )


def split_phase(phase: str) -> tuple[str, str]:
    """(down-set prefix, behaviour): ``dc_down.vpn_stays`` -> (``dc_down``, ``vpn_stays``); a single-site
    phase has no prefix (``vpn_stays`` -> ("", ``vpn_stays``))."""
    prefix, _, behaviour = phase.rpartition(".")
    return prefix, behaviour


def without_profile(s: Scenario) -> Scenario:
    """The same world, with netcheck given no site profile: it has to infer the site (``NAME:inferred``)."""
    return replace(s, name=f"{s.name}:inferred", netcheck=replace(s.netcheck, site_profile=False))


# ---------------------------------------------------------------------------
# parsing


class _Table:
    """Typed, strict access to one TOML table; remembers which keys were read."""

    def __init__(self, data: Mapping[str, Any], where: str, src: Path) -> None:
        if not isinstance(data, Mapping):
            raise ScenarioError(f"{src}: [{where}] must be a table")
        self.data, self.where, self.src, self.used = data, where, src, set[str]()

    def _err(self, key: str, msg: str) -> ScenarioError:
        prefix = f"{self.where}." if self.where else ""
        return ScenarioError(f"{self.src}: {prefix}{key}: {msg}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        self.used.add(key)
        if key not in self.data:
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            raise self._err(key, f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value: str = self.get(key, str, default)
        if value not in choices:
            raise self._err(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def str_list(self, key: str, default: tuple[str, ...], choices: tuple[str, ...] | None = None) -> tuple[str, ...]:
        value = self.get(key, list, list(default))
        for item in value:
            if not isinstance(item, str) or (choices and item not in choices):
                allowed = f" (one of {', '.join(choices)})" if choices else ""
                raise self._err(key, f"bad entry {item!r}{allowed}")
        return tuple(value)

    def selector_list(self, key: str) -> tuple[str | int, ...]:
        """Entries are category names or endpoint-set ids."""
        value = self.get(key, list, [])
        for item in value:
            ok = (isinstance(item, int) and not isinstance(item, bool) and item > 0) or item in CATEGORIES
            if not ok:
                raise self._err(key, f"bad entry {item!r}: use a category ({', '.join(CATEGORIES)}) or a set id")
        return tuple(value)

    def table(self, key: str) -> _Table:
        self.used.add(key)
        sub = f"{self.where}.{key}" if self.where else key
        return _Table(self.data.get(key, {}), sub, self.src)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self._err(unknown[0], "unknown key (see docs/lab.md)")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", bool: "true/false", float: "a number", int: "an integer", list: "a list", dict: "a table"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load(path: Path) -> Scenario:
    """Read and validate a scenario file."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from exc
    root = _Table(data, "", path)
    name = root.get("name", str, path.stem)
    description = root.get("description", str, "")
    scenario = Scenario(
        name=name,
        path=path,
        description=description,
        laptop=_laptop(root.table("laptop")),
        vpn=_vpn(root.table("vpn")),
        dns=_dns(root.table("dns")),
        proxy=_proxy(root.table("proxy")),
        identity=_identity(root.table("identity")),
        links=_links(root.table("links")),
        netcheck=_netcheck(root.table("netcheck")),
        expect=_expect(root.table("expect")),
        sites=_sites(root.table("sites")),
    )
    root.finish()
    _check_consistency(scenario)
    return scenario


def _laptop(t: _Table) -> Laptop:
    result = Laptop(location=t.choice("location", ("home", "office", "branch"), "home"), ipv6=t.get("ipv6", bool, True))
    t.finish()
    return result


def _vpn(t: _Table) -> Vpn:
    result = Vpn(
        mode=t.choice("mode", ("none", "full", "split", "selective"), "none"),
        families=t.str_list("families", FAMILIES, FAMILIES),
        exclude=t.selector_list("exclude"),
        keep=t.selector_list("keep"),
        exclude_families=t.str_list("exclude_families", FAMILIES, FAMILIES),
        on_site_down=t.str_list("on_site_down", ("stays", "drops"), ("stays", "drops")),
        cgnat=t.get("cgnat", bool, False),
        failover=t.get("failover", bool, False),
    )
    t.finish()
    return result


def _dns(t: _Table) -> Dns:
    servers = t.str_list("servers", ("home",), ("home", "corp", "dc"))
    if not servers or len(set(servers)) != len(servers):
        raise t._err("servers", "must list 'home', 'corp' and/or 'dc' once each")
    t.finish()
    return Dns(servers=servers)


def _proxy(t: _Table) -> Proxy:
    result = Proxy(
        mode=t.choice("mode", ("none", "explicit", "pac"), "none"),
        direct=t.selector_list("direct"),
        tls_inspection=t.get("tls_inspection", bool, False),
        inspection_bypass=t.selector_list("inspection_bypass"),
        pac_unreachable=t.choice("pac_unreachable", ("direct", "fail", "cached"), "direct"),
        where=t.choice("where", ("site", "dc", "cloud"), "site"),
        pac_where=t.choice("pac_where", ("", "site", "dc", "cloud"), ""),
    )
    t.finish()
    return result


def _identity(t: _Table) -> Identity:
    result = Identity(
        mode=t.choice("mode", ("managed", "federated"), "managed"),
        adfs_public=t.get("adfs_public", bool, False),
        provider=t.choice("provider", ("site", "dc", "cloud"), "site"),
    )
    t.finish()
    return result


def _links(t: _Table) -> dict[str, Link]:
    links: dict[str, Link] = {}
    for name in list(t.data):
        if name not in LINKS:
            raise t._err(name, f"unknown link (one of {', '.join(LINKS)})")
        lt = t.table(name)
        link = Link(
            delay_ms=lt.get("delay_ms", float, 0.0),
            jitter_ms=lt.get("jitter_ms", float, 0.0),
            loss_pct=lt.get("loss_pct", float, 0.0),
        )
        if link.delay_ms < 0 or link.jitter_ms < 0 or link.jitter_ms > link.delay_ms:
            raise lt._err("jitter_ms", "need delay_ms >= jitter_ms >= 0")
        if not 0 <= link.loss_pct <= 100:
            raise lt._err("loss_pct", "must be between 0 and 100")
        lt.finish()
        links[name] = link
    t.finish()
    return links


def _netcheck(t: _Table) -> NetcheckOptions:
    env = t.get("env", dict, {})
    for key, value in env.items():
        if not isinstance(value, str):
            raise t._err(f"env.{key}", "values must be strings")
    result = NetcheckOptions(
        deadline=t.get("deadline", float, 20.0),
        user=t.get("user", str, "alice@contoso.example"),
        tenant=t.get("tenant", str, "contoso"),
        args=t.str_list("args", ()),
        env=dict(env),
        site_profile=t.get("site_profile", bool, False),
    )
    if result.deadline <= 0:
        raise t._err("deadline", "must be positive")
    t.finish()
    return result


def _sites(t: _Table) -> Sites:
    down = t.str_list("down", tuple(DOWN_SETS), tuple(DOWN_SETS))
    result = Sites(office=t.get("office", str, OFFICE_NAME), dc=t.get("dc", str, ""), down=down)
    if not down or len(set(down)) != len(down):
        raise t._err("down", f"list some of {', '.join(DOWN_SETS)} once each")
    t.finish()
    return result


def _expect(t: _Table) -> dict[str, dict[str, str]]:
    """``[expect.PHASE]`` tables; a two-site phase is ``[expect.office_down.vpn_stays]`` (a nested table)."""
    flat = dict(t.data)
    for prefix in DOWN_SETS:
        nested = flat.pop(prefix, None)
        if isinstance(nested, Mapping):
            flat |= {f"{prefix}.{behaviour}": value for behaviour, value in nested.items()}
        elif nested is not None:
            raise t._err(prefix, f"must be a table of VPN behaviours ([expect.{prefix}.vpn_stays])")
    t = _Table(flat, t.where, t.src)
    expect: dict[str, dict[str, str]] = {}
    for phase in list(t.data):
        prefix, behaviour = split_phase(phase)
        if behaviour not in PHASES or (prefix and (prefix not in DOWN_SETS or behaviour == "site_up")):
            known = [*PHASES, *(f"{d}.{b}" for d in DOWN_SETS for b in PHASES[1:])]
            raise t._err(phase, f"unknown phase (one of {', '.join(known)})")
        pt = t.table(phase)
        values: dict[str, str] = {}
        for workload in list(pt.data):
            if workload != "all" and workload not in WORKLOADS:
                raise pt._err(workload, f"unknown workload (one of all, {', '.join(WORKLOADS)})")
            values[workload] = pt.choice(workload, TRUTH_VALUES, "works")
        pt.finish()
        expect[phase] = values
    t.finish()
    return expect


def _check_consistency(s: Scenario) -> None:
    src = s.path

    def fail(key: str, msg: str) -> None:
        raise ScenarioError(f"{src}: {key}: {msg}")

    if s.vpn.mode != "split" and (s.vpn.exclude or s.vpn.keep):
        fail("vpn.exclude", "only meaningful with vpn.mode = 'split'")
    if s.vpn.mode == "split" and not s.vpn.exclude:
        fail("vpn.exclude", "a split tunnel needs at least one excluded category or set")
    if s.vpn.enabled and not s.vpn.families:
        fail("vpn.families", "a tunnel must carry at least one address family")
    if not s.vpn.enabled and s.laptop.location == "home" and {"corp", "dc"} & set(s.dns.servers):
        fail("dns.servers", "the corporate resolver is only reachable through a VPN or on a corporate LAN")
    if s.proxy.mode == "none" and (s.proxy.direct or s.proxy.tls_inspection):
        fail("proxy.mode", "proxy.direct / tls_inspection need a proxy (explicit or pac)")
    if s.proxy.mode != "none" and s.proxy.where != "cloud" and not s.vpn.enabled and s.laptop.location == "home":
        fail("proxy.mode", "the site's proxy is only reachable through a VPN or on a corporate LAN")
    if s.proxy.pac_where and (s.proxy.where == "cloud" or s.proxy.mode != "pac"):
        fail("proxy.pac_where", "only with proxy.mode = 'pac' and a proxy at the site or the dc")
    if s.identity.mode == "managed" and s.identity.adfs_public:
        fail("identity.adfs_public", "only meaningful with identity.mode = 'federated'")
    if s.identity.provider != "site" and (s.identity.mode != "federated" or s.identity.adfs_public):
        fail("identity.provider", f"{s.identity.provider!r} needs identity.mode = 'federated' (and no adfs_public)")
    uses_dc = {
        "identity.provider": s.identity.provider == "dc",
        "proxy.where": s.proxy.where == "dc" or s.proxy.pac_where == "dc",
        "dns.servers": "dc" in s.dns.servers,
        "vpn.failover": s.vpn.failover,
        "laptop.location": s.laptop.location == "branch",
    }
    for key, used in uses_dc.items():
        if used and not s.sites.two:
            fail(key, "needs the datacentre: a [sites] table with dc = 'NAME'")
    if s.vpn.failover and not s.vpn.enabled:
        fail("vpn.failover", "needs a VPN")
    if not s.sites.two and s.sites.down != tuple(DOWN_SETS):
        fail("sites.down", "needs the datacentre: sites.dc = 'NAME'")
    if s.laptop.location == "branch" and s.vpn.enabled:
        fail("laptop.location", "a branch laptop is on the corporate network: vpn.mode must be 'none'")
    if not s.laptop.ipv6 and "ipv6" in s.vpn.families and s.vpn.enabled:
        pass  # the tunnel may still carry IPv6 (laptop gets IPv6 only inside it)
    for phase in s.expect:
        if phase != "site_up" and phase not in s.outage_phases():
            fail(f"expect.{phase}", f"this scenario does not measure {phase} (measures {', '.join(s.outage_phases())})")
