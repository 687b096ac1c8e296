"""``netcheck enroll`` and ``netcheck agent``: parse, wire, log, exit.

Exit codes: 0 done; 3 the collector could not be reached (enroll); 4 usage,
configuration or a refusal by the collector. The token and the enrollment secret
are never printed and never logged (a log filter scrubs them as a second guard).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import click

from netcheck.agent.config import (
    SECRET_ENV,
    AgentStore,
    available_secret,
    parse_tags,
    read_secret_file,
    validate_collector_url,
)
from netcheck.errors import CollectorUnreachable, ConfigError, NetcheckError

log = logging.getLogger("netcheck.agent")


class Redact(logging.Filter):
    """Replaces known secrets in every record that reaches the handler."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            if any(s in text for s in self.secrets):
                for s in self.secrets:
                    text = text.replace(s, "[redacted]")
                record.msg, record.args = text, None
        return True


REDACT = Redact()


def setup_logging(verbose: bool, log_file: Path | None = None, quiet: bool = False) -> None:
    handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8") if log_file \
        else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(REDACT)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    # their debug output could include request details; ours says what matters
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(exc: NetcheckError) -> None:
    click.echo(f"Error: {exc}", err=True)
    sys.exit(3 if isinstance(exc, CollectorUnreachable) else 4)


@click.command("enroll")
@click.argument("url")
@click.option("--secret", metavar="SECRET", envvar=SECRET_ENV, show_envvar=True,
              help="The enrollment secret from IT. Prefer --secret-file or the environment variable: "
                   "a command line is visible to other users.")
@click.option("--secret-file", type=click.Path(dir_okay=False, path_type=Path),
              help="A file holding the enrollment secret. Its path is remembered so the agent can "
                   "re-enroll if the collector revokes the token; the secret itself is never copied.")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE",
              help="A tag for this device, e.g. --tag site=paris (repeatable).")
@click.option("--device-name", metavar="NAME",
              help="A name shown to IT. None is sent by default (host names often contain people's names).")
@click.option("--ca-bundle", type=click.Path(dir_okay=False, path_type=Path),
              help="Trust only this CA bundle (PEM) for the collector, instead of the system store.")
@click.option("--verbose", "-v", is_flag=True, help="Log each step.")
def enroll(url: str, secret: str | None, secret_file: Path | None, tags: tuple[str, ...],
           device_name: str | None, ca_bundle: Path | None, verbose: bool) -> None:
    """Enroll this laptop with your organisation's collector (once).

    Stores the device token in a file only you can read. Exit codes: 0 enrolled,
    3 collector unreachable, 4 usage error or refused.
    """
    from netcheck.agent.enrollment import enroll as do_enroll

    setup_logging(verbose, quiet=True)
    try:
        if secret and secret_file:
            raise ConfigError("give the secret once: --secret (or NETCHECK_ENROLL_SECRET) or --secret-file")
        if secret_file is not None:
            secret = read_secret_file(secret_file)
        if not secret or not secret.strip():
            raise ConfigError("the enrollment secret is missing: use --secret-file FILE or set "
                              f"{SECRET_ENV}")
        secret = secret.strip()
        REDACT.secrets.add(secret)
        collector = validate_collector_url(url)
        if device_name is not None and not (0 < len(device_name) <= 255 and device_name.isprintable()):
            raise ConfigError("--device-name must be 1-255 printable characters")
        store = AgentStore()
        config = do_enroll(store, collector, secret, tags=parse_tags(tags), device_name=device_name,
                           ca_bundle=ca_bundle, secret_file=secret_file)
    except NetcheckError as exc:
        _fail(exc)
        return
    except OSError as exc:
        _fail(ConfigError(f"cannot store the enrollment: {exc.strerror or exc}"))
        return
    click.echo(f"Enrolled with {config.collector_url} as device {config.device_id}.")
    click.echo(f"The device token is in {store.token_path} (readable only by you).")


@click.command("agent")
@click.option("--once", is_flag=True, help="One check (plus pending sweeps), upload, and exit: for a scheduled task.")
@click.option("--interval", type=click.FloatRange(min=1), metavar="SECONDS",
              help="Seconds between scheduled checks (default: the collector's policy, else 3600).")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), help="Log here instead of stderr.")
@click.option("--verbose", "-v", is_flag=True, help="Log each exchange with the collector.")
def agent(once: bool, interval: float | None, log_file: Path | None, verbose: bool) -> None:
    """Run unattended: scheduled checks, sweeps, uploads (for a service or scheduled task).

    Reports are spooled on disk first and uploaded when the collector answers.
    Exit codes: 0 stopped normally, 4 not enrolled or misconfigured.
    """
    from netcheck.agent.loop import build_agent, default_run_check, run_forever, run_once
    from netcheck.agent.schedule import Schedule
    from netcheck.agent.spool import FileLock, LockBusy, Spool
    from netcheck.agent.upload import open_uploader

    setup_logging(verbose, log_file)
    store = AgentStore()
    try:
        spool = Spool()
        client, uploader = open_uploader(store, spool)
        config = store.load_config()
        REDACT.secrets.update(s for s in (client.token, available_secret(config)) if s)
        schedule = Schedule(interval, min(300.0, interval * 0.1)) if interval else Schedule()
        lock = FileLock(spool.root / "agent.lock")
        try:
            lock.acquire(blocking=False)
        except LockBusy:
            raise ConfigError("another netcheck agent is already running for this user") from None
    except NetcheckError as exc:
        _fail(exc)
        return
    except OSError as exc:
        _fail(ConfigError(f"cannot open the spool: {exc.strerror or exc}"))
        return
    agent_ = build_agent(run_check=default_run_check, spool=spool, client=client, uploader=uploader,
                         schedule=schedule, pinned_schedule=interval is not None, tags=config.tags)
    try:
        if once:
            result = run_once(agent_)
            up = result.upload
            click.echo(f"{result.checks} check(s), {result.spooled} report(s) spooled; "
                       f"{up.acked} uploaded, {up.remaining} waiting"
                       + (f" ({up.failure.reason})" if up.failure and up.remaining else "") + ".", err=True)
            return
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping", signum)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        log.info("agent started: collector %s, checks every %.0f s (+ up to %.0f s jitter)",
                 client.base_url, agent_.shared.schedule.interval_s, agent_.shared.schedule.jitter_s)
        run_forever(agent_, stop)
        log.info("agent stopped")
    finally:
        client.close()
        lock.release()
