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

from .codec_cmd import decode, encode
from .console_cmd import console
from .demo_cmd import demo
from .devices_cmd import devices
from .errors import FieldtrackError
from .export_cmd import export
from .flash_cmd import flash
from .gateway_cmd import gateway
from .geofences_cmd import geofences
from .gnss_cmd import gnss
from .provision_cmd import provision
from .report_cmd import report
from .simulate_cmd import simulate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fieldtrack")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and debug output.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """fieldtrack: trackers and phones -> MQTT -> clean, trustworthy field data."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


# -- Subcommands: register yours here -------------------------------------------------
cli.add_command(decode)
cli.add_command(encode)
cli.add_command(gateway)
cli.add_command(devices)
cli.add_command(export)
cli.add_command(geofences)
cli.add_command(report)
cli.add_command(gnss)
cli.add_command(console)
cli.add_command(flash)
cli.add_command(provision)
cli.add_command(simulate)
cli.add_command(demo)

# Command modules still being written: (module in this package, click command in it).
# Move a pair to the explicit imports above once its module has landed.
PENDING: tuple[tuple[str, str], ...] = ()


def _register_pending() -> None:
    for module, name in PENDING:
        try:
            mod = importlib.import_module("%s.%s" % (__package__, module))
        except ModuleNotFoundError as exc:
            if exc.name == "%s.%s" % (__package__, module):
                continue  # not written yet; an import failing *inside* it still raises
            raise
        cli.add_command(getattr(mod, name))


_register_pending()


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
