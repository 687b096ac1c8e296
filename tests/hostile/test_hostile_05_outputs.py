"""Item 5: output paths. Devices, pipes and symlinks are written through and stay what they are;
regular files are replaced atomically; ``-o -`` is standard output."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from netcheck.paths import write_output
from netcheck.render.json import SCHEMA_VERSION
from tests.hostile.sandbox import needs_sandbox, run_sandboxed


def test_hostile_write_to_dev_null_leaves_the_device(tmp_path: Path) -> None:
    write_output(Path("/dev/null"), b"{}")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_hostile_write_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_output(link, b"new")
    assert link.is_symlink() and target.read_text() == "new"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "later.json")
    write_output(dangling, b"made")
    assert dangling.is_symlink() and (tmp_path / "later.json").read_text() == "made"


def test_hostile_regular_file_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    path.write_text("old")
    before = path.stat().st_ino
    write_output(path, b"new")
    assert path.read_text() == "new" and path.stat().st_ino != before  # a new file renamed over the old
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.timeout(30)
def test_hostile_fifo_with_a_reader_gets_the_bytes_and_without_one_fails_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError):
        write_output(fifo, b"nobody reads")  # ENXIO at once, no hang
    got: list[bytes] = []
    ready = threading.Event()

    def read() -> None:
        fd = os.open(fifo, os.O_RDWR)  # a reader at once (Linux); the read waits for the bytes
        ready.set()
        try:
            got.append(os.read(fd, 1024))  # one write below PIPE_BUF arrives whole
        finally:
            os.close(fd)

    reader = threading.Thread(target=read)
    reader.start()
    ready.wait(10)
    write_output(fifo, b"to the reader")
    reader.join(10)
    assert got == [b"to the reader"] and stat.S_ISFIFO(os.stat(fifo).st_mode)


@needs_sandbox
@pytest.mark.timeout(180)
def test_hostile_check_outputs_to_devices_links_and_stdout(tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress", "--deadline", "5", "-o", "/dev/null",
                          "--html", "/dev/stdout"], tmp_path)
    assert proc.returncode in (1, 2), proc.stderr
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert proc.stdout.startswith("<!DOCTYPE html>") and "netcheck verdict:" in proc.stdout
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress", "--deadline", "5", "-o", str(link)], tmp_path)
    assert proc.returncode in (1, 2), proc.stderr
    assert link.is_symlink() and json.loads(target.read_text())["schema_version"] == SCHEMA_VERSION
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress", "--deadline", "5", "-o", "-"], tmp_path)
    first, _, rest = proc.stdout.partition("\n")
    assert json.loads(first)["schema_version"] == SCHEMA_VERSION and rest.startswith("netcheck verdict:")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = run_sandboxed(["-m", "netcheck", "check", "--no-progress", "--deadline", "5", "-o", str(fifo)], tmp_path)
    assert proc.returncode == 4 and "no process reads that pipe" in proc.stderr
