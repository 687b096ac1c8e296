"""Helpers for the platform, proxy and PAC tests (imported by the test modules)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from netcheck.platform._run import ToolResult

FIXTURES = Path(__file__).parent / "fixtures"

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "NETCHECK_PAC_URL",
              "NETCHECK_INTERFACE_KINDS", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")


def read_fixture(rel: str) -> str:
    """A captured output with its '#|' provenance header removed (CRLF kept)."""
    text = (FIXTURES / rel).read_bytes().decode("utf-8")
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].startswith("#|"):
        i += 1
    return "".join(lines[i:])


class Replay:
    """A runner that answers with captured outputs, keyed by a prefix of argv.

    It stands in for the OS tool on a machine that does not have it (macOS and
    Windows tools on Linux); what it returns is the tool's real, captured text.
    """

    def __init__(self, answers: Mapping[tuple[str, ...], ToolResult | Callable[[Sequence[str], str | None],
                                                                                 ToolResult]]) -> None:
        self.answers = dict(answers)
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], timeout: float, input_text: str | None = None) -> ToolResult:
        args = tuple(argv)
        self.calls.append(args)
        best: tuple[str, ...] | None = None
        for key in self.answers:
            if args[: len(key)] == key and (best is None or len(key) > len(best)):
                best = key
        if best is None:
            return ToolResult(args, None, "", "", missing=True)
        answer = self.answers[best]
        if callable(answer):
            return answer(args, input_text)
        return ToolResult(args, answer.returncode, answer.stdout, answer.stderr, answer.missing,
                          answer.timed_out)


def ok(stdout: str, stderr: str = "", rc: int = 0) -> ToolResult:
    return ToolResult((), rc, stdout, stderr)


MISSING = ToolResult((), None, "", "", missing=True)
TIMED_OUT = ToolResult((), None, "", "", timed_out=True)
