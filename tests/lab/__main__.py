"""Command line of the lab (run as root from the repository root).

python -m tests.lab run SCENARIO.toml [--json] [--artifacts DIR]
python -m tests.lab shell SCENARIO.toml [--site-down | --down office|dc ...] [--vpn stays|drops]
python -m tests.lab matrix [--dir DIR] [--jobs N] [--json] [--artifacts DIR]
python -m tests.lab matrix --generated all|N [--seed S] [--jobs N]   (the all-pairs scenarios)
python -m tests.lab generate --out DIR [--seed S] [--subset N]   (write them)
python -m tests.lab check SCENARIO.toml...   (validate scenario files only)
python -m tests.lab doctor                   (are the lab's tools installed?)
python -m tests.lab cleanup                  (remove what killed runs left)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import addressing as A
from . import generate as gen
from . import scenario as sc
from .netns import LabError, cleanup_stale, install_signal_handlers, require_root
from .preflight import missing_tools
from .runner import format_notes, format_table, run_matrix, run_scenario, scenario_files
from .world import LAPTOP_GID, LAPTOP_UID, World


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="lab: %(message)s", stream=sys.stderr
    )
    install_signal_handlers(lambda: None)  # SIGTERM/SIGHUP unwind like Ctrl-C: worlds are torn down
    try:
        return int(args.func(args))
    except (LabError, sc.ScenarioError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lab: interrupted; the world was torn down", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if isinstance(exc.code, int) and exc.code > 128:
            print("lab: terminated; the world was torn down", file=sys.stderr)
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.lab", description="netcheck's network lab (see docs/lab.md)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the lab does")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run one scenario and print netcheck's prediction beside the truth")
    p.add_argument("scenario", type=Path)
    p.add_argument("--json", action="store_true", help="print the full JSON result")
    p.add_argument("--artifacts", type=Path, help="save netcheck's report and server logs here")
    p.add_argument("--skip-netcheck", action="store_true", help="measure truth only")
    p.add_argument("--netcheck", help="the netcheck program to run (e.g. the frozen executable; default: the venv's)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("shell", help="bring a scenario up and open a shell in the laptop")
    p.add_argument("scenario", type=Path)
    p.add_argument("--site-down", action="store_true", help="take the site down before the shell starts")
    p.add_argument(
        "--down",
        action="append",
        choices=sc.SITES,
        default=[],
        help="a two-site world: take this site down (repeat for both; implies --site-down)",
    )
    p.add_argument("--vpn", choices=("stays", "drops"), default="stays", help="with --site-down: what the VPN does")
    p.set_defaults(func=cmd_shell)

    p = sub.add_parser("matrix", help="run every scenario and print the combined table")
    p.add_argument("--dir", type=Path, default=None, help="scenario directory (default: tests/lab/scenarios)")
    p.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    p.add_argument("--jobs", type=int, default=1, help="scenarios to run at once (default 1)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--artifacts", type=Path)
    p.add_argument("--skip-netcheck", action="store_true")
    p.add_argument("--netcheck", help="the netcheck program to run (default: the venv's)")
    p.add_argument(
        "--generated",
        metavar="all|N",
        help="run the all-pairs generated scenarios (all, or a seeded subset of N) instead of the shipped ones",
    )
    p.add_argument("--seed", type=int, default=gen.SEED, help=f"generator seed (default {gen.SEED})")
    p.set_defaults(func=cmd_matrix)

    p = sub.add_parser("generate", help="write all-pairs combinations of the scenario knobs (docs/lab.md)")
    p.add_argument("--out", type=Path, required=True, help="directory for the scenario files")
    p.add_argument("--seed", type=int, default=gen.SEED, help=f"generator seed (default {gen.SEED})")
    p.add_argument("--subset", type=int, default=None, help="keep a seeded sample of this many")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("check", help="validate scenario files without building anything")
    p.add_argument("scenarios", type=Path, nargs="+")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("doctor", help="check that the lab's tools are installed")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("cleanup", help="remove namespaces and processes left by killed runs")
    p.set_defaults(func=cmd_cleanup)
    return parser


def _preflight() -> None:
    reason = require_root()
    if reason:
        raise LabError(reason)
    missing = missing_tools()
    if missing:
        raise LabError("missing tools: " + "; ".join(missing) + " (see .ci/lab-apt-packages.txt)")
    cleanup_stale()


def _progress(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    sc.load(args.scenario)  # report a bad file before needing root
    _preflight()
    result = run_scenario(
        args.scenario, artifacts=args.artifacts, skip_netcheck=args.skip_netcheck, netcheck=args.netcheck,
        progress=_progress,
    )
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table([result]))
        print()
        print(format_notes([result]))
    return 1 if result["lab_problems"] else 0


def cmd_generate(args: argparse.Namespace) -> int:
    made = gen.write(args.out, args.seed, args.subset)
    print(f"{len(made.files)} scenarios in {args.out} covering every valid pair of {made.pairs} knob-value pairs")
    for line in made.skipped:
        print(f"skipped: {line}")
    return 0


def cmd_matrix(args: argparse.Namespace) -> int:
    if args.generated:
        out = Path(tempfile.mkdtemp(prefix="netcheck-lab-generated-"))
        subset = None if args.generated == "all" else int(args.generated)
        args.dir = out
        gen.write(out, args.seed, subset)
    paths = scenario_files(args.dir) if args.dir else scenario_files()
    if args.only:
        paths = [p for p in paths if p.stem in args.only or sc.load(p).name in args.only]
    if not paths:
        raise LabError("no scenario files found")
    for p in paths:
        sc.load(p)
    _preflight()
    matrix = run_matrix(
        paths, jobs=args.jobs, artifacts=args.artifacts, skip_netcheck=args.skip_netcheck, netcheck=args.netcheck,
        progress=_progress,
    )
    if args.json:
        print(json.dumps(matrix, indent=2))
    else:
        print(format_table(matrix["scenarios"]))
        print()
        print(format_notes(matrix["scenarios"]))
        print()
        print(_summary_line(matrix))
    bad = matrix["summary"]["lab_problems"] or matrix["summary"]["errors"]
    return 1 if bad else 0


def _summary_line(matrix: dict[str, Any]) -> str:
    s = matrix["summary"]
    acc = s.get("outage_accuracy")
    parts = [f"{s['scenarios']} scenarios, {s['rows']} rows in {matrix['matrix_seconds']:.0f}s"]
    parts.append(
        f"outage prediction accuracy {acc:.1%} over {s['outage_predictions']} rows ({s['misses']} missed)"
        if acc is not None
        else s.get("note", "")
    )
    for kind in ("inferred", "told"):
        k = s.get(kind) or {}
        if k.get("accuracy") is not None:
            parts.append(
                f"{kind} {k['accuracy']:.1%} over {k['rows']} rows of {k['scenarios']} scenarios "
                f"({k['hedged']} right only as 'uncertain'; {k['strict']:.1%} counting those as misses; "
                f"{k['modelled']} on a modelled truth, {k.get('pac_measured', 0)} measured by a real PAC client)"
            )
    if s.get("site_up_agreement") is not None:
        parts.append(f"site-up status agrees with truth on {s['site_up_agreement']:.1%}")
    parts.append(f"lab problems: {s['lab_problems']}, errors: {s['errors']}")
    return "; ".join(p for p in parts if p)


def cmd_check(args: argparse.Namespace) -> int:
    for path in args.scenarios:
        s = sc.load(path)
        knobs = f"vpn {s.vpn.mode}, proxy {s.proxy.mode}, identity {s.identity.mode}"
        if s.sites.two:
            knobs += f", sites {s.sites.office!r} and {s.sites.dc!r}"
        print(f"{path}: ok ({s.name}: {knobs}, phases {', '.join(s.outage_phases())})")
    return 0


def cmd_doctor(_args: argparse.Namespace) -> int:
    missing = missing_tools()
    reason = require_root()
    for line in missing:
        print(f"missing: {line}")
    if reason:
        print(f"cannot run: {reason}")
    if not missing and not reason:
        print("the lab can run here")
    return 1 if missing or reason else 0


def cmd_cleanup(_args: argparse.Namespace) -> int:
    reason = require_root()
    if reason:
        raise LabError(reason)
    removed = cleanup_stale()
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing to clean up")
    return 0


def cmd_shell(args: argparse.Namespace) -> int:
    scenario = sc.load(args.scenario)
    if args.down and not scenario.sites.two:
        raise LabError(f"{args.scenario}: --down needs a two-site scenario ([sites] dc = 'NAME')")
    args.site_down = args.site_down or bool(args.down)
    _preflight()
    with World(scenario) as world:
        if args.site_down:
            world.site_down(tuple(args.down) or ("office",))
            if args.vpn == "drops":
                world.vpn_drop()
        rc_file = world.dir / "shellrc"
        rc_file.write_text(_shell_rc(world))
        env = world.laptop_env() | {"TERM": os.environ.get("TERM", "xterm"), "LAB_RUN": world.dir.as_posix()}
        print(_banner(world, args.site_down), file=sys.stderr)
        previous = signal.signal(signal.SIGINT, lambda *_: None)  # Ctrl-C belongs to the shell
        try:
            subprocess.call(
                ["ip", "netns", "exec", world.ns["laptop"], "bash", "--rcfile", str(rc_file), "-i"], env=env
            )
        finally:
            signal.signal(signal.SIGINT, previous)
        print("lab: tearing down", file=sys.stderr)
    return 0


def _shell_rc(world: World) -> str:
    from .netcheck_runner import find_netcheck, netcheck_argv

    exe = find_netcheck(world.python) or "netcheck"
    check = " ".join(netcheck_argv(world, exe)[0])
    return f"""
PS1='[lab {world.scenario.name} laptop]# '
as_user() {{ setpriv --reuid={LAPTOP_UID} --regid={LAPTOP_GID} --clear-groups -- "$@"; }}
netcheck_check() {{ as_user {check} "$@"; }}
lab_site_down() {{
    ip -n {world.ns["inet"]} link set corp0 down; ip -n {world.ns["corp"]} link set wan0 down
    echo "site is down (the VPN stays)"
}}
lab_site_up() {{ ip -n {world.ns["inet"]} link set corp0 up; ip -n {world.ns["corp"]} link set wan0 up; }}
"""


def _banner(world: World, site_down: bool) -> str:
    ns = world.ns
    down = f" - DOWN: {', '.join(sorted(world.down))}" if site_down else ""
    return f"""
lab: scenario {world.scenario.name} is up (run {world.run_id}, {world.timings["bring_up_s"]:.1f}s){down}
lab: namespaces: {", ".join(ns.values())}
lab: files: {world.dir}  (endpoints.json, pki/, logs/)
lab: you are root in the laptop; helpers:
lab:   as_user CMD...     run CMD as the laptop's user (nobody)
lab:   netcheck_check     run netcheck check --json as the user with the lab's flags
lab:   lab_site_down      cut the site off the internet (the tunnel stays)
lab: try: as_user curl -sI https://outlook.office365.com/ ; kdig {A.WHOAMI_NAME} ; ip rule; ip route show table all
lab: exit the shell to tear everything down
"""


if __name__ == "__main__":
    sys.exit(main())
