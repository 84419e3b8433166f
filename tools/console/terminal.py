"""A serial console for a tracker in the field: what the device prints, and lines typed to it.

``open_port`` opens a serial port and turns the system's refusals (no such port, permission
denied, busy, not a serial port) into a ``PortError`` whose message says what to do.
``Console`` is the I/O loop. It is given the port and the keyboard (anything ``select``
accepts: a pyserial port, a pseudo-terminal, a pipe), so tests drive it without hardware.
The loop needs POSIX (``select`` on a terminal); ``open_port`` works everywhere.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, TextIO

import serial
from serial.tools import list_ports

EXIT_KEY = 0x1D                  # Ctrl-]
PASS_THROUGH = (0x03, 0x04)      # Ctrl-C, Ctrl-D: interrupt and soft reset on MicroPython
ERASE_KEYS = (0x08, 0x7F)
KILL_LINE = 0x15                 # Ctrl-U
EOLS = {"CRLF": b"\r\n", "CR": b"\r", "LF": b"\n"}
DIALOUT_ADVICE = ("join the dialout group: sudo usermod -aG dialout $USER, then log out and "
                  "in again (on Arch Linux the group is uucp)")
# Device output shown as is, except control characters that would upset the terminal.
_UNSHOWN = re.compile("[\x00-\x07\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")


class PortError(Exception):
    """A serial port that cannot be opened or used; the message names it and says why."""

    def __init__(self, port: str, problem: str) -> None:
        super().__init__("%s: %s" % (port, problem))
        self.port = port


class SerialLike(Protocol):
    """What the console needs of a port: pyserial's ``Serial`` has it."""

    @property
    def in_waiting(self) -> int: ...

    def fileno(self) -> int: ...

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...


def _present_ports() -> str:
    ports = sorted(p.device for p in list_ports.comports())
    return "ports present: %s" % ", ".join(ports) if ports else "no serial ports are present"


def explain_open_error(port: str, exc: OSError) -> PortError:
    """The system's refusal to open ``port``, as a message that says what to do."""
    code, text = exc.errno, str(exc)
    if code == errno.ENOENT or "No such file" in text:
        return PortError(port, "no such serial port: is the device plugged in and powered? "
                         "(%s)" % _present_ports())
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return PortError(port, "permission denied: to use serial ports, " + DIALOUT_ADVICE)
    if code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in text:
        return PortError(port, "busy: another program has the port open (a serial monitor, "
                         "gpsd, ModemManager?); close it and try again")
    if code == errno.ENOTTY or "Inappropriate ioctl" in text or "configure port" in text:
        return PortError(port, "not a serial port (for a capture file, use --file)")
    if code == errno.EISDIR:
        return PortError(port, "a directory, not a serial port")
    reason = os.strerror(code) if code else text
    return PortError(port, "cannot open it: %s (this comes from the serial port or its "
                     "driver, not from fieldtrack)" % reason)


def open_port(port: str, baud: int, timeout: float | None = 0.2,
              quiet_control_lines: bool = False) -> serial.Serial:
    """Open ``port`` exclusively; ``quiet_control_lines`` keeps DTR and RTS low.

    Low DTR and RTS leave an ESP32 board's auto-reset circuit alone: opening the
    console does not restart the device being debugged.
    """
    ser = serial.Serial()
    ser.port, ser.baudrate, ser.timeout, ser.exclusive = port, baud, timeout, True
    if quiet_control_lines:
        ser.dtr = ser.rts = False
    try:
        ser.open()
    except OSError as exc:  # pyserial's SerialException is an OSError with the errno
        raise explain_open_error(port, exc) from None
    return ser


@contextmanager
def raw_keyboard(fd: int) -> Iterator[None]:
    """Keys arrive one by one, unechoed, Ctrl-C included; the terminal is restored after."""
    import termios  # POSIX only: imported here so that the CLI still loads elsewhere

    saved = termios.tcgetattr(fd)
    mode = termios.tcgetattr(fd)
    mode[0] &= ~(termios.ICRNL | termios.IXON)
    mode[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)
    mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
    termios.tcsetattr(fd, termios.TCSANOW, mode)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


class Console:
    """Shows what ``port`` sends on ``out``; sends each line typed on ``keys`` (a file
    descriptor) with ``eol``. Ctrl-] ends ``run``.

    With ``echo`` (an interactive terminal), typed text is shown as it is typed, and
    device output arriving meanwhile is printed above the unfinished line, which is then
    redrawn.
    """

    def __init__(self, port: SerialLike, keys: int, out: TextIO, eol: bytes = b"\r\n",
                 echo: bool = False, name: str = "port") -> None:
        self.port, self.keys, self.out, self.eol, self.echo = port, keys, out, eol, echo
        self.name = name
        self.line = ""
        self._tail = ""  # device text since its last line end: the row the line is typed on
        self._from_device = codecs.getincrementaldecoder("utf-8")("replace")
        self._from_keys = codecs.getincrementaldecoder("utf-8")("replace")
        self._last_key = 0

    def run(self) -> None:
        """Until Ctrl-]; a port that fails raises ``PortError``."""
        watched = [self.port.fileno(), self.keys]
        while True:
            ready, _, _ = select.select(watched, [], [], 0.5)
            if self.port.fileno() in ready:
                self._receive()
            if self.keys in ready:
                typed = os.read(self.keys, 1024)
                if not typed:  # the keyboard is a pipe that ended: keep showing output
                    watched.remove(self.keys)
                elif not self.type(typed):
                    return

    def _receive(self) -> None:
        try:
            data = self.port.read(self.port.in_waiting or 1)
        except (serial.SerialException, OSError) as exc:
            raise PortError(self.name, "the device went away (unplugged, or reset its USB "
                            "serial?): %s" % exc) from None
        self.show(self._from_device.decode(data))

    def show(self, text: str) -> None:
        """Device output on the screen, above the line being typed."""
        text = _UNSHOWN.sub("", text)
        if not text:
            return
        redraw = self.echo and self.line
        if redraw:
            self.out.write("\r\x1b[K" + self._tail)
        self.out.write(text)
        self._tail = re.split("[\r\n]", self._tail + text)[-1]
        if redraw:
            self.out.write(self.line)
        self.out.flush()

    def type(self, keys: bytes) -> bool:
        """Keys typed; False when one of them is Ctrl-] (the end)."""
        for key in keys:
            if key == EXIT_KEY:
                return False
            if key in (0x0D, 0x0A):
                if not (key == 0x0A and self._last_key == 0x0D):  # CR LF: one Enter
                    self._send_line()
            elif key in PASS_THROUGH:
                self.port.write(bytes([key]))
                self._set_line("")
            elif key in ERASE_KEYS:
                self._set_line(self.line[:-1])
            elif key == KILL_LINE:
                self._set_line("")
            elif key >= 0x20 or key == 0x09:
                text = self._from_keys.decode(bytes([key]))
                self.line += text
                self._echo(text)
            self._last_key = key
        return True

    def _send_line(self) -> None:
        self.port.write(self.line.encode("utf-8") + self.eol)
        self._echo("\r\n")
        self.line, self._tail = "", ""

    def _set_line(self, line: str) -> None:
        if self.echo and line != self.line:
            self._echo("\r\x1b[K" + self._tail + line)
        self.line = line

    def _echo(self, text: str) -> None:
        if self.echo:
            self.out.write(text)
            self.out.flush()
