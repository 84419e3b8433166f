"""``fieldtrack console``: a tracker's log output and a prompt, over its serial port."""

from __future__ import annotations

import contextlib
import os
import sys

import click

from fieldtrack.tools.console.terminal import EOLS, Console, PortError, open_port, raw_keyboard
from fieldtrack.tools.errors import FieldtrackError


class ConsoleError(FieldtrackError):
    """The serial port cannot be opened or was lost."""


@click.command("console")
@click.option("--port", required=True, help="The device's serial port, e.g. /dev/ttyUSB0.")
@click.option("--baud", default=115200, show_default=True, type=click.IntRange(min=1),
              help="Baud rate (ESP32 firmware logs at 115200).")
@click.option("--eol", type=click.Choice(sorted(EOLS), case_sensitive=False), default="CRLF",
              show_default=True, help="Line ending sent after each typed line.")
def console(port: str, baud: int, eol: str) -> None:
    """Show what the device on PORT prints; send it the lines you type.

    A line goes when you press Enter. Ctrl-C and Ctrl-D go to the device (on MicroPython:
    interrupt, soft reset). Ctrl-] exits. Opening the console does not reset the device.
    """
    if os.name != "posix":
        raise ConsoleError("the console needs Linux or macOS; on Windows, use PuTTY or "
                           "pyserial-miniterm on %s" % port)
    try:
        ser = open_port(port, baud, quiet_control_lines=True)
    except PortError as exc:
        raise ConsoleError(str(exc)) from None
    keys = sys.stdin.fileno()
    interactive = sys.stdin.isatty()
    click.echo("--- %s at %d baud; Ctrl-] exits ---" % (port, baud), err=True)
    loop = Console(ser, keys, sys.stdout, eol=EOLS[eol.upper()], echo=interactive, name=port)
    try:
        with raw_keyboard(keys) if interactive else contextlib.nullcontext():
            loop.run()
    except PortError as exc:
        raise ConsoleError(str(exc)) from None
    except KeyboardInterrupt:
        pass
    finally:
        ser.close()
        click.echo("\n--- closed %s ---" % port, err=True)
