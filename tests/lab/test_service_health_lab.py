"""Must show (issue 15), in the lab: a simulated Exchange incident is published on a loopback Graph,
a real collector (``netcheck serve``) polls it, an agent enrolls and receives its policy with the
service health; then the real ``netcheck check`` runs on the lab's laptop, as its unprivileged user,
with that agent's state, while Microsoft's Exchange front doors refuse every connection
(``World.service_down``). Its text and JSON output name the incident; the report, uploaded to the
collector as ``netcheck check --upload`` uploads it, is named beside the failure on the dashboard's
overview and the device's page.

The collector, the Graph double and the agent's enrollment live in the root namespace on loopback
(the lab's laptop cannot reach them); the check itself runs only in the lab.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from netcheck.agent.loop import build_agent, default_run_check
from netcheck.agent.schedule import Schedule
from netcheck.agent.upload import UploadStatus, spool_and_upload
from tests.agent.conftest import Real, make_rig, real  # noqa: F401 - fixture, registered by import
from tests.agent.test_service_health_flow import (
    assert_dashboard_names_incident,
    assert_stored_report_names_incident,
    graph,  # noqa: F401 - fixture, registered by import
    polling_collector,
    publish_exchange_incident,
)
from tests.collector.conftest import backend, new_database, pg_cluster  # noqa: F401 - fixtures
from tests.graph_double import GraphDouble
from tests.lab import scenario as sc
from tests.lab.netcheck_runner import find_netcheck, netcheck_argv
from tests.lab.test_lab import _require_lab
from tests.lab.truth import measure
from tests.lab.world import LAPTOP_GID, LAPTOP_UID, World

SCENARIO = Path(__file__).resolve().parent / "scenarios" / "home-no-vpn.toml"


def _give_to_laptop_user(*paths: Path) -> None:
    for top in paths:
        for path in [top, *top.rglob("*")]:
            os.chown(path, LAPTOP_UID, LAPTOP_GID)


@pytest.mark.lab
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_lab_laptop_that_fails_exchange_names_the_microsoft_incident(
        backend: str, real: Callable[..., Real], graph: GraphDouble, tmp_path: Path) -> None:  # noqa: F811
    _require_lab()
    named = publish_exchange_incident(graph)
    collector = polling_collector(real, graph, tmp_path)
    with World(sc.load(SCENARIO)) as world:
        world.service_down("Exchange")
        truth = measure(world)  # the lab's own measurement (curl, as the laptop user), not netcheck's
        assert (truth["exchange"].truth, truth["teams"].truth) == ("fails", "works"), truth["exchange"].to_json()
        # the agent's files where the laptop user's netcheck looks for them (its data_dir())
        data_dir = world.user_home / ".local" / "share" / "netcheck"
        rig = make_rig(data_dir, collector.url, collector.secret)
        try:
            agent = build_agent(run_check=default_run_check, spool=rig.spool, client=rig.client,
                                uploader=rig.uploader, schedule=Schedule())
            agent.net_lane.refresh_policy(agent.net_lane.clock())  # the policy, with the service health
            policy = json.loads((rig.spool.root / "policy.json").read_text("utf-8"))
            assert [i["id"] for i in policy["service_health"]["issues"]] == ["EX123456"]
            os.chown(data_dir, LAPTOP_UID, LAPTOP_GID)
            _give_to_laptop_user(rig.spool.root)  # its token (config/) stays root's

            exe = find_netcheck(world.python)
            assert exe is not None
            argv, _ = netcheck_argv(world, exe)
            argv.remove("--json")  # text on standard output, the JSON report in a file
            json_path = world.user_home / "tmp" / "report.json"
            env = {**world.laptop_env(), "COLUMNS": "200"}
            res = world.laptop_run([*argv, "--output", str(json_path)], env=env,
                                   timeout=world.scenario.netcheck.deadline + 60)
            assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)  # not ready
            report = json.loads(json_path.read_text("utf-8"))

            text = " ".join(res.stdout.split())
            assert named in text, res.stdout
            assert "Microsoft reports an incident for Exchange Online (EX123456): this is not your network." in text
            statuses = {w["id"]: w["status"] for w in report["workloads"]}
            assert statuses["exchange"] == "failed" and statuses["teams"] == "ok", statuses
            incident = [f for f in report["findings"] if f["code"] == "service_health.incident"]
            assert [(f["title"], f["workload"]) for f in incident] == [(named, "exchange")]
            assert "TM000001" not in json.dumps(report)

            got = spool_and_upload(report, deadline_s=30, store=rig.store, spool=rig.spool)
            assert (got.status, got.uploaded) == (UploadStatus.UPLOADED, 1), got
        finally:
            rig.client.close()
    assert_stored_report_names_incident(collector, named)
    assert_dashboard_names_incident(collector, graph)
