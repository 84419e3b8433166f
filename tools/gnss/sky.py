"""The satellites a receiver reports: in view (GSV cycles) and used in the fix (GSA lists).

A GSV report spans several sentences; a cycle counts only once all its parts have come
in order, so a lost sentence never leaves half a sky. Reports older than
``STALE_AFTER`` are forgotten: a satellite that sets leaves the view.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fieldtrack.tools.gnss.nmea_fields import integer
from fieldtrack.tools.gnss.nmea_stream import (
    LETTER,
    ORDER,
    SIGNALS,
    SYSTEM_IDS,
    TALKERS,
    Constellation,
    classify,
)

STALE_AFTER = 10.0    # s: satellites not reported again within this are forgotten


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


class Sky:
    """Satellites in view and in use, from GSV and GSA fields; times are the stream's, s."""

    def __init__(self) -> None:
        self.used: set[tuple[Constellation, int]] = set()
        self.used_at: float | None = None    # when the last GSA line came
        self._cycles: dict[tuple[str, str], tuple[float, _GsvCycle]] = {}
        self._partial: dict[tuple[str, str], _GsvCycle] = {}

    def add_used(self, talker: str, data: list[str], new_block: bool, now: float) -> None:
        """A GSA line's used satellites; ``new_block``: the first line of a block."""
        system = SYSTEM_IDS.get(integer(data[17]) or 0) if len(data) > 17 else None
        # An old GNGSA (one line per constellation, no system ID) is told apart by PRN range.
        hint = system or (None if talker in ("GN", "PQ") else TALKERS.get(talker))
        if new_block:
            self.used = set()
        self.used.update(classify(hint, prn) for prn in (integer(x) for x in data[2:14]) if prn)
        self.used_at = now

    def used_fresh(self, now: float) -> bool:
        return self.used_at is not None and now - self.used_at <= STALE_AFTER

    def add_gsv(self, talker: str, data: list[str], now: float) -> None:
        """One GSV sentence's fields; a cycle with a part missing is dropped whole."""
        total, part = int(data[0]), int(data[1])
        extra = (len(data) - 3) % 4
        if extra == 3:  # the last satellite's C/N0 field left off
            data, extra = data + [""], 0
        system_id = integer(data[-1]) if extra == 2 else None   # Quectel's $PQGSV
        signal_id = integer(data[-extra], 16) if extra else None
        hint = SYSTEM_IDS.get(system_id or 0) or TALKERS.get(talker)
        key = (talker + str(system_id or ""), str(signal_id))
        cycle = _GsvCycle(total, 1) if part == 1 else self._partial.get(key)
        if cycle is None or cycle.next_part != part or cycle.total != total:
            self._partial.pop(key, None)  # a part went missing: wait for the next cycle
            return
        for i in range(3, len(data) - extra - 3, 4):
            prn = integer(data[i])
            if not prn:
                continue
            system, number = classify(hint, prn)
            if cycle.signal is None and signal_id:
                cycle.signal = SIGNALS.get(system, {}).get(signal_id)
            cn0 = integer(data[i + 3]) or None  # some receivers say 0 for "not tracked"
            cycle.sats.append((system, number, integer(data[i + 1]), integer(data[i + 2]),
                               cn0))
        if part == total:
            self._cycles[key] = (now, cycle)
            self._partial.pop(key, None)
        else:
            cycle.next_part += 1
            self._partial[key] = cycle

    def satellites(self, now: float) -> list[Satellite]:
        """Satellites in view (fresh GSV reports) or used (GSA), in constellation order."""
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
        used = self.used if self.used_fresh(now) else set()
        for key in used:
            seen.setdefault(key, _SatSeen())
        out = [Satellite(system, number, sat.elevation, sat.azimuth, sat.cn0,
                         tuple(sat.signals), (system, number) in used)
               for (system, number), sat in seen.items()]
        return sorted(out, key=lambda s: (ORDER.index(s.constellation), s.number))

    def constellations(self, now: float) -> list[ConstellationView]:
        """Per constellation: used, in view, signals heard, and C/N0 values."""
        views = []
        sats = self.satellites(now)
        for system in ORDER:
            mine = [s for s in sats if s.constellation is system]
            if not mine:
                continue
            signals: list[str] = []
            for s in mine:
                signals += [x for x in s.signals if x not in signals]
            in_view = sum(1 for s in mine if s.elevation is not None or s.cn0 is not None
                          or s.signals or (system, s.number) not in self.used)
            views.append(ConstellationView(
                system, sum(s.used for s in mine), in_view, tuple(signals),
                tuple(sorted((s.cn0 for s in mine if s.cn0 is not None), reverse=True))))
        return views

    def best_cn0(self, now: float) -> list[int]:
        """C/N0 of tracked navigation satellites (SBAS left out), strongest first."""
        return sorted((s.cn0 for s in self.satellites(now)
                       if s.cn0 is not None and s.constellation is not Constellation.SBAS),
                      reverse=True)
