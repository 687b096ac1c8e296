"""Alembic environment: always run programmatically by ``netcheck.collector.db.migrate``.

The caller hands over an open connection in ``config.attributes["connection"]``; there is no
``alembic.ini`` and no offline mode.
"""

from __future__ import annotations

from alembic import context

from netcheck.collector.db import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by running the alembic CLI by hand
    raise SystemExit("run migrations with `netcheck serve` or netcheck.collector.db.migrate()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
