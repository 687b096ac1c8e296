#!/usr/bin/env bash
# Back up the collector's database while it runs: backup.sh DATABASE_URL BACKUP_FILE
#
#   PostgreSQL (postgresql+psycopg://user@host:port/db): pg_dump in its custom format. The dump is
#     one consistent snapshot taken when pg_dump starts: every report acknowledged (HTTP 200)
#     before then is in it; uploads go on meanwhile. Password: ~/.pgpass or PGPASSWORD.
#   SQLite (sqlite:////var/lib/netcheck-collector/collector.db): SQLite's online backup, run by
#     PYTHON (default: the collector's /opt/netcheck-collector/bin/python, else python3).
#
# The file appears only when complete (written beside it, then renamed). Restore: restore.sh.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 DATABASE_URL BACKUP_FILE" >&2
    exit 4
fi
url=$1
out=$2
tmp="$out.partial"
case "$url" in
    postgresql*)
        libpq=${url/#postgresql+psycopg:/postgresql:}
        pg_dump --format=custom --no-owner --no-privileges --file="$tmp" --dbname="$libpq"
        ;;
    sqlite:///*)
        db=${url#sqlite:///}
        python=${PYTHON:-/opt/netcheck-collector/bin/python}
        [ -x "$python" ] || python=python3
        "$python" - "$db" "$tmp" <<'PY'
import sqlite3, sys
src = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
dst = sqlite3.connect(sys.argv[2])
with dst:
    src.backup(dst)
dst.close()
src.close()
PY
        ;;
    *)
        echo "backup.sh: unsupported database URL (postgresql+psycopg://... or sqlite:///...)" >&2
        exit 4
        ;;
esac
mv "$tmp" "$out"
