"""``fieldtrack gnss monitor``: watch a GNSS receiver and judge its antenna placement.

The receiver's bytes come from a serial port or a capture file and go into a
``GnssMonitor``; ``report`` turns its state into text. Live, the text is redrawn in place
(ANSI escapes, at most ``REDRAWS_PER_SECOND``); ``--once`` prints a single final report.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import TextIO

import click
import serial

from fieldtrack.tools.console.terminal import PortError, open_port
from fieldtrack.tools.errors import FieldtrackError
from fieldtrack.tools.gnss.checks import CN0_GOOD
from fieldtrack.tools.gnss.monitor import GnssMonitor
from fieldtrack.tools.gnss.nmea_fields import FixType
from fieldtrack.tools.gnss.nmea_stream import StreamStats
from fieldtrack.tools.gnss.sky import ConstellationView, Satellite

REDRAWS_PER_SECOND = 4
MAX_REPLAY_WAIT = 2.0   # s: longer gaps in a capture are not waited out on replay
BAR_DB = 50             # dB-Hz at a full bar
BAR_WIDTH = 10
_EIGHTHS = " ▏▎▍▌▋▊▉█"


class GnssError(FieldtrackError):
    """A receiver or capture that cannot be read."""


# -- the report ---------------------------------------------------------------------------

def bar(cn0: int | None, ascii_only: bool = False, width: int = BAR_WIDTH) -> str:
    """A C/N0 bar, full at BAR_DB dB-Hz."""
    if not cn0:
        return "." * width if ascii_only else "·" * width
    filled = max(0.0, min(cn0, BAR_DB)) * width / BAR_DB
    if ascii_only:
        return ("#" * round(filled)).ljust(width, ".")
    whole, part = int(filled), int((filled - int(filled)) * 8)
    return ("█" * whole + (_EIGHTHS[part] if part else "")).ljust(width)


def _where(monitor: GnssMonitor) -> str:
    if monitor.fix_type is FixType.NONE or monitor.latitude is None:
        return "- (no fix)"
    lat, lon = monitor.latitude, monitor.longitude or 0.0
    text = "%.6f %s, %.6f %s" % (abs(lat), "NS"[lat < 0], abs(lon), "EW"[lon < 0])
    if monitor.altitude is not None and monitor.fix_type.is_3d:
        text += ", altitude %.1f m" % monitor.altitude
    return text


def _motion(monitor: GnssMonitor) -> str:
    if monitor.fix_type is FixType.NONE or monitor.speed_kmh is None:
        return "-"
    course = "-" if monitor.course is None else "%.1f deg" % monitor.course
    return "%.1f km/h, course %s" % (monitor.speed_kmh, course)


def _dops(monitor: GnssMonitor) -> str:
    def one(value: float | None) -> str:
        return "-" if value is None else "%.2f" % value
    return "HDOP %s  PDOP %s  VDOP %s" % (one(monitor.hdop), one(monitor.pdop),
                                         one(monitor.vdop))


def _ttff(monitor: GnssMonitor) -> str:
    clock = "wall clock" if monitor.wall_clock else "receiver time"
    if monitor.fixed_at_start:
        return "- (the receiver already had a fix when the stream began)"
    if monitor.ttff is None:
        return "no 3D fix yet (%.0f s, %s)" % (monitor.clock, clock)
    text = "%.1f s (%s" % (monitor.ttff, clock)
    if monitor.ttff_estimated:
        text += "; %d epochs before the receiver had a clock, counted %.1f s each" % (
            monitor.clockless_epochs, monitor.epoch_interval)
    return text + ")"


def _systems(views: list[ConstellationView]) -> list[str]:
    if not views:
        return ["Satellites  none reported (no GSV/GSA sentences)"]
    lines = ["%-9s %4s %4s  %-22s %s" % ("System", "used", "view", "signals",
                                         "C/N0 dB-Hz, strongest first")]
    for v in views:
        cn0 = " ".join(str(x) for x in v.cn0) or "-"
        lines.append("%-9s %4d %4d  %-22s %s" % (v.constellation.value, v.used, v.in_view,
                                                 ", ".join(v.signals) or "-", cn0))
    return lines


def _satellite_bars(sats: list[Satellite], ascii_only: bool, columns: int = 3) -> list[str]:
    cells = ["%-4s %2s %s%s" % (s.label, s.cn0 or "-", bar(s.cn0, ascii_only),
                                "*" if s.used else " ") for s in sats]
    rows = (len(cells) + columns - 1) // columns
    return ["  " + "   ".join(cells[r + c * rows] for c in range(columns)
                              if r + c * rows < len(cells)) for r in range(rows)]


def _hints(stats: StreamStats) -> list[str]:
    if stats.bytes == 0:
        return ["nothing received: check power, the wiring (receiver TX to adapter RX) and "
                "the port"]
    hints = []
    if stats.sentences == 0:
        if stats.binary:
            names = ", ".join("%s (%d frames)" % kv for kv in sorted(stats.binary.items()))
            hints.append("no NMEA, only binary: %s; switch the receiver's NMEA output on"
                         % names)
        else:
            hints.append("no NMEA sentences in %d bytes: wrong baud rate? try --baud 9600, "
                         "38400 or 115200" % stats.bytes)
    elif stats.bad_checksum * 20 > stats.sentences:
        hints.append("%d sentences failed their checksum: a noisy line, or a wrong baud rate"
                     % stats.bad_checksum)
    return hints


def report(monitor: GnssMonitor, source: str, ascii_only: bool = False,
           silence: float | None = None, bar_columns: int = 3) -> list[str]:
    """The monitor's state and checks as lines of text; ``bar_columns`` 0: no satellite bars.
    """
    date = (monitor.utc_date + " ") if monitor.utc_date else ""
    utc = date + monitor.utc_time + " UTC" if monitor.utc_time else "-"
    lines = ["GNSS monitor: %s  (%d epochs, %.0f s)" % (source, monitor.epochs, monitor.clock)]
    if silence is not None and silence >= 2:
        lines.append("!! no data for %.0f s" % silence)
    lines += [
        "Fix         %s%s" % (monitor.fix_type.value,
                              " (%s)" % monitor.fix_note if monitor.fix_note else ""),
        "UTC         %s" % utc,
        "Position    %s" % _where(monitor),
        "Motion      %s" % _motion(monitor),
        "DOP         %s" % _dops(monitor),
        "TTFF        %s" % _ttff(monitor),
        "Used        %s" % ("-" if monitor.satellites_used is None else
                            monitor.satellites_used),
        "",
    ]
    lines += _systems(monitor.constellations())
    sats = monitor.satellites()
    if sats and bar_columns:
        lines += ["", "Satellites: C/N0 dB-Hz, bar full at %d, * used in the fix (%d is good)"
                  % (BAR_DB, CN0_GOOD)]
        lines += _satellite_bars(sats, ascii_only, bar_columns)
    lines += ["", "Antenna placement: %s" % monitor.verdict().value]
    for check in monitor.checks():
        lines.append("  %-4s  %-22s %-28s need %s" % (check.verdict.value, check.name,
                                                      check.value, check.threshold))
    s = monitor.stats
    lines += ["", "Stream      %d bytes, %d sentences (%d not used here), %d bad checksums, "
              "%d cut short, %d noise bytes" % (s.bytes, s.sentences, s.ignored,
                                                 s.bad_checksum, s.partial, s.noise_bytes)]
    lines += ["Hint        " + h for h in _hints(s)]
    return lines


# -- the screen ---------------------------------------------------------------------------

class LiveScreen:
    """Redraws the report in place, at most REDRAWS_PER_SECOND times a second."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._last = 0.0
        out.write("\x1b[?25l\x1b[2J")  # hide the cursor, clear the screen

    def due(self) -> bool:
        return time.monotonic() - self._last >= 1 / REDRAWS_PER_SECOND

    def draw(self, lines: list[str]) -> None:
        self._last = time.monotonic()
        self.out.write("\x1b[H" + "".join(line + "\x1b[K\n" for line in lines) + "\x1b[J")
        self.out.flush()

    def close(self) -> None:
        self.out.write("\x1b[H\x1b[J\x1b[?25h")  # the final report follows on a clean screen
        self.out.flush()


class DrawFn:
    """Draws the live report when due; called with the seconds since data last came."""

    def __init__(self, screen: LiveScreen, monitor: GnssMonitor, source: str,
                 ascii_only: bool) -> None:
        self.screen, self.monitor, self.source, self.ascii_only = (screen, monitor, source,
                                                                   ascii_only)

    def __call__(self, silence: float | None) -> None:
        if not self.screen.due():
            return
        width, height = shutil.get_terminal_size()
        columns = max(1, min(4, (width - 2) // 24))
        lines = report(self.monitor, self.source, self.ascii_only, silence, columns)
        if len(lines) >= height:  # per-satellite bars do not fit: the table still has C/N0
            lines = report(self.monitor, self.source, self.ascii_only, silence, 0)
        self.screen.draw(lines[:height - 1])


def _can_draw_blocks(out: TextIO) -> bool:
    try:
        "█▏·".encode(out.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def capture_bytes(path: str) -> bytes:
    """A capture file's receiver bytes: leading ``#`` lines (a gpsd-style header) left out."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise GnssError("%s: cannot read it: %s" % (path, exc.strerror or exc)) from None
    start = 0
    while data.startswith(b"#", start):
        end = data.find(b"\n", start)
        start = len(data) if end < 0 else end + 1
    return data[start:]


def _replay(data: bytes, monitor: GnssMonitor, draw: DrawFn | None, speed: float) -> None:
    if draw is None or speed == 0:
        monitor.feed_bytes(data)
        return
    last = monitor.clock
    for piece in data.splitlines(keepends=True):
        monitor.feed_bytes(piece)
        step, last = monitor.clock - last, monitor.clock
        if step > 0:
            time.sleep(min(step, MAX_REPLAY_WAIT) / speed)
        draw(None)


def _listen(ser: serial.Serial, monitor: GnssMonitor, draw: DrawFn | None,
            duration: float | None, idle: float | None) -> Exception | None:
    """Read until the duration, the idle time or the port ends; the port error, if any."""
    start = last_data = time.monotonic()
    while True:
        now = time.monotonic()
        if duration is not None and now - start >= duration:
            return None
        if idle is not None and now - last_data >= idle:
            return None
        try:
            data = ser.read(ser.in_waiting or 1)
        except OSError as exc:  # pyserial's SerialException included
            return exc
        if data:
            last_data = time.monotonic()
            monitor.feed_bytes(data, at=last_data - start)
        if draw is not None:
            draw(time.monotonic() - last_data)


# -- the commands -------------------------------------------------------------------------

@click.group("gnss")
def gnss() -> None:
    """GNSS receiver tools: a live monitor with antenna placement checks."""


@gnss.command("monitor")
@click.option("--port", help="The receiver's serial port, e.g. /dev/ttyUSB0.")
@click.option("--baud", default=9600, show_default=True, type=click.IntRange(min=1),
              help="Baud rate of --port (most GNSS modules start at 9600).")
@click.option("--file", "path", metavar="LOG",
              help="Replay a capture of the receiver's raw output instead of a port.")
@click.option("--speed", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Replay speed of --file: 1 = the receiver's own pace, 0 = at once.")
@click.option("--once", is_flag=True,
              help="No live view: read to the end (file) or until --duration/--idle/Ctrl-C "
                   "(port), then print one report.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="With --port: stop after S seconds.")
@click.option("--idle", type=click.FloatRange(min=0, min_open=True), metavar="S",
              help="With --port: stop after S seconds without data.")
@click.option("--ascii", "ascii_only", is_flag=True, help="Draw bars with ASCII only.")
def monitor(port: str | None, baud: int, path: str | None, speed: float, once: bool,
            duration: float | None, idle: float | None, ascii_only: bool) -> None:
    """Fix, satellites and signal per constellation, DOPs, position, time to first fix,
    and PASS/WARN/FAIL checks for approving an antenna placement.

    Read a receiver on --port, or replay a capture with --file. Ctrl-C stops and prints
    the final report.
    """
    if (port is None) == (path is None):
        raise GnssError("give --port PORT (a receiver) or --file LOG (a capture), one of them")
    if path is not None and (duration is not None or idle is not None):
        raise GnssError("--duration and --idle are for --port; a --file ends at its end")
    data, ser = b"", None
    if path is not None:
        data = capture_bytes(path)
    else:
        try:
            ser = open_port(port or "", baud, quiet_control_lines=True)
        except PortError as exc:
            raise GnssError(str(exc)) from None
    out = sys.stdout
    ascii_only = ascii_only or not _can_draw_blocks(out)
    source = port if port is not None else Path(path or "").name
    state = GnssMonitor()
    screen = LiveScreen(out) if not once and out.isatty() else None
    draw = DrawFn(screen, state, source, ascii_only) if screen is not None else None
    lost: Exception | None = None
    try:
        if ser is None:
            _replay(data, state, draw, speed)
        else:
            lost = _listen(ser, state, draw, duration, idle)
    except KeyboardInterrupt:
        pass
    finally:
        if ser is not None:
            ser.close()
        if screen is not None:
            screen.close()
    state.end()
    click.echo("\n".join(report(state, source, ascii_only)))
    if lost is not None:
        raise GnssError("%s: the receiver went away (unplugged?): %s" % (port, lost))
