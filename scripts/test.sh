#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian 12 machine, then run
# the linters and the whole suite (unit, loopback servers, the namespace lab,
# PostgreSQL, headless Chromium). Run as root: apt and the lab need it.
set -euo pipefail
cd "$(dirname "$0")/.."

packages() { cat .ci/apt-packages.txt .ci/lab-apt-packages.txt 2>/dev/null | sed 's/#.*//' | xargs; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  missing=$(for p in $(packages); do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done | xargs)
  if [ -n "$missing" ]; then
    echo "== apt-get install: $missing"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

# The lab runs netcheck as a standard user (nobody), as on a laptop: every directory
# above this checkout must let that user through (execute permission only).
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  d="$PWD"
  while [ "$d" != "/" ]; do
    setpriv --reuid=65534 --regid=65534 --clear-groups test -x "$d" 2>/dev/null || chmod o+x "$d"
    d=$(dirname "$d")
  done
fi

if [ ! -x .venv/bin/python ]; then
  # Debian's own Python: every user can run it, which the lab needs (netcheck
  # runs there as a standard user, as on a laptop).
  py=python3
  [ -x /usr/bin/python3 ] && py=/usr/bin/python3
  "$py" -m venv .venv
fi
echo "== pip install"
.venv/bin/pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
extra=""
[ -f .ci/lab-pip-packages.txt ] && extra="-r .ci/lab-pip-packages.txt"
# building the packages: hatchling, PyInstaller, a PowerShell parser (tests/packaging)
[ -f packaging/requirements-build.txt ] && extra="$extra -r packaging/requirements-build.txt"
.venv/bin/pip install -q -e '.[collector,test]' $extra 2>&1 | grep -v "^WARNING: Location" || true

# Byte-compile now: the lab runs netcheck as a standard user, who cannot write __pycache__.
.venv/bin/python -m compileall -q netcheck >/dev/null

echo "== ruff"
.venv/bin/ruff check netcheck tests bench
echo "== mypy (strict)"
.venv/bin/mypy
echo "== pytest"
# --durations: the slowest tests, so that the CI time (kept under 40 minutes) can be watched
.venv/bin/python -m pytest -q -ra --durations=15 "$@"
