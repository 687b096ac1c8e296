#!/bin/sh
# Build the macOS installer package (on a Mac): packaging/macos/build-pkg.sh NETCHECK_EXE OUT_DIR
# NETCHECK_EXE: the executable built on macOS with packaging/pyinstaller/build.sh. Sign it and the
# package (codesign, productsign) and notarize them before deploying (packaging/README.md).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$here/../../netcheck/__init__.py")
root=$(mktemp -d)
mkdir -p "$root/usr/local/netcheck" "$root/Library/LaunchAgents"
cp "$1" "$root/usr/local/netcheck/netcheck"
cp "$here/netcheck-agent-run" "$root/usr/local/netcheck/netcheck-agent-run"
cp "$here/org.netcheck.agent.plist" "$root/Library/LaunchAgents/"
chmod 0755 "$root/usr/local/netcheck/netcheck" "$root/usr/local/netcheck/netcheck-agent-run" "$here/scripts/"*
mkdir -p "$2"
pkgbuild --root "$root" --scripts "$here/scripts" --identifier org.netcheck.agent.pkg --version "$version" \
    --install-location / "$2/netcheck-$version.pkg"
rm -rf "$root"
