"""`netcheck check`: parse options, run the check, render, exit with the verdict's code."""

from __future__ import annotations

import atexit
import errno
import gc
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from netcheck.errors import NetcheckError

if TYPE_CHECKING:
    from netcheck.assess.report import Report
    from netcheck.check import CheckOptions


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """click's FloatRange lets nan through (nan compares false with both bounds)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds", ctx, param)
    return value


@click.command("check")
@click.option("--tenant", metavar="NAME", envvar="NETCHECK_TENANT",
              help="Your tenant name (contoso for contoso.onmicrosoft.com): tests your SharePoint/OneDrive names.")
@click.option("--instance", default="Worldwide", show_default=True, envvar="NETCHECK_INSTANCE",
              type=click.Choice(["Worldwide", "China", "USGovDoD", "USGovGCCHigh"], case_sensitive=False),
              help="Microsoft 365 cloud instance.")
@click.option("--endpoints-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Endpoint data in the web-service JSON format, instead of the cached or bundled data.")
@click.option("--deadline", "deadline_s", type=click.FloatRange(min=1, max=3600), callback=_finite,
              help="Finish within this many seconds (default 30).")
@click.option("--thorough", is_flag=True, help="Longer samples (10 s Teams media window, 10 TCP samples).")
@click.option("--json", "as_json", is_flag=True, help="Print the versioned JSON report instead of text.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, allow_dash=True, path_type=Path),
              help="Also write the JSON report to this file (- for standard output).")
@click.option("--whoami-name", metavar="NAME", envvar="NETCHECK_WHOAMI_NAME",
              help="DNS name that answers with the address of the resolver asking (resolver identification).")
@click.option("--teams-relay", metavar="HOST", envvar="NETCHECK_TEAMS_RELAY",
              help="Teams media relay host for the UDP test.")
@click.option("--user", metavar="UPN", envvar="NETCHECK_USER",
              help="Your sign-in name or domain (alice@contoso.com): checks whether sign-in depends on the site. "
                   "Only the domain is kept in the report.")
@click.option("--site-profile", type=click.Path(dir_okay=False, path_type=Path), envvar="NETCHECK_SITE_PROFILE",
              help="IT's site profile (TOML): the site's networks, VPN, DNS, proxies, PAC and federation hosts.")
@click.option("--site-down", "site_down", metavar="NAME", multiple=True,
              help="Show just what you would lose if this site went down (a name from the site profile, or "
                   "without one a site netcheck inferred, as the report names it: 'unnamed site 10.20.0.0/16'; "
                   "repeat it for several sites going down together).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="Also write a self-contained HTML report (for the helpdesk) to this file (- for standard "
                   "output).")
@click.option("--upload", is_flag=True,
              help="Send the report to your organisation's collector (after `netcheck enroll`); kept and sent "
                   "later if the collector cannot be reached.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--verbose", "-v", is_flag=True, help="Show every finding and all evidence.")
def check(tenant: str | None, instance: str, endpoints_file: Path | None, deadline_s: float | None,
          thorough: bool, as_json: bool, output: Path | None, whoami_name: str | None,
          teams_relay: str | None, user: str | None, site_profile: Path | None, site_down: tuple[str, ...],
          html_path: Path | None, upload: bool, no_progress: bool, verbose: bool) -> None:
    """Check this laptop's path to Microsoft 365 and say whether you can work from here.

    Exit codes: 0 ready, 1 at risk, 2 not ready, 3 could not assess (no network),
    4 usage or configuration error, 5 internal error (a crash log is written).
    """
    with collector_paused():
        from netcheck.assess.service_health import last_service_health
        from netcheck.check import CheckOptions, perform_check
        from netcheck.render.json import render_json

        try:
            options = CheckOptions(instance=instance, tenant=tenant, endpoints_file=endpoints_file,
                                   deadline_s=deadline_s, thorough=thorough, whoami_name=whoami_name,
                                   teams_relay=teams_relay, user=user, site_profile=site_profile,
                                   site_down=site_down,
                                   service_health=last_service_health())  # an enrolled laptop's, if any
            show_progress = not no_progress and not as_json and sys.stderr.isatty()
            if show_progress:
                report = _with_progress(perform_check, options)
            else:
                report = perform_check(options)
        except NetcheckError as exc:
            raise click.ClickException(str(exc)) from exc
    if output is not None:
        _write(output, render_json(report))
    if html_path is not None:
        from netcheck.render.html import render_html
        from netcheck.render.json import report_to_dict

        _write(html_path, render_html(report_to_dict(report), policy=options.policy))
    if upload:
        from netcheck.agent.upload import spool_and_upload
        from netcheck.render.json import report_to_dict

        summary = spool_and_upload(report_to_dict(report), deadline_s=15.0)
        click.echo(summary.message, err=True)
    if as_json:
        click.echo(render_json(report), nl=False)
    else:
        from netcheck.render.text import render_text  # rich: only for the text report (~30 ms of imports)

        click.echo(render_text(report, color=sys.stdout.isatty(), verbose=verbose), nl=False)
    sys.exit(report.assessment.verdict.exit_code)


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while the check's modules load and the check runs.

    Importing them makes ~100,000 objects that all live on (~15 ms of CPU to scan), and what
    was loaded before (click's objects) is frozen: the collector need not scan any of it
    again and again while probing (~35 ms of CPU). The check itself makes little
    cyclic garbage (about a thousand objects in the lab's worldwide check, a few MB at most
    when every probe fails with an exception), while the collector, left on, scans the
    probes' live tasks and buffers some 60 times for it (15-30 ms of CPU). Both undone
    afterwards, for callers that go on in the same process; the exit then skips the scan
    (:func:`freeze_at_exit`). What the check made (its modules, the report) joins the old
    generation unscanned: left young, the first allocation after the collector comes back
    would scan all of it (~10 ms of CPU, for the CLI just before it exits).
    """
    enabled = gc.isenabled()
    gc.disable()
    gc.freeze()
    try:
        yield
    finally:
        gc.freeze()  # everything, the check's objects too (the young generation empties) ...
        gc.unfreeze()  # ... and back into the oldest generation
        if enabled:
            gc.enable()
        freeze_at_exit()


def freeze_at_exit() -> None:
    """At interpreter exit, freeze every object before the exit's own full collections.

    Python's finalization runs the cyclic garbage collector over everything still alive
    (after a check: the modules, the report, the probes' leftovers), about 50 ms of CPU that
    frees nothing the process's end would not free anyway. Frozen objects are skipped; they
    are still freed as their modules are cleared. Registered once however often it is called;
    it runs before the atexit functions registered earlier (logging's flush among them).
    """
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)


def _write(path: Path, text: str) -> None:
    """``-`` is standard output; files as :func:`netcheck.paths.write_output` writes them."""
    from netcheck.paths import write_output

    if str(path) == "-":
        click.echo(text, nl=False)
        return
    try:
        write_output(path, text.encode("utf-8"))
    except OSError as exc:
        why = "no process reads that pipe" if exc.errno == errno.ENXIO else exc.strerror or exc
        raise click.ClickException(f"cannot write {path}: {why}") from exc


def _with_progress(perform_check: Callable[..., Report], options: CheckOptions) -> Report:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("Checking Microsoft 365 endpoints"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("probes", total=None)
        return perform_check(options, on_result=lambda _: progress.advance(task),
                             on_plan=lambda n: progress.update(task, total=n))
