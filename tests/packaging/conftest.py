"""Packaging fixtures: the artefacts CI ships, built once per session by packaging/'s own scripts.

Each build is cached in ``build/packaging/<name>-<key>``, where the key hashes everything the
artefact is made of (netcheck/, endpoints/, packaging/, pyproject.toml, README.md, this file, the
Python and the installed packages): a re-run with nothing changed reuses it, a clean clone builds it.
The figures (artefact sizes, start-up times) are printed at the end of the run, never asserted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netcheck import __version__

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "build" / "packaging"
#: figures printed in the terminal summary: (what, value)
FIGURES: list[tuple[str, str]] = []
_FAILED: dict[str, str] = {}


def record(what: str, value: str) -> None:
    FIGURES.append((what, value))


def size(path: Path) -> str:
    if path.is_dir():
        total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    else:
        total = path.stat().st_size
    return f"{total / 1e6:.1f} MB"


def _inputs_key(*extra: str) -> str:
    digest = hashlib.sha256()
    inputs = ["netcheck", "endpoints", "packaging", "pyproject.toml", "README.md", "tests/packaging/conftest.py"]
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", *inputs], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    for name in sorted(listed.stdout.split()):
        path = ROOT / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout
    digest.update(sys.version.encode() + freeze.encode())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:16]


def cached_build(name: str, build: Callable[[Path], None], *extra: str) -> Path:
    """The directory holding artefact ``name``: built by ``build(dir)`` unless cached.

    A failed build fails every test that needs it without being tried again.
    """
    if name in _FAILED:
        pytest.fail(f"building {name} failed earlier in this session: {_FAILED[name]}")
    out = CACHE / f"{name}-{_inputs_key(*extra)}"
    if (out / ".done").exists():
        return out
    for stale in CACHE.glob(f"{name}-*"):  # older builds (not another session's, still in use)
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
    except BaseException as exc:
        _FAILED[name] = str(exc).splitlines()[0][:300]
        raise
    (tmp / ".done").touch()
    tmp.rename(out)
    return out


def run(argv: list[str], *, timeout: float = 600, check: bool = True, **kwargs: object
        ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    assert isinstance(result, subprocess.CompletedProcess)
    return result


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path
    wheelhouse: Path


@pytest.fixture(scope="session")
def dist() -> Dist:
    """The wheel, the sdist and a wheelhouse with every dependency (packaging/build-wheel.sh)."""
    def build(out: Path) -> None:
        run(["bash", str(ROOT / "packaging" / "build-wheel.sh"), str(out)], env={**os.environ,
                                                                               "PYTHON": sys.executable})

    out = cached_build("dist", build)
    wheel = out / f"netcheck_m365-{__version__}-py3-none-any.whl"
    sdist = out / f"netcheck_m365-{__version__}.tar.gz"
    record("wheel", size(wheel))
    record("sdist", size(sdist))
    record("wheelhouse (all dependencies, collector extra included)", size(out / "wheelhouse"))
    return Dist(wheel, sdist, out / "wheelhouse")


@pytest.fixture(scope="session")
def agent_exe() -> Path:
    """The single-file executable (packaging/pyinstaller/build.sh), readable by every user (the lab's laptop
    user runs it)."""
    if shutil.which("objdump") is None and sys.platform == "linux":
        pytest.fail("PyInstaller needs objdump: install binutils (.ci/apt-packages.txt)")

    def build(out: Path) -> None:
        run(["bash", str(ROOT / "packaging" / "pyinstaller" / "build.sh"), str(out)],
            env={**os.environ, "PYTHON": sys.executable, "PYINSTALLER_WORKPATH": str(out / "work")}, timeout=900)
        # the modules inside the executable, for test_every_agent_module_is_inside
        shutil.copy(out / "work" / "netcheck" / "PYZ-00.toc", out / "modules.toc")
        shutil.rmtree(out / "work")

    out = cached_build("exe", build)
    exe = out / "netcheck"
    for d in (CACHE.parent, CACHE, out):
        d.chmod(d.stat().st_mode | 0o005)
    record("single-file executable (Linux)", size(exe))
    return exe


@pytest.fixture(scope="session")
def debs(agent_exe: Path, dist: Dist) -> dict[str, Path]:
    """Both Debian packages (packaging/debian/build-debs.sh)."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is missing: the Debian packages are built on Debian only")

    def build(out: Path) -> None:
        run(["bash", str(ROOT / "packaging" / "debian" / "build-debs.sh"), str(agent_exe), str(dist.wheelhouse),
             str(out)], timeout=900)

    out = cached_build("debs", build, agent_exe.parent.name, dist.wheel.parent.name)
    found = {p.name.split("_")[0]: p for p in out.glob("*.deb")}
    for name, path in sorted(found.items()):
        record(f"{name}.deb", size(path))
    return found


@pytest.fixture
def fresh_venv(tmp_path: Path) -> Iterator[Path]:
    """An empty virtual environment (Debian's Python where there is one, as on a user's machine)."""
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    venv = tmp_path / "venv"
    run([python, "-m", "venv", str(venv)])
    yield venv


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("packaging figures (measured, not asserted)")
        for what, value in FIGURES:
            terminalreporter.write_line(f"{what}: {value}")
