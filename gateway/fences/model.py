"""A geofence: its shape in a local metric frame, its kind, hours, groups and margins.

Shapes: Polygon and MultiPolygon (holes respected), circles (a Point with
``radius_m``) and corridors (a LineString with ``width_m``). Every fence is kept in
its own local metric frame (an equirectangular projection at the fence's centre,
exact to well under a metre across a city block), so that margins and distances are
in metres.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import shapely
from shapely.geometry import LineString, Point
from shapely.geometry.base import BaseGeometry

from fieldtrack.gateway.geo import M_PER_DEG

_POINT_WKB = struct.Struct("<BIdd").pack  # little-endian 2D Point
SLACK_M = 1e-6  # shortcuts decide only when this far clear of the threshold
_PIP_ERROR_M = 1e-9  # far above the point-in-polygon test's floating-point error
KINDS = ("site", "customer", "depot", "no-go", "speed-zone", "work-area")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class ActiveHours:
    """When a fence applies: per weekday, [start, end) local times in a time zone."""

    tz: ZoneInfo
    windows: dict[int, tuple[tuple[time, time], ...]]

    def active(self, t: int) -> bool:
        local = datetime.fromtimestamp(t, self.tz)
        now = local.time()
        return any(a <= now < b for a, b in self.windows.get(local.weekday(), ()))


@dataclass
class Fence:
    id: str
    name: str
    kind: str
    geometry: BaseGeometry  # in the fence's local frame, metres
    lat0: float
    lon0: float
    speed_limit_kmh: int | None = None
    groups: frozenset[str] = frozenset()  # empty: applies to every group
    hours: ActiveHours | None = None
    margin_m: float | None = None
    dwell_s: int | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boundary = self.geometry.boundary
        shapely.prepare(self.geometry)
        shapely.prepare(self.boundary)
        self._cos = math.cos(math.radians(self.lat0))
        self._bbox = self.geometry.bounds  # local metres
        self._disc: tuple[float, float, float] | None = None  # made when first needed
        self._shrunk_by: dict[float, BaseGeometry] = {}
        self._slabs: tuple[float, float, list[list[tuple[float, float, float, float]]]] \
            | None = None

    def to_local(self, lat: float, lon: float) -> tuple[float, float]:
        x = (lon - self.lon0) * M_PER_DEG * self._cos
        y = (lat - self.lat0) * M_PER_DEG
        return x, y

    def signed_distance(self, lat: float, lon: float) -> float:
        """Metres inside the fence (positive) or outside it (negative)."""
        return self._signed_local((lon - self.lon0) * M_PER_DEG * self._cos,
                                  (lat - self.lat0) * M_PER_DEG)

    def _signed_local(self, x: float, y: float) -> float:
        # A Point made from WKB has the same coordinates as Point((x, y)), at under half
        # of the cost; distance and covers are GEOS's, on the prepared geometries.
        p = shapely.from_wkb(_POINT_WKB(1, 1, x, y))
        d = float(self.boundary.distance(p))
        return d if self.geometry.covers(p) else -d

    def signed_distance_about(self, lat: float, lon: float, level: float) -> float:
        """``signed_distance`` as far as its side of ``level`` goes, cheaply.

        The value returned is greater than ``level`` exactly when the signed distance
        is, and smaller exactly when it is, so a comparison with ``level`` gives the
        same answer as with the exact value; it is the exact value unless one of these
        bounds tells the side, each by at least SLACK_M: a point outside the fence's
        bounding box is at least as far outside the fence (the value is then minus that
        distance, never below the exact one); a point inside a disc that lies inside
        the fence is at least as deep inside as inside the disc; and a point-in-polygon
        test, whose floating-point error only matters within a nanometre or so of the
        boundary, tells inside from outside when ``level`` is not about zero.
        """
        x = (lon - self.lon0) * M_PER_DEG * self._cos
        y = (lat - self.lat0) * M_PER_DEG
        minx, miny, maxx, maxy = self._bbox
        gap = max(minx - x, x - maxx, miny - y, y - maxy)  # a lower bound of the distance
        if gap > 0:
            if -gap < level - SLACK_M:
                return -gap
        else:
            cx, cy, r = self._disc or self._inner_disc()
            depth = r - math.hypot(x - cx, y - cy)  # a lower bound of the signed distance
            if depth > level + SLACK_M:
                return depth
        if level > SLACK_M or level < -SLACK_M:
            inside = self._contains(x, y)
            if inside and level < 0:
                return 0.0  # inside (or within a nanometre): above a negative level
            if not inside and level > 0:
                return 0.0  # outside (or within a nanometre): below a positive level
        return self._signed_local(x, y)

    def _contains(self, x: float, y: float) -> bool:
        """Point in polygon by ray crossing (local metres), with the edges in y slabs."""
        slabs = self._slabs
        if slabs is None:
            slabs = self._make_slabs()
        y0, step, lists = slabs
        k = int((y - y0) / step)
        edges = lists[0 if k < 0 else k if k < len(lists) else -1]
        inside = False
        for x1, y1, x2, y2 in edges:
            if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside

    def _make_slabs(self) -> tuple[float, float, list[list[tuple[float, float, float, float]]]]:
        """Every edge of every ring (horizontal ones never count), by the y slabs it spans."""
        edges = []
        for part in shapely.get_parts(self.geometry):
            for ring in (part.exterior, *part.interiors):
                xy = list(ring.coords)
                edges += [(a[0], a[1], b[0], b[1])
                          for a, b in zip(xy[:-1], xy[1:], strict=True) if a[1] != b[1]]
        miny, maxy = self._bbox[1], self._bbox[3]
        n = max(1, min(32, len(edges) // 2))
        step = (maxy - miny) / n or 1.0
        lists: list[list[tuple[float, float, float, float]]] = [[] for _ in range(n)]
        for e in edges:
            # The same formula as the query's, which is monotonic in y: every y the edge
            # spans falls in one of these slabs.
            lo = int((min(e[1], e[3]) - miny) / step)
            hi = int((max(e[1], e[3]) - miny) / step)
            for k in range(max(lo, 0), min(hi, n - 1) + 1):
                lists[k].append(e)
        self._slabs = (miny, step, lists)
        return self._slabs

    def crossing_possible(self, a: tuple[float, float], b: tuple[float, float],
                          depth: float = 0.0, da: float | None = None,
                          db: float | None = None) -> bool:
        """False when ``crossing(a, b, depth)`` is surely None.

        The signed distance changes by at most a metre per metre, so no point of a
        segment of length L is deeper inside than (da + db + L) / 2, for any upper
        bounds da, db of the signed distances of its ends. Reaching inside at all needs
        that to be at least 0; reaching ``geometry.buffer(-depth)`` needs at least
        depth (less the buffer's approximation, here allowed up to a half). ``da`` and
        ``db``, when given, must be such bounds (the exact values, or
        ``signed_distance_about`` with level 0 for ends outside); otherwise the bounds
        come from the bounding box (no point is deeper than its distance to the box's
        edge) and, for an end inside the box, the point-in-polygon test."""
        ax, ay = self.to_local(*a)
        bx, by = self.to_local(*b)
        need = (depth if depth > 0 else 0.0) - 2 * SLACK_M - math.hypot(bx - ax, by - ay)
        if da is not None and db is not None:
            return da + db >= need
        minx, miny, maxx, maxy = self._bbox
        ua = min(ax - minx, maxx - ax, ay - miny, maxy - ay)
        ub = min(bx - minx, maxx - bx, by - miny, maxy - by)
        if ua + ub < need:
            return False
        if ua > _PIP_ERROR_M and not self._contains(ax, ay):
            ua = _PIP_ERROR_M  # outside, or within the test's error of the boundary
            if ua + ub < need:
                return False
        if ub > _PIP_ERROR_M and not self._contains(bx, by):
            ub = _PIP_ERROR_M
        return ua + ub >= need

    def _shrunk(self, depth: float) -> BaseGeometry:
        """``geometry.buffer(-depth)``, kept for the next call with the same depth."""
        shrunk = self._shrunk_by.get(depth)
        if shrunk is None:
            if len(self._shrunk_by) >= 8:  # depths follow the reported accuracy: few
                self._shrunk_by.clear()
            shrunk = self._shrunk_by[depth] = self.geometry.buffer(-depth)
        return shrunk

    def _inner_disc(self) -> tuple[float, float, float]:
        """A disc inside the fence: a point in it and its distance to the boundary."""
        c = self.geometry.centroid
        if c.is_empty or not self.geometry.covers(c):
            c = self.geometry.point_on_surface()
        self._disc = (c.x, c.y, float(self.boundary.distance(c)))
        return self._disc

    def segment_meets_bbox(self, a: tuple[float, float], b: tuple[float, float]) -> bool:
        """False when the segment a->b (lat, lon) surely misses the fence's bounding box
        (in its local frame): then it meets neither the fence nor its inside."""
        ax, ay = self.to_local(*a)
        bx, by = self.to_local(*b)
        minx, miny, maxx, maxy = self._bbox
        minx -= SLACK_M
        miny -= SLACK_M
        maxx += SLACK_M
        maxy += SLACK_M
        if (ax < minx and bx < minx) or (ax > maxx and bx > maxx) \
                or (ay < miny and by < miny) or (ay > maxy and by > maxy):
            return False
        # The line through a and b: all four corners strictly on one side means a miss.
        nx, ny = by - ay, ax - bx
        s1 = nx * (minx - ax) + ny * (miny - ay)
        s2 = nx * (maxx - ax) + ny * (miny - ay)
        s3 = nx * (maxx - ax) + ny * (maxy - ay)
        s4 = nx * (minx - ax) + ny * (maxy - ay)
        return not ((s1 > 0 and s2 > 0 and s3 > 0 and s4 > 0)
                    or (s1 < 0 and s2 < 0 and s3 < 0 and s4 < 0))

    def applies(self, group: str, t: int) -> bool:
        if self.groups and group not in self.groups:
            return False
        return self.hours is None or self.hours.active(t)

    def crossing(
        self, a: tuple[float, float], b: tuple[float, float], depth: float = 0.0
    ) -> tuple[float, float] | None:
        """Where the segment a->b (lat, lon) is inside the fence, as fractions of it;
        None unless it gets more than ``depth`` metres inside somewhere."""
        pa, pb = self.to_local(*a), self.to_local(*b)
        seg = LineString([pa, pb])
        inside = seg.intersection(self.geometry)
        if inside.is_empty or seg.length == 0:
            return None
        if depth > 0 and not seg.intersects(self._shrunk(depth)):
            return None
        fractions = [seg.project(Point(c)) / seg.length for c in _coords(inside)]
        return min(fractions), max(fractions)


def _coords(geom: BaseGeometry) -> Iterable[tuple[float, float]]:
    if hasattr(geom, "geoms"):
        for g in geom.geoms:
            yield from _coords(g)
    elif not geom.is_empty:
        yield from geom.coords
