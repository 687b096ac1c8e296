"""The lab's address plan.  Only documentation/benchmark ranges and private
ranges inside lab namespaces are used; see docs/lab.md for the picture.

    laptop --wifi-- home --home-- inet --site-- corp
       \\___________________office_______________/   (laptop.location = "office")

A two-site world (a ``[dc]`` table in the scenario) adds the datacentre:

    inet --dc-- dc --wan-- corp        laptop --branch-- dc   (laptop.location = "branch")
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address


@dataclass(frozen=True)
class LinkNet:
    """A point-to-point or LAN link: (router side, host side) in both families."""

    v4_net: str
    v4_a: str
    v4_b: str
    v6_net: str
    v6_a: str
    v6_b: str

    @property
    def v4_len(self) -> int:
        return ipaddress.ip_network(self.v4_net).prefixlen

    @property
    def v6_len(self) -> int:
        return ipaddress.ip_network(self.v6_net).prefixlen


# --- links (a = the side nearer the internet core) -------------------------
HOME_INET = LinkNet(
    "203.0.113.0/30", "203.0.113.1", "203.0.113.2", "2001:db8:ff01::/64", "2001:db8:ff01::1", "2001:db8:ff01::2"
)
CORP_INET = LinkNet(
    "198.51.100.0/30", "198.51.100.1", "198.51.100.2", "2001:db8:ff02::/64", "2001:db8:ff02::1", "2001:db8:ff02::2"
)
HOME_LAN = LinkNet(
    "192.168.1.0/24", "192.168.1.1", "192.168.1.100", "2001:db8:a001::/64", "2001:db8:a001::1", "2001:db8:a001::100"
)
OFFICE_LAN = LinkNet(
    "10.20.0.0/24", "10.20.0.1", "10.20.0.100", "2001:db8:c001::/64", "2001:db8:c001::1", "2001:db8:c001::100"
)
VPN_NET = LinkNet(
    "10.66.0.0/24", "10.66.0.1", "10.66.0.2", "2001:db8:c066::/64", "2001:db8:c066::1", "2001:db8:c066::2"
)
#: The same tunnel in RFC 6598 shared address space, as many VPN products number theirs (`[vpn] cgnat`).
VPN_NET_CGNAT = LinkNet(
    "100.64.66.0/24", "100.64.66.1", "100.64.66.2", "2001:db8:c066::/64", "2001:db8:c066::1", "2001:db8:c066::2"
)

# --- the datacentre (two-site worlds) ----------------------------------------
DC_INET = LinkNet(
    "198.51.100.4/30", "198.51.100.5", "198.51.100.6", "2001:db8:ff03::/64", "2001:db8:ff03::1", "2001:db8:ff03::2"
)
#: The private WAN link between the office and the datacentre (a = the office).
CORP_DC = LinkNet(
    "10.99.0.0/30", "10.99.0.1", "10.99.0.2", "2001:db8:ff10::/64", "2001:db8:ff10::1", "2001:db8:ff10::2"
)
#: A branch office LAN whose only link is the datacentre (a = the datacentre).
BRANCH_LAN = LinkNet(
    "10.30.0.0/24", "10.30.0.1", "10.30.0.100", "2001:db8:d001::/64", "2001:db8:d001::1", "2001:db8:d001::100"
)
#: The datacentre gateway's tunnel pool: a failover-capable client gets an address from the gateway it uses.
DC_VPN_NET = LinkNet(
    "10.67.0.0/24", "10.67.0.1", "10.67.0.2", "2001:db8:d066::/64", "2001:db8:d066::1", "2001:db8:d066::2"
)
DC_VPN_NET_CGNAT = LinkNet(
    "100.64.67.0/24", "100.64.67.1", "100.64.67.2", "2001:db8:d066::/64", "2001:db8:d066::1", "2001:db8:d066::2"
)
#: What each site owns in a two-site world (the single-site world keeps CORP_V4_INTERNAL for the office).
OFFICE_V4_SITE = "10.20.0.0/16"
DC_V4_SITE = "10.30.0.0/16"
DC_V6_AGGREGATE = "2001:db8:d000::/40"

#: Prefixes each site owns, routed to it by the internet core.
HOME_V6_AGGREGATE = "2001:db8:a000::/40"
CORP_V6_AGGREGATE = "2001:db8:c000::/40"
CORP_V4_INTERNAL = "10.0.0.0/8"

# --- internet core services (in `inet`, on its loopback) -------------------
AUTH_DNS_V4 = "192.0.2.53"
AUTH_DNS_V6 = "2001:db8:53::53"
ISP_RESOLVER_V4 = "192.0.2.10"
ISP_RESOLVER_V6 = "2001:db8:53::10"

#: Microsoft 365 front doors: every address in these is local in `inet` (AnyIP).
FRONTDOOR_V4 = "198.18.0.0/15"
FRONTDOOR_V6 = "2001:db8:f000::/36"
#: Published prefixes are mapped one by one into these pools.
MAPPED_V4_POOL = "198.18.0.0/16"
MAPPED_V6_POOL = "2001:db8:f000::/40"
#: Names of endpoint sets that publish no addresses resolve into the "CDN".
CDN_V4 = "198.19.0.0/16"
CDN_V6 = "2001:db8:fcd0::/48"

# --- the corporate site's internal services (in `corp`, on its loopback) ----
CORP_DNS_V4, CORP_DNS_V6 = "10.20.1.53", "2001:db8:c0ff::53"
CORP_PROXY_V4, CORP_PROXY_V6 = "10.20.1.31", "2001:db8:c0ff::31"
CORP_WEB_V4, CORP_WEB_V6 = "10.20.1.80", "2001:db8:c0ff::80"
CORP_ADFS_V4, CORP_ADFS_V6 = "10.20.1.43", "2001:db8:c0ff::43"
# --- the datacentre's services (in `dc`, on its loopback) ----------------------
DC_DNS_V4, DC_DNS_V6 = "10.30.1.53", "2001:db8:d0ff::53"
DC_PROXY_V4, DC_PROXY_V6 = "10.30.1.31", "2001:db8:d0ff::31"
DC_WEB_V4, DC_WEB_V6 = "10.30.1.80", "2001:db8:d0ff::80"
DC_ADFS_V4, DC_ADFS_V6 = "10.30.1.43", "2001:db8:d0ff::43"
PROXY_PORT = 3128
WG_PORT = 51820
WG_FWMARK = 51820
WG_TABLE = 51820

# --- names ------------------------------------------------------------------
CORP_DOMAIN = "corp.example"
USER_DOMAIN = "contoso.example"
WHOAMI_NAME = "whoami.lab.example"
TEAMS_RELAY_NAME = "worldaz.tr.teams.microsoft.com"
PROXY_NAME = f"proxy.{CORP_DOMAIN}"
PAC_NAME = f"pac.{CORP_DOMAIN}"
ADFS_NAME = f"adfs.{CORP_DOMAIN}"
INTRANET_NAME = f"intranet.{CORP_DOMAIN}"
VPN_NAME = f"vpn.{CORP_DOMAIN}"
VPN2_NAME = f"vpn2.{CORP_DOMAIN}"  # the datacentre's gateway
PAC_URL = f"http://{PAC_NAME}/proxy.pac"

# --- beyond the site: services on the internet that are not Microsoft's ------
#: A cloud identity provider that sign-in is federated to (served by the front doors, AnyIP in `inet`,
#: outside every mapped and CDN prefix).
CLOUD_IDP_NAME = "sts.cloudidp.example"
CLOUD_IDP_V4, CLOUD_IDP_V6 = "198.19.255.43", "2001:db8:fc1d::43"
#: A cloud security proxy (squid in `inet`) and its PAC file, served over HTTPS by the front doors.
CLOUD_DOMAIN = "cloudproxy.example"
CLOUD_PROXY_NAME = f"proxy.{CLOUD_DOMAIN}"
CLOUD_PROXY_V4, CLOUD_PROXY_V6 = "198.19.255.31", "2001:db8:fc1d::31"
CLOUD_PAC_NAME = f"pac.{CLOUD_DOMAIN}"
CLOUD_PAC_V4, CLOUD_PAC_V6 = "198.19.255.80", "2001:db8:fc1d::80"
CLOUD_PAC_URL = f"https://{CLOUD_PAC_NAME}/contoso.pac"
#: The site's own PAC file (for its proxy) hosted on the internet, on the same PAC host (`proxy.pac_where`).
SITE_PAC_INTERNET_URL = f"https://{CLOUD_PAC_NAME}/contoso-site.pac"

#: Teams media (STUN/TURN) ports on the relay.
STUN_PORTS = (3478, 3479, 3480, 3481)
