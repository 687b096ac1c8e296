#!/usr/bin/env bash
# Restore a backup made by backup.sh: restore.sh BACKUP_FILE DATABASE_URL
#
#   PostgreSQL: into an existing, empty database (createdb first), in one transaction: a failed
#     restore leaves the database empty. Objects are owned by the user in DATABASE_URL.
#   SQLite: copies the backup to the database path, which must not exist (stop the collector first).
#
# Then start the collector on DATABASE_URL: it migrates an older backup's schema by itself.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 BACKUP_FILE DATABASE_URL" >&2
    exit 4
fi
backup=$1
url=$2
case "$url" in
    postgresql*)
        libpq=${url/#postgresql+psycopg:/postgresql:}
        pg_restore --exit-on-error --single-transaction --no-owner --no-privileges --dbname="$libpq" "$backup"
        ;;
    sqlite:///*)
        db=${url#sqlite:///}
        if [ -e "$db" ]; then
            echo "restore.sh: $db exists: move it away first" >&2
            exit 4
        fi
        cp "$backup" "$db.partial"
        mv "$db.partial" "$db"
        ;;
    *)
        echo "restore.sh: unsupported database URL (postgresql+psycopg://... or sqlite:///...)" >&2
        exit 4
        ;;
esac
