"""The wheel and the sdist: one version, all the data inside, and an install from a wheelhouse
alone (no package index) that runs."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from netcheck import __version__
from tests.packaging.conftest import ROOT, Dist, run

pytestmark = pytest.mark.packaging

#: data the agent reads at run time, inside the wheel
DATA = ["netcheck/py.typed", "netcheck/schema/report-v1.schema.json", "netcheck/platform/adapters.toml",
        "netcheck/collector/migrations/script.py.mako"]
DATA += [f"netcheck/endpoints/{p.name}" for p in sorted((ROOT / "endpoints").iterdir()) if p.is_file()]


def test_the_version_lives_in_one_place() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["hatch"]["version"]["path"] == "netcheck/__init__.py"
    assert importlib.metadata.version("netcheck-m365") == __version__
    out = subprocess.run([sys.executable, "-m", "netcheck", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"netcheck, version {__version__}"


def test_wheel_holds_the_code_and_every_data_file(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as whl:
        names = set(whl.namelist())
        metadata = whl.read(f"netcheck_m365-{__version__}.dist-info/METADATA").decode()
        entry_points = whl.read(f"netcheck_m365-{__version__}.dist-info/entry_points.txt").decode()
    missing = [d for d in DATA if d not in names]
    assert not missing, f"not in the wheel: {missing}"
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "netcheck").rglob("*.py")}
    assert sources <= names, f"modules not in the wheel: {sorted(sources - names)[:10]}"
    assert f"Version: {__version__}" in metadata.splitlines()
    assert "netcheck = netcheck.cli:main" in entry_points
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n or n.endswith(".pyc")]


def test_sdist_builds_the_same_wheel(dist: Dist, tmp_path: Path) -> None:
    with tarfile.open(dist.sdist) as tar:
        names = set(tar.getnames())
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later (Debian 12 has 3.11.2)
            tar.extractall(tmp_path, filter="data")
        else:
            tar.extractall(tmp_path)  # noqa: S202 - our own sdist
    top = f"netcheck_m365-{__version__}"
    for needed in ("pyproject.toml", "README.md", "endpoints/worldwide.json", "netcheck/schema/report-v1.schema.json",
                   "packaging/README.md", "packaging/pyinstaller/netcheck.spec", "tests/conftest.py"):
        assert f"{top}/{needed}" in names, needed
    run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path / "out")], cwd=tmp_path / top)
    with zipfile.ZipFile(next((tmp_path / "out").glob("*.whl"))) as rebuilt, zipfile.ZipFile(dist.wheel) as wheel:
        assert sorted(rebuilt.namelist()) == sorted(wheel.namelist())


def test_wheel_installs_from_the_wheelhouse_alone_and_runs(dist: Dist, fresh_venv: Path, tmp_path: Path) -> None:
    pip = [str(fresh_venv / "bin" / "python"), "-m", "pip"]
    run([*pip, "install", "-q", "--no-index", "--find-links", str(dist.wheelhouse), str(dist.wheel)], timeout=300)
    netcheck = fresh_venv / "bin" / "netcheck"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    out = run([str(netcheck), "--version"], env=env, cwd=tmp_path)
    assert out.stdout.strip() == f"netcheck, version {__version__}"
    shown = run([str(netcheck), "endpoints", "show"], env=env, cwd=tmp_path)
    assert "Worldwide endpoint data" in shown.stdout and "bundled snapshot" in shown.stdout
    # the data comes from the installed package, not from this checkout
    where = run([str(fresh_venv / "bin" / "python"), "-c", "import netcheck.m365.catalog as c; print(c.data_dir())"],
                env=env, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(fresh_venv)), where.stdout
    # without the collector extra, the collector's commands say what to install
    serve = run([str(netcheck), "serve"], env=env, cwd=tmp_path, check=False)
    assert serve.returncode == 4 and "pip install 'netcheck-m365[collector]'" in serve.stderr, serve.stderr


def test_pipx_installs_the_wheel(dist: Dist, tmp_path: Path) -> None:
    """What the issue asks for, as a user would do it (Debian's pipx; its own dirs under tmp_path)."""
    pipx = shutil.which("pipx")
    if pipx is None:
        pytest.fail("pipx is missing: install Debian's pipx (.ci/apt-packages.txt)")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin")}
    run([pipx, "install", "--pip-args", f"--no-index --find-links {dist.wheelhouse}", str(dist.wheel)], env=env,
        cwd=tmp_path, timeout=300)
    out = run([str(tmp_path / "bin" / "netcheck"), "--version"], env=env, cwd=tmp_path)
    assert out.stdout.strip() == f"netcheck, version {__version__}"
    shown = run([str(tmp_path / "bin" / "netcheck"), "endpoints", "show"], env=env, cwd=tmp_path)
    assert "Worldwide endpoint data" in shown.stdout
    run([pipx, "uninstall", "netcheck-m365"], env=env, cwd=tmp_path)
    assert not (tmp_path / "bin" / "netcheck").exists()
