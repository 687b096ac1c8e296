#!/usr/bin/env bash
# Stage the Intune Win32 app folder: packaging/windows/stage.sh NETCHECK_EXE OUT
# Copies the Windows executable (built on Windows with packaging/pyinstaller) and the scripts,
# with @VERSION@ replaced by netcheck's version (netcheck/__init__.py). Then, on Windows:
#   IntuneWinAppUtil.exe -c OUT -s Install-Netcheck.ps1 -o .
# Put the enrollment secret in OUT/enroll-secret.txt first (packaging/README.md, "Windows").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
exe=$1
out=$2
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$here/../../netcheck/__init__.py")
mkdir -p "$out"
cp "$exe" "$out/netcheck.exe"
cp "$here/netcheck-agent-task.xml" "$out/"
for script in Install-Netcheck.ps1 Uninstall-Netcheck.ps1 Detect-Netcheck.ps1 Invoke-NetcheckAgent.ps1; do
    sed "s/@VERSION@/$version/g" "$here/$script" > "$out/$script"
done
