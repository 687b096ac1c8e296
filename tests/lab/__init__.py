"""netcheck's network lab: a home, a corporate site and a Microsoft 365 world
in network namespaces, with real VPN, DNS, proxy and web servers.

Run ``python -m tests.lab --help`` (as root) and read docs/lab.md.
"""
