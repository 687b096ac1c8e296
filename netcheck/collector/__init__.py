"""The fleet collector: enrollment, report ingest, policy and sweeps over HTTP, and its admin CLI.

``netcheck serve`` runs it (``cli.py``); ``app.create_app(settings)`` is the ASGI app.
Needs the ``collector`` extra (Starlette, uvicorn, SQLAlchemy, Alembic, psycopg, jsonschema-rs).
"""
