"""A day's work per device: distance, driving, stops, idling, visits, fences, speeding, attendance.

The day is local: midnight to midnight in a time zone (23 or 25 hours when the clocks
change). A record belongs to the day on which it *begins*, and is counted whole: a
trip that starts at 23:30 and ends at 00:20 is that day's trip, with all its distance.
Stops and idle periods are the exception that ends at midnight: they last until the
next trip starts (an idle period also ends at the first fix with the ignition off or
moving), and are cut at the end of the day (and at ``now``), so a van parked
overnight adds the evening, not the night, to the day's stop time.

Distance and driving time are the trips' (``trip_end`` events: the gateway's own
jitter-proof odometer). A device without any trip that day falls back to the fixes:
the same odometer rule (``gateway/motion.py``) over its unflagged fixes.

``read_day`` is the edge that queries the store; ``build`` is pure: rows in, a
``Report`` out. The renderings (table, CSV, HTML, map) are elsewhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fieldtrack.gateway.geofence import M_PER_DEG, Fence
from fieldtrack.gateway.motion import MotionConfig
from fieldtrack.gateway.position_filter import distance_m
from fieldtrack.gateway.store import Store

from .export import ExportError, Query, check_query

DEFAULT_TZ = "UTC"
LOOKAHEAD_S = 86400  # a trip that starts today may end tomorrow: its trip_end is read too
MOTION = MotionConfig()  # the gateway's defaults: moving speed, odometer step, data gap
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


# --- the store edge -----------------------------------------------------------------


def read_day(store: Store, day: Day, devices: Sequence[str] = ()) -> list[DeviceRows]:
    """The rows of ``day`` for these devices (all with data then, when none are given).

    A ``--device`` the store has never heard of is refused, naming the option.
    """
    try:
        check_query(store, Query(devices=tuple(devices)))
    except ExportError as exc:
        raise ReportError(str(exc)) from None
    db = store.db
    wanted = list(dict.fromkeys(devices)) or sorted(
        set().union(*(_distinct_devices(store, table)
                      for table in ("positions", "events", "visits", "attendance"))))
    names = {d.id: d.name for d in store.devices().values()}
    window = (day.start, day.end)
    out = []
    for device in wanted:
        rows = DeviceRows(device, names.get(device, ""))
        for t, lat, lon, spd, acc, ign, flagged in db.execute(
                "SELECT t, lat, lon, spd, acc, ign, flagged FROM positions WHERE device=? "
                "AND t >= ? AND t < ? ORDER BY t, ms, id", (device, *window)):
            if not flagged:  # a fix that failed a filter is not drawn or measured
                rows.fixes.append(Fix(t, lat, lon, spd, acc, bool(ign)))
        for t, kind, lat, lon, data in db.execute(
                "SELECT t, kind, lat, lon, data FROM events WHERE device=? AND boot=-1 "
                "AND t >= ? AND t < ? AND kind IN (%s) ORDER BY t, id"
                % ", ".join("?" * len(DERIVED_KINDS)),
                (device, day.start, day.end + LOOKAHEAD_S, *DERIVED_KINDS)):
            rows.events.append(Event(t, kind, lat, lon, _json(data)))
        rows.visits.extend(VisitRow(*r) for r in db.execute(
            "SELECT site, arrive, leave, duration_s, lat, lon FROM visits WHERE device=? "
            "AND arrive >= ? AND arrive < ? ORDER BY arrive, id", (device, *window)))
        rows.checks.extend(
            CheckRow(t, kind, site, bool(accepted), reason, distance, lat, lon)
            for t, kind, site, accepted, reason, distance, lat, lon in db.execute(
                "SELECT t, kind, site, accepted, reason, distance_m, lat, lon FROM attendance "
                "WHERE device=? AND t >= ? AND t < ? ORDER BY t, id", (device, *window)))
        out.append(rows)
    return out


def _distinct_devices(store: Store, table: str) -> set[str]:
    # Every table has an index that starts with the device: walking it device by device
    # costs a lookup per device, where DISTINCT would read every row.
    rows = store.db.execute(
        "WITH RECURSIVE d(x) AS (SELECT MIN(device) FROM %s UNION ALL "
        "SELECT (SELECT MIN(device) FROM %s WHERE device > x) FROM d WHERE x IS NOT NULL) "
        "SELECT x FROM d WHERE x IS NOT NULL" % (table, table))
    return {r[0] for r in rows}


def _json(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def data_range(store: Store) -> tuple[int, int] | None:
    """The first and last fix time in the store, to tell a user where the data is."""
    row = store.db.execute("SELECT MIN(t), MAX(t) FROM positions").fetchone()
    return None if row is None or row[0] is None else (int(row[0]), int(row[1]))


# --- pure: rows -> report -----------------------------------------------------------


def build(day: Day, rows: Iterable[DeviceRows], fences: Sequence[Fence] = (),
          now: int | None = None) -> Report:
    """The report of ``day``: devices with nothing that day are left out.

    ``now`` cuts stops and idle periods still going on (a report of today).
    """
    shapes = tuple(fence_shape(f) for f in fences)
    labels = {s.id: (s.name, s.kind) for s in shapes}
    cut = day.end if now is None else max(day.start, min(day.end, now))
    days = [_device_day(day, r, labels, cut) for r in rows]
    return Report(day, tuple(sorted((d for d in days if d is not None),
                                    key=lambda d: d.device)), shapes)


def _device_day(day: Day, rows: DeviceRows, labels: dict[str, tuple[str, str]],
                cut: int) -> DeviceDay | None:
    today = range(day.start, day.end)
    labels = dict(labels)
    for e in rows.events:  # fences the file does not (or no longer) know: as the events say
        fid = e.data.get("fence")
        if isinstance(fid, str) and fid not in labels and "name" in e.data:
            labels[fid] = (str(e.data["name"]), str(e.data.get("kind", "")))
    fixes = rows.fixes
    trip_starts = sorted({int(e.data.get("start", e.t)) if e.kind == "trip_end" else e.t
                          for e in rows.events if e.kind in ("trip_start", "trip_end")})
    trips = tuple(_trip(e) for e in rows.events
                  if e.kind == "trip_end" and int(e.data.get("start", e.t)) in today)
    stops = tuple(Span(e.t, _until(e.t, trip_starts, cut), _deg(e.lat), _deg(e.lon))
                  for e in rows.events if e.kind == "stop" and e.t in today)
    idles = tuple(_idle(e, fixes, trip_starts, cut)
                  for e in rows.events if e.kind == "idle" and e.t in today)
    fence_events = tuple(
        FenceEvent(e.t, FENCE_KINDS[e.kind], fid, *labels.get(fid, (fid, "")),
                   _deg(e.lat), _deg(e.lon))
        for e in rows.events if e.kind in FENCE_KINDS and e.t in today
        for fid in [str(e.data.get("fence", ""))])
    overspeeds = tuple(_overspeed(e, fixes) for e in rows.events
                       if e.kind == "overspeed" and e.t in today)
    visits = tuple(Visit(v.site, labels.get(v.site, (v.site, ""))[0], v.arrive, v.leave,
                         v.duration_s, v.lat * 1e-7, v.lon * 1e-7) for v in rows.visits)
    checks = tuple(Check(c.t, c.kind, c.site, c.accepted, c.reason, c.distance_m,
                         _deg(c.lat), _deg(c.lon)) for c in rows.checks)
    if not (fixes or trips or stops or idles or fence_events or overspeeds or visits
            or checks):
        return None
    if trips:
        source = "trips"
        distance, driving = sum(t.distance_m for t in trips), sum(t.duration_s for t in trips)
    else:
        source = "positions"
        distance, driving = odometer(fixes)
    max_kmh = max([t.max_kmh for t in trips] + [f.spd for f in fixes] + [0])
    return DeviceDay(
        rows.device, rows.name, distance, source, driving, max_kmh, trips, stops, idles,
        visits, fence_events, overspeeds, checks,
        tuple((f.t, f.lat * 1e-7, f.lon * 1e-7) for f in fixes),
    )


def _deg(value: int | None) -> float | None:
    return None if value is None else value * 1e-7


def _trip(e: Event) -> Trip:
    d = e.data
    start = int(d.get("start", e.t))
    return Trip(start, e.t, int(d.get("distance_m", 0)), int(d.get("duration_s", e.t - start)),
                int(d.get("max_kmh", 0)), float(d.get("avg_kmh", 0.0)))


def _until(since: int, trip_starts: list[int], cut: int) -> int:
    """A stop lasts until the next trip starts, and at most until ``cut``."""
    following = [t for t in trip_starts if t > since]
    return max(since, min(following[0], cut) if following else cut)


def _idle(e: Event, fixes: list[Fix], trip_starts: list[int], cut: int) -> Span:
    """Idling ends at the first fix with the ignition off or moving, or when a trip starts."""
    since = int(e.data.get("since", e.t))
    end = _until(since, trip_starts, cut)
    for f in fixes:
        if f.t > since and (not f.ign or f.spd >= MOTION.moving_kmh):
            end = min(end, f.t)
            break
    # The event itself proves this much idling, whatever the fixes say.
    end = max(end, min(since + int(e.data.get("seconds", 0)), cut))
    return Span(since, end, _deg(e.lat), _deg(e.lon))


def _overspeed(e: Event, fixes: list[Fix]) -> Overspeed:
    """The event fires once, ``overspeed_min_s`` in: its true length and top speed are the
    fixes' (until the first one at or under the limit), when there are fixes."""
    limit = int(e.data.get("limit_kmh", 0))
    top = int(e.data.get("max_kmh", 0))
    seconds = int(e.data.get("seconds", 0))
    over = [f for f in fixes if f.t >= e.t]
    end = next((f.t for f in over if f.spd <= limit), None)
    during = [f for f in over if end is None or f.t < end]
    if during:
        top = max(top, *(f.spd for f in during))
        seconds = max(seconds, (end if end is not None else during[-1].t) - e.t)
    return Overspeed(e.t, seconds, limit, top, _deg(e.lat), _deg(e.lon))


def odometer(fixes: Sequence[Fix]) -> tuple[int, int]:
    """Metres and moving seconds over fixes, by the gateway's odometer rule (motion.py).

    A step counts when it is longer than both fixes' accuracy together (and than the
    minimum step) and made at driving speed; its time counts as driving unless it spans
    a data gap.
    """
    metres = 0.0
    seconds = 0
    for a, b in pairwise(fixes):
        step = distance_m(a.lat, a.lon, b.lat, b.lon)
        gap = b.t - a.t
        kmh = step / gap * 3.6 if gap > 0 else 0.0
        floor = max(MOTION.odometer_min_step_m, a.acc + b.acc)
        if step > floor and (kmh >= MOTION.moving_kmh or b.spd >= MOTION.moving_kmh):
            metres += step
            if gap <= MOTION.gap_max_s:
                seconds += gap
    return round(metres), seconds


def fence_shape(fence: Fence) -> FenceShape:
    """A loaded fence (kept in its local metric frame) back in degrees, to draw."""
    k = M_PER_DEG * math.cos(math.radians(fence.lat0))

    def ring(coords: Iterable[Any]) -> tuple[tuple[float, float], ...]:
        return tuple((fence.lat0 + y / M_PER_DEG, fence.lon0 + x / k) for x, y, *_ in coords)

    geom = fence.geometry
    polygons = tuple((ring(p.exterior.coords), *(ring(h.coords) for h in p.interiors))
                     for p in getattr(geom, "geoms", [geom]))
    circle = None
    radius = fence.properties.get("radius_m")
    if isinstance(radius, (int, float)) and radius > 0:
        minx, _, maxx, _ = geom.bounds
        if abs((maxx - minx) / 2 - radius) <= 0.01 * radius:  # a buffered Point
            circle = (fence.lat0, fence.lon0, float(radius))
    return FenceShape(fence.id, fence.name, fence.kind, polygons, circle)
