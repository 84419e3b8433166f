"""Geofences: a GeoJSON FeatureCollection (RFC 7946) in, a spatial index out.

Shapes: Polygon and MultiPolygon (holes respected), circles (a Point with
``radius_m``) and corridors (a LineString with ``width_m``). Every fence is kept in
its own local metric frame (an equirectangular projection at the fence's centre,
exact to well under a metre across a city block), so that margins and distances are
in metres; a uniform grid over the fences' bounding boxes in degrees finds the
candidates for a fix, so the cost per fix barely grows with the number of fences.
"""

from __future__ import annotations

import json
import math
import struct
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import shapely
from shapely.geometry import LineString, Point, shape
from shapely.geometry.base import BaseGeometry

from .errors import FenceError

M_PER_DEG = 111_320.0
_POINT_WKB = struct.Struct("<BIdd").pack  # little-endian 2D Point
SLACK_M = 1e-6  # shortcuts decide only when this far clear of the threshold
_PIP_ERROR_M = 1e-9  # far above the point-in-polygon test's floating-point error
GRID_SIZES = (16, 8, 4, 2)  # grid cells this many times as large as the median fence:
GRID_SHARE = 6.0  # the largest where a fence shares its cell with this many others on average
GRID_MAX_CELLS = 256  # a fence spanning more cells is checked on every query
GRID_SEGMENT_CELLS = 16  # a segment spanning more cells is looked up in the STRtree
_ROW = float(2**22)  # cell key = column * _ROW + row: exact in a float, never shared
_MIN_CELL = 360.0 / 2**20  # degrees: column and row numbers stay within +-2**19
FINE_CELLS = 8  # occupancy cells across the median fence (each way), at the finest
TILE_SHIFT = 7  # occupancy tiles of 128 x 128 cells...
TILE_HALO = 32  # ...each also covering this many cells beyond, so a query fits in one
MAX_TILES = 1024  # at most about 50 MiB; beyond that the grid works alone
_TILE = 1 << TILE_SHIFT
_TILE_MASK = _TILE - 1
_SPAN = _TILE + TILE_HALO
_SAT_ROW = _SPAN + 1
_TILE_KEY = 1 << 32  # tile key = column * _TILE_KEY + row + _TILE_ROW0: never shared
_TILE_ROW0 = 1 << 31
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


class _Occupancy:
    """Which small cells some fence's bounding box touches, as summed-area tables.

    It answers "does any box meet this query box?" with one dict look-up and four
    array reads, however many fences there are: most fixes lie on streets, clear of
    every fence, and this says so before any grid cell is scanned. Coordinates are
    integers in 1e-7 degrees (the protocol's units) and a cell is
    ``coordinate // size``; every box is widened by one unit each way, more than the
    rounding between those integers and the degrees the boxes are compared in
    elsewhere, so a box that meets the query shares a cell with it: "clear" is never
    wrong. A tile holds the count of occupied cells below and left of every cell of a
    square of _SPAN cells (its own _TILE and a halo beyond), so a query found by its
    lowest cell lies in one tile unless it spans more than TILE_HALO cells.
    """

    def __init__(self, ranges: list[tuple[int, int, int, int]], sx: int, sy: int) -> None:
        self.sx, self.sy = sx, sy
        groups: dict[int, list[int]] = {}
        for k, (i0, j0, i1, j1) in enumerate(ranges):
            for key in _tiles_seeing(i0, j0, i1, j1):
                groups.setdefault(key, []).append(k)
        cells = np.asarray(ranges, dtype=np.int64).reshape(-1, 4)
        self.tiles: dict[int, array[int]] = {}
        for key, members in groups.items():
            tx, ty = key // _TILE_KEY, key % _TILE_KEY - _TILE_ROW0
            r = cells[members]
            a = np.clip(r[:, 0] - tx * _TILE, 0, _SPAN)
            b = np.clip(r[:, 2] - tx * _TILE + 1, 0, _SPAN)
            c = np.clip(r[:, 1] - ty * _TILE, 0, _SPAN)
            d = np.clip(r[:, 3] - ty * _TILE + 1, 0, _SPAN)
            diff = np.zeros((_SPAN + 1, _SPAN + 1), dtype=np.int32)
            np.add.at(diff, (c, a), 1)
            np.add.at(diff, (c, b), -1)
            np.add.at(diff, (d, a), -1)
            np.add.at(diff, (d, b), 1)
            occupied = diff.cumsum(0).cumsum(1)[:_SPAN, :_SPAN] > 0
            sat = np.zeros((_SAT_ROW, _SAT_ROW), dtype=np.uint16)
            sat[1:, 1:] = occupied.cumsum(0).cumsum(1)
            table = array("H")
            table.frombytes(sat.tobytes())
            self.tiles[key] = table

    def clear(self, lat_a: int, lon_a: int, lat_b: int, lon_b: int) -> bool:
        """True when no box meets the box spanned by two points (1e-7 degrees); False
        when one may. Written for speed: it runs for nearly every fix."""
        sx, sy = self.sx, self.sy
        i0, i1, j0, j1 = lon_a // sx, lon_b // sx, lat_a // sy, lat_b // sy
        if i1 < i0:
            i0, i1 = i1, i0
        if j1 < j0:
            j0, j1 = j1, j0
        a, c = i0 & _TILE_MASK, j0 & _TILE_MASK
        b, d = a + i1 - i0 + 1, c + j1 - j0 + 1  # past the last cell
        if b > _SPAN or d > _SPAN:
            return False  # a long segment: the grid (or the STRtree) tells
        sat = self.tiles.get((i0 >> TILE_SHIFT) * _TILE_KEY + (j0 >> TILE_SHIFT)
                             + _TILE_ROW0)
        if sat is None:
            return True
        c *= _SAT_ROW
        d *= _SAT_ROW
        return sat[d + b] - sat[c + b] - sat[d + a] + sat[c + a] == 0


def _tiles_seeing(i0: int, j0: int, i1: int, j1: int) -> Iterable[int]:
    """The keys of the tiles whose square (with its halo) holds some of cells i0..i1,
    j0..j1: tile t covers cells t * _TILE to t * _TILE + _SPAN - 1."""
    for tx in range(-((_SPAN - 1 - i0) // _TILE), (i1 >> TILE_SHIFT) + 1):
        for ty in range(-((_SPAN - 1 - j0) // _TILE), (j1 >> TILE_SHIFT) + 1):
            yield tx * _TILE_KEY + ty + _TILE_ROW0


def _cell_ranges(boxes: list[tuple[float, float, float, float]], sx: int, sy: int
                 ) -> list[tuple[int, int, int, int]]:
    """The occupancy cells of every box, widened by one unit of 1e-7 degrees each way."""
    floor, ceil = math.floor, math.ceil
    return [((floor(x0 * 1e7) - 1) // sx, (floor(y0 * 1e7) - 1) // sy,
             (ceil(x1 * 1e7) + 1) // sx, (ceil(y1 * 1e7) + 1) // sy)
            for x0, y0, x1, y1 in boxes]


class FenceIndex:
    """All fences, an STRtree over their bounding boxes (in degrees) and a uniform grid.

    The grid answers the queries of every fix: a cell is one dict lookup and holds the
    few fences whose bounding box overlaps it, which in pure Python costs less than
    making a shapely geometry to query the STRtree with. The answers are the STRtree's,
    in its order (a query of the tree lists the boxes in the order a query of
    everything does). Fences spanning more than ``GRID_MAX_CELLS`` cells are checked
    on every query; segments spanning more use the STRtree.
    """

    def __init__(self, fences: list[Fence]) -> None:
        self.fences = fences
        self.by_id = {f.id: f for f in fences}
        bounds = [_bounds_deg(f) for f in fences]
        boxes = [shapely.box(*b) for b in bounds]
        self.tree = shapely.STRtree(boxes) if boxes else None
        self._cells: dict[float, list[tuple[float, float, float, float, int]]] = {}
        self._wide: list[tuple[float, float, float, float, int]] = []
        self._by_rank: list[Fence] = []
        self._box_by_rank: list[tuple[float, float, float, float, int]] = []
        self._rank: list[int] = []
        self._cw = self._ch = 1.0
        self._occupancy: _Occupancy | None = None
        # clear_e7(lat_a, lon_a, lat_b, lon_b): True when no fence's bounding box meets
        # the box spanned by two points (in 1e-7 degrees, the protocol's units), so that
        # ``near`` of either point and ``along`` between them are both empty; False when
        # that is not sure. The cheap question of every fix far from all fences (most).
        self.clear_e7: Callable[[int, int, int, int], bool] = _never_clear
        if self.tree is None:
            self.clear_e7 = _always_clear
            return
        order = self.tree.query(shapely.box(min(b[0] for b in bounds), min(b[1] for b in bounds),
                                            max(b[2] for b in bounds), max(b[3] for b in bounds)))
        self._by_rank = [fences[i] for i in order.tolist()]
        self._box_by_rank = [(*bounds[i], r) for r, i in enumerate(order.tolist())]
        self._rank = [0] * len(fences)
        for r, i in enumerate(order.tolist()):
            self._rank[i] = r
        self._cw, self._ch = cw, ch = _cell_size(bounds)
        gridded = []
        for rank, i in enumerate(order.tolist()):
            b = bounds[i]
            entry = (b[0], b[1], b[2], b[3], rank)
            x0, x1 = b[0] // cw, b[2] // cw
            y0, y1 = b[1] // ch, b[3] // ch
            if (x1 - x0 + 1) * (y1 - y0 + 1) > GRID_MAX_CELLS:
                self._wide.append(entry)
                continue
            gridded.append(b)
            for ix in range(int(x0), int(x1) + 1):
                for iy in range(int(y0), int(y1) + 1):
                    self._cells.setdefault(ix * _ROW + iy, []).append(entry)
        # The occupancy map answers only when no wide fence must be checked as well.
        sx, sy = _fine_size(bounds, cw, ch)
        ranges = _cell_ranges(gridded, sx, sy)
        if ranges and not self._wide and _tile_count(ranges) <= MAX_TILES:
            self._occupancy = _Occupancy(ranges, sx, sy)
            self.clear_e7 = self._occupancy.clear

    def __len__(self) -> int:
        return len(self.fences)

    def near(self, lat: float, lon: float) -> list[Fence]:
        """Fences whose bounding box holds the point: the candidates for a fix."""
        if self._occupancy is not None:
            lat7, lon7 = math.floor(lat * 1e7), math.floor(lon * 1e7)
            if self._occupancy.clear(lat7, lon7, lat7, lon7):
                return []
        cell = self._cells.get(lon // self._cw * _ROW + lat // self._ch)
        if cell is None and not self._wide:
            return []
        ranks = [e[4] for e in cell or () if e[0] <= lon <= e[2] and e[1] <= lat <= e[3]]
        if self._wide:
            ranks += [e[4] for e in self._wide if e[0] <= lon <= e[2] and e[1] <= lat <= e[3]]
            ranks.sort()
        by_rank = self._by_rank
        return [by_rank[r] for r in ranks]

    def along(self, a: tuple[float, float], b: tuple[float, float]) -> list[Fence]:
        """Fences whose bounding box meets the segment a->b (lat, lon).

        As the STRtree answers it: the boxes that meet the segment's bounding box."""
        by_rank = self._by_rank
        return [by_rank[r] for r in self._along_ranks(a, b)]

    def near_along(self, lat: float, lon: float, prev: tuple[float, float] | None
                   ) -> tuple[list[Fence], list[Fence]]:
        """``near(lat, lon)`` and, unless ``prev`` is None, ``along(prev, (lat, lon))``,
        in one look-up: the boxes that hold the point are among those the segment meets."""
        if prev is None:
            return self.near(lat, lon), []
        ranks = self._along_ranks(prev, (lat, lon))
        if not ranks:
            return [], []
        by_rank, boxes = self._by_rank, self._box_by_rank
        passed = [by_rank[r] for r in ranks]
        near = [by_rank[r] for r in ranks
                if (e := boxes[r])[0] <= lon <= e[2] and e[1] <= lat <= e[3]]
        return near, passed

    def _along_ranks(self, a: tuple[float, float], b: tuple[float, float]) -> list[int]:
        if self.tree is None:
            return []
        y0, x0 = a
        y1, x1 = b
        if x1 < x0:
            x0, x1 = x1, x0
        if y1 < y0:
            y0, y1 = y1, y0
        occupancy = self._occupancy
        if occupancy is not None and occupancy.clear(
                math.floor(y0 * 1e7), math.floor(x0 * 1e7),
                math.floor(y1 * 1e7), math.floor(x1 * 1e7)):
            return []
        cw, ch = self._cw, self._ch
        ix0, ix1, iy0, iy1 = x0 // cw, x1 // cw, y0 // ch, y1 // ch
        cells = self._cells
        if ix0 == ix1 and iy0 == iy1:
            cell = cells.get(ix0 * _ROW + iy0)
            if cell is None and not self._wide:
                return []
            ranks = [e[4] for e in cell or ()
                     if e[0] <= x1 and x0 <= e[2] and e[1] <= y1 and y0 <= e[3]]
        elif (ix1 - ix0 + 1) * (iy1 - iy0 + 1) <= GRID_SEGMENT_CELLS:
            found = {e[4] for ix in range(int(ix0), int(ix1) + 1)
                     for iy in range(int(iy0), int(iy1) + 1)
                     for e in cells.get(ix * _ROW + iy, ())
                     if e[0] <= x1 and x0 <= e[2] and e[1] <= y1 and y0 <= e[3]}
            ranks = sorted(found)
        else:
            seg = LineString([(a[1], a[0]), (b[1], b[0])])
            rank = self._rank
            return [rank[i] for i in self.tree.query(seg).tolist()]
        if self._wide:
            ranks += [e[4] for e in self._wide
                      if e[0] <= x1 and x0 <= e[2] and e[1] <= y1 and y0 <= e[3]]
            ranks.sort()
        return ranks


def _never_clear(lat_a: int, lon_a: int, lat_b: int, lon_b: int) -> bool:
    return False


def _always_clear(lat_a: int, lon_a: int, lat_b: int, lon_b: int) -> bool:
    return True


def _cell_size(bounds: list[tuple[float, float, float, float]]) -> tuple[float, float]:
    """Grid cell width and height in degrees, from the fences' bounding boxes.

    Large cells mean fewer cells per segment to look in, small ones fewer fences per
    cell to check: the cells are as large as they can be while a fence shares its cell
    (by its centre) with no more than GRID_SHARE others on average, which adapts them
    to how densely the fences lie (and to clusters of them)."""
    b = np.asarray(bounds, dtype=float)
    w = max(float(np.median(b[:, 2] - b[:, 0])), _MIN_CELL)
    h = max(float(np.median(b[:, 3] - b[:, 1])), _MIN_CELL)
    cx = (b[:, 0] + b[:, 2]) / 2
    cy = (b[:, 1] + b[:, 3]) / 2
    for k in GRID_SIZES:
        cw, ch = k * w, k * h
        _, counts = np.unique(np.floor(cx / cw) * _ROW + np.floor(cy / ch), return_counts=True)
        if float((counts * counts).sum()) / len(b) <= GRID_SHARE + 1:
            return cw, ch
    return GRID_SIZES[-1] * w, GRID_SIZES[-1] * h


def _fine_size(bounds: list[tuple[float, float, float, float]], cw: float, ch: float
               ) -> tuple[int, int]:
    """Occupancy cell width and height in 1e-7 degrees: FINE_CELLS across the median
    fence where fences are dense (fine enough to tell a street from the sites beside
    it), a sixteenth of a grid cell where they are not (fewer tiles)."""
    b = np.asarray(bounds, dtype=float)
    w = max(float(np.median(b[:, 2] - b[:, 0])) / FINE_CELLS, cw / 16)
    h = max(float(np.median(b[:, 3] - b[:, 1])) / FINE_CELLS, ch / 16)
    return max(int(w * 1e7), 1), max(int(h * 1e7), 1)


def _tile_count(ranges: list[tuple[int, int, int, int]]) -> int:
    """How many occupancy tiles the cells need (counting stops past MAX_TILES)."""
    seen: set[int] = set()
    for r in ranges:
        seen.update(_tiles_seeing(*r))
        if len(seen) > MAX_TILES:
            break
    return len(seen)


def _bounds_deg(f: Fence) -> tuple[float, float, float, float]:
    minx, miny, maxx, maxy = f.geometry.bounds
    k = M_PER_DEG * math.cos(math.radians(f.lat0))
    return (f.lon0 + minx / k, f.lat0 + miny / M_PER_DEG,
            f.lon0 + maxx / k, f.lat0 + maxy / M_PER_DEG)


# --- loading ------------------------------------------------------------------


def load(path: str | Path) -> FenceIndex:
    """Read a GeoJSON FeatureCollection of fences; every mistake names feature and field."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FenceError("%s: no such file" % p) from None
    except (OSError, UnicodeError) as exc:
        raise FenceError("%s: cannot read it: %s" % (p, exc)) from None
    except json.JSONDecodeError as exc:
        raise FenceError("%s: line %d column %d: not valid JSON: %s"
                         % (p, exc.lineno, exc.colno, exc.msg)) from None
    return FenceIndex(parse(doc, str(p)))


def parse(doc: Any, source: str = "<fences>") -> list[Fence]:
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise FenceError("%s: expected a GeoJSON FeatureCollection" % source)
    features = doc.get("features")
    if not isinstance(features, list):
        raise FenceError("%s: 'features' must be a list" % source)
    fences = []
    seen: set[str] = set()
    for i, feature in enumerate(features):
        fence = _feature(feature, "%s: feature %d" % (source, i))
        if fence.id in seen:
            raise FenceError("%s: feature %d: id %r is used twice" % (source, i, fence.id))
        seen.add(fence.id)
        fences.append(fence)
    return fences


def _feature(feature: Any, where: str) -> Fence:
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise FenceError("%s: expected a Feature" % where)
    props = feature.get("properties") or {}
    if not isinstance(props, dict):
        raise FenceError("%s: properties must be an object" % where)
    fid = props.get("id", feature.get("id"))
    if not isinstance(fid, (str, int)) or fid == "":
        raise FenceError("%s: properties.id: every fence needs an id" % where)
    fid = str(fid)
    where = "%s (id %s)" % (where, fid)
    kind = props.get("kind", "site")
    if kind not in KINDS:
        raise FenceError("%s: properties.kind: %r is not one of %s"
                         % (where, kind, ", ".join(KINDS)))
    geom_doc = feature.get("geometry")
    if not isinstance(geom_doc, dict):
        raise FenceError("%s: geometry: missing" % where)
    lat0, lon0, local = _local_geometry(geom_doc, props, where)
    return Fence(
        id=fid,
        name=str(props.get("name", fid)),
        kind=kind,
        geometry=local,
        lat0=lat0,
        lon0=lon0,
        speed_limit_kmh=_opt_number(props, "speed_limit_kmh", where, int),
        groups=_groups(props, where),
        hours=_hours(props.get("active_hours"), where),
        margin_m=_opt_number(props, "margin_m", where, float),
        dwell_s=_opt_number(props, "dwell_s", where, int),
        properties=props,
    )


def _local_geometry(geom_doc: dict[str, Any], props: dict[str, Any],
                    where: str) -> tuple[float, float, BaseGeometry]:
    gtype = geom_doc.get("type")
    try:
        geom = shape(geom_doc)
    except Exception as exc:  # shapely raises several types for bad GeoJSON
        raise FenceError("%s: geometry: %s" % (where, exc)) from None
    if geom.is_empty:
        raise FenceError("%s: geometry: empty" % where)
    minx, miny, maxx, maxy = geom.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise FenceError("%s: geometry: coordinates are [longitude, latitude] in degrees" % where)
    lon0, lat0 = (minx + maxx) / 2, (miny + maxy) / 2
    k = M_PER_DEG * math.cos(math.radians(lat0))
    local = shapely.transform(geom, lambda c: _to_local_array(c, lon0, lat0, k))
    if gtype in ("Polygon", "MultiPolygon"):
        if not local.is_valid:
            raise FenceError("%s: geometry: the polygon is not valid (%s)"
                             % (where, shapely.is_valid_reason(local)))
        return lat0, lon0, local
    if gtype == "Point":
        radius = _opt_number(props, "radius_m", where, float)
        if radius is None or radius <= 0:
            raise FenceError("%s: properties.radius_m: a circle needs a radius in metres" % where)
        return lat0, lon0, local.buffer(radius, quad_segs=16)
    if gtype == "LineString":
        width = _opt_number(props, "width_m", where, float)
        if width is None or width <= 0:
            raise FenceError("%s: properties.width_m: a corridor needs a width in metres" % where)
        return lat0, lon0, local.buffer(width / 2)
    raise FenceError("%s: geometry: %s is not a fence shape (Polygon, MultiPolygon, "
                     "Point with radius_m, LineString with width_m)" % (where, gtype))


def _to_local_array(coords: Any, lon0: float, lat0: float, k: float) -> Any:
    out = coords.copy()
    out[:, 0] = (coords[:, 0] - lon0) * k
    out[:, 1] = (coords[:, 1] - lat0) * M_PER_DEG
    return out


def _opt_number(props: dict[str, Any], key: str, where: str, cast: type) -> Any:
    v = props.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise FenceError("%s: properties.%s: expected a non-negative number, got %r"
                         % (where, key, v))
    return cast(v)


def _groups(props: dict[str, Any], where: str) -> frozenset[str]:
    groups = props.get("groups", [])
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise FenceError("%s: properties.groups: a list of device group names" % where)
    return frozenset(groups)


def hours_from(doc: Any, where: str) -> ActiveHours:
    """Working hours given like a fence's ``active_hours`` (for device groups)."""
    hours = _hours(doc, where)
    if hours is None:
        raise FenceError("%s: expected tz and day ranges" % where)
    return hours


def _hours(doc: Any, where: str) -> ActiveHours | None:
    """``{"tz": "Europe/Berlin", "mon-fri": "07:00-18:00", "sat": "08:00-12:00"}``."""
    if doc is None:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("tz"), str):
        raise FenceError("%s: active hours need a 'tz' like 'Europe/Berlin'" % where)
    try:
        tz = ZoneInfo(doc["tz"])
    except (ZoneInfoNotFoundError, ValueError):
        raise FenceError("%s: properties.active_hours.tz: unknown time zone %r"
                         % (where, doc["tz"])) from None
    windows: dict[int, list[tuple[time, time]]] = {}
    for days, spans in doc.items():
        if days == "tz":
            continue
        for day in _days(days, where):
            for span in str(spans).split(","):
                windows.setdefault(day, []).append(_span(span.strip(), days, where))
    return ActiveHours(tz, {d: tuple(w) for d, w in windows.items()})


def _days(spec: str, where: str) -> list[int]:
    parts = spec.lower().split("-")
    if not all(p in DAYS for p in parts) or len(parts) > 2:
        raise FenceError("%s: properties.active_hours: %r is not a day or range like 'mon-fri'"
                         % (where, spec))
    a, b = DAYS.index(parts[0]), DAYS.index(parts[-1])
    return list(range(a, b + 1)) if a <= b else list(range(a, 7)) + list(range(0, b + 1))


def _span(span: str, days: str, where: str) -> tuple[time, time]:
    try:
        a, b = span.split("-")
        start = time.fromisoformat(a)
        end = time.fromisoformat(b) if b != "24:00" else time.max
    except ValueError:
        raise FenceError("%s: properties.active_hours.%s: %r is not like '07:00-18:00'"
                         % (where, days, span)) from None
    if end <= start:
        raise FenceError("%s: properties.active_hours.%s: %r ends before it starts"
                         % (where, days, span))
    return start, end
