"""``netcheck serve`` and ``netcheck admin``: parse, wire, print. The work is in store/app."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import socket
import ssl
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from netcheck.collector import store
from netcheck.collector.db import make_engine, migrate
from netcheck.collector.export import to_csv, to_json
from netcheck.collector.settings import DEFAULT_MAX_BODY, Settings
from netcheck.collector.supervision import SUPERVISOR_ENV
from netcheck.collector.web import accounts
from netcheck.errors import ConfigError, NetcheckError
from netcheck.paths import atomic_write

F = TypeVar("F", bound=Callable[..., Any])

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<invalid URL>"


def _database_option(fn: F) -> F:
    return click.option("--database-url", envvar="NETCHECK_DATABASE_URL", default=None, metavar="URL",
                        help="sqlite:///path or postgresql://user@host/db (env NETCHECK_DATABASE_URL; "
                             "default: SQLite in your data directory).")(fn)


@contextmanager
def _errors() -> Iterator[None]:
    """Known errors become one line and exit 4 (click's ClickException, see netcheck.cli.main)."""
    try:
        yield
    except NetcheckError as exc:
        raise click.ClickException(str(exc)) from exc
    except sa.exc.SQLAlchemyError as exc:
        raise click.ClickException(f"database error: {str(exc).splitlines()[0][:300]}") from exc


@contextmanager
def _engine(database_url: str | None) -> Iterator[Engine]:
    """The collector's database, migrated; errors become one line (``_errors``)."""
    settings = Settings.from_env(database_url=database_url)
    with _errors():
        engine = make_engine(settings.database_url, pool_size=1, max_overflow=0, timeout_s=settings.db_timeout_s)
        try:
            try:
                migrate(engine)
            except sa.exc.SQLAlchemyError as exc:
                raise ConfigError(f"cannot open the database {_redact(settings.database_url)}: "
                                  f"{str(exc).splitlines()[0][:300]}") from exc
            yield engine
        finally:
            engine.dispose()


@contextmanager
def _connection(database_url: str | None) -> Iterator[Connection]:
    """One transaction on the collector's database."""
    with _engine(database_url) as engine, engine.begin() as conn:
        yield conn


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def parse_duration(text: str) -> dt.timedelta:
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) == 0:
        raise click.BadParameter(f"{text!r} is not a duration such as 90m, 48h or 7d")
    return dt.timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def parse_tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$", key) or not 0 < len(value) <= 128:
        raise click.BadParameter(f"{text!r} is not a tag such as site=paris")
    return key, value


# --- serve -------------------------------------------------------------------------------------

@click.command("serve")
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default 8443; 0 picks a free one).")
@_database_option
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM certificate chain: serve HTTPS (TLS 1.2 or newer) directly.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None, help="PEM private key.")
@click.option("--workers", type=int, default=None, help="Worker processes (default 1).")
@click.option("--max-body", type=int, default=None, metavar="BYTES",
              help=f"Largest request body, also after gzip decompression (default {DEFAULT_MAX_BODY}).")
@click.option("--trusted-proxy-header", default=None, metavar="HEADER",
              help="Take the client address from this header's last entry (e.g. X-Forwarded-For); only "
                   "behind a reverse proxy that sets it.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default=None, help="Log level (default warning).")
def serve(host: str | None, port: int | None, database_url: str | None, tls_cert: str | None,
          tls_key: str | None, workers: int | None, max_body: int | None, trusted_proxy_header: str | None,
          log_level: str | None) -> None:
    """Run the fleet collector. With no options: SQLite in your data directory, on 127.0.0.1:8443."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from netcheck.collector.protocol import GuardedHttpToolsProtocol

    with _errors():
        settings = Settings.from_env(host=host, port=port, database_url=database_url, tls_cert=tls_cert,
                                     tls_key=tls_key, workers=workers, max_body=max_body,
                                     trusted_proxy_header=trusted_proxy_header, log_level=log_level)
        engine = make_engine(settings.database_url, pool_size=1, max_overflow=0, timeout_s=settings.db_timeout_s)
        try:
            migrate(engine)
        except sa.exc.SQLAlchemyError as exc:
            raise ConfigError(f"cannot open the database {_redact(settings.database_url)}: "
                              f"{str(exc).splitlines()[0][:300]}") from exc
        finally:
            engine.dispose()
        if settings.tls_cert and settings.tls_key:
            _check_tls(settings.tls_cert, settings.tls_key)
        if settings.service_health:
            from netcheck.collector.health import SECRET_ENV, read_secret

            if not read_secret(settings):
                raise ConfigError("service health is configured (NETCHECK_GRAPH_CLIENT_ID) but the client secret "
                                  f"is missing: set NETCHECK_GRAPH_CLIENT_SECRET_FILE or {SECRET_ENV}")
        if settings.entra_sign_in:
            from netcheck.collector.web import oidc

            if not oidc.Provider(settings).secret:
                raise ConfigError("sign-in with Entra ID is configured (NETCHECK_OIDC_CLIENT_ID) but the client "
                                  f"secret is missing: set NETCHECK_OIDC_CLIENT_SECRET_FILE or {oidc.SECRET_ENV}")
        config = uvicorn.Config(
            "netcheck.collector.app:create_app_from_env", factory=True,
            host=settings.host, port=settings.port, workers=settings.workers,
            ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key,
            proxy_headers=False, server_header=False, date_header=True,
            log_level=settings.log_level, access_log=settings.log_level in ("info", "debug"),
            http=GuardedHttpToolsProtocol, limit_concurrency=settings.max_connections,
            timeout_keep_alive=int(max(1, settings.keep_alive_s)), timeout_graceful_shutdown=10,
        )
        try:
            sock = config.bind_socket()
        except SystemExit as exc:  # uvicorn exits when it cannot bind
            raise ConfigError(f"cannot listen on {settings.host}:{settings.port} (in use, or not allowed)") from exc
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        # Accepted connections inherit it: without it every request on a kept-alive
        # connection waits ~40 ms for delayed ACKs (Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    settings = settings.replace(port=sock.getsockname()[1])
    os.environ.update(settings.to_env())
    where = _redact(settings.database_url)
    click.echo(f"netcheck collector listening on {settings.url} (database {where}; Ctrl-C stops it)")
    if settings.workers > 1:
        os.environ[SUPERVISOR_ENV] = str(os.getpid())  # workers stop when this process is gone
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])


def _check_tls(cert: str, key: str) -> None:
    """Load the certificate and key once, so that a bad file is one line, not a worker's traceback."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # an encrypted key would make OpenSSL ask for its password on the terminal (a service hangs)
        context.load_cert_chain(cert, key, password=lambda: b"")
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise ConfigError(f"cannot use --tls-cert {cert} with --tls-key {key}: {reason} (both PEM files: the "
                          "certificate chain, and its unencrypted private key)") from exc


# --- admin -------------------------------------------------------------------------------------

@click.group("admin")
def admin() -> None:
    """Administer the collector: enrollment secrets, devices, exports, policy, sweeps.

    Every command takes --database-url (or NETCHECK_DATABASE_URL), like `netcheck serve`.
    """


@admin.group("secret")
def secret() -> None:
    """Enrollment secrets (per organisation, or per site)."""


@secret.command("create")
@click.option("--site", default=None, help="Scope the secret to a site: devices enrolled with it get site=TAG.")
@click.option("--note", default=None, help="A note for administrators (where the secret was sent).")
@_database_option
def secret_create(site: str | None, note: str | None, database_url: str | None) -> None:
    """Create a secret and print it (it is shown this once; only its digest is stored)."""
    if site is not None:
        parse_tag(f"site={site}")
    with _connection(database_url) as conn:
        secret_id, value = store.create_secret(conn, store.utcnow(), site=site, note=note)
    scope = f"site {site}" if site else "organisation-wide"
    click.echo(f"Created enrollment secret {secret_id} ({scope}); it is shown only this once:", err=True)
    click.echo(value)


@secret.command("revoke")
@click.argument("secret_id")
@_database_option
def secret_revoke(secret_id: str, database_url: str | None) -> None:
    """Revoke a secret: it enrolls nothing more; enrolled devices keep their tokens."""
    with _connection(database_url) as conn:
        done = store.revoke_secret(conn, secret_id, store.utcnow())
    if not done:
        raise click.ClickException(f"no active secret {secret_id!r} (see `netcheck admin secret list`)")
    click.echo(f"Revoked {secret_id}.")


@secret.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@_database_option
def secret_list(as_json: bool, database_url: str | None) -> None:
    """List secrets (ids, scope, state; never the secrets themselves)."""
    with _connection(database_url) as conn:
        rows = store.list_secrets(conn)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(_table(rows, ["id", "site", "note", "created_at", "revoked_at"]))


@admin.command("devices")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@_database_option
def devices_cmd(as_json: bool, database_url: str | None) -> None:
    """List enrolled devices."""
    with _connection(database_url) as conn:
        rows = store.list_devices(conn)
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:  # say where we looked: an empty list from the wrong database misleads
        settings = Settings.from_env(database_url=database_url)
        click.echo(f"No device has enrolled in {_redact(settings.database_url)} yet.", err=True)
        return
    for row in rows:
        row["tags"] = ",".join(f"{k}={v}" for k, v in row["tags"].items())
    click.echo(_table(rows, ["device_id", "name", "os", "tags", "last_seen_at", "last_verdict", "revoked_at"]))


@admin.command("revoke-device")
@click.argument("device_id")
@_database_option
def revoke_device(device_id: str, database_url: str | None) -> None:
    """Revoke a device (a lost or retired laptop): its tokens stop working and it cannot enroll
    again, even with a valid secret, until `netcheck admin readmit-device`."""
    with _connection(database_url) as conn:
        count = store.revoke_device(conn, device_id, store.utcnow())
    if count is None:
        raise click.ClickException(f"no device {device_id!r} (see `netcheck admin devices`)")
    click.echo(f"Revoked {device_id} ({count} active token(s)); it stays out until "
               f"`netcheck admin readmit-device {device_id}`.")


@admin.command("readmit-device")
@click.argument("device_id")
@_database_option
def readmit_device(device_id: str, database_url: str | None) -> None:
    """Let a revoked device enroll again (with an enrollment secret, for a new token)."""
    with _connection(database_url) as conn:
        was_revoked = store.readmit_device(conn, device_id)
    if was_revoked is None:
        raise click.ClickException(f"no device {device_id!r} (see `netcheck admin devices`)")
    if not was_revoked:
        click.echo(f"{device_id} was not revoked; nothing changed.")
        return
    click.echo(f"Re-admitted {device_id}: it can enroll again (the agent does so itself if it has its "
               "enrollment secret).")


@admin.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), required=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (default: standard output).")
@_database_option
def export(fmt: str, output: Path | None, database_url: str | None) -> None:
    """The latest report of every device: id, name, tags, last seen, verdict, workload statuses."""
    with _connection(database_url) as conn:
        rows = store.export_rows(conn)
    text = to_csv(rows) if fmt == "csv" else to_json(rows)
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            with _errors():
                atomic_write(output, text.encode("utf-8"), mode=0o600)
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc
        click.echo(f"Wrote {len(rows)} device(s) to {output}.", err=True)


@admin.command("prune")
@click.option("--older-than", default=None, metavar="DURATION",
              help="Delete reports received longer ago than this (90d, 48h); default: the retention period "
                   "(NETCHECK_RETENTION_DAYS, 90 days).")
@_database_option
def prune(older_than: str | None, database_url: str | None) -> None:
    """Delete old reports now (`netcheck serve` also does it every hour); each device's latest report stays."""
    with _errors():
        settings = Settings.from_env(database_url=database_url)
    if older_than is not None:
        age = parse_duration(older_than)
    elif settings.retention_days:
        age = dt.timedelta(days=settings.retention_days)
    else:
        click.echo("Retention is off (NETCHECK_RETENTION_DAYS=0): nothing deleted. Use --older-than to prune anyway.")
        return
    cutoff = store.utcnow() - age
    with _engine(database_url) as engine:
        total = store.prune_all(engine, cutoff)
    click.echo(f"Deleted {total} report(s) received before {cutoff.isoformat(timespec='seconds')} "
               "(each device's latest report is kept).")


@admin.command("compact")
@click.option("--full-history", type=click.IntRange(min=1), default=None, metavar="N",
              help="Reports of each device kept with their full detail (default: NETCHECK_FULL_HISTORY, 1).")
@_database_option
def compact_command(full_history: int | None, database_url: str | None) -> None:
    """Compact stored reports now (`netcheck serve` also does it after each pruning): each device's newest
    reports and its latest one keep their full detail, older ones are reduced."""
    with _errors():
        settings = Settings.from_env(database_url=database_url)
    keep = full_history or settings.full_history
    with _engine(database_url) as engine:
        total = store.compact_all(engine, keep)
    click.echo(f"Compacted {total} report(s) (each device's newest {keep} and its latest kept whole).")


@admin.group("policy")
def policy_group() -> None:
    """What agents are told to use (GET /api/v1/policy)."""


@policy_group.command("set", context_settings={"ignore_unknown_options": True})  # VALUE may be -5
@click.argument("key", type=click.Choice(store.POLICY_KEYS))
@click.argument("value")
@_database_option
def policy_set(key: str, value: str, database_url: str | None) -> None:
    """Set KEY to VALUE (JSON, or a plain string; `null` clears a value)."""
    with _connection(database_url) as conn:
        current = store.set_policy(conn, key, value, store.utcnow())
    click.echo(json.dumps(current, indent=2))


@policy_group.command("show")
@_database_option
def policy_show(database_url: str | None) -> None:
    """Print the policy agents receive."""
    with _connection(database_url) as conn:
        click.echo(json.dumps(store.get_policy(conn), indent=2))


@admin.group("sweep")
def sweep() -> None:
    """Sweeps: ask devices to check now and answer."""


@sweep.command("create")
@click.option("--tag", default=None, help="Only devices with this tag, e.g. site=paris.")
@click.option("--expires", default="48h", show_default=True, help="How long devices may answer (90m, 48h, 7d).")
@click.option("--thorough", is_flag=True, help="Ask for the thorough check.")
@click.option("--note", default=None, help="A note for administrators.")
@_database_option
def sweep_create(tag: str | None, expires: str, thorough: bool, note: str | None, database_url: str | None) -> None:
    """Create a sweep; prints its id."""
    parsed_tag = parse_tag(tag) if tag else None
    lifetime = parse_duration(expires)
    with _connection(database_url) as conn:
        created = store.create_sweep(conn, store.utcnow(), lifetime, thorough=thorough, tag=parsed_tag, note=note)
    click.echo(created["id"])


@sweep.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@_database_option
def sweep_list(as_json: bool, database_url: str | None) -> None:
    """List sweeps and how many devices answered each."""
    with _connection(database_url) as conn:
        rows = store.list_sweeps(conn)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(_table(rows, ["id", "tag", "thorough", "created_at", "expires_at", "answers"]))


@admin.command("health-status")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
@_database_option
def health_status(as_json: bool, database_url: str | None) -> None:
    """Microsoft service health: how the Graph poll goes, and the active incidents and advisories."""
    from netcheck.collector.health import active_issues, poll_status

    with _errors():
        settings = Settings.from_env(database_url=database_url)
    with _connection(database_url) as conn:
        status = poll_status(conn)
        issues = active_issues(conn, store.utcnow())
    status["configured"] = settings.service_health
    if as_json:
        click.echo(json.dumps({**status, "issues": issues}, indent=2, ensure_ascii=False))
        return
    if not settings.service_health and not status["polled"]:
        click.echo("Service health is not configured: set NETCHECK_GRAPH_TENANT, NETCHECK_GRAPH_CLIENT_ID and "
                   "NETCHECK_GRAPH_CLIENT_SECRET_FILE for `netcheck serve` (see the README).")
        return
    click.echo(f"Service health poll: {status['state']}")
    for key, label in (("last_success_at", "last success"), ("last_error_at", "last error"),
                       ("next_poll_at", "next poll")):
        click.echo(f"  {label}: {status[key] or 'never'}")
    if status["last_error"]:
        click.echo(f"  error: {status['last_error']}")
    if status["last_note"]:
        click.echo(f"  note: {status['last_note']}")
    click.echo(f"Active: {status['active_incidents']} incident(s), {status['active_advisories']} advisory(ies)")
    if issues:
        click.echo(_table(issues, ["id", "classification", "service", "status", "start", "title"]))


@admin.group("user")
def user_group() -> None:
    """Dashboard accounts (the web pages under /ui/): admin, or read-only."""


def _read_password() -> str:
    """The password from the terminal (asked twice), or the first line of standard input; never argv."""
    if sys.stdin.isatty():
        value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        return value
    return sys.stdin.readline().rstrip("\r\n")


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(accounts.ROLES), required=True, help="admin can change things; "
              "read-only can look and export.")
@_database_option
def user_add(name: str, role: str, database_url: str | None) -> None:
    """Add a dashboard account; the password is asked for (or read from standard input's first line)."""
    with _errors():
        accounts.check_name(name)
    password = _read_password()
    with _connection(database_url) as conn, _errors():
        accounts.add_user(conn, name, password, role, store.utcnow())
    click.echo(f"Added {name} ({role}).")


@user_group.command("remove")
@click.argument("name")
@_database_option
def user_remove(name: str, database_url: str | None) -> None:
    """Remove a dashboard account (its sessions end at once)."""
    with _connection(database_url) as conn:
        removed = accounts.remove_user(conn, name)
    if not removed:
        raise click.ClickException(f"no user {name!r} (see `netcheck admin user list`)")
    click.echo(f"Removed {name}.")


@user_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@_database_option
def user_list(as_json: bool, database_url: str | None) -> None:
    """List dashboard accounts (never their password hashes)."""
    with _connection(database_url) as conn:
        rows = accounts.list_users(conn)
    for row in rows:
        for key in ("created_at", "last_login_at", "locked_until"):
            row[key] = store.iso(row[key])
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(_table(rows, ["name", "role", "created_at", "last_login_at", "locked_until"]))
