"""The command line: parses, wires and renders. No decisions live here.

Subcommands are loaded lazily (see ``COMMANDS``) so ``netcheck --help`` is fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from netcheck import __version__
from netcheck.errors import INTERNAL_ERROR, NetcheckError

#: command name -> (module, attribute, one-line help shown by --help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "check": ("netcheck.commands.check", "check",
              "Check this laptop's path to Microsoft 365 and give a verdict."),
    "endpoints": ("netcheck.commands.endpoints", "endpoints",
                  "Show, update and compare Microsoft's endpoint data."),
    "enroll": ("netcheck.agent.cli", "enroll",
               "Enroll this laptop with your organisation's collector."),
    "agent": ("netcheck.agent.cli", "agent",
              "Run unattended: scheduled checks, sweeps and uploads."),
    "serve": ("netcheck.collector.cli", "serve",
              "Run the fleet collector: the web service agents enroll with and report to."),
    "admin": ("netcheck.collector.cli", "admin",
              "Administer the collector: secrets, devices, exports."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS:
            module, attr, _ = COMMANDS[cmd_name]
            try:
                mod = importlib.import_module(module)
            except ImportError as exc:
                hint = (" Install the collector extra: pip install 'netcheck-m365[collector]'."
                        if module.startswith("netcheck.collector") else "")
                raise click.ClickException(
                    f"the '{cmd_name}' command is not available in this installation ({exc}).{hint}") from exc
            command = getattr(mod, attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netcheck")
def cli() -> None:
    """netcheck: could you keep working on Microsoft 365 if your office went down?

    Run `netcheck check` for a verdict on this laptop. Exit codes: 0 ready,
    1 at risk, 2 not ready, 3 could not assess (no network), 4 usage or
    configuration error, 5 internal error (netcheck itself failed; a crash
    log is written and its path printed).
    """


def main(argv: list[str] | None = None) -> Any:
    """Entry point: usage errors exit 4 (click's default is 2, which means 'not ready'); a crash
    (any exception that is not a NetcheckError) exits 5 (``INTERNAL_ERROR``), never a verdict's code."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        return cli.main(args=args, prog_name="netcheck", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(4)
    except click.ClickException as exc:
        exc.show()
        sys.exit(4)
    except NetcheckError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(4)
    except Exception as exc:  # a bug: exit 5 with a crash log, never a verdict's exit code
        from netcheck.crash import report_crash

        message, as_json = report_crash(exc, args)
        click.echo(message, err=True)
        if as_json is not None:
            click.echo(as_json, nl=False)
        sys.exit(INTERNAL_ERROR)
