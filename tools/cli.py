"""The ``fieldtrack`` command: one entry point, grouped subcommands, clear errors.

User mistakes (a bad file, field or argument) end as ``error: <what and where>`` on
stderr with exit code 2 and no traceback; ``--verbose`` shows the traceback for
reporting a bug.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from fieldtrack import __version__

from .codec_cmd import decode, encode
from .gateway_cmd import gateway


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fieldtrack")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks and debug output.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """fieldtrack: trackers and phones -> MQTT -> clean, trustworthy field data."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


cli.add_command(decode)
cli.add_command(encode)
cli.add_command(gateway)


def _register_optional() -> None:
    """Command groups that live in their own modules."""
    try:
        from .devices_cmd import devices

        cli.add_command(devices)
    except ImportError:  # pragma: no cover (module not present in this build)
        pass
    try:
        from .export_cmd import export

        cli.add_command(export)
    except ImportError:  # pragma: no cover
        pass


_register_optional()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns (and, from the console script, exits with) the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in args or "--verbose" in args
    try:
        cli.main(args=args, prog_name="fieldtrack", standalone_mode=False)
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
        if verbose:
            raise
        click.echo("error: %s: %s (a bug: run with --verbose and report the traceback)"
                   % (type(exc).__name__, exc), err=True)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
