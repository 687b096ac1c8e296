"""Item 4: hostile files -- /dev/zero, a FIFO, a 100,000-deep JSON or TOML, Latin-1 -- as an endpoint file,
site profile, secret file or file:// PAC: exit 4 (or a PAC finding) with the file's name, at once."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from netcheck.deadline import Deadline
from netcheck.errors import ConfigError
from netcheck.files import load_user_json, load_user_toml, read_user_file
from netcheck.models import Outcome
from netcheck.proxy.pac import fetch_pac
from tests.hostile.sandbox import needs_sandbox, run_sandboxed


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def _deep_json(tmp_path: Path) -> Path:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    return path


def _deep_toml(tmp_path: Path) -> Path:
    path = tmp_path / "deep.toml"
    path.write_text("[site]\nname = " + "[" * 100_000 + "]" * 100_000 + "\n")
    return path


def _latin1(tmp_path: Path) -> Path:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[site]\nname = "Bûreau de Genève"\n'.encode("latin-1"))
    return path


def _zero(tmp_path: Path) -> Path:
    return Path("/dev/zero")


def _huge(tmp_path: Path) -> Path:
    path = tmp_path / "huge.json"
    with path.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: 64 MB that cost nothing to make
    return path


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "dev-zero": (_zero, "it is a device, not a regular file"),
    "fifo": (_fifo, "it is a pipe (FIFO), not a regular file"),
    "deep-json": (_deep_json, "more than 64 levels deep"),
    "deep-toml": (_deep_toml, "more than 64 levels deep"),
    "latin-1": (_latin1, "is not UTF-8 text"),
    "huge": (_huge, "is larger than"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_file_reader_refuses_at_once(tmp_path: Path, case: str) -> None:
    make, message = CASES[case]
    path = make(tmp_path)
    loader = load_user_toml if path.suffix == ".toml" else load_user_json
    with pytest.raises(ConfigError) as err:
        loader(path, what="the test file")
    assert message in str(err.value) and str(path) in str(err.value)


def test_hostile_a_symlink_to_a_regular_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "real.json").write_text('{"a": [1, 2]}')
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert load_user_json(tmp_path / "link.json") == {"a": [1, 2]}
    assert read_user_file(tmp_path / "link.json") == b'{"a": [1, 2]}'


_FLAGS = {"endpoints": "--endpoints-file", "profile": "--site-profile"}


@needs_sandbox
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("kind", "case"), [(k, c) for k in sorted(_FLAGS) for c in sorted(CASES)
                                            if c != ("deep-toml" if k == "endpoints" else "deep-json")])
def test_hostile_check_with_a_hostile_file_exits_4_naming_it(tmp_path: Path, case: str, kind: str) -> None:
    path = CASES[case][0](tmp_path)
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress", "--deadline", "5", _FLAGS[kind], str(path)],
                         tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and CASES[case][1] in lines[0]


@needs_sandbox
@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["dev-zero", "fifo", "latin-1", "huge"])
def test_hostile_enroll_with_a_hostile_secret_file_exits_4(tmp_path: Path, case: str) -> None:
    path = CASES[case][0](tmp_path)
    proc = run_sandboxed(["-m", "netcheck", "enroll", "https://127.0.0.1:9", "--secret-file", str(path)], tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(path) in proc.stderr and CASES[case][1] in proc.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["dev-zero", "fifo", "latin-1", "huge"])
def test_hostile_file_pac_is_an_error_outcome_at_once(tmp_path: Path, case: str) -> None:
    path = CASES[case][0](tmp_path)
    got = fetch_pac(path.as_uri(), Deadline.after(30))
    assert got.outcome is Outcome.ERROR
    assert CASES[case][1] in (got.error or "")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["dev-zero", "fifo", "huge"])
def test_hostile_ca_bundle_is_refused_at_once_naming_it(tmp_path: Path, case: str) -> None:
    from netcheck.agent.transport import ssl_context

    path = CASES[case][0](tmp_path)
    with pytest.raises(ConfigError) as err:
        ssl_context(path)
    assert str(path) in str(err.value) and CASES[case][1] in str(err.value)


def test_hostile_ca_bundle_that_is_a_real_pem_is_used(tmp_path: Path) -> None:
    import certifi

    from netcheck.agent.transport import ssl_context

    (tmp_path / "roots.pem").write_bytes(Path(certifi.where()).read_bytes())
    assert ssl_context(tmp_path / "roots.pem").cert_store_stats()["x509_ca"] > 10


@needs_sandbox
@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["dev-zero", "fifo"])
def test_hostile_public_roots_setting_exits_4_naming_it(tmp_path: Path, case: str) -> None:
    path = CASES[case][0](tmp_path)
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress", "--deadline", "5"], tmp_path,
                         env={"NETCHECK_PUBLIC_ROOTS": str(path)})
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(path) in proc.stderr and CASES[case][1] in proc.stderr
