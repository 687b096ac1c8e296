#!/usr/bin/env bash
# Build the single-file agent executable: OUT/netcheck (default OUT: dist/).
#
#   packaging/pyinstaller/build.sh [OUT]
#
# PYTHON: a Python with netcheck and PyInstaller installed (default: .venv/bin/python;
# packaging/requirements-build.txt). Build on the oldest OS you support: the executable needs
# that OS's C library or newer. Windows and macOS: run the same spec there (packaging/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(realpath -m "${1:-dist}")
python=${PYTHON:-.venv/bin/python}
work=$(realpath -m "${PYINSTALLER_WORKPATH:-build/pyinstaller}")
"$python" -m PyInstaller --noconfirm --clean --log-level WARN --distpath "$out" --workpath "$work" \
    packaging/pyinstaller/netcheck.spec 2>&1 | grep -v -e "DeprecationWarning" -e "^  key" || true
test -x "$out/netcheck"
