"""``fieldtrack flash``: MicroPython (optional), then the tracker firmware, verified.

A thin command over ``fieldtrack.tools.flash.plan`` (the plan) and ``run`` (running it):
one progress bar per step, library errors turned into ``FlashCommandError`` (exit code
2, no traceback).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

from fieldtrack.tools.boards import BoardError, list_boards, load_board
from fieldtrack.tools.errors import FieldtrackError
from fieldtrack.tools.flash.bundle import bundle_files
from fieldtrack.tools.flash.plan import ESPTOOL_BAUD, flash_plan
from fieldtrack.tools.flash.run import check_port, run_step
from fieldtrack.tools.flash.steps import FlashError


class FlashCommandError(FieldtrackError):
    """A bad board, image or port, or a device that would not take the firmware."""


@click.command("flash")
@click.option("--port", required=True, envvar="FIELDTRACK_PORT",
              help="Serial port of the board, e.g. /dev/ttyUSB0 (also $FIELDTRACK_PORT).")
@click.option("--board", "board_name", required=True,
              help="Board profile: one of %s, or a .toml file." % ", ".join(list_boards()))
@click.option("--micropython", "image", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
              help="A MicroPython .bin to install first (erases the whole flash).")
@click.option("--baud", default=ESPTOOL_BAUD, show_default=True,
              help="Baud rate for writing the MicroPython image.")
@click.option("--no-reset", is_flag=True,
              help="Attach without a soft reset (mpremote resume): for the MicroPython unix "
                   "port over a pseudo-terminal, or a device that must keep its state.")
def flash(port: str, board_name: str, image: Path | None, baud: int, no_reset: bool) -> None:
    """Install the tracker firmware on the board at --port and verify it.

    With --micropython, the flash is erased and the image written with esptool at the
    chip's offset first. The firmware is compiled with mpy-cross, copied with mpremote,
    and every file's SHA-256 is checked on the device. Then run `fieldtrack provision`.
    """
    try:
        board = load_board(board_name)
    except BoardError as exc:
        raise FlashCommandError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="fieldtrack-flash-") as work:
        try:
            check_port(port)
            for caveat in board.caveats:
                click.echo("note: %s: %s" % (board.name, caveat), err=True)
            steps = flash_plan(board, port, Path(work), image=image, baud=baud,
                                        reset=not no_reset)
            width = max(len(step.label) for step in steps)
            for step in steps:
                with click.progressbar(length=step.units, label=step.label.ljust(width),
                                       file=sys.stderr) as bar:
                    run_step(step, bar.update)
        except FlashError as exc:
            raise FlashCommandError(str(exc)) from None
    files = len(bundle_files())
    click.echo("flashed %s on %s: %d files, SHA-256 verified on the device" % (
        board.name, port, files))
    click.echo("next: fieldtrack provision DEVICE_ID --board %s --port %s ..." % (
        board.name, port), err=True)
