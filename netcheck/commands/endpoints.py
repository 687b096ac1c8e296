"""`netcheck endpoints update|show|diff`: Microsoft's endpoint data.

The commands parse, wire and render; the client and cache live in
:mod:`netcheck.m365.webservice`, the comparison in :mod:`netcheck.m365.diff`.
Renderers here return strings. Exit codes: 0 when data is usable (updated or a
fallback), 4 for usage and configuration errors.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from netcheck.errors import NetcheckError
from netcheck.m365.catalog import (
    INSTANCES,
    Catalog,
    EndpointSet,
    canonical_instance,
    expand_url,
    read_endpoint_file,
    sets_to_json,
)
from netcheck.m365.diff import diff_sets, diff_to_json, render_diff_text
from netcheck.models import Category

SOURCE_LABELS = {"bundled": "bundled snapshot", "cache": "cached update", "file": "file"}
_TENANT_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)


class Failure(click.ClickException):
    """A usage or configuration error: one line, exit 4."""

    exit_code = 4


_instance_option = click.option("--instance", type=click.Choice(INSTANCES, case_sensitive=False),
                                default="Worldwide", show_default=True,
                                metavar="[" + "|".join(INSTANCES) + "]",
                                help="Microsoft 365 cloud instance.")


def _split(values: Sequence[str], choices: Sequence[str], option: str) -> tuple[str, ...]:
    """Repeatable options that also take comma lists; case-insensitive; canonical spelling."""
    out: list[str] = []
    by_lower = {c.lower(): c for c in choices}
    for value in values:
        for part in filter(None, (p.strip() for p in value.split(","))):
            if part.lower() not in by_lower:
                raise click.BadParameter(f"{part!r} is not one of {', '.join(choices)}",
                                         param_hint=option)
            out.append(by_lower[part.lower()])
    return tuple(dict.fromkeys(out))


def check_tenant(tenant: str | None) -> str | None:
    """The tenant's initial-domain prefix (contoso in contoso.onmicrosoft.com), validated."""
    if tenant is None:
        return None
    if not _TENANT_RE.fullmatch(tenant):
        raise click.BadParameter(
            f"{tenant!r} is not a tenant name; give the prefix of the tenant's initial domain "
            "(contoso for contoso.onmicrosoft.com)", param_hint="--tenant")
    return tenant.lower()


@click.group()
def endpoints() -> None:
    """Show, update and compare Microsoft's endpoint data."""


@endpoints.command()
@_instance_option
@click.option("--base-url", metavar="URL",
              help="The web service's address (default: $NETCHECK_ENDPOINTS_URL, "
                   "else https://endpoints.office.com).")
@click.option("--force", is_flag=True,
              help="Check now even if the last check was less than an hour ago.")
def update(instance: str, base_url: str | None, force: bool) -> None:
    """Fetch the latest endpoint data from Microsoft's web service, if it changed.

    Asks for the version at most once an hour, downloads only when it is newer,
    and backs off an hour after HTTP 429. Offline, it says which data stays in use.
    """
    from netcheck.m365 import webservice  # httpx is imported only when needed

    try:
        url = webservice.resolve_base_url(base_url)
        with webservice.make_client() as client:
            result = webservice.Updater(client, url).update(instance, force=force)
    except NetcheckError as exc:
        raise Failure(str(exc)) from exc
    click.echo(result.describe())


@endpoints.command()
@_instance_option
@click.option("--category", "categories", multiple=True, metavar="CATEGORY",
              help="Optimize, Allow or Default (repeat, or separate with commas).")
@click.option("--workload", "workload_ids", multiple=True, metavar="WORKLOAD",
              help="exchange, sharepoint, teams, teams_media, identity or office "
                   "(repeat, or separate with commas).")
@click.option("--tenant", metavar="NAME", help="Fill the tenant wildcards (NAME.sharepoint.com, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def show(instance: str, categories: tuple[str, ...], workload_ids: tuple[str, ...],
         tenant: str | None, as_json: bool) -> None:
    """Show the endpoint sets in use, optionally filtered."""
    from netcheck.m365.webservice import current_catalog

    cats = _split(categories, [c.value for c in Category], "--category")
    tenant = check_tenant(tenant)
    try:
        catalog, warning = current_catalog(instance)
    except NetcheckError as exc:
        raise Failure(str(exc)) from exc
    wls = _split(workload_ids, [w.id for w in catalog.workloads.workloads], "--workload")
    sets = catalog.filtered([Category(c) for c in cats], wls)
    if warning:
        click.echo(f"Warning: {warning}", err=True)
    if as_json:
        click.echo(render_sets_json(catalog, sets, tenant))
    else:
        width = shutil.get_terminal_size((160, 24)).columns
        click.echo(render_sets_table(catalog, sets, tenant, width=width), nl=False)


@endpoints.command()
@click.argument("old")
@click.argument("new")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def diff(old: str, new: str, as_json: bool) -> None:
    """Show what changed from OLD to NEW, Optimize first.

    OLD and NEW are files in the web service's format, or instance names
    (Worldwide, China, USGovDoD, USGovGCCHigh) meaning the data now in use.
    """
    try:
        before, after = load_side(old), load_side(new)
    except NetcheckError as exc:
        raise Failure(str(exc)) from exc
    for side in (before, after):
        if side.warning:
            click.echo(f"Warning: {side.warning}", err=True)
    result = diff_sets(before.sets, after.sets)
    if as_json:
        click.echo(json.dumps(diff_to_json(result, before.info, after.info), indent=2))
    else:
        click.echo(render_diff_text(result, before.label, after.label))


@dataclass(frozen=True)
class DiffSide:
    label: str
    info: dict[str, str]  # what the JSON output says about this side
    sets: tuple[EndpointSet, ...]
    warning: str | None = None


def load_side(arg: str) -> DiffSide:
    """One side of a diff: a file in the web-service format, or an instance's current data."""
    from netcheck.m365.webservice import current_catalog, file_version

    path = Path(arg)
    if path.exists():
        sets = read_endpoint_file(path)
        version, warning = file_version(path)
        return DiffSide(f"{path} (version {version})",
                        {"source": "file", "path": str(path), "version": version}, sets, warning)
    if arg.lower() in (i.lower() for i in INSTANCES):
        catalog, warning = current_catalog(canonical_instance(arg))
        return DiffSide(
            f"{catalog.instance} version {catalog.version} ({SOURCE_LABELS[catalog.source]})",
            {"source": catalog.source, "instance": catalog.instance, "version": catalog.version},
            catalog.sets, warning)
    raise Failure(f"{arg}: no such file, and not an instance name ({', '.join(INSTANCES)})")


# --- renderers (return strings) -------------------------------------------------

def _urls(catalog: Catalog, s: EndpointSet, tenant: str | None) -> list[str]:
    out: list[str] = []
    for pattern in s.urls:
        out.extend(expand_url(pattern, tenant, catalog.workloads.tenant_names) or (pattern,))
    return list(dict.fromkeys(out))


def _header(catalog: Catalog, shown: int) -> str:
    return (f"{catalog.instance} endpoint data, version {catalog.version} "
            f"({SOURCE_LABELS.get(catalog.source, catalog.source)}): "
            f"{shown} of {len(catalog.sets)} endpoint sets")


def render_sets_table(catalog: Catalog, sets: Sequence[EndpointSet], tenant: str | None = None,
                      width: int = 160) -> str:
    """A table of endpoint sets, under a header naming instance, version and source."""
    table = Table(box=box.SIMPLE_HEAD, show_lines=True, pad_edge=False)
    for name in ("ID", "Workloads", "Category", "Required", "URLs", "IPs", "Ports"):
        table.add_column(name, overflow="fold")
    for s in sets:
        ports = [f"TCP {','.join(map(str, s.tcp_ports))}"] if s.tcp_ports else []
        ports += [f"UDP {','.join(map(str, s.udp_ports))}"] if s.udp_ports else []
        table.add_row(str(s.id), Text(", ".join(catalog.workloads_of(s))), str(s.category),
                      "yes" if s.required else "no", Text("\n".join(_urls(catalog, s, tenant))),
                      Text("\n".join(map(str, s.ips))), Text("\n".join(ports)))
    buf = io.StringIO()
    console = Console(file=buf, width=max(width, 60), color_system=None, force_terminal=False,
                      highlight=False, emoji=False, soft_wrap=False)
    console.print(Text(_header(catalog, len(sets))))
    if sets:
        console.print(table)
    else:
        console.print(Text("No endpoint set matches the filters."))
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()).rstrip("\n") + "\n"


def render_sets_json(catalog: Catalog, sets: Sequence[EndpointSet], tenant: str | None = None) -> str:
    """The sets as JSON (catalog.sets_to_json), with workloads and tenant-filled URLs."""
    items = sets_to_json(sets)
    for item, s in zip(items, sets, strict=True):
        item["workloads"] = list(catalog.workloads_of(s))
        if tenant:
            item["urls"] = _urls(catalog, s, tenant)
    doc = {"instance": catalog.instance, "version": catalog.version, "source": catalog.source,
           "tenant": tenant, "sets": items}
    return json.dumps(doc, indent=2)
