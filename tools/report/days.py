"""A day's work per device: distance, driving, stops, idling, visits, fences, speeding, attendance.

The day is local: midnight to midnight in a time zone (23 or 25 hours when the clocks
change). A record belongs to the day on which it *begins*, and is counted whole: a
trip that starts at 23:30 and ends at 00:20 is that day's trip, with all its distance.
Stops and idle periods are the exception that ends at midnight: they last until the
next trip starts (an idle period also ends at the first fix with the ignition off or
moving) or the next stop (idle period) begins, and are cut at the end of the day (and
at ``now``), so a van parked overnight adds the evening, not the night, to the day's
stop time, and no second counts twice.

Distance and driving time are the trips' (``trip_end`` events: the gateway's own
jitter-proof odometer). A device without any trip that day falls back to the fixes:
the same odometer rule (``gateway/derive/motion.py``) over its unflagged fixes.

``build`` is pure: rows in, a ``Report`` out. The types are in ``model``, the
edge that queries the store is ``reader.read_day``, and the renderings (table,
CSV, HTML, map) are elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

from fieldtrack.gateway.derive.motion import MotionConfig
from fieldtrack.gateway.fences.model import Fence
from fieldtrack.gateway.geo import M_PER_DEG, distance_m
from fieldtrack.tools.report.model import (
    FENCE_KINDS,
    Check,
    Day,
    DeviceDay,
    DeviceRows,
    Event,
    FenceEvent,
    FenceShape,
    Fix,
    Overspeed,
    Report,
    Span,
    Trip,
    Visit,
)

MOTION = MotionConfig()  # the gateway's defaults: moving speed, odometer step, data gap


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
    stops = _apart(Span(e.t, _until(e.t, trip_starts, cut), _deg(e.lat), _deg(e.lon))
                   for e in rows.events if e.kind == "stop" and e.t in today)
    idles = _apart(_idle(e, fixes, trip_starts, cut)
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


def _apart(spans: Iterable[Span]) -> tuple[Span, ...]:
    """Spans in time order, each cut where the next one begins: a stop reported again
    after a move too short to be a trip is a new stop, not a second count of the same
    time (likewise idling)."""
    ordered = sorted(spans, key=lambda s: (s.since, s.until))
    out: list[Span] = []
    for i, span in enumerate(ordered):
        after = ordered[i + 1].since if i + 1 < len(ordered) else None
        if after is not None and span.until > after:
            span = Span(span.since, max(span.since, after), span.lat, span.lon)
        if out and out[-1].since == span.since:
            continue  # the same stop twice (a re-derivation): once
        out.append(span)
    return tuple(out)


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
