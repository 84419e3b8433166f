"""What a GNSS receiver reports, and whether its antenna placement is good enough.

Pure logic: bytes or sentences in, state and checks out; the serial port, files and the
screen stay in ``gnss_cmd``. ``NmeaFramer`` cuts NMEA 0183 sentences out of a raw byte
stream that may interleave binary protocols (u-blox UBX, SiRF) and line noise; a broken
sentence costs that sentence only. ``GnssMonitor`` parses each one with pynmea2 (checksum
required: a sentence without a valid one is counted and dropped) and keeps the fix,
satellites, DOPs, position, motion, time to first fix, and per-epoch history for
``checks()``.

An epoch is one receiver measurement cycle: it opens when a position sentence (RMC, GGA,
GNS, GLL) carries a new UTC time, or, while the receiver has no clock yet, when one of them
repeats. Time is the receiver's own clock, or the caller's (``at=`` seconds since the
stream started) for a live port.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import pynmea2

from .nmea_stream import (
    CHECKSUMMED,
    LETTER,
    ORDER,
    SIGNALS,
    SYSTEM_IDS,
    TALKERS,
    Constellation,
    NmeaFramer,
    StreamStats,
    classify,
)

# -- Thresholds of the antenna placement checks ----------------------------------------
MIN_USED = 6          # satellites used in the fix; WARN from MIN_USED_WARN
MIN_USED_WARN = 4
CN0_GOOD = 35.0       # dB-Hz, median of the best CN0_BEST satellites; WARN from CN0_WARN
CN0_WARN = 30.0
CN0_BEST = 4
HDOP_MAX = 2.0        # must hold for HDOP_HOLD seconds; above HDOP_WARN is a FAIL
HDOP_HOLD = 30.0
HDOP_WARN = 5.0

STALE_AFTER = 10.0    # s: satellites not reported again within this are forgotten
MAX_EPOCH_GAP = 5.0   # s between epochs: more is a gap in the data (breaks the HDOP hold)
MAX_CLOCK_STEP = 3600.0  # s: a larger receiver clock step is a clock jump, not time passing


class FixType(Enum):
    NONE = "no fix"
    FIX_2D = "2D"
    FIX_3D = "3D"
    DGPS = "3D DGPS"
    RTK_FLOAT = "3D RTK float"
    RTK_FIXED = "3D RTK fixed"

    @property
    def is_3d(self) -> bool:
        return self not in (FixType.NONE, FixType.FIX_2D)


_GGA_QUALITY = {1: "", 2: "D", 3: "", 4: "R", 5: "F"}      # valid ones -> differential mode
_NOT_A_FIX = {6: "dead reckoning", 7: "manual input", 8: "simulated (receiver demo mode)"}
_MODE_NOTES = {"E": "dead reckoning", "M": "manual input", "S": "simulated (receiver demo mode)"}
_DIFFERENTIAL = {"D": FixType.DGPS, "R": FixType.RTK_FIXED, "F": FixType.RTK_FLOAT}


class Verdict(Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    value: str
    threshold: str


@dataclass(frozen=True)
class Satellite:
    constellation: Constellation
    number: int
    elevation: int | None
    azimuth: int | None
    cn0: int | None          # best C/N0 over its signals, dB-Hz; None: not tracked
    signals: tuple[str, ...]
    used: bool

    @property
    def label(self) -> str:
        return "%s%02d" % (LETTER[self.constellation], self.number)


@dataclass(frozen=True)
class ConstellationView:
    constellation: Constellation
    used: int
    in_view: int
    signals: tuple[str, ...]
    cn0: tuple[int, ...]     # tracked satellites' C/N0, strongest first


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _int(value: str, base: int = 10) -> int | None:
    try:
        return int(value, base)
    except ValueError:
        return None


def _seconds_of_day(value: str) -> float | None:
    """``hhmmss.ss`` as seconds since midnight; None when empty or not a time."""
    if len(value) < 6 or not value[:6].isdigit():
        return None
    hours, minutes, seconds = int(value[:2]), int(value[2:4]), _float(value[4:])
    if hours > 23 or minutes > 59 or seconds is None or seconds >= 61:
        return None
    return hours * 3600 + minutes * 60 + seconds


def _degrees(value: str, hemisphere: str) -> float | None:
    """NMEA ``dddmm.mmmm`` and its hemisphere as signed degrees."""
    number = _float(value)
    if number is None or hemisphere not in ("N", "S", "E", "W"):
        return None
    whole = int(number // 100)
    degrees = whole + (number - whole * 100) / 60
    return -degrees if hemisphere in ("S", "W") else degrees


def _get(msg: pynmea2.NMEASentence, name: str) -> str:
    """A field by its name in pynmea2's field table, as text; '' when the sentence is short."""
    index = type(msg).name_to_idx[name]
    return str(msg.data[index]).strip() if index < len(msg.data) else ""


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


@dataclass
class _GsvCycle:
    total: int
    next_part: int
    signal: str | None = None
    sats: list[tuple[Constellation, int, int | None, int | None, int | None]] = field(
        default_factory=list)


@dataclass
class _SatSeen:
    elevation: int | None = None
    azimuth: int | None = None
    cn0: int | None = None
    signals: list[str] = field(default_factory=list)


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
        self._gsa_t: float | None = None
        self._gsa_hdop: float | None = None
        self._used: set[tuple[Constellation, int]] = set()
        self._used_count: int | None = None
        self._cycles: dict[tuple[str, str], tuple[float, _GsvCycle]] = {}
        self._partial: dict[tuple[str, str], _GsvCycle] = {}
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
        sod = _seconds_of_day(time_field)
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
        return _DIFFERENTIAL.get(epoch.differential, FixType.FIX_3D), ""

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

    def _used_fresh(self) -> bool:
        return self._gsa_t is not None and self._now() - self._gsa_t <= STALE_AFTER

    @property
    def satellites_used(self) -> int | None:
        """Satellites in the fix: the GSA lists, else the GGA/GNS count; None: not reported."""
        return len(self._used) if self._used_fresh() else self._used_count

    def satellites(self) -> list[Satellite]:
        """Satellites in view (fresh GSV reports) or used (GSA), in constellation order."""
        now = self._now()
        seen: dict[tuple[Constellation, int], _SatSeen] = {}
        for t, cycle in self._cycles.values():
            if now - t > STALE_AFTER:
                continue
            for system, number, elevation, azimuth, cn0 in cycle.sats:
                sat = seen.setdefault((system, number), _SatSeen(elevation, azimuth))
                if cn0 is not None and (sat.cn0 is None or cn0 > sat.cn0):
                    sat.cn0 = cn0
                if cycle.signal and cycle.signal not in sat.signals:
                    sat.signals.append(cycle.signal)
        used = self._used if self._used_fresh() else set()
        for key in used:
            seen.setdefault(key, _SatSeen())
        out = [Satellite(system, number, sat.elevation, sat.azimuth, sat.cn0,
                         tuple(sat.signals), (system, number) in used)
               for (system, number), sat in seen.items()]
        return sorted(out, key=lambda s: (ORDER.index(s.constellation), s.number))

    def constellations(self) -> list[ConstellationView]:
        """Per constellation: used, in view, signals heard, and C/N0 values."""
        views = []
        sats = self.satellites()
        for system in ORDER:
            mine = [s for s in sats if s.constellation is system]
            if not mine:
                continue
            signals: list[str] = []
            for s in mine:
                signals += [x for x in s.signals if x not in signals]
            in_view = sum(1 for s in mine if s.elevation is not None or s.cn0 is not None
                          or s.signals or (system, s.number) not in self._used)
            views.append(ConstellationView(
                system, sum(s.used for s in mine), in_view, tuple(signals),
                tuple(sorted((s.cn0 for s in mine if s.cn0 is not None), reverse=True))))
        return views

    @property
    def hdop_held(self) -> float:
        """Seconds that HDOP has stayed at or below HDOP_MAX, with a fix, to the last epoch."""
        if self._hold_start is None or self._last_t is None:
            return 0.0
        return self._last_t - self._hold_start

    def best_cn0(self) -> list[int]:
        """C/N0 of tracked navigation satellites (SBAS left out), strongest first."""
        return sorted((s.cn0 for s in self.satellites()
                       if s.cn0 is not None and s.constellation is not Constellation.SBAS),
                      reverse=True)

    def checks(self) -> list[Check]:
        """The antenna placement checks, each with its verdict, value and threshold."""
        return [self._check_fix(), self._check_used(), self._check_signal(),
                self._check_hdop(), self._check_dropouts()]

    def verdict(self) -> Verdict:
        """The worst verdict of the checks."""
        verdicts = {c.verdict for c in self.checks()}
        return next((v for v in (Verdict.FAIL, Verdict.WARN) if v in verdicts), Verdict.PASS)

    def _check_fix(self) -> Check:
        fix = self.fix_type
        verdict = (Verdict.PASS if fix.is_3d else
                   Verdict.WARN if fix is FixType.FIX_2D else Verdict.FAIL)
        value = fix.value + (" (%s)" % self.fix_note if self.fix_note else "")
        return Check("fix", verdict, value, "3D fix (WARN 2D)")

    def _check_used(self) -> Check:
        used = self.satellites_used or 0
        verdict = (Verdict.PASS if used >= MIN_USED else
                   Verdict.WARN if used >= MIN_USED_WARN else Verdict.FAIL)
        return Check("satellites used", verdict, str(used),
                     ">= %d (WARN %d-%d)" % (MIN_USED, MIN_USED_WARN, MIN_USED - 1))

    def _check_signal(self) -> Check:
        name = "C/N0 median of best %d" % CN0_BEST
        threshold = ">= %.0f dB-Hz (WARN >= %.0f)" % (CN0_GOOD, CN0_WARN)
        best = self.best_cn0()[:CN0_BEST]
        if len(best) < CN0_BEST:
            return Check(name, Verdict.FAIL, "%d satellites heard" % len(best), threshold)
        median = statistics.median(best)
        verdict = (Verdict.PASS if median >= CN0_GOOD else
                   Verdict.WARN if median >= CN0_WARN else Verdict.FAIL)
        return Check(name, verdict, "%.1f dB-Hz" % median, threshold)

    def _check_hdop(self) -> Check:
        threshold = "<= %.1f for %.0f s (FAIL > %.0f)" % (HDOP_MAX, HDOP_HOLD, HDOP_WARN)
        hdop = self.hdop
        if self.fix_type is FixType.NONE or hdop is None:
            return Check("HDOP", Verdict.FAIL, "no fix", threshold)
        if hdop > HDOP_MAX:
            verdict = Verdict.FAIL if hdop > HDOP_WARN else Verdict.WARN
            return Check("HDOP", verdict, "%.2f" % hdop, threshold)
        held = self.hdop_held
        verdict = Verdict.PASS if held >= HDOP_HOLD else Verdict.WARN
        return Check("HDOP", verdict, "%.2f, held %.0f s" % (hdop, held), threshold)

    def _check_dropouts(self) -> Check:
        threshold = "no fix lost after the first (WARN 3D->2D)"
        if self.first_fix_t is None:
            return Check("fix dropouts", Verdict.FAIL, "no fix yet", threshold)
        span = (self._last_t or 0.0) - self.first_fix_t
        value = "%d lost, %d to 2D in %.0f s" % (self.dropouts, self.downgrades, span)
        verdict = (Verdict.FAIL if self.dropouts else
                   Verdict.WARN if self.downgrades else Verdict.PASS)
        return Check("fix dropouts", verdict, value, threshold)

    # -- sentence handlers: (self, talker, sentence, its fields as text, at) ---------------
    def _position(self, msg: pynmea2.NMEASentence) -> None:
        latitude = _degrees(_get(msg, "lat"), _get(msg, "lat_dir"))
        longitude = _degrees(_get(msg, "lon"), _get(msg, "lon_dir"))
        if latitude is not None and longitude is not None:
            self.latitude, self.longitude = latitude, longitude

    def _count_used(self, count: int | None) -> None:
        if count is not None:
            self._used_count = count

    def _on_gga(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        epoch = self._anchor(talker + "GGA", _get(msg, "timestamp"), at)
        quality = _int(_get(msg, "gps_qual"))
        valid = quality in _GGA_QUALITY
        epoch.valid = bool(epoch.valid) or valid  # GPGGA and GLGGA: either one will do
        if not valid:
            epoch.note = _NOT_A_FIX.get(quality or 0, epoch.note)
            return
        epoch.differential = epoch.differential or _GGA_QUALITY[quality or 0]
        self._position(msg)
        altitude = _float(_get(msg, "altitude"))
        if altitude is not None:
            epoch.has_altitude, self.altitude = True, altitude
        epoch.hdop = _float(_get(msg, "horizontal_dil"))
        self._count_used(_int(_get(msg, "num_sats")))

    def _on_rmc(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        epoch = self._anchor(talker + "RMC", _get(msg, "timestamp"), at)
        mode = _get(msg, "mode_indicator")[:1]
        valid = _get(msg, "status") == "A" and mode not in ("N", "E", "M", "S")
        date = _get(msg, "datestamp")
        if len(date) == 6 and date.isdigit():
            self.utc_date = "20%s-%s-%s" % (date[4:], date[2:4], date[:2])
        if not valid:
            epoch.valid = bool(epoch.valid)
            epoch.note = _MODE_NOTES.get(mode, epoch.note)
            return
        epoch.valid = True
        epoch.differential = epoch.differential or (mode if mode in _DIFFERENTIAL else "")
        self._position(msg)
        knots = _float(_get(msg, "spd_over_grnd"))
        if knots is not None:
            self.speed_kmh = knots * 1.852
        self.course = _float(_get(msg, "true_course"))

    def _on_gns(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        epoch = self._anchor(talker + "GNS", _get(msg, "timestamp"), at)
        modes = _get(msg, "mode_indicator")
        if not any(m in "ADPRF" for m in modes):
            epoch.valid = bool(epoch.valid)
            return
        epoch.valid = True
        epoch.differential = epoch.differential or next((m for m in "RFD" if m in modes), "")
        self._position(msg)
        if _float(_get(msg, "altitude")) is not None:
            epoch.has_altitude = True
        if epoch.hdop is None:
            epoch.hdop = _float(_get(msg, "hdop"))
        self._count_used(_int(_get(msg, "num_sats")))

    def _on_gll(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        epoch = self._anchor(talker + "GLL", _get(msg, "timestamp"), at)
        if epoch.valid is None:
            epoch.valid = (_get(msg, "status") == "A"
                           and _get(msg, "faa_mode")[:1] not in ("N", "E", "M", "S"))

    def _on_vtg(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        kmh = _float(_get(msg, "spd_over_grnd_kmph"))
        if kmh is not None:
            self.speed_kmh = kmh
            self.course = _float(_get(msg, "true_track"))

    def _on_zda(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        day, month, year = (_int(x) for x in data[1:4])
        if day and month and year:
            self.utc_date = "%04d-%02d-%02d" % (year, month, day)

    def _on_gsa(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        if len(data) < 17:
            raise ValueError("short GSA")
        system = SYSTEM_IDS.get(_int(data[17]) or 0) if len(data) > 17 else None
        # An old GNGSA (one line per constellation, no system ID) is told apart by PRN range.
        hint = system or (None if talker in ("GN", "PQ") else TALKERS.get(talker))
        if self._last_kind != "GSA":  # the first line of a block: a new set of used satellites
            self._used = set()
        self._used.update(classify(hint, prn) for prn in (_int(x) for x in data[2:14]) if prn)
        self._gsa_mode = _int(data[1])
        self._gsa_t, self._gsa_epoch = self._now(), self.epochs
        self.pdop, self._gsa_hdop, self.vdop = (_float(x) for x in data[14:17])

    def _on_gsv(self, talker: str, msg: pynmea2.NMEASentence, data: list[str],
                at: float | None) -> None:
        total, part = int(data[0]), int(data[1])
        extra = (len(data) - 3) % 4
        if extra == 3:  # the last satellite's C/N0 field left off
            data, extra = data + [""], 0
        system_id = _int(data[-1]) if extra == 2 else None   # Quectel's $PQGSV
        signal_id = _int(data[-extra], 16) if extra else None
        hint = SYSTEM_IDS.get(system_id or 0) or TALKERS.get(talker)
        key = (talker + str(system_id or ""), str(signal_id))
        cycle = _GsvCycle(total, 1) if part == 1 else self._partial.get(key)
        if cycle is None or cycle.next_part != part or cycle.total != total:
            self._partial.pop(key, None)  # a part went missing: wait for the next cycle
            return
        for i in range(3, len(data) - extra - 3, 4):
            prn = _int(data[i])
            if not prn:
                continue
            system, number = classify(hint, prn)
            if cycle.signal is None and signal_id:
                cycle.signal = SIGNALS.get(system, {}).get(signal_id)
            cn0 = _int(data[i + 3]) or None  # some receivers say 0 for "not tracked"
            cycle.sats.append((system, number, _int(data[i + 1]), _int(data[i + 2]), cn0))
        if part == total:
            self._cycles[key] = (self._now(), cycle)
            self._partial.pop(key, None)
        else:
            cycle.next_part += 1
            self._partial[key] = cycle


_HANDLERS: dict[str, Handler] = {
    "GGA": GnssMonitor._on_gga, "RMC": GnssMonitor._on_rmc, "GNS": GnssMonitor._on_gns,
    "GLL": GnssMonitor._on_gll, "VTG": GnssMonitor._on_vtg, "ZDA": GnssMonitor._on_zda,
    "GSA": GnssMonitor._on_gsa, "GSV": GnssMonitor._on_gsv,
}
