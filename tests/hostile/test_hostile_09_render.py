"""Item 9: the COULD NOT ASSESS HTML page does not say "Nothing to fix"; wrapped lines in "What to do"
keep their indentation."""

from __future__ import annotations

from dataclasses import replace

from netcheck.models import Assessment, Finding, Severity, Verdict
from netcheck.render.html import render_html
from netcheck.render.json import report_to_dict
from netcheck.render.text import render_text
from tests.sample_report import sample_report


def test_hostile_could_not_assess_html_does_not_say_nothing_to_fix() -> None:
    report = sample_report()
    offline = replace(report, probes=(), assessment=Assessment(
        Verdict.UNKNOWN, "There is no network connection, so nothing could be tested.", (), ()))
    html = render_html(report_to_dict(offline))
    assert "Nothing to fix" not in html
    assert "Nothing could be tested" in html
    ready = replace(report, assessment=Assessment(Verdict.READY, "All good.", report.assessment.workloads, ()))
    assert "Nothing to fix" in render_html(report_to_dict(ready))  # still said when it is true


def test_hostile_wrapped_lines_in_what_to_do_keep_their_indentation() -> None:
    long = " ".join(["Exclude the Microsoft 365 prefixes from the VPN tunnel"] * 6)
    finding = Finding("vpn.x", Severity.WARNING, "A title", long, long, evidence=(long,))
    report = sample_report()
    report = replace(report, assessment=replace(report.assessment, findings=(finding,)))
    text = render_text(report, width=60)
    lines = text.split("What to do", 1)[1].split("\n\n", 1)[0].splitlines()[2:]  # after the finding's title
    first_evidence = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("- "))
    assert first_evidence > 2 and len(lines) - first_evidence > 1  # the detail, fix and evidence each wrapped
    assert all(ln.startswith("   ") for ln in lines[:first_evidence])
    assert all(ln.startswith("     ") for ln in lines[first_evidence:])
