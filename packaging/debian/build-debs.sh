#!/usr/bin/env bash
# Build the two Debian packages from staged trees with dpkg-deb (no debhelper):
#
#   packaging/debian/build-debs.sh EXE WHEELHOUSE [OUT]      (default OUT: dist/)
#
#   netcheck-agent_VERSION_ARCH.deb      the single-file executable EXE as /usr/bin/netcheck,
#                                        a system service running `netcheck agent` as user netcheck
#   netcheck-collector_VERSION_ARCH.deb  a virtual environment in /opt/netcheck-collector built
#                                        from WHEELHOUSE (packaging/build-wheel.sh) with Debian's
#                                        python3, a service running `netcheck serve` as user
#                                        netcheck-collector, data in /var/lib/netcheck-collector
#
# The version is netcheck's (netcheck/__init__.py). Run as root, or under fakeroot.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
exe=$(realpath "$1")
wheelhouse=$(realpath "$2")
out=$(realpath -m "${3:-$root/dist}")
python=${DEB_PYTHON:-/usr/bin/python3}
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/netcheck/__init__.py")
arch=$(dpkg --print-architecture)
pyver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

doc() {  # doc PACKAGE STAGE: README and copyright
    install -D -m 0644 "$root/packaging/README.md" "$2/usr/share/doc/$1/README.md"
    printf 'netcheck (%s)\nLicense: MIT\n' "$1" > "$2/usr/share/doc/$1/copyright"
}

maintainer_scripts() {  # maintainer_scripts SRC STAGE
    for s in postinst prerm postrm; do
        install -m 0755 "$1/$s" "$2/DEBIAN/$s"
    done
}

# --- agent ---------------------------------------------------------------------------------
a="$work/agent"
install -D -m 0755 "$exe" "$a/usr/bin/netcheck"
install -D -m 0644 "$here/agent/netcheck-agent.service" "$a/lib/systemd/system/netcheck-agent.service"
install -D -m 0755 "$here/agent/enroll-if-needed" "$a/usr/lib/netcheck-agent/enroll-if-needed"
install -D -m 0644 "$here/agent/default" "$a/etc/default/netcheck-agent"
doc netcheck-agent "$a"
mkdir -p "$a/DEBIAN"
maintainer_scripts "$here/agent" "$a"
echo /etc/default/netcheck-agent > "$a/DEBIAN/conffiles"
cat > "$a/DEBIAN/control" <<CONTROL
Package: netcheck-agent
Version: $version
Architecture: $arch
Maintainer: netcheck maintainers <netcheck@example.invalid>
Section: net
Priority: optional
Depends: libc6 (>= 2.31), passwd
Installed-Size: $(du -sk "$a" | cut -f1)
Homepage: https://example.invalid/netcheck
Description: Microsoft 365 readiness checks for laptops, with a fleet agent
 netcheck checks DNS, latency, proxy and split-tunnel VPN paths to Microsoft 365
 and predicts whether this machine keeps working if its office or data centre
 goes down. This package is the single-file executable (no Python needed) and a
 system service that runs "netcheck agent" as the unprivileged user netcheck.
CONTROL
dpkg-deb --root-owner-group -Zgzip -z6 --build "$a" "$out/netcheck-agent_${version}_${arch}.deb" >/dev/null

# --- collector -----------------------------------------------------------------------------
c="$work/collector"
venv=/opt/netcheck-collector
"$python" -m venv "$c$venv"
"$c$venv/bin/python" -m pip install -q --no-index --find-links "$wheelhouse" "netcheck-m365[collector]==$version" \
    2>&1 | grep -v "^WARNING: Location" || true
"$c$venv/bin/python" -m pip uninstall -q -y pip 2>/dev/null || true
# the environment was built in the staging tree: point its scripts at where it is installed
grep -rlI --null "$c$venv" "$c$venv/bin" | xargs -0 -r sed -i "s|$c$venv|$venv|g"
rm -f "$c$venv"/bin/activate* "$c$venv"/bin/Activate.ps1
# byte-code compiled now, with the installed paths (the service user cannot write there)
find "$c$venv" -name __pycache__ -prune -exec rm -rf {} +
"$c$venv/bin/python" -m compileall -q -d "$venv/lib" "$c$venv/lib" >/dev/null || true
install -D -m 0644 "$here/collector/netcheck-collector.service" "$c/lib/systemd/system/netcheck-collector.service"
install -D -m 0755 "$here/collector/netcheck-collector" "$c/usr/sbin/netcheck-collector"
install -D -m 0640 "$here/collector/collector.env" "$c/etc/netcheck-collector/collector.env"
doc netcheck-collector "$c"
mkdir -p "$c/DEBIAN"
maintainer_scripts "$here/collector" "$c"
echo /etc/netcheck-collector/collector.env > "$c/DEBIAN/conffiles"
cat > "$c/DEBIAN/control" <<CONTROL
Package: netcheck-collector
Version: $version
Architecture: $arch
Maintainer: netcheck maintainers <netcheck@example.invalid>
Section: net
Priority: optional
Depends: python$pyver, libpython$pyver-stdlib, passwd
Installed-Size: $(du -sk "$c" | cut -f1)
Homepage: https://example.invalid/netcheck
Description: netcheck fleet collector (web service)
 Receives the reports of netcheck agents and serves the fleet's view. A Python
 virtual environment in /opt/netcheck-collector (Debian's python$pyver) and a
 systemd service running "netcheck serve" as the unprivileged user
 netcheck-collector, with SQLite in /var/lib/netcheck-collector or PostgreSQL.
CONTROL
dpkg-deb --root-owner-group -Zgzip -z6 --build "$c" "$out/netcheck-collector_${version}_${arch}.deb" >/dev/null
ls "$out/netcheck-agent_${version}_${arch}.deb" "$out/netcheck-collector_${version}_${arch}.deb"
