"""A16 privacy allow-list and A17 secrets at rest.

A16: the report schema admits no field outside its allow-list (every object is
closed), reports the agent uploads validate against it, and nothing the agent
sends (enrollment or upload, checked on the wire through the fault proxy)
carries the host name or the user name.

A17: the token file is 0600 in a directory no one else can write; a full agent
life (enroll, upload, 401s, re-enrollment, failures, a crashing check) logged at
DEBUG, with httpx and httpcore at DEBUG too, and every file the agent wrote
(spool records, state, quarantine, config, policy) contain neither the token(s)
nor the enrollment secret. The CLI's output and logs are checked too.
"""

from __future__ import annotations

import copy
import getpass
import json
import logging
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from netcheck.agent.loop import CheckLane, Shared
from netcheck.agent.schedule import Schedule
from netcheck.agent.transport import CollectorClient, Timeouts
from netcheck.agent.uploader import Uploader
from netcheck.deadline import Deadline
from netcheck.render.json import ACCEPTED_VERSIONS, report_to_dict, schema_path
from netcheck.render.reduced import REDUCED_CONTENT_TYPE, reduced_schema
from tests.agent.conftest import Real, Rig
from tests.agent.helpers import FakeClock, fake_report
from tests.faultproxy import FaultProxy, Forward, HttpRequest, RequestFault, Respond, http_response
from tests.sample_report import sample_report

#: every schema version the collector accepts (an older agent's reports are held to theirs)
SCHEMAS = {v: json.loads(schema_path(v).read_text()) for v in ACCEPTED_VERSIONS}
_VALIDATORS = {v: jsonschema.Draft202012Validator(s, format_checker=jsonschema.FormatChecker())
               for v, s in SCHEMAS.items()}


#: the same schemas as they take the reduced form of a report (what most uploads carry)
_REDUCED_VALIDATORS = {v: jsonschema.Draft202012Validator(reduced_schema(s), format_checker=jsonschema.FormatChecker())
                       for v, s in SCHEMAS.items()}


def _validator(doc: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return _VALIDATORS[doc["schema_version"]]


def _private_words() -> set[str]:
    words = {socket.gethostname(), socket.getfqdn(), getpass.getuser(), os.environ.get("USER", ""),
             os.environ.get("LOGNAME", ""), Path.home().name}
    return {w for w in words if w and len(w) >= 3 and w not in ("localhost", "root")} | \
        ({"root"} if getpass.getuser() != "root" else set())


def _objects(schema: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(schema, dict):
        if schema.get("type") == "object" or "properties" in schema:
            yield path, schema
        for key, value in schema.items():
            yield from _objects(value, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from _objects(value, f"{path}/{i}")


@pytest.mark.parametrize("reduced", [False, True])
@pytest.mark.parametrize("version", ACCEPTED_VERSIONS)
def test_a16_every_object_in_the_schema_is_closed(version: int, reduced: bool) -> None:
    objects = list(_objects(reduced_schema(SCHEMAS[version]) if reduced else SCHEMAS[version]))
    assert len(objects) >= 8
    for path, obj in objects:
        # `facts` is closed too: only lower-case names (patternProperties), at most 64 of them
        assert obj.get("additionalProperties") is False, f"{path} admits fields outside the allow-list"
        if "patternProperties" in obj:
            assert "maxProperties" in obj, f"{path} is an unbounded map"


@pytest.mark.parametrize("where", ["top", "tool", "host", "catalog", "workload", "finding", "probe", "phases"])
def test_a16_a_field_outside_the_allow_list_is_rejected(where: str) -> None:
    report = fake_report()
    assert not list(_validator(report).iter_errors(report))
    bad = copy.deepcopy(report)
    target = {"top": bad, "tool": bad["tool"], "host": bad["host"], "catalog": bad["catalog"],
              "workload": bad["workloads"][0], "finding": bad["findings"][0], "probe": bad["probes"][0],
              "phases": bad["probes"][0]["phases"]}[where]
    target["username"] = "alice"
    errors = list(_validator(bad).iter_errors(bad))
    assert errors and any("username" in e.message for e in errors)


def test_a16_reports_rendered_by_netcheck_validate_and_carry_no_private_names() -> None:
    doc = report_to_dict(sample_report())
    _validator(doc).validate(doc)
    text = json.dumps(doc)
    for word in _private_words():
        assert word not in text


def test_a16_nothing_the_agent_sends_names_the_host_or_the_user(real: Callable[..., Real],
                                                                rigs: Callable[..., Rig]) -> None:
    collector = real()
    with FaultProxy(("127.0.0.1", int(collector.url.rsplit(":", 1)[1]))) as proxy:
        proxy.request_fault = lambda req: Forward()
        rig = rigs(proxy.url, collector.secret)  # enrollment through the proxy too
        for _ in range(3):
            rig.spool.append(fake_report())
        rig.uploader.drain(Deadline.after(30))
        wire = proxy.all_received()
        requests = list(proxy.requests)
    enroll = json.loads(next(r.content for r in requests if r.path == "/api/v1/enroll"))
    assert set(enroll) == {"secret", "device"}
    assert set(enroll["device"]) == {"hardware_id", "name", "os", "agent_version", "tags"}
    assert enroll["device"]["name"] is None
    uploads = [(json.loads(r.content), {k.lower(): v for k, v in r.headers.items()}["content-type"])
               for r in requests if r.path == "/api/v1/reports"]
    # the first goes in full, the next two (measured the same day) in the reduced form
    assert [media for _, media in uploads] == ["application/json", REDUCED_CONTENT_TYPE, REDUCED_CONTENT_TYPE]
    for body, media in uploads:
        assert set(body) == {"report", "agent", "sweep_id"}
        assert set(body["agent"]) == {"seq", "dropped", "spool_full", "sent_at"}
        validator = _validator(body["report"]) if media == "application/json" else _REDUCED_VALIDATORS[
            body["report"]["schema_version"]]
        validator.validate(body["report"])
    for word in _private_words():
        assert word.encode() not in wire, f"{word!r} left the laptop"


# -- A17 ------------------------------------------------------------------------------

def _files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        for dirpath, _, names in os.walk(root):
            for name in names:
                yield Path(dirpath) / name


def test_a17_tokens_and_secret_never_reach_logs_or_files(real: Callable[..., Real], rigs: Callable[..., Rig],
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    collector = real()
    clock = FakeClock()
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "netcheck"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    refused: set[str] = set()

    def decide(req: HttpRequest) -> RequestFault:
        if req.path == "/api/v1/reports" and req.headers.get("authorization", "")[7:] in refused:
            return Respond(http_response(401, '{"error":{"code":"unauthorized","message":"no"}}'))
        return Forward()

    with FaultProxy(("127.0.0.1", int(collector.url.rsplit(":", 1)[1]))) as proxy:
        proxy.request_fault = decide
        rig = rigs(proxy.url, collector.secret, wall=clock)
        first_token = rig.store.load_token()
        monkeypatch.setenv("NETCHECK_ENROLL_SECRET", collector.secret)
        # a normal upload, then the token is refused for 40 minutes until the agent re-enrolls
        rig.spool.append(fake_report())
        rig.uploader.drain(Deadline.after(10))
        refused.add(first_token)
        rig.spool.append(fake_report())
        for _ in range(60):
            clock.advance(60)
            if rig.uploader.drain(Deadline.after(10)).reenrolled:
                break
        second_token = rig.store.load_token()
        assert second_token != first_token
        # refusals of every kind, a crashing check, a TLS failure
        rig.spool.append(fake_report(username="x"))
        rig.uploader.drain(Deadline.after(10))
        lane = CheckLane(lambda req: 1 / 0, rig.spool, Shared(Schedule(60, 0), rig.spool.root),  # type: ignore[arg-type,return-value]
                         clock=clock, rng=__import__("random").Random(0))
        lane.check_and_spool(None)
        # https:// to a server that speaks plain HTTP: the handshake fails
        with CollectorClient(collector.url.replace("http://", "https://"), token=second_token,
                             timeouts=Timeouts(2, 2, 2, 4)) as tls_client:
            rig.spool.append(fake_report())
            Uploader(rig.spool, tls_client).drain(Deadline.after(10))

    secrets_ = [first_token, second_token, collector.secret]
    logs = caplog.text
    assert "re-enrolled" in logs and "Traceback" in logs and "TLS" in logs  # the scenario really ran
    for secret in secrets_:
        assert secret not in logs
    for path in _files_under(rig.spool.root, rig.store.directory):
        data = path.read_bytes()
        for secret in secrets_:
            if path == rig.store.token_path and secret == second_token:
                continue
            assert secret.encode() not in data, f"{path} holds a secret"
    mode = stat.S_IMODE(rig.store.token_path.stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(rig.store.directory.stat().st_mode) & 0o022 == 0


def test_a17_cli_output_and_logs_hold_no_secret(real: Callable[..., Real], tmp_path: Path) -> None:
    collector = real()
    secret_file = tmp_path / "enroll-secret"
    secret_file.write_text(collector.secret)
    os.chmod(secret_file, 0o600)
    env = {**os.environ}
    got = subprocess.run([sys.executable, "-m", "netcheck", "enroll", collector.url, "--secret-file",
                          str(secret_file), "--tag", "site=lab", "--verbose"], capture_output=True, text=True,
                         env=env, timeout=60, check=False)
    assert got.returncode == 0, got.stderr
    from netcheck.agent.config import AgentStore
    store = AgentStore()
    token = store.load_token()
    assert stat.S_IMODE(store.token_path.stat().st_mode) == 0o600
    for text in (got.stdout, got.stderr):
        assert token not in text and collector.secret not in text
    # a second enrollment with the secret on the command line: still never echoed
    got = subprocess.run([sys.executable, "-m", "netcheck", "enroll", collector.url, "--secret",
                          collector.secret, "-v"], capture_output=True, text=True, env=env, timeout=60,
                         check=False)
    assert got.returncode == 0
    assert collector.secret not in got.stdout + got.stderr
    assert store.load_token() not in got.stdout + got.stderr
