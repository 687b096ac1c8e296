"""Run an OS tool with a timeout; never raise.

Every per-OS module runs its tools through :func:`run_tool`, so "the tool is
missing", "it timed out" and "it failed" are values the caller turns into an
:class:`~netcheck.platform.base.Egress` or a
:class:`~netcheck.proxy.settings.ProxySettings` with an ``error``, never exceptions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

#: The environment tools run with: the caller's, with a fixed locale so text
#: output is in the tool's default (English) wording where the tool honours it.
_LOCALE = {"LC_ALL": "C", "LANG": "C"}


@dataclass(frozen=True)
class ToolResult:
    """What one tool run produced."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: str
    stderr: str
    #: The executable was not found (``returncode`` is None).
    missing: bool = False
    #: The run was killed at its timeout (``returncode`` is None).
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def problem(self) -> str | None:
        """A one-line reason the run did not succeed, or None."""
        tool = self.argv[0] if self.argv else "?"
        if self.missing:
            return f"{tool} is not available on this system"
        if self.timed_out:
            return f"{tool} did not answer in time"
        if self.returncode != 0:
            detail = (self.stderr.strip() or self.stdout.strip()).splitlines()
            first = detail[0] if detail else "no output"
            return f"{tool} failed (exit {self.returncode}): {first}"
        return None


class Runner(Protocol):
    """What runs a tool: argv, a timeout in seconds, optional text for stdin."""

    def __call__(self, argv: Sequence[str], timeout: float,
                 input_text: str | None = None) -> ToolResult: ...


def run_tool(argv: Sequence[str], timeout: float, input_text: str | None = None,
             env: Mapping[str, str] | None = None) -> ToolResult:
    """Run ``argv`` with a timeout; decode output as UTF-8 (replacing bad bytes)."""
    args = tuple(argv)
    if not args or shutil.which(args[0]) is None:
        return ToolResult(args, None, "", "", missing=True)
    full_env = dict(os.environ if env is None else env)
    full_env.update(_LOCALE)
    try:
        proc = subprocess.run(
            args, input=input_text.encode("utf-8") if input_text is not None else None,
            capture_output=True, stdin=None if input_text is not None else subprocess.DEVNULL,
            timeout=max(0.05, timeout), env=full_env, check=False,
        )
    except subprocess.TimeoutExpired:
        return ToolResult(args, None, "", "", timed_out=True)
    except FileNotFoundError:
        return ToolResult(args, None, "", "", missing=True)
    except OSError as exc:
        return ToolResult(args, None, "", str(exc), missing=True)
    return ToolResult(args, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                      proc.stderr.decode("utf-8", "replace"))


def default_runner(argv: Sequence[str], timeout: float, input_text: str | None = None) -> ToolResult:
    return run_tool(argv, timeout, input_text)
