"""The daily report's data: the day it covers, the rows read for it, the report made.

Rows keep the store's units (1e-7 degrees, km/h, metres); the report's types are in
degrees, ready to render. A ``Day`` is local: midnight to midnight in its time zone, so
23 or 25 hours long when the clocks change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TZ = "UTC"
FENCE_KINDS = {"geofence_enter": "enter", "geofence_exit": "exit", "geofence_dwell": "dwell"}
DERIVED_KINDS = ("trip_start", "trip_end", "stop", "idle", "overspeed", "visit",
                 *FENCE_KINDS)


class ReportError(Exception):
    """A report that cannot be made: the message names the option and says what to give."""


# --- the day ------------------------------------------------------------------------


@dataclass(frozen=True)
class Day:
    """One local calendar day: ``start`` <= t < ``end``, in Unix seconds."""

    date: date
    tz: ZoneInfo
    start: int
    end: int

    def local(self, t: float) -> datetime:
        return datetime.fromtimestamp(t, self.tz)


def zone(name: str) -> ZoneInfo:
    """``--tz`` value -> a time zone; an unknown name is the user's mistake, told so."""
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ReportError("--tz: %r is not a time zone: give an IANA name like Europe/Berlin "
                          "or UTC" % name) from None


def parse_day(text: str, tz_name: str = DEFAULT_TZ, today: date | None = None) -> Day:
    """``--day`` value (``2025-03-01``, ``today``, ``yesterday``) in ``tz_name`` -> a Day.

    ``today`` defaults to the current date in that zone.
    """
    tz = zone(tz_name)
    s = text.strip().lower()
    if s in ("today", "yesterday"):
        d = today if today is not None else datetime.now(tz).date()
        d -= timedelta(days=1 if s == "yesterday" else 0)
    else:
        try:
            d = date.fromisoformat(s)
        except ValueError:
            raise ReportError("--day: %r is not a date: give YYYY-MM-DD (2025-03-01), today "
                              "or yesterday" % text) from None
    start = datetime.combine(d, time(0), tzinfo=tz)
    end = datetime.combine(d + timedelta(days=1), time(0), tzinfo=tz)
    return Day(d, tz, int(start.timestamp()), int(end.timestamp()))


# --- rows in ------------------------------------------------------------------------


class Fix(NamedTuple):
    t: int
    lat: int  # 1e-7 degrees, as stored
    lon: int
    spd: int  # km/h
    acc: int  # metres
    ign: bool


class Event(NamedTuple):
    """A derived event (``boot = -1`` in the store)."""

    t: int
    kind: str
    lat: int | None
    lon: int | None
    data: dict[str, Any]


class VisitRow(NamedTuple):
    site: str
    arrive: int
    leave: int
    duration_s: int
    lat: int
    lon: int


class CheckRow(NamedTuple):
    t: int
    kind: str  # check_in or check_out
    site: str
    accepted: bool
    reason: str
    distance_m: float | None
    lat: int | None
    lon: int | None


@dataclass
class DeviceRows:
    """What the store holds for one device around one day (see ``read_day``)."""

    device: str
    name: str = ""
    fixes: list[Fix] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    visits: list[VisitRow] = field(default_factory=list)
    checks: list[CheckRow] = field(default_factory=list)


# --- a report out -------------------------------------------------------------------


@dataclass(frozen=True)
class Trip:
    start: int
    end: int
    distance_m: int
    duration_s: int
    max_kmh: int
    avg_kmh: float


@dataclass(frozen=True)
class Span:
    """A stop or an idle period: still since ``since``, until ``until``, at lat/lon."""

    since: int
    until: int
    lat: float | None
    lon: float | None

    @property
    def seconds(self) -> int:
        return self.until - self.since


@dataclass(frozen=True)
class Visit:
    site: str
    name: str
    arrive: int
    leave: int
    duration_s: int
    lat: float
    lon: float


@dataclass(frozen=True)
class FenceEvent:
    t: int
    event: str  # enter, exit or dwell
    fence: str
    name: str
    kind: str  # the fence's kind: site, customer, depot, no-go, ...
    lat: float | None
    lon: float | None


@dataclass(frozen=True)
class Overspeed:
    t: int
    seconds: int
    limit_kmh: int
    max_kmh: int
    lat: float | None
    lon: float | None


@dataclass(frozen=True)
class Check:
    t: int
    kind: str
    site: str
    accepted: bool
    reason: str
    distance_m: float | None
    lat: float | None
    lon: float | None


@dataclass(frozen=True)
class DeviceDay:
    device: str
    name: str
    distance_m: int
    distance_from: str  # "trips", or "positions" when the device made no trip that day
    driving_s: int
    max_kmh: int
    trips: tuple[Trip, ...]
    stops: tuple[Span, ...]
    idles: tuple[Span, ...]
    visits: tuple[Visit, ...]
    fence_events: tuple[FenceEvent, ...]
    overspeeds: tuple[Overspeed, ...]
    checks: tuple[Check, ...]
    track: tuple[tuple[int, float, float], ...]  # (t, lat, lon) of the day's unflagged fixes

    @property
    def stop_s(self) -> int:
        return sum(s.seconds for s in self.stops)

    @property
    def idle_s(self) -> int:
        return sum(s.seconds for s in self.idles)

    @property
    def first_fix(self) -> int | None:
        return self.track[0][0] if self.track else None

    @property
    def last_fix(self) -> int | None:
        return self.track[-1][0] if self.track else None


@dataclass(frozen=True)
class FenceShape:
    """A fence to draw, in degrees: polygons (rings of (lat, lon)) or a circle."""

    id: str
    name: str
    kind: str
    polygons: tuple[tuple[tuple[tuple[float, float], ...], ...], ...]  # exterior, holes...
    circle: tuple[float, float, float] | None = None  # lat, lon, radius in metres


@dataclass(frozen=True)
class Report:
    day: Day
    devices: tuple[DeviceDay, ...]
    fences: tuple[FenceShape, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.devices
