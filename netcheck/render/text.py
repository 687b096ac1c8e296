"""The human report: the verdict first, then workloads, then what to fix."""

from __future__ import annotations

import io

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from netcheck.assess.report import Report
from netcheck.models import Severity, Status, Verdict

_VERDICT_STYLE = {Verdict.READY: "bold green", Verdict.AT_RISK: "bold yellow",
                  Verdict.NOT_READY: "bold red", Verdict.UNKNOWN: "bold magenta"}
_STATUS = {Status.OK: ("ok", "green"), Status.DEGRADED: ("degraded", "yellow"),
           Status.FAILED: ("FAILED", "red"), Status.NOT_TESTED: ("not tested", "dim")}
_SEVERITY = {Severity.CRITICAL: ("!!", "red"), Severity.WARNING: ("! ", "yellow"), Severity.INFO: ("i ", "cyan")}


def render_text(report: Report, *, color: bool = False, width: int = 100, verbose: bool = False) -> str:
    """Render ``report`` for a terminal. ``color`` adds ANSI styles."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=color, color_system="standard" if color else None,
                      no_color=not color, highlight=False, emoji=False)
    a = report.assessment
    console.print(Text.assemble(("netcheck verdict: ", "bold"), (a.verdict.words, _VERDICT_STYLE[a.verdict])))
    console.print(a.summary)
    if a.verdict is Verdict.UNKNOWN:
        return _tidy(buf.getvalue())
    outage = report.outage
    if outage is not None and (len(outage.sites) > 1 or outage.asked) and outage.cases:
        console.print()
        console.print(Text("If one of your sites went down", style="bold"))
        for case in outage.cases:
            console.print(Padding(Text.assemble(("- ", "dim"), (case.answer, _VERDICT_STYLE[case.verdict])),
                                  (0, 0, 0, 1)))
    console.print()
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("Workload")
    table.add_column("Status")
    table.add_column("Latency", justify="right")
    table.add_column("Endpoints", justify="right")
    table.add_column("Why")
    for w in a.workloads:
        label, style = _STATUS[w.status]
        label = " or ".join([label, *(_STATUS[p][0] for p in w.possible if p is not w.status)])  # a hedge
        latency = "" if w.latency_ms is None else "<1 ms" if w.latency_ms < 1 else f"{w.latency_ms:.0f} ms"
        if w.score is not None:
            latency += f" ({w.score}/100)"
        reach = f"{w.probes_ok}/{w.probes_total}" if w.probes_total else "-"
        table.add_row(w.name.split(" (")[0], Text(label, style=style), latency, reach, "; ".join(w.reasons))
    console.print(table)
    if a.findings:
        console.print()
        console.print(Text("What to do", style="bold"))
        for f in a.findings:
            if f.severity is Severity.INFO and not verbose:
                continue
            mark, style = _SEVERITY[f.severity]
            console.print(Text.assemble((f"{mark} ", style), (f.title, "bold")))
            # Padding, not leading spaces: a wrapped line keeps the indentation of its first line.
            console.print(Padding(Text(f.detail), (0, 0, 0, 3)))
            console.print(Padding(Text(f"Fix: {f.remediation}", style="italic"), (0, 0, 0, 3)))
            shown = f.evidence if verbose else f.evidence[:3]
            for e in shown:
                console.print(Padding(Text(f"- {e}", style="dim"), (0, 0, 0, 5)))
            if len(f.evidence) > len(shown):
                console.print(Padding(Text(f"... and {len(f.evidence) - len(shown)} more (use --verbose)",
                                           style="dim"), (0, 0, 0, 5)))
        info = sum(1 for f in a.findings if f.severity is Severity.INFO)
        if info and not verbose:
            console.print(Text(f"({info} informational note(s) hidden; use --verbose)", style="dim"))
    console.print()
    c = report.catalog
    console.print(Text(
        f"Ran {len(report.probes)} probes against Microsoft 365 endpoint data {c.instance} version "
        f"{c.version} ({c.source}) in {report.duration_s:.1f} s. Report {report.report_id}.", style="dim"))
    return _tidy(buf.getvalue())


def _tidy(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
