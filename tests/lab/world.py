"""Build, change and tear down one lab world from a scenario.

    with World(scenario) as world:       # namespaces, links, servers, VPN
        world.laptop_run([...])           # run a tool on the laptop
        world.site_down()                 # cut the corporate site off the internet
        world.site_down(("office", "dc"))  # a two-site world: cut these sites off
        world.vpn_drop()                  # the VPN client gives up

Namespaces are ``ncl<run id>-<role>`` with roles ``inet``, ``home``,
``corp`` and ``laptop``, and ``dc`` in a two-site world; see docs/lab.md for
the topology and address plan.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import addressing as A
from . import services
from .catalog import LabCatalog, write_endpoints
from .netns import (
    NS_PREFIX,
    Janitor,
    LabError,
    Proc,
    Result,
    entered,
    install_signal_handlers,
    ip_batch,
    run,
    sysctl,
    wait_until,
)
from .pki import Pki
from .pki import build as build_pki
from .scenario import Scenario

log = logging.getLogger("lab")

REPO_ROOT = Path(__file__).resolve().parents[2]
ENDPOINTS_FILE = REPO_ROOT / "endpoints" / "worldwide.json"
TOOLS_DIR = Path(__file__).resolve().parent / "tools"
#: Debian's Python: any user can run it (the truth tools need only its stdlib, and pacparser).
SYSTEM_PYTHON = "/usr/bin/python3"
LAPTOP_UID = 65534
LAPTOP_GID = 65534
#: Front-door processes (one per core here): a burst of hundreds of TLS
#: handshakes must not queue behind one Python process.
FRONTDOOR_WORKERS = 2

#: The laptop's managed Chromium policy (``ip netns exec`` bind-mounts /etc/netns/<laptop>/chromium over
#: /etc/chromium, so each run has its own; only PAC scenarios write one).
CHROMIUM_POLICY_FILE = "netcheck-lab.json"

#: Which namespace carries each link's delay element, and on which interface.
LINK_HOST = {"wifi": ("home", "lan0"), "home": ("home", "wan0"), "site": ("corp", "wan0"), "office": ("corp", "lan0")}


@dataclass
class VpnClient:
    """What the laptop's VPN client set up, so it can be undone."""

    proc: Proc
    ifname: str
    families: tuple[str, ...]
    gateway: str = "office"  # office | dc: the gateway the client is connected to
    rules: list[str] = field(default_factory=list)  # "ip -4 rule ..." commands to delete
    routes: list[str] = field(default_factory=list)  # "route ..." commands to delete


class World:
    """One running lab world.  Use as a context manager."""

    def __init__(self, scenario: Scenario, *, python: str | None = None, work_root: Path | None = None) -> None:
        self.scenario = scenario
        self.python = python or sys.executable
        self.run_id = secrets.token_hex(3)
        roles = ("inet", "home", "corp", "laptop", *(("dc",) if scenario.sites.two else ()))
        self.ns = {role: f"{NS_PREFIX}{self.run_id}-{role}" for role in roles}
        self.janitor = Janitor.create(self.run_id)
        base = Path(tempfile.mkdtemp(prefix=f"{NS_PREFIX}{self.run_id}-", dir=work_root))
        self.janitor.add_path(base)
        self.dir = base
        self.dir.chmod(0o755)
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.user_home = self.dir / "home"
        self.catalog = LabCatalog.from_file(ENDPOINTS_FILE, scenario.netcheck.tenant)
        self.endpoints_file = self.dir / "endpoints.json"
        self.pki: Pki | None = None
        self.vpn: VpnClient | None = None
        self.location = scenario.laptop.location
        self.down: set[str] = set()  # the lab sites that are down
        self.pac_text = ""
        self.timings: dict[str, float] = {}
        self._wg_keys = {role: services.wg_keypair() for role in ("laptop", "corp", "dc")}
        atexit.register(self.close)
        install_signal_handlers(lambda: None)

    # ------------------------------------------------------------------
    # context manager
    def __enter__(self) -> World:
        try:
            start = time.monotonic()
            self.build()
            self.timings["bring_up_s"] = round(time.monotonic() - start, 2)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        problems = self.janitor.cleanup()
        for p in problems:
            log.warning("cleanup: %s", p)

    # ------------------------------------------------------------------
    # bring-up
    def build(self) -> None:
        s = self.scenario
        log.info("building %s (run %s)", s.name, self.run_id)
        self._prepare_files()
        self._namespaces()
        self._chromium_policy()
        self._links()
        self._inet()
        self._home()
        self._corp()
        if s.sites.two:
            self._dc()
        self._laptop_uplink(self.location)
        procs = self._start_servers()
        self._wait_ready(procs)
        self._shape_links()
        self._resolv_conf(self._dns_servers())
        if s.vpn.enabled and self.location == "home":
            self.vpn_up()

    @property
    def site_is_down(self) -> bool:
        return bool(self.down)

    def _prepare_files(self) -> None:
        s = self.scenario
        write_endpoints(self.catalog, self.endpoints_file)
        self.endpoints_file.chmod(0o644)
        cloud_names = [A.CLOUD_IDP_NAME, A.CLOUD_PAC_NAME]
        self.pki = build_pki(self.dir / "pki", [*self.catalog.certificate_names(), *cloud_names], [A.ADFS_NAME])
        (self.dir / "pki").chmod(0o755)
        self.user_home.mkdir(mode=0o700)
        for sub in (".cache", ".config", ".local/share", "tmp"):
            (self.user_home / sub).mkdir(parents=True, exist_ok=True)
        for path in [self.user_home, *self.user_home.rglob("*")]:
            os.chown(path, LAPTOP_UID, LAPTOP_GID)
        extra = {A.VPN_NAME: {"A": [A.CORP_INET.v4_b], "AAAA": [A.CORP_INET.v6_b]}}
        if s.sites.two:
            extra[A.VPN2_NAME] = {"A": [A.DC_INET.v4_b], "AAAA": [A.DC_INET.v6_b]}
        if s.identity.mode == "federated" and s.identity.adfs_public:
            extra[A.ADFS_NAME] = {"A": [A.CORP_INET.v4_b], "AAAA": [A.CORP_ADFS_V6]}
        extra[A.CLOUD_IDP_NAME] = {"A": [A.CLOUD_IDP_V4], "AAAA": [A.CLOUD_IDP_V6]}
        extra[A.CLOUD_PROXY_NAME] = {"A": [A.CLOUD_PROXY_V4], "AAAA": [A.CLOUD_PROXY_V6]}
        extra[A.CLOUD_PAC_NAME] = {"A": [A.CLOUD_PAC_V4], "AAAA": [A.CLOUD_PAC_V6]}
        (self.dir / "zone.json").write_text(json.dumps(self.catalog.zone(extra)))
        direct = self.catalog.url_patterns(s.proxy.direct)
        self.pac_text = services.pac_file(direct, s.proxy.name)
        (self.dir / "proxy.pac").write_text(self.pac_text)
        (self.dir / "proxy.pac").chmod(0o644)
        # the truth tools run as the laptop's user, who may not be able to read the checkout
        tools = self.dir / "tools"
        tools.mkdir(mode=0o755)
        for name in ("stunclient.py", "pacfind.py", "pacbrowser.py"):
            shutil.copy(TOOLS_DIR / name, tools / name)
            (tools / name).chmod(0o644)

    def _chromium_policy(self) -> None:
        """The laptop's Chromium, the PAC client of the truth (tools/pacbrowser.py): trusts the machine's
        roots, and makes the PAC mandatory when the scenario's client fails closed without it."""
        s = self.scenario
        if s.proxy.mode != "pac":
            return
        assert self.pki is not None
        managed = Path("/etc/netns") / self.ns["laptop"] / "chromium" / "policies" / "managed"
        managed.mkdir(mode=0o755, parents=True, exist_ok=True)
        mandatory = s.proxy.pac_url if s.proxy.pac_unreachable == "fail" else ""
        path = managed / CHROMIUM_POLICY_FILE
        path.write_text(services.chromium_policy(self.pki.machine_roots.read_bytes(), mandatory))
        path.chmod(0o644)

    def _namespaces(self) -> None:
        for role, ns in self.ns.items():
            run(["ip", "netns", "add", ns])
            self.janitor.add_namespace(ns)
            (Path("/etc/netns") / ns).mkdir(parents=True, exist_ok=True)
            settings = {
                "net.ipv6.conf.all.accept_dad": "0",
                "net.ipv6.conf.default.accept_dad": "0",
                "net.ipv6.conf.all.accept_ra": "0",
                "net.ipv6.conf.default.accept_ra": "0",
                "net.ipv4.conf.all.rp_filter": "0",
                "net.ipv4.conf.default.rp_filter": "0",
            }
            if role == "laptop":
                settings |= {"net.ipv4.ping_group_range": "0 2147483647", "net.ipv4.conf.all.src_valid_mark": "1"}
            else:
                settings |= {"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"}
            if role == "inet":
                settings |= {"net.ipv4.ip_nonlocal_bind": "1", "net.ipv6.ip_nonlocal_bind": "1"}
            sysctl(ns, settings)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _veth(self, a: str, a_if: str, b: str, b_if: str) -> None:
        run(["ip", "-n", self.ns[a], "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", self.ns[b]])

    def _links(self) -> None:
        self._veth("inet", "home0", "home", "wan0")
        self._veth("inet", "corp0", "corp", "wan0")
        self._veth("home", "lan0", "laptop", "eth0")
        self._veth("corp", "lan0", "laptop", "eth1")
        if self.scenario.sites.two:
            self._veth("inet", "dc0", "dc", "wan0")
            self._veth("corp", "dc0", "dc", "corp0")  # the private WAN link
            self._veth("dc", "lan0", "laptop", "eth2")  # the branch LAN

    def _addr(self, net: A.LinkNet, side: str, dev: str, v6: bool = True) -> list[str]:
        v4 = net.v4_a if side == "a" else net.v4_b
        v6a = net.v6_a if side == "a" else net.v6_b
        cmds = [f"address add {v4}/{net.v4_len} dev {dev}"]
        if v6:
            cmds.append(f"address add {v6a}/{net.v6_len} dev {dev} nodad")
        return cmds + [f"link set {dev} up"]

    def _inet(self) -> None:
        cmds = self._addr(A.HOME_INET, "a", "home0") + self._addr(A.CORP_INET, "a", "corp0")
        for addr in (A.AUTH_DNS_V4, A.ISP_RESOLVER_V4):
            cmds.append(f"address add {addr}/32 dev lo")
        for addr in (A.AUTH_DNS_V6, A.ISP_RESOLVER_V6, A.CLOUD_PROXY_V6):  # the cloud proxy binds its own
            cmds.append(f"address add {addr}/128 dev lo")
        cmds += [
            f"route add local {A.FRONTDOOR_V4} dev lo",
            f"-6 route add local {A.FRONTDOOR_V6} dev lo",
            f"-6 route add {A.HOME_V6_AGGREGATE} via {A.HOME_INET.v6_b}",
            f"-6 route add {A.CORP_V6_AGGREGATE} via {A.CORP_INET.v6_b}",
        ]
        if self.scenario.sites.two:
            cmds += self._addr(A.DC_INET, "a", "dc0") + [f"-6 route add {A.DC_V6_AGGREGATE} via {A.DC_INET.v6_b}"]
        ip_batch(self.ns["inet"], cmds)

    def _home(self) -> None:
        cmds = self._addr(A.HOME_INET, "b", "wan0") + self._addr(A.HOME_LAN, "a", "lan0")
        cmds += [f"route add default via {A.HOME_INET.v4_a}", f"-6 route add default via {A.HOME_INET.v6_a}"]
        ip_batch(self.ns["home"], cmds)
        self._iptables("home", nat4=["-A POSTROUTING -o wan0 -j MASQUERADE"], filter6=_stateful_inbound("wan0", []))

    def _corp(self) -> None:
        s = self.scenario
        cmds = self._addr(A.CORP_INET, "b", "wan0") + self._addr(A.OFFICE_LAN, "a", "lan0")
        for v4 in (A.CORP_DNS_V4, A.CORP_PROXY_V4, A.CORP_WEB_V4, A.CORP_ADFS_V4):
            cmds.append(f"address add {v4}/32 dev lo")
        for v6 in (A.CORP_DNS_V6, A.CORP_PROXY_V6, A.CORP_WEB_V6, A.CORP_ADFS_V6):
            cmds.append(f"address add {v6}/128 dev lo")
        cmds += [f"route add default via {A.CORP_INET.v4_a}", f"-6 route add default via {A.CORP_INET.v6_a}"]
        if s.sites.two:  # the datacentre, its branch and its tunnel pools, over the private WAN link
            cmds += self._addr(A.CORP_DC, "a", "dc0")
            cmds += [
                f"route add {net} via {A.CORP_DC.v4_b}"
                for net in (A.DC_V4_SITE, self._vpn_net("dc").v4_net)
            ]
            cmds += [f"-6 route add {A.DC_V6_AGGREGATE} via {A.CORP_DC.v6_b}"]
        ip_batch(self.ns["corp"], cmds)
        public = s.identity.mode == "federated" and s.identity.adfs_public
        nat4 = [f"-A POSTROUTING -s {net} -o wan0 -j MASQUERADE" for net in (A.CORP_V4_INTERNAL, s.vpn.net.v4_net)]
        allow4 = [f"-p udp --dport {A.WG_PORT}"]
        allow6 = [f"-p udp --dport {A.WG_PORT}"]
        if public:
            dnat = f"--dport 443 -j DNAT --to-destination {A.CORP_ADFS_V4}"
            nat4.insert(0, f"-A PREROUTING -i wan0 -d {A.CORP_INET.v4_b} -p tcp {dnat}")
            allow4.append(f"-d {A.CORP_ADFS_V4} -p tcp --dport 443")
            allow6.append(f"-d {A.CORP_ADFS_V6} -p tcp --dport 443")
        self._iptables(
            "corp", nat4=nat4, filter4=_stateful_inbound("wan0", allow4), filter6=_stateful_inbound("wan0", allow6)
        )

    def _dc(self) -> None:
        """The datacentre: its own internet link, the WAN link to the office, a branch LAN, its services."""
        cmds = self._addr(A.DC_INET, "b", "wan0") + self._addr(A.CORP_DC, "b", "corp0")
        cmds += self._addr(A.BRANCH_LAN, "a", "lan0")
        for v4 in (A.DC_DNS_V4, A.DC_PROXY_V4, A.DC_WEB_V4, A.DC_ADFS_V4):
            cmds.append(f"address add {v4}/32 dev lo")
        for v6 in (A.DC_DNS_V6, A.DC_PROXY_V6, A.DC_WEB_V6, A.DC_ADFS_V6):
            cmds.append(f"address add {v6}/128 dev lo")
        cmds += [f"route add default via {A.DC_INET.v4_a}", f"-6 route add default via {A.DC_INET.v6_a}"]
        cmds += [
            f"route add {net} via {A.CORP_DC.v4_a}"
            for net in (A.OFFICE_V4_SITE, self._vpn_net("office").v4_net)
        ]
        cmds += [f"-6 route add {A.CORP_V6_AGGREGATE} via {A.CORP_DC.v6_a}"]
        ip_batch(self.ns["dc"], cmds)
        nets = dict.fromkeys([A.CORP_V4_INTERNAL, self._vpn_net("office").v4_net, self._vpn_net("dc").v4_net])
        nat4 = [f"-A POSTROUTING -s {net} -o wan0 -j MASQUERADE" for net in nets]
        allow = [f"-p udp --dport {A.WG_PORT}"]
        self._iptables(
            "dc", nat4=nat4, filter4=_stateful_inbound("wan0", allow), filter6=_stateful_inbound("wan0", allow)
        )

    def _iptables(
        self, role: str, *, nat4: Sequence[str] = (), filter4: Sequence[str] = (), filter6: Sequence[str] = ()
    ) -> None:
        ns = self.ns[role]
        if nat4 or filter4:
            text = ""
            if nat4:
                text += "*nat\n" + "\n".join(nat4) + "\nCOMMIT\n"
            if filter4:
                text += "*filter\n" + "\n".join(filter4) + "\nCOMMIT\n"
            run(["iptables-restore", "--noflush"], ns=ns, input=text)
        if filter6:
            run(["ip6tables-restore", "--noflush"], ns=ns, input="*filter\n" + "\n".join(filter6) + "\nCOMMIT\n")

    # ------------------------------------------------------------------
    # laptop uplink and DNS
    def _laptop_uplink(self, location: str) -> None:
        """Attach the laptop to the home, office or branch LAN (the others are down)."""
        ipv6 = self.scenario.laptop.ipv6
        uplinks = {"home": ("eth0", A.HOME_LAN), "office": ("eth1", A.OFFICE_LAN), "branch": ("eth2", A.BRANCH_LAN)}
        if not self.scenario.sites.two:
            del uplinks["branch"]
        up_if, net = uplinks[location]
        laptop = self.ns["laptop"]
        cmds = []
        for dev, _ in uplinks.values():
            if dev != up_if:
                cmds += [f"link set {dev} down", f"address flush dev {dev}"]
        cmds += self._addr(net, "b", up_if, v6=ipv6)
        cmds += [f"route replace default via {net.v4_a} dev {up_if}"]
        if ipv6:
            cmds += [f"-6 route replace default via {net.v6_a} dev {up_if}"]
        ip_batch(laptop, cmds)
        if not ipv6:
            sysctl(laptop, {f"net.ipv6.conf.{up_if}.disable_ipv6": "1"})
        self.location = location

    def _dns_servers(self) -> list[str]:
        """The laptop's resolvers right now.

        At the office DHCP hands out the corporate resolver (in a two-site
        world, the corporate resolvers of ``dns.servers``, the office's if it
        names none); at a branch the same, the datacentre's if none; at home
        the home router's, unless a VPN client is active, which installs the
        scenario's ``dns.servers`` (and keeps them while the tunnel "stays").
        """
        named = {"corp": A.CORP_DNS_V4, "dc": A.DC_DNS_V4, "home": A.HOME_LAN.v4_a}
        if self.location != "home":
            corporate = [n for n in self.scenario.dns.servers if n != "home"] if self.scenario.sites.two else []
            return [named[n] for n in corporate or ["corp" if self.location == "office" else "dc"]]
        if self.vpn is None:
            return [A.HOME_LAN.v4_a]
        return [named[n] for n in self.scenario.dns.servers]

    def _resolv_conf(self, servers: list[str]) -> None:
        search = [A.CORP_DOMAIN] if {A.CORP_DNS_V4, A.DC_DNS_V4} & set(servers) else []
        path = Path("/etc/netns") / self.ns["laptop"] / "resolv.conf"
        path.write_text(services.resolv_conf(servers, search))
        path.chmod(0o644)

    # ------------------------------------------------------------------
    # servers
    def _start_servers(self) -> list[tuple[Proc, Path | None]]:
        s = self.scenario
        assert self.pki is not None
        py = [self.python, "-m"]
        env = self._server_env()
        started: list[tuple[Proc, Path | None]] = []

        def start(name: str, role: str, argv: list[str], ready: bool = True) -> None:
            ready_file = self.dir / f"{name}.ready" if ready else None
            if ready_file:
                argv = [*argv, "--ready-file", str(ready_file)]
            started.append((self.janitor.start(name, argv, ns=self.ns[role], log_dir=self.logs, env=env), ready_file))

        # inet: authoritative DNS, ISP resolver, front doors, Teams relay
        start(
            "authdns",
            "inet",
            [
                *py,
                "tests.lab.servers.authdns",
                "--zone",
                str(self.dir / "zone.json"),
                "--listen",
                A.AUTH_DNS_V4,
                "--listen",
                A.AUTH_DNS_V6,
            ],
        )
        start(
            "isp-resolver",
            "inet",
            services.dnsmasq_argv([A.ISP_RESOLVER_V4, A.ISP_RESOLVER_V6], [f"{A.AUTH_DNS_V4}@{A.ISP_RESOLVER_V4}"]),
            ready=False,
        )
        fd_conf = self._web_config(
            "frontdoor",
            [("0.0.0.0", 80, False), ("::", 80, False), ("0.0.0.0", 443, True), ("::", 443, True)],
            self.pki.frontdoor_cert,
            self.pki.frontdoor_key,
        )
        for i in range(FRONTDOOR_WORKERS):  # SO_REUSEPORT spreads connections over the workers
            start(f"frontdoor-{i + 1}", "inet", [*py, "tests.lab.servers.web", "--config", str(fd_conf)])
        relay = [str(self.catalog.teams_relay(4)), str(self.catalog.teams_relay(6))]
        start(
            "stun",
            "inet",
            [
                *py,
                "tests.lab.servers.stun",
                *sum((["--listen", r] for r in relay), []),
                *sum((["--port", str(p)] for p in A.STUN_PORTS), []),
            ],
        )
        # home: DNS forwarder
        start(
            "home-dns",
            "home",
            services.dnsmasq_argv([A.HOME_LAN.v4_a, A.HOME_LAN.v6_a], [A.ISP_RESOLVER_V4]),
            ready=False,
        )
        # corp: resolver, web (PAC, intranet, AD FS), proxy, VPN server
        zone = services.corp_dns_extra(
            adfs_at=s.identity.provider, proxy_at=s.proxy.where, pac_at=s.proxy.pac_site
        )
        start(
            "corp-dns",
            "corp",
            services.dnsmasq_argv([A.CORP_DNS_V4, A.CORP_DNS_V6], [A.AUTH_DNS_V4], zone),
            ready=False,
        )
        site_conf = self._web_config(
            "site",
            [
                (A.CORP_WEB_V4, 80, False),
                (A.CORP_WEB_V6, 80, False),
                (A.CORP_ADFS_V4, 443, True),
                (A.CORP_ADFS_V6, 443, True),
            ],
            self.pki.adfs_cert,
            self.pki.adfs_key,
        )
        start("site-web", "corp", [*py, "tests.lab.servers.web", "--config", str(site_conf)])
        if s.sites.two:  # the datacentre: the same corp.example zone (replicated), its own web server (PAC, AD FS)
            start("dc-dns", "dc", services.dnsmasq_argv([A.DC_DNS_V4, A.DC_DNS_V6], [A.AUTH_DNS_V4], zone), ready=False)
            dc_conf = self._web_config(
                "dc",
                [
                    (A.DC_WEB_V4, 80, False),
                    (A.DC_WEB_V6, 80, False),
                    (A.DC_ADFS_V4, 443, True),
                    (A.DC_ADFS_V6, 443, True),
                ],
                self.pki.adfs_cert,
                self.pki.adfs_key,
                server_role="site",
            )
            start("dc-web", "dc", [*py, "tests.lab.servers.web", "--config", str(dc_conf)])
        if s.proxy.mode != "none":
            started.append((self._start_squid(), None))
        if s.vpn.enabled:
            started.append((self._start_wg("corp"), None))
        if s.vpn.failover:
            started.append((self._start_wg("dc"), None))
        return started

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def _web_config(
        self, role: str, listeners: list[tuple[str, int, bool]], cert: Path, key: Path, server_role: str = ""
    ) -> Path:
        s = self.scenario
        config = {
            "role": server_role or role,
            "name": f"lab-{role}",
            "listeners": [{"host": h, "port": p, "tls": t} for h, p, t in listeners],
            "cert": str(cert),
            "key": str(key),
            "identity": {
                "domain": s.netcheck.user.rsplit("@", 1)[-1],
                "mode": s.identity.mode,
                "adfs_host": s.identity.federation_host,
                "brand": "Contoso",
            },
            "pac_file": str(self.dir / "proxy.pac"),
            "cloud_pac_host": A.CLOUD_PAC_NAME if s.proxy.pac_site == "cloud" else None,
        }
        path = self.dir / f"{role}.json"
        path.write_text(json.dumps(config))
        return path

    def _start_squid(self) -> Proc:
        s = self.scenario
        assert self.pki is not None
        squid_dir = self.dir / "squid"
        squid_dir.mkdir()
        ssl_db = squid_dir / "ssl_db"
        proxy_pw = pwd.getpwnam("proxy")
        insp_key = squid_dir / "inspection-ca.pem"
        shutil.copy(self.pki.inspection_ca, insp_key)
        if s.proxy.tls_inspection:
            run(["/usr/lib/squid/security_file_certgen", "-c", "-s", str(ssl_db), "-M", "4MB"])
        splice = self.catalog.url_patterns(s.proxy.inspection_bypass)
        conf = services.squid_conf(
            squid_dir,
            tls_inspection=s.proxy.tls_inspection,
            splice_patterns=splice,
            inspection_ca=insp_key,
            public_ca=self.pki.public_ca,
            ssl_db=ssl_db,
            where=s.proxy.where,
        )
        (squid_dir / "squid.conf").write_text(conf)
        for path in [squid_dir, *squid_dir.rglob("*")]:
            os.chown(path, proxy_pw.pw_uid, proxy_pw.pw_gid)
        return self.janitor.start(
            "squid",
            ["squid", "-N", "-f", str(squid_dir / "squid.conf")],
            ns=self.ns[{"cloud": "inet", "site": "corp", "dc": "dc"}[s.proxy.where]],
            log_dir=self.logs,
        )

    def _start_wg(self, role: str) -> Proc:
        ifname = f"wg{self.run_id}{role[0]}"
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1", LOG_LEVEL="error")
        proc = self.janitor.start(
            f"wireguard-{role}", ["wireguard-go", ifname], ns=self.ns[role], log_dir=self.logs, env=env
        )
        sock = Path("/var/run/wireguard") / f"{ifname}.sock"
        wait_until(lambda: sock.exists() or not proc.alive(), 5, f"wireguard-go in {role}")
        if not proc.alive():
            raise LabError(f"wireguard-go in {role} exited: {proc.tail()}")
        priv, _ = self._wg_keys[role]
        key_file = self.dir / f"wg-{role}.key"
        key_file.write_text(priv + "\n")
        key_file.chmod(0o600)
        ns = self.ns[role]
        if role in ("corp", "dc"):
            net = self._vpn_net("office" if role == "corp" else "dc")
            peer_pub = self._wg_keys["laptop"][1]
            run(
                [
                    "wg",
                    "set",
                    ifname,
                    "listen-port",
                    str(A.WG_PORT),
                    "private-key",
                    str(key_file),
                    "peer",
                    peer_pub,
                    "allowed-ips",
                    f"{net.v4_b}/32,{net.v6_b}/128",
                ],
                ns=ns,
            )
            ip_batch(
                ns,
                [
                    f"address add {net.v4_a}/24 dev {ifname}",
                    f"address add {net.v6_a}/64 dev {ifname} nodad",
                    f"link set {ifname} up",
                ],
            )
        return proc

    def _wait_ready(self, procs: list[tuple[Proc, Path | None]]) -> None:
        """Wait until every server answers (not just until it says it is ready)."""
        fd4 = str(self.catalog.addresses("outlook.office365.com")[0][0])
        checks = {
            "authdns": ("inet", A.AUTH_DNS_V4, 53, "udp"),
            "isp-resolver": ("inet", A.ISP_RESOLVER_V4, 53, "udp"),
            "frontdoor-1": ("inet", fd4, 443, "tcp"),
            "stun": ("inet", str(self.catalog.teams_relay(4)), A.STUN_PORTS[0], "stun"),
            "home-dns": ("home", A.HOME_LAN.v4_a, 53, "udp"),
            "corp-dns": ("corp", A.CORP_DNS_V4, 53, "udp"),
            "site-web": ("corp", A.CORP_WEB_V4, 80, "tcp"),
            "squid": {
                "cloud": ("inet", A.CLOUD_PROXY_V4, A.PROXY_PORT, "tcp"),
                "site": ("corp", A.CORP_PROXY_V4, A.PROXY_PORT, "tcp"),
                "dc": ("dc", A.DC_PROXY_V4, A.PROXY_PORT, "tcp"),
            }[self.scenario.proxy.where],
            "dc-dns": ("dc", A.DC_DNS_V4, 53, "udp"),
            "dc-web": ("dc", A.DC_WEB_V4, 80, "tcp"),
        }

        def ready(proc: Proc, ready_file: Path | None) -> bool:
            if not proc.alive():
                raise LabError(f"{proc.name} exited during start-up: {proc.tail()}")
            if ready_file is not None and not ready_file.exists():
                return False
            if proc.name in checks:
                return _probe(self.ns[checks[proc.name][0]], *checks[proc.name][1:])
            return True

        for proc, ready_file in procs:
            try:
                wait_until(functools.partial(ready, proc, ready_file), 15, f"{proc.name} to start")
            except LabError as exc:
                raise LabError(f"{exc}; its log ends: {proc.tail() or '(empty)'}") from None

    # ------------------------------------------------------------------
    # link shaping
    def _shape_links(self) -> None:
        by_ns: dict[str, list[tuple[str, str]]] = {}
        for link in ("wifi", "home", "site", "office"):
            if self.scenario.link(link).shaped:
                role, dev = LINK_HOST[link]
                by_ns.setdefault(role, []).append((link, dev))
        for role, links in by_ns.items():
            specs, rules = [], []
            for i, (link, dev) in enumerate(links):
                cfg = self.scenario.link(link)
                q_in, q_out = 10 + 2 * i, 11 + 2 * i
                for q in (q_in, q_out):
                    specs += ["--queue", f"{q}:{cfg.delay_ms:g}:{cfg.jitter_ms:g}:{cfg.loss_pct:g}"]
                rules += [
                    f"-A PREROUTING -i {dev} -j NFQUEUE --queue-num {q_in}",
                    f"-A POSTROUTING -o {dev} -j NFQUEUE --queue-num {q_out}",
                ]
            ready_file = self.dir / f"delay-{role}.ready"
            argv = [self.python, "-m", "tests.lab.servers.delay", *specs, "--ready-file", str(ready_file)]
            proc = self.janitor.start(
                f"delay-{role}", _realtime(argv), ns=self.ns[role], log_dir=self.logs, env=self._server_env()
            )
            wait_until(functools.partial(_started, proc, ready_file), 10, f"delay element in {role}")
            if not proc.alive():
                raise LabError(f"delay element in {role} exited: {proc.tail()}")
            text = "*mangle\n" + "\n".join(rules) + "\nCOMMIT\n"
            run(["iptables-restore", "--noflush"], ns=self.ns[role], input=text)
            run(["ip6tables-restore", "--noflush"], ns=self.ns[role], input=text)

    # ------------------------------------------------------------------
    # the laptop's VPN client (wg-quick style policy routing)
    def _vpn_net(self, gateway: str) -> A.LinkNet:
        """The tunnel pool of the office's gateway or the datacentre's."""
        if gateway == "dc":
            return A.DC_VPN_NET_CGNAT if self.scenario.vpn.cgnat else A.DC_VPN_NET
        return self.scenario.vpn.net

    def _vpn_aggregates6(self) -> list[str]:
        return [A.CORP_V6_AGGREGATE] + ([A.DC_V6_AGGREGATE] if self.scenario.sites.two else [])

    def _vpn_allowed(self) -> list[str]:
        fams = self.scenario.vpn.families
        if self.scenario.vpn.mode == "selective":
            return [A.CORP_V4_INTERNAL] + (self._vpn_aggregates6() if "ipv6" in fams else [])
        return (["0.0.0.0/0"] if "ipv4" in fams else []) + (["::/0"] if "ipv6" in fams else [])

    def _wg_peer(self, gateway: str) -> list[str]:
        """``wg set`` arguments for the peer at ``gateway`` (office or dc)."""
        role, public = ("corp", A.CORP_INET) if gateway == "office" else ("dc", A.DC_INET)
        return [
            "peer",
            self._wg_keys[role][1],
            "endpoint",
            f"{public.v4_b}:{A.WG_PORT}",
            "allowed-ips",
            ",".join(self._vpn_allowed()),
            "persistent-keepalive",
            "25",
        ]

    def vpn_up(self) -> None:
        """Bring the laptop's VPN client up, to the office's gateway (the datacentre's when the office is down
        and the client can fail over)."""
        s = self.scenario
        gateway = "dc" if s.vpn.failover and "office" in self.down and "dc" not in self.down else "office"
        proc = self._start_wg("laptop")
        ifname = f"wg{self.run_id}l"
        ns = self.ns["laptop"]
        fams = s.vpn.families
        key_file = self.dir / "wg-laptop.key"
        run(["wg", "set", ifname, "private-key", str(key_file), "fwmark", str(A.WG_FWMARK), *self._wg_peer(gateway)],
            ns=ns)
        net = self._vpn_net(gateway)
        cmds = [f"address add {net.v4_b}/32 dev {ifname}", f"link set {ifname} mtu 1420 up"]
        if "ipv6" in fams:
            cmds.insert(1, f"address add {net.v6_b}/128 dev {ifname} nodad")
        client = VpnClient(proc=proc, ifname=ifname, families=fams, gateway=gateway)
        if s.vpn.mode == "selective":
            cmds += [f"route add {A.CORP_V4_INTERNAL} dev {ifname}"]
            if "ipv6" in fams:
                cmds += [f"-6 route add {agg} dev {ifname}" for agg in self._vpn_aggregates6()]
        else:
            for fam in fams:
                f = "-4" if fam == "ipv4" else "-6"
                default = "0.0.0.0/0" if fam == "ipv4" else "::/0"
                cmds += [f"{f} route add {default} dev {ifname} table {A.WG_TABLE}"]
                rules = [
                    f"{f} rule add not fwmark {A.WG_FWMARK} table {A.WG_TABLE} pref 32765",
                    f"{f} rule add table main suppress_prefixlength 0 pref 32764",
                ]
                cmds += rules
                client.rules += [r.replace(" add ", " del ", 1) for r in rules]
            for route in self._exclusion_routes():
                cmds.append(route)
                client.routes.append(route.replace(" add ", " del ", 1))
        ip_batch(ns, cmds)
        self.vpn = client
        self._resolv_conf(self._dns_servers())
        if gateway not in self.down:
            self._wait_tunnel()

    def _exclusion_routes(self) -> list[str]:
        """Routes that send excluded prefixes around the tunnel, via the home router."""
        s = self.scenario
        if s.vpn.mode != "split":
            return []
        routes = []
        for fam in s.vpn.exclude_families:
            if fam not in s.vpn.families:
                continue  # that family does not use the tunnel anyway
            if fam == "ipv6" and not s.laptop.ipv6:
                continue
            version = 4 if fam == "ipv4" else 6
            gw = A.HOME_LAN.v4_a if version == 4 else A.HOME_LAN.v6_a
            for prefix in self.catalog.prefixes(s.vpn.exclude, s.vpn.keep, version):
                routes.append(f"{'-4' if version == 4 else '-6'} route add {prefix} via {gw} dev eth0")
        return routes

    def _wait_tunnel(self) -> None:
        assert self.vpn is not None
        target = A.DC_DNS_V4 if self.vpn.gateway == "dc" else A.CORP_DNS_V4

        def ping() -> bool:
            return run(["ping", "-c", "1", "-W", "1", target], ns=self.ns["laptop"], check=False).ok

        wait_until(ping, 10, "the VPN tunnel to pass traffic", interval=0.1)

    def vpn_drop(self) -> None:
        """The VPN client gives up: tunnel, its routes and its DNS are removed."""
        if self.vpn is None:
            return
        self.janitor.stop(self.vpn.proc)
        ip_batch(self.ns["laptop"], self.vpn.rules + self.vpn.routes, force=True)
        self.vpn = None
        self._resolv_conf(self._dns_servers())

    # ------------------------------------------------------------------
    # the outage
    def site_down(self, down: Sequence[str] = ("office",)) -> None:
        """Cut sites off (the office alone in a single-site world): every link of each, so its VPN gateway,
        DNS, proxy, PAC and AD FS are gone for everyone, the other site included.

        A laptop on the office LAN goes home when the office is down; a branch laptop stays at the branch
        (with nothing left when the datacentre is down). A VPN client that can fail over (``vpn.failover``)
        moves to the datacentre's gateway when the office's is gone and the datacentre is not.
        """
        cut = {"office": [("inet", "corp0"), ("corp", "wan0")], "dc": [("inet", "dc0"), ("dc", "wan0"), ("dc", "lan0")]}
        if self.scenario.sites.two:
            cut["office"] += [("corp", "dc0"), ("dc", "corp0")]
            cut["dc"] += [("dc", "corp0"), ("corp", "dc0")]
        for site in down:
            for role, dev in cut[site]:
                run(["ip", "-n", self.ns[role], "link", "set", dev, "down"])
        self.down |= set(down)
        if "office" in down and self.location == "office":
            self.relocate_home()
        elif self.vpn is not None and self.vpn.gateway in self.down and self.scenario.vpn.failover:
            if "dc" not in self.down:
                self.vpn_failover()

    def service_down(self, service_area: str) -> None:
        """Microsoft's side of one service area (``Exchange``) refuses everyone: the inet namespace rejects
        TCP with a reset, and anything else with ICMP, to the lab prefixes of that area's endpoint sets (those
        shared with another area's sets stay up) and to the addresses the lab's DNS gives that area's names
        (a name without published prefixes lives on the shared CDN range)."""
        area = [s for s in self.catalog.sets if s.service_area == service_area]
        if not area:
            raise LabError(f"no endpoint set has the service area {service_area!r}")
        others = [s.id for s in self.catalog.sets if s.service_area != service_area]
        targets = self.catalog.prefixes([s.id for s in area], keep=others)
        for name in dict.fromkeys(self.catalog.concretize(u) for s in area for u in s.urls):
            targets += [a for family in self.catalog.addresses(name) for a in family]
        filter4: list[str] = []
        filter6: list[str] = []
        for target in dict.fromkeys(targets):
            rules, icmp = (filter6, "icmp6-port-unreachable") if ":" in target else (filter4, "icmp-port-unreachable")
            rules += [f"-A INPUT -d {target} -p tcp -j REJECT --reject-with tcp-reset",
                      f"-A INPUT -d {target} -j REJECT --reject-with {icmp}"]
        self._iptables("inet", filter4=filter4, filter6=filter6)

    def vpn_failover(self) -> None:
        """The lab's model of a failover-capable VPN client: the office's gateway is gone, so the client
        replaces its peer with the datacentre's gateway and takes an address from that gateway's pool.
        The tunnel interface, its routes, policy rules, exclusions and DNS settings stay."""
        assert self.vpn is not None
        ifname, ns = self.vpn.ifname, self.ns["laptop"]
        run(["wg", "set", ifname, "peer", self._wg_keys["corp"][1], "remove"], ns=ns)
        run(["wg", "set", ifname, *self._wg_peer("dc")], ns=ns)
        old, new = self._vpn_net("office"), self._vpn_net("dc")
        cmds = [f"address add {new.v4_b}/32 dev {ifname}", f"address del {old.v4_b}/32 dev {ifname}"]
        if "ipv6" in self.vpn.families:  # add before delete: the last address going would flush the routes
            cmds = [
                f"-6 address add {new.v6_b}/128 dev {ifname} nodad",
                *cmds,
                f"-6 address del {old.v6_b}/128 dev {ifname}",
            ]
        ip_batch(ns, cmds)
        self.vpn.gateway = "dc"
        self._wait_tunnel()

    def relocate_home(self) -> None:
        """The person takes the laptop home (the office LAN is gone with the site)."""
        self._laptop_uplink("home")
        self._resolv_conf(self._dns_servers())
        if self.scenario.vpn.enabled:
            self.vpn_up()

    # ------------------------------------------------------------------
    # running things on the laptop
    def site_profile_file(self) -> Path:
        """netcheck's site profile for this world (written on first use)."""
        path = self.dir / "site-profile.toml"
        if not path.exists():
            s = self.scenario
            if s.sites.two:
                text = services.two_site_profile(s)
            else:
                text = services.site_profile(s.proxy.pac_unreachable, s.vpn.mode, s.vpn.exclude)
            path.write_text(text)
            path.chmod(0o644)
        return path

    def tool(self, name: str) -> Path:
        """A truth tool's copy in the run directory (readable by the laptop's user)."""
        return self.dir / "tools" / name

    def laptop_env(self) -> dict[str, str]:
        """The laptop's environment: its user's dirs, trust stores and OS proxy settings."""
        s = self.scenario
        assert self.pki is not None
        home = str(self.user_home)
        env = {
            "PATH": f"{Path(self.python).parent}:/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "USER": "nobody",
            "LOGNAME": "nobody",
            "LANG": "C.UTF-8",
            "TMPDIR": f"{home}/tmp",
            "XDG_CACHE_HOME": f"{home}/.cache",
            "XDG_CONFIG_HOME": f"{home}/.config",
            "XDG_DATA_HOME": f"{home}/.local/share",
            "SSL_CERT_FILE": str(self.pki.machine_roots),
            "CURL_CA_BUNDLE": str(self.pki.machine_roots),
            "NETCHECK_PUBLIC_ROOTS": str(self.pki.public_roots),
            "NETCHECK_TEAMS_RELAY": A.TEAMS_RELAY_NAME,
        }
        if s.proxy.mode == "explicit":
            proxy = f"http://{s.proxy.name}:{A.PROXY_PORT}"
            no_proxy = services.no_proxy(self.catalog.url_patterns(s.proxy.direct), s.netcheck.tenant)
            for key in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
                env[key] = proxy
            env["NO_PROXY"] = env["no_proxy"] = no_proxy
        elif s.proxy.mode == "pac":
            env["NETCHECK_PAC_URL"] = s.proxy.pac_url
        env.update(s.netcheck.env)
        return env

    def laptop_argv(self, argv: Sequence[str], *, as_user: bool = True) -> list[str]:
        prefix = ["ip", "netns", "exec", self.ns["laptop"]]
        if as_user:
            prefix += [
                "setpriv",
                f"--reuid={LAPTOP_UID}",
                f"--regid={LAPTOP_GID}",
                "--clear-groups",
                "--no-new-privs",
                "--",
            ]
        return prefix + list(argv)

    def laptop_run(
        self, argv: Sequence[str], *, timeout: float = 60, as_user: bool = True, env: dict[str, str] | None = None
    ) -> Result:
        full = self.laptop_argv(argv, as_user=as_user)
        return run(full, check=False, timeout=timeout, env=env if env is not None else self.laptop_env())

    def laptop_popen(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.laptop_argv(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env if env is not None else self.laptop_env(),
            start_new_session=True,
        )


def _started(proc: Proc, ready_file: Path) -> bool:
    return ready_file.exists() or not proc.alive()


def _realtime(argv: list[str]) -> list[str]:
    """Run the delay element at real-time priority so that a busy CPU does not
    stretch the link's delay (falls back to a high nice level)."""
    if shutil.which("chrt") and run(["chrt", "--fifo", "10", "true"], check=False).ok:
        return ["chrt", "--fifo", "10", *argv]
    return ["nice", "-n", "-10", *argv]


def _stateful_inbound(wan: str, allowed: Sequence[str]) -> list[str]:
    """Filter rules: from ``wan`` only replies, ICMP and the ``allowed`` matches."""
    rules = [
        f"-A INPUT -i {wan} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
        f"-A FORWARD -i {wan} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
    ]
    for chain in ("INPUT", "FORWARD"):
        rules += [f"-A {chain} -i {wan} -p icmp -j ACCEPT", f"-A {chain} -i {wan} -p ipv6-icmp -j ACCEPT"]
        rules += [f"-A {chain} -i {wan} {a} -j ACCEPT" for a in allowed]
        rules.append(f"-A {chain} -i {wan} -j DROP")
    return rules


def _probe(ns: str, addr: str, port: int, proto: str) -> bool:
    """Is something answering at addr:port inside ``ns``?  (tcp: connect; udp: a
    DNS query for "." NS; stun: a Binding request.)"""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with entered(ns):
        sock = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    queries = {
        "udp": b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x01",
        "stun": b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x12\x34" + b"\x00" * 10,
    }
    with contextlib.closing(sock):
        sock.settimeout(0.3)
        try:
            if proto == "tcp":
                sock.connect((addr, port))
                return True
            sock.sendto(queries[proto], (addr, port))
            reply = sock.recv(512)
        except OSError:
            return False
        return reply[:2] == b"\x12\x34" if proto == "udp" else reply[8:10] == b"\x12\x34"
