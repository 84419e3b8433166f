"""What a GNSS receiver reports: its fix, position, motion, DOPs and time to first fix.

Pure logic: bytes or sentences in, state out; the serial port, files and the screen stay
in ``command``. ``GnssMonitor`` frames the stream with ``nmea_stream``, parses each
sentence with pynmea2 (checksum required: a sentence without a valid one is counted and
dropped), keeps the satellites in a ``sky.Sky``, and judges the antenna placement
with ``checks``.

An epoch is one receiver measurement cycle: it opens when a position sentence (RMC, GGA,
GNS, GLL) carries a new UTC time, or, while the receiver has no clock yet, when one of them
repeats. Time is the receiver's own clock, or the caller's (``at=`` seconds since the
stream started) for a live port.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pynmea2

from fieldtrack.tools.gnss.checks import (
    HDOP_MAX,
    Check,
    Verdict,
    check_dropouts,
    check_fix,
    check_hdop,
    check_signal,
    check_used,
    worst,
)
from fieldtrack.tools.gnss.nmea_fields import (
    DIFFERENTIAL,
    GGA_QUALITY,
    MODE_NOTES,
    NOT_A_FIX,
    FixType,
    degrees,
    field_text,
    integer,
    number,
    seconds_of_day,
)
from fieldtrack.tools.gnss.nmea_stream import CHECKSUMMED, NmeaFramer, StreamStats
from fieldtrack.tools.gnss.sky import ConstellationView, Satellite, Sky

MAX_EPOCH_GAP = 5.0   # s between epochs: more is a gap in the data (breaks the HDOP hold)
MAX_CLOCK_STEP = 3600.0  # s: a larger receiver clock step is a clock jump, not time passing


@dataclass
class _Epoch:
    sod: float | None               # receiver UTC, seconds of day; None: no clock yet
    t: float                        # stream clock when it opened
    anchors: set[str] = field(default_factory=set)
    valid: bool | None = None
    differential: str = ""          # D, R (RTK fixed), F (RTK float)
    note: str = ""                  # why an apparent fix is not one
    has_altitude: bool = False
    hdop: float | None = None
    closed: bool = False


Handler = Callable[["GnssMonitor", str, pynmea2.NMEASentence, list[str], "float | None"], None]


class GnssMonitor:
    """A receiver's state, from its NMEA sentences: feed bytes (or sentences), read state."""

    def __init__(self) -> None:
        self.stats = StreamStats()
        self._framer = NmeaFramer(self.stats)
        self.wall_clock = False          # True once a caller passes ``at``
        self._epoch: _Epoch | None = None
        self.epochs = 0
        self._elapsed = 0.0
        self._interval = 1.0             # last epoch interval, for epochs without a clock
        self._clockless = 0
        self._last_kind = ""
        self.fix_type = FixType.NONE
        self.fix_note = ""
        self.latitude: float | None = None
        self.longitude: float | None = None
        self.altitude: float | None = None
        self.speed_kmh: float | None = None
        self.course: float | None = None
        self.utc_time: str | None = None   # hh:mm:ss.ss
        self.utc_date: str | None = None   # yyyy-mm-dd
        self.hdop: float | None = None
        self.pdop: float | None = None
        self.vdop: float | None = None
        self._gsa_mode: int | None = None
        self._gsa_epoch = -10
        self._gsa_hdop: float | None = None
        self._sky = Sky()
        self._used_count: int | None = None
        self.ttff: float | None = None
        self.ttff_estimated = False      # epochs before it had no clock: 1 interval each
        self.fixed_at_start = False      # the first epoch already had a fix
        self.first_fix_t: float | None = None
        self.dropouts = 0                # fix lost after the first fix
        self.downgrades = 0              # 3D fell back to 2D
        self._hold_start: float | None = None
        self._last_t: float | None = None

    # -- input ---------------------------------------------------------------------------
    def feed_bytes(self, data: bytes, at: float | None = None) -> int:
        """Raw receiver bytes; ``at``: seconds since the stream began (live ports only).

        Returns how many sentences were accepted.
        """
        return sum(self.feed_sentence(s, at) for s in self._framer.feed(data))

    def end(self, at: float | None = None) -> None:
        """End of stream: a last sentence without its line end, and the open epoch, count."""
        for sentence in self._framer.flush():
            self.feed_sentence(sentence, at)
        self._close_epoch()

    def feed_sentence(self, line: str, at: float | None = None) -> bool:
        """One sentence, ``$`` to checksum; False (and counted) when it is rejected."""
        if at is not None:
            self.wall_clock = True
        framed = CHECKSUMMED.match(line)
        if not framed or int(framed.group(2), 16) != pynmea2.NMEASentence.checksum(
                framed.group(1)):
            self.stats.bad_checksum += 1
            return False
        self.stats.sentences += 1
        try:
            msg = pynmea2.parse(line, check=True)
        except pynmea2.ParseError:  # a valid sentence, of a shape pynmea2 does not know
            self.stats.ignored += 1
            return True
        except (ValueError, TypeError, IndexError, KeyError, AttributeError):
            self.stats.malformed += 1  # pynmea2's per-type constructors can raise these
            return True
        talker, kind, data = "", "", []
        if isinstance(msg, pynmea2.TalkerSentence):
            talker, kind, data = msg.talker, msg.sentence_type, [str(x) for x in msg.data]
        elif isinstance(msg, pynmea2.ProprietarySentence) and msg.manufacturer == "QGS":
            # Quectel's $PQGSV/$PQGSA: NMEA 4.11-shaped, with a system ID (BeiDou, QZSS)
            talker, kind, data = "PQ", "GS" + str(msg.data[0]), [str(x) for x in msg.data[1:]]
        handler = _HANDLERS.get(kind)
        if handler is None:
            self.stats.ignored += 1
        else:
            try:
                handler(self, talker, msg, data, at)
            except (ValueError, IndexError):
                self.stats.malformed += 1
        self._last_kind = kind
        return True

    # -- epochs and the stream clock ------------------------------------------------------
    def _now(self) -> float:
        return self._epoch.t if self._epoch is not None else 0.0

    def _anchor(self, name: str, time_field: str, at: float | None) -> _Epoch:
        """The epoch a position sentence belongs to; it opens a new one when it starts one."""
        sod = seconds_of_day(time_field)
        epoch = self._epoch
        if epoch is not None and not epoch.closed:
            if sod is not None and epoch.sod is not None:
                same = abs(sod - epoch.sod) < 1e-3
            else:  # no clock on one side: a new epoch when a sentence type comes round again
                same = name not in epoch.anchors
            if same:
                epoch.anchors.add(name)
                epoch.sod = epoch.sod if epoch.sod is not None else sod
                return epoch
        if epoch is not None:
            self._close_epoch()
            step = (sod - epoch.sod) % 86400 if sod is not None and epoch.sod is not None else 0
            if 0 < step <= MAX_CLOCK_STEP:
                self._elapsed += step
                self._interval = step if step <= MAX_EPOCH_GAP else self._interval
            else:  # no clock, or the receiver set its clock: count one usual interval
                self._elapsed += self._interval
        if sod is None:
            self._clockless += 1
        else:
            self.utc_time = "%02d:%02d:%05.2f" % (sod // 3600, sod % 3600 // 60, sod % 60)
        self._epoch = _Epoch(sod=sod, t=at if at is not None else self._elapsed, anchors={name})
        self.epochs += 1
        return self._epoch

    def _close_epoch(self) -> None:
        epoch = self._epoch
        if epoch is None or epoch.closed:
            return
        epoch.closed = True
        previous = self.fix_type
        fix, self.fix_note = self._fix_of(epoch)
        self.fix_type = fix
        self.hdop = epoch.hdop if epoch.hdop is not None else (
            self._gsa_hdop if self._gsa_recent() else None)
        if fix is not FixType.NONE and self.first_fix_t is None:
            self.first_fix_t = epoch.t
            self.fixed_at_start = self.epochs == 1
        if fix.is_3d and self.ttff is None:
            self.ttff = epoch.t
            self.ttff_estimated = not self.wall_clock and self._clockless > 0
        if previous is not FixType.NONE and fix is FixType.NONE:
            self.dropouts += 1
        elif previous.is_3d and fix is FixType.FIX_2D:
            self.downgrades += 1
        gap = self._last_t is not None and epoch.t - self._last_t > MAX_EPOCH_GAP
        if fix is FixType.NONE or self.hdop is None or self.hdop > HDOP_MAX:
            self._hold_start = None
        elif self._hold_start is None or gap:
            self._hold_start = epoch.t
        self._last_t = epoch.t

    def _gsa_recent(self) -> bool:
        return self.epochs - self._gsa_epoch <= 1

    def _fix_of(self, epoch: _Epoch) -> tuple[FixType, str]:
        if not epoch.valid:
            return FixType.NONE, epoch.note
        if self._gsa_recent() and self._gsa_mode in (1, 2, 3):
            dimension = self._gsa_mode
        else:  # no GSA: as gpsd does, an altitude makes it 3D
            dimension = 3 if epoch.has_altitude else 2
        if dimension == 1:
            return FixType.NONE, "GSA reports no fix"
        if dimension == 2:
            return FixType.FIX_2D, ""
        return DIFFERENTIAL.get(epoch.differential, FixType.FIX_3D), ""

    # -- what the renderer and the checks read --------------------------------------------
    @property
    def clock(self) -> float:
        """Stream time so far, s: the receiver's clock, or the caller's for a live port."""
        return self._now()

    @property
    def clockless_epochs(self) -> int:
        """Epochs the receiver sent without a UTC time (before it had one)."""
        return self._clockless

    @property
    def epoch_interval(self) -> float:
        """The receiver's last epoch interval, s (1.0 until two clocked epochs are seen)."""
        return self._interval

    @property
    def satellites_used(self) -> int | None:
        """Satellites in the fix: the GSA lists, else the GGA/GNS count; None: not reported."""
        return len(self._sky.used) if self._sky.used_fresh(self._now()) else self._used_count

    def satellites(self) -> list[Satellite]:
        """Satellites in view (fresh GSV reports) or used (GSA), in constellation order."""
        return self._sky.satellites(self._now())

    def constellations(self) -> list[ConstellationView]:
        """Per constellation: used, in view, signals heard, and C/N0 values."""
        return self._sky.constellations(self._now())

    @property
    def hdop_held(self) -> float:
        """Seconds that HDOP has stayed at or below HDOP_MAX, with a fix, to the last epoch."""
        if self._hold_start is None or self._last_t is None:
            return 0.0
        return self._last_t - self._hold_start

    def best_cn0(self) -> list[int]:
        """C/N0 of tracked navigation satellites (SBAS left out), strongest first."""
        return self._sky.best_cn0(self._now())

    def checks(self) -> list[Check]:
        """The antenna placement checks, each with its verdict, value and threshold."""
        return [check_fix(self.fix_type, self.fix_note),
                check_used(self.satellites_used or 0),
                check_signal(self.best_cn0()),
                check_hdop(self.fix_type, self.hdop, self.hdop_held),
                check_dropouts(self.first_fix_t, self._last_t, self.dropouts, self.downgrades)]

    def verdict(self) -> Verdict:
        """The worst verdict of the checks."""
        return worst(self.checks())

    # -- sentence handlers: (self, talker, sentence, its fields as text, at) ---------------
    def _position(self, msg: pynmea2.NMEASentence) -> None:
        latitude = degrees(field_text(msg, "lat"), field_text(msg, "lat_dir"))
        longitude = degrees(field_text(msg, "lon"), field_text(msg, "lon_dir"))
        if latitude is not None and longitude is not None:
            self.latitude, self.longitude = latitude, longitude

    def _count_used(self, count: int | None) -> None:
        if count is not None:
            self._used_count = count

    def _on_gga(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        epoch = self._anchor(talker + "GGA", field_text(msg, "timestamp"), at)
        quality = integer(field_text(msg, "gps_qual"))
        valid = quality in GGA_QUALITY
        epoch.valid = bool(epoch.valid) or valid  # GPGGA and GLGGA: either one will do
        if not valid:
            epoch.note = NOT_A_FIX.get(quality or 0, epoch.note)
            return
        epoch.differential = epoch.differential or GGA_QUALITY[quality or 0]
        self._position(msg)
        altitude = number(field_text(msg, "altitude"))
        if altitude is not None:
            epoch.has_altitude, self.altitude = True, altitude
        epoch.hdop = number(field_text(msg, "horizontal_dil"))
        self._count_used(integer(field_text(msg, "num_sats")))

    def _on_rmc(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        epoch = self._anchor(talker + "RMC", field_text(msg, "timestamp"), at)
        mode = field_text(msg, "mode_indicator")[:1]
        valid = field_text(msg, "status") == "A" and mode not in ("N", "E", "M", "S")
        date = field_text(msg, "datestamp")
        if len(date) == 6 and date.isdigit():
            self.utc_date = "20%s-%s-%s" % (date[4:], date[2:4], date[:2])
        if not valid:
            epoch.valid = bool(epoch.valid)
            epoch.note = MODE_NOTES.get(mode, epoch.note)
            return
        epoch.valid = True
        epoch.differential = epoch.differential or (mode if mode in DIFFERENTIAL else "")
        self._position(msg)
        knots = number(field_text(msg, "spd_over_grnd"))
        if knots is not None:
            self.speed_kmh = knots * 1.852
        self.course = number(field_text(msg, "true_course"))

    def _on_gns(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        epoch = self._anchor(talker + "GNS", field_text(msg, "timestamp"), at)
        modes = field_text(msg, "mode_indicator")
        if not any(m in "ADPRF" for m in modes):
            epoch.valid = bool(epoch.valid)
            return
        epoch.valid = True
        epoch.differential = epoch.differential or next((m for m in "RFD" if m in modes), "")
        self._position(msg)
        if number(field_text(msg, "altitude")) is not None:
            epoch.has_altitude = True
        if epoch.hdop is None:
            epoch.hdop = number(field_text(msg, "hdop"))
        self._count_used(integer(field_text(msg, "num_sats")))

    def _on_gll(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        epoch = self._anchor(talker + "GLL", field_text(msg, "timestamp"), at)
        if epoch.valid is None:
            epoch.valid = (field_text(msg, "status") == "A"
                           and field_text(msg, "faa_mode")[:1] not in ("N", "E", "M", "S"))

    def _on_vtg(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        kmh = number(field_text(msg, "spd_over_grnd_kmph"))
        if kmh is not None:
            self.speed_kmh = kmh
            self.course = number(field_text(msg, "true_track"))

    def _on_zda(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        day, month, year = (integer(x) for x in data[1:4])
        if day and month and year:
            self.utc_date = "%04d-%02d-%02d" % (year, month, day)

    def _on_gsa(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        if len(data) < 17:
            raise ValueError("short GSA")
        # The first line of a GSA block starts a new set of used satellites.
        self._sky.add_used(talker, data, self._last_kind != "GSA", self._now())
        self._gsa_mode = integer(data[1])
        self._gsa_epoch = self.epochs
        self.pdop, self._gsa_hdop, self.vdop = (number(x) for x in data[14:17])

    def _on_gsv(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        self._sky.add_gsv(talker, data, self._now())


_HANDLERS: dict[str, Handler] = {
    "GGA": GnssMonitor._on_gga, "RMC": GnssMonitor._on_rmc, "GNS": GnssMonitor._on_gns,
    "GLL": GnssMonitor._on_gll, "VTG": GnssMonitor._on_vtg, "ZDA": GnssMonitor._on_zda,
    "GSA": GnssMonitor._on_gsa, "GSV": GnssMonitor._on_gsv,
}
