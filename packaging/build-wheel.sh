#!/usr/bin/env bash
# Build the wheel and the sdist, then a wheelhouse: the wheel plus every dependency as a
# wheel, so laptops and the collector install with `pip install --no-index --find-links`.
#
#   packaging/build-wheel.sh [OUT]        (default OUT: dist/)
#
# OUT/netcheck_m365-VERSION-py3-none-any.whl, OUT/netcheck_m365-VERSION.tar.gz and
# OUT/wheelhouse/ (with the collector extra's dependencies too). PYTHON picks the Python that
# has hatchling and pip (default: .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-dist}")
python=${PYTHON:-.venv/bin/python}
mkdir -p "$out"
rm -f "$out"/netcheck_m365-*
"$python" -m hatchling build -d "$out" >/dev/null
wheel=$(ls "$out"/netcheck_m365-*.whl)
# dependencies come from the package index once, then from pip's cache
"$python" -m pip wheel -q --wheel-dir "$out/wheelhouse" "$wheel[collector]" 2>&1 | grep -v "^WARNING: Location" || true
ls "$out"/netcheck_m365-* "$out/wheelhouse/$(basename "$wheel")" >/dev/null
