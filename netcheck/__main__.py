"""``python -m netcheck``, and the frozen executable's entry point (packaging/pyinstaller)."""

import sys

if sys.argv[1:] == ["--pac-sandbox-child"]:  # netcheck.proxy.pac.CHILD_ARG: a frozen build's PAC child
    from netcheck.proxy.pac import serve

    raise SystemExit(serve(sys.stdin, sys.stdout))

from netcheck.cli import main  # noqa: E402

main()
