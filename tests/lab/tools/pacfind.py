"""Evaluate a PAC file with pacparser (Debian's python3-pacparser): a lab truth tool.

Runs under the system Python (/usr/bin/python3), inside the laptop's
namespace so that ``dnsResolve`` uses the laptop's resolver::

    /usr/bin/python3 pacfind.py PAC_FILE URL [URL...] [--my-ip ADDRESS]

Prints a JSON object mapping each URL to the PAC result string
(e.g. ``"PROXY proxy.corp.example:3128; DIRECT"``), or to ``"ERROR: ..."``.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
import warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="evaluate a PAC file for URLs")
    parser.add_argument("pac")
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--my-ip")
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pacparser
        except ImportError:
            print(json.dumps({"error": "python3-pacparser is not installed"}))
            return 2
    pacparser.init()
    try:
        if args.my_ip:
            pacparser.setmyip(args.my_ip)
        pacparser.parse_pac_file(args.pac)
        out = {}
        for url in args.urls:
            host = urllib.parse.urlsplit(url).hostname or ""
            try:
                out[url] = pacparser.find_proxy(url, host)
            except Exception as exc:  # pacparser raises bare Exception
                out[url] = f"ERROR: {exc}"
    except Exception as exc:
        out = {"error": f"cannot parse PAC: {exc}"}
    finally:
        pacparser.cleanup()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
