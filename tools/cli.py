"""The ``fieldtrack`` command: one entry point, grouped subcommands, clear errors.

Errors: a user mistake is a ``FieldtrackError`` (``tools/errors.py``; each command
module subclasses it). ``main`` catches it in one place: ``error: <message>`` on stderr,
exit code 2, no traceback; ``--verbose`` re-raises it to show the traceback. Anything
else is a bug: exit code 1 and a request to report it with ``--verbose``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import click

from fieldtrack import __version__
from fieldtrack.tools.errors import FieldtrackError

# Subcommands: name -> "module:command" in this package. A module is imported when its
# command runs (or for --help), so that `fieldtrack gateway run` does not load the
# geometry, serial and flashing libraries the other commands need.
COMMANDS = {
    "decode": "codec.command:decode",
    "encode": "codec.command:encode",
    "gateway": "gateway.command:gateway",
    "devices": "devices.command:devices",
    "command": "commands.command:command",
    "export": "export.command:export",
    "geofences": "geofences.command:geofences",
    "report": "report.command:report",
    "gnss": "gnss.command:gnss",
    "console": "console.command:console",
    "flash": "flash.command:flash",
    "provision": "flash.provision_command:provision",
    "simulate": "simulate.command:simulate",
    "demo": "demo.command:demo",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported from ``COMMANDS`` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in COMMANDS:
            module, name = COMMANDS[cmd_name].split(":")
            command = getattr(importlib.import_module("%s.%s" % (__package__, module)), name)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fieldtrack")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and debug output.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """fieldtrack: trackers and phones -> MQTT -> clean, trustworthy field data."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns (and, from the console script, exits with) the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    obj: dict[str, object] = {}  # becomes ctx.obj: the group callback stores "verbose"
    try:
        cli.main(args=args, prog_name="fieldtrack", standalone_mode=False, obj=obj)
    except FieldtrackError as exc:
        if obj.get("verbose"):
            raise
        click.echo("error: %s" % exc.format_message(), err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.UsageError as exc:
        exc.show()
        return exc.exit_code
    except click.ClickException as exc:
        click.echo("error: %s" % exc.format_message(), err=True)
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except Exception as exc:  # a bug, not a user mistake: say so
        if obj.get("verbose"):
            raise
        click.echo("error: %s: %s (a bug: run with --verbose and report the traceback)"
                   % (type(exc).__name__, exc), err=True)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
