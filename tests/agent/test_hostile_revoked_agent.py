"""A revoked laptop stays out (issue 10, item 11): its real agent, enrolled with a real collector
and holding its enrollment secret, keeps getting 401 after `netcheck admin revoke-device`, and its
automatic re-enrollment after repeated 401s is refused, until `netcheck admin readmit-device`.

Time is simulated for the agent's 401 debounce (an injected wall clock); the HTTP, the collector
and its database (SQLite and PostgreSQL) are real.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable

import pytest

from netcheck.deadline import Deadline
from tests.agent.conftest import Real, Rig
from tests.agent.helpers import FakeClock, fake_report
from tests.collector.conftest import sql


def _admin(collector: Real, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netcheck", "admin", *args, "--database-url",
                           collector.database_url], capture_output=True, text=True, timeout=60, check=False)


def _tokens(collector: Real, device: str) -> int:
    return int(sql(collector.database_url, "SELECT count(*) FROM device_tokens WHERE device_id = :d",
                   d=device)[0][0])


def test_hostile_a_revoked_laptop_cannot_re_enroll_until_readmitted(real: Callable[..., Real],
                                                                     rigs: Callable[..., Rig],
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    collector = real(env={"NETCHECK_RATE_ENROLL_ADDRESS": "0"})
    clock = FakeClock()
    rig = rigs(collector.url, collector.secret, wall=clock)
    device = rig.store.load_config().device_id
    old_token = rig.store.load_token()
    monkeypatch.setenv("NETCHECK_ENROLL_SECRET", collector.secret)  # the agent can re-enroll on its own
    rig.spool.append(fake_report())
    assert rig.uploader.drain(Deadline.after(10)).stored == 1

    got = _admin(collector, "revoke-device", device)
    assert got.returncode == 0 and f"Revoked {device}" in got.stdout, got.stderr
    rig.spool.append(fake_report())
    with caplog.at_level(logging.WARNING):
        for _ in range(60):  # an hour of refusals, two a minute: past the agent's re-enrollment threshold
            result = rig.uploader.drain(Deadline.after(10))
            assert result.failure is not None and result.failure.status == 401 and not result.reenrolled
            clock.advance(60)
    assert "revoked this device" in caplog.text  # the agent tried, and was told why
    assert rig.store.load_token() == old_token and _tokens(collector, device) == 1
    assert len(rig.spool.pending()) == 1  # kept, not lost
    # a fresh enrollment of the same laptop (netcheck enroll again) is refused too
    again = rig.client.enroll(b'{"secret": "%s", "device": {"hardware_id": "%s", "name": null, "os": "linux", '
                              b'"agent_version": "0.1.0", "tags": {}}}'
                              % (collector.secret.encode(), rig.machine.encode()), Deadline.after(10))
    assert again.status == 403 and again.error_code == "device_revoked"

    got = _admin(collector, "readmit-device", device)
    assert got.returncode == 0 and "Re-admitted" in got.stdout, got.stderr
    for _ in range(5):
        result = rig.uploader.drain(Deadline.after(10))
        if result.reenrolled:
            break
        clock.advance(60)
    assert result.reenrolled and result.stored == 1
    assert rig.store.load_config().device_id == device and rig.store.load_token() != old_token
    assert _tokens(collector, device) == 2


def test_hostile_revoking_or_readmitting_an_unknown_device_is_exit_4(real: Callable[..., Real]) -> None:
    collector = real()
    for command in ("revoke-device", "readmit-device"):
        got = _admin(collector, command, "00000000-0000-0000-0000-000000000000")
        assert got.returncode == 4, got
        assert got.stderr == ("Error: no device '00000000-0000-0000-0000-000000000000' "
                              "(see `netcheck admin devices`)\n")
