"""Run scenarios: build the world, run netcheck, take the site down, measure truth.

The result of one scenario is a JSON document (see docs/lab.md, "Output");
``format_table`` renders one or many as text.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import scenario as sc
from .netcheck_runner import NetcheckRun, predictions, run_netcheck
from .netns import LabError
from .truth import WorkloadTruth, measure
from .world import World

log = logging.getLogger("lab")

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
#: The two-site scenarios (a datacentre beside the office): a separate command, see docs/lab.md.
TWO_SITE_DIR = SCENARIO_DIR / "two-site"
#: Set when a matrix is interrupted: running scenarios stop at their next step.
ABORT = threading.Event()
Progress = Callable[[str], None]


def run_scenario(
    path: Path,
    *,
    artifacts: Path | None = None,
    skip_netcheck: bool = False,
    netcheck: str | None = None,
    inferred: bool = False,
    progress: Progress = lambda msg: None,
) -> dict[str, Any]:
    """Run one scenario end to end and return its result document.

    ``netcheck``: the program to run as netcheck (default: the one beside the lab's Python).
    ``inferred``: run a scenario that has a site profile without it (named
    ``NAME:inferred``), so netcheck has to infer what the profile would tell.
    """
    scenario = sc.load(path)
    if inferred:
        scenario = sc.without_profile(scenario)
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    truth: dict[str, dict[str, WorkloadTruth]] = {}
    world = World(scenario)
    try:
        with world:
            timings["bring_up_s"] = world.timings["bring_up_s"]
            progress(f"{scenario.name}: world up in {timings['bring_up_s']:.1f}s (run {world.run_id})")
            truth["site_up"] = _timed(timings, "truth_site_up_s", lambda: measure(world))
            if skip_netcheck:
                nc = NetcheckRun("skipped", "netcheck skipped (--skip-netcheck)")
            else:
                nc = _timed(timings, "netcheck_s", lambda: run_netcheck(world, netcheck))
            progress(f"{scenario.name}: netcheck {nc.status} {nc.message}".rstrip())
            cases = scenario.down_cases()
            _measure_case(world, cases[0], truth, timings, progress)
            if artifacts:
                _save_artifacts(world, nc, artifacts)
        for case in cases[1:]:  # a two-site world: each further down-set in a fresh world
            other = World(scenario)
            with other:
                timings[f"bring_up_{case[0]}_s"] = other.timings["bring_up_s"]
                _measure_case(other, case, truth, timings, progress)
                if artifacts:
                    shutil.copytree(other.logs, artifacts / scenario.name / f"logs-{case[0]}", dirs_exist_ok=True)
    finally:
        timings["total_s"] = round(time.monotonic() - t0, 2)
    return build_result(scenario, world.run_id, nc, truth, timings)


def _measure_case(
    world: World,
    case: tuple[str, tuple[str, ...]],
    truth: dict[str, dict[str, WorkloadTruth]],
    timings: dict[str, float],
    progress: Progress,
) -> None:
    """Take the case's sites down, then measure each VPN behaviour (the tunnel stays, then it drops).

    The behaviours are what the VPN client does when its gateway's site is lost: while the gateway it
    is connected to is up (its site is not down, or the client failed over), the tunnel stays in both,
    and both are measured in that state."""
    prefix, down = case
    _timed(timings, f"down_{prefix or 'site'}_s", lambda: world.site_down(down))
    for behaviour in world.scenario.behaviours():
        phase = f"{prefix}.{behaviour}" if prefix else behaviour
        if behaviour == "vpn_drops" and (world.vpn is None or world.vpn.gateway in world.down):
            world.vpn_drop()
        truth[phase] = _timed(timings, f"truth_{phase}_s", lambda: measure(world))
        progress(f"{world.scenario.name}: measured {phase}")


def _timed(timings: dict[str, float], key: str, fn: Callable[[], Any]) -> Any:
    if ABORT.is_set():
        raise LabError("interrupted")
    start = time.monotonic()
    try:
        return fn()
    finally:
        timings[key] = round(time.monotonic() - start, 2)


def _save_artifacts(world: World, nc: NetcheckRun, dest: Path) -> None:
    out = dest / world.scenario.name
    out.mkdir(parents=True, exist_ok=True)
    if nc.report is not None:
        (out / "netcheck-report.json").write_text(json.dumps(nc.report, indent=2))
    (out / "netcheck-stderr.txt").write_text(nc.stderr)
    (out / "netcheck-argv.txt").write_text(" ".join(nc.argv) + "\n")
    shutil.copytree(world.logs, out / "logs", dirs_exist_ok=True)
    shutil.copy(world.endpoints_file, out / "endpoints.json")


def build_result(
    scenario: sc.Scenario,
    run_id: str,
    nc: NetcheckRun,
    truth: dict[str, dict[str, WorkloadTruth]],
    timings: dict[str, float],
) -> dict[str, Any]:
    preds = predictions(nc, scenario.outage_phases(), scenario.sites, scenario.netcheck.site_profile)
    rows = []
    problems = []
    for phase, results in truth.items():
        expected_phase = scenario.expect.get(phase, {})
        for wid, wt in results.items():
            predicted, source = preds.get(wid, {}).get(phase, (None, nc.message or "not in netcheck's report"))
            expected = expected_phase.get(wid, expected_phase.get("all"))
            hedged = predicted is not None and predicted.startswith("uncertain:")
            if hedged:  # counted right only if the truth is one it allows; counted apart (docs/lab.md)
                match: bool | None = wt.truth in str(predicted).split(":", 1)[1].split("|")
            elif predicted is not None:
                match = predicted == wt.truth
            else:  # every row counts: no prediction is a miss (unless netcheck was deliberately skipped)
                match = None if nc.status == "skipped" or wt.truth not in sc.TRUTH_VALUES else False
            row = {
                "workload": wid,
                "phase": phase,
                "predicted": predicted,
                "prediction_source": source if predicted is not None or nc.report else (nc.message or source),
                "truth": wt.truth,
                "expected": expected,
                "match": match,
                "hedged": hedged,
                "truth_modelled": wt.modelled,
                "truth_pac_client": wt.pac_client,
            }
            rows.append(row)
            if wt.truth not in sc.TRUTH_VALUES:
                errors = [c.detail.get("tool_error") for c in wt.checks if c.detail.get("tool_error")]
                problems.append(f"{phase}/{wid}: a truth tool failed: {str(errors[0] if errors else wt.truth)[-200:]}")
            elif expected is not None and expected != wt.truth:
                problems.append(f"{phase}/{wid}: lab expected {expected}, measured {wt.truth}")
    return {
        "scenario": scenario.name,
        "file": str(scenario.path),
        "profile": "told" if scenario.netcheck.site_profile else "inferred",
        "description": scenario.description,
        "run_id": run_id,
        "netcheck": nc.summary(),
        "timings": timings,
        "rows": rows,
        "lab_problems": problems,
        "truth_detail": {phase: {w: wt.to_json() for w, wt in res.items()} for phase, res in truth.items()},
    }


def run_matrix(
    paths: Sequence[Path],
    *,
    jobs: int = 1,
    artifacts: Path | None = None,
    skip_netcheck: bool = False,
    netcheck: str | None = None,
    progress: Progress = lambda msg: None,
) -> dict[str, Any]:
    """Run many scenarios (``jobs`` at a time) and summarise.

    A scenario with a site profile runs twice: told (with it) and inferred
    (``NAME:inferred``, without it).
    """
    start = time.monotonic()

    def one(run: tuple[Path, bool]) -> dict[str, Any]:
        path, inferred = run
        try:
            return run_scenario(
                path, artifacts=artifacts, skip_netcheck=skip_netcheck, netcheck=netcheck, inferred=inferred,
                progress=progress,
            )
        except Exception as exc:  # one broken scenario must not hide the others
            log.debug("scenario %s failed", path, exc_info=True)
            return {
                "scenario": path.stem + (":inferred" if inferred else ""),
                "file": str(path),
                "error": f"{type(exc).__name__}: {exc}",
                "rows": [],
                "lab_problems": [str(exc)],
            }

    runs = [(p, False) for p in paths] + [(p, True) for p in paths if sc.load(p).netcheck.site_profile]
    # the longest first, so that no long run starts last while the other jobs sit idle; results in run order
    order = sorted(range(len(runs)), key=lambda i: -expected_cost(sc.load(runs[i][0])))
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        done = dict(zip(order, pool.map(one, [runs[i] for i in order]), strict=True))
        results = [done[i] for i in range(len(runs))]
    except BaseException:
        ABORT.set()  # worlds in other threads tear down at their next step
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return {"scenarios": results, "summary": summarise(results), "matrix_seconds": round(time.monotonic() - start, 1)}


def expected_cost(scenario: sc.Scenario) -> int:
    """A rough weight of one run, for ordering: each measured phase, each further world of a two-site
    scenario, and most of all a PAC file behind a VPN (Chromium waits about 30 s for a dead PAC host)."""
    cases = scenario.down_cases()
    weight = 1 + len(scenario.outage_phases()) + 3 * (len(cases) - 1)
    if scenario.proxy.mode == "pac" and scenario.vpn.mode != "none":
        weight += 6
    return weight


def _counted(rows: Sequence[dict[str, Any]], phase_up: bool) -> list[dict[str, Any]]:
    """The rows a figure counts: every row of its phases whose truth was measured (a truth tool's own
    failure is a lab problem, not a row); a row without a prediction counts as a miss."""
    return [
        r
        for r in rows
        if (r["phase"] == "site_up") == phase_up and r["truth"] in sc.TRUTH_VALUES and r["match"] is not None
    ]


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy of outage predictions (and of site-up statuses) against truth, over every row.

    Two figures: ``inferred`` (netcheck had no site profile) and ``told`` (it had one).
    """
    summary: dict[str, Any] = {
        "scenarios": len(results),
        "rows": sum(len(res["rows"]) for res in results),
        "lab_problems": sum(len(res["lab_problems"]) for res in results),
        "errors": sum(1 for res in results if "error" in res),
    }
    every = _counted([r for res in results for r in res["rows"]], phase_up=False)
    if every:
        summary["outage_accuracy"] = round(sum(r["match"] for r in every) / len(every), 3)
        summary["outage_predictions"] = len(every)
        summary["misses"] = sum(1 for r in every if not r["match"])
        summary["hedged"] = sum(1 for r in every if r.get("hedged"))
    else:
        summary["outage_accuracy"] = None
        summary["note"] = "no site-down rows with a prediction (netcheck skipped?)"
    for kind in ("inferred", "told"):
        rows = _counted([r for res in results if res.get("profile") == kind for r in res["rows"]], phase_up=False)
        summary[kind] = {
            "scenarios": sum(1 for res in results if res.get("profile") == kind),
            "rows": len(rows),
            "accuracy": round(sum(r["match"] for r in rows) / len(rows), 3) if rows else None,
            # "uncertain" rows whose truth was one of the fates they allowed
            "hedged": sum(1 for r in rows if r.get("hedged") and r["match"]),
            # the same rows, with every "uncertain" counted as a miss
            "strict": round(sum(r["match"] and not r.get("hedged") for r in rows) / len(rows), 3) if rows else None,
            # rows whose truth is the lab's model of a client (PAC file unreachable), not a measurement
            "modelled": sum(1 for r in rows if r.get("truth_modelled")),
            # rows whose truth rests on what a real PAC client (Chromium) did without its PAC file: measured
            "pac_measured": sum(1 for r in rows if r.get("truth_pac_client")),
        }
    site_up = _counted([r for res in results for r in res["rows"]], phase_up=True)
    if site_up:
        summary["site_up_agreement"] = round(sum(r["match"] for r in site_up) / len(site_up), 3)
        # hedged statuses (a workload's ``possible``: a PAC policy not stated, a media sample that cannot tell)
        summary["site_up_hedged"] = sum(1 for r in site_up if r.get("hedged") and r["match"])
        summary["site_up_strict"] = round(sum(r["match"] and not r.get("hedged") for r in site_up) / len(site_up), 3)
    return summary


def scenario_files(directory: Path = SCENARIO_DIR) -> list[Path]:
    return sorted(directory.glob("*.toml"))


# ---------------------------------------------------------------------------
# text output


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """One line per scenario and workload; a column per phase.

    A cell reads ``TRUTH nc:PREDICTION``; ``=`` marks agreement, ``X`` an
    outage prediction that was wrong or missing, ``~`` a site-up status that
    differs, ``!`` a truth the scenario did not expect; ``*`` after the truth: the lab's model of the PAC
    client (a cached PAC file), ``+``: measured with a real PAC client (Chromium).
    """
    phases = list(dict.fromkeys(r["phase"] for res in results for r in res.get("rows", [])))
    header = ("scenario", "workload", *phases)
    lines: list[tuple[str, ...]] = [header]
    for res in results:
        if "error" in res:
            lines.append((res["scenario"], "ERROR", res["error"][:80]))
            continue
        cells: dict[str, dict[str, str]] = {}
        for r in res["rows"]:
            cells.setdefault(r["workload"], {})[r["phase"]] = _cell(r)
        for workload, by_phase in cells.items():
            lines.append((res["scenario"], workload, *(by_phase.get(p, "") for p in phases)))
    widths = [max(len(row[i]) if i < len(row) else 0 for row in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _cell(row: dict[str, Any]) -> str:
    pred = row["predicted"] or "n/a"
    if row["match"] is None:
        mark = " "
    elif row["match"]:
        mark = "="
    else:
        mark = "~" if row["phase"] == "site_up" else "X"
    lab = "!" if row["expected"] and row["expected"] != row["truth"] else ""
    # how the PAC client's behaviour without its PAC file was known: * modelled, + measured (Chromium)
    how = "*" if row.get("truth_modelled") else ("+" if row.get("truth_pac_client") else "")
    return f"{row['truth']}{how}{lab} {mark} nc:{pred}"


def _unsupported(nc: dict[str, Any]) -> str:
    flags = nc.get("flags_not_supported")
    return f" [flags not supported: {' '.join(flags)}]" if flags else ""


def format_notes(results: Sequence[dict[str, Any]]) -> str:
    notes = []
    for res in results:
        if "error" in res:
            continue
        nc = res["netcheck"]
        t = res["timings"]
        notes.append(
            f"{res['scenario']}: netcheck {nc['status']}{' (' + nc['message'] + ')' if nc.get('message') else ''}"
            f"{_unsupported(nc)}"
            f"{', verdict ' + str(nc['verdict']) if nc.get('verdict') else ''}; "
            f"bring-up {t.get('bring_up_s', 0):.1f}s, total {t.get('total_s', 0):.1f}s"
        )
        notes += [f"  ! {p}" for p in res["lab_problems"]]
    return "\n".join(notes)
