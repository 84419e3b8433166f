"""The spatial index: which fences a fix or a segment may touch, at a cost per fix that
barely grows with the number of fences.

A uniform grid over the fences' bounding boxes in degrees finds the candidates for a
fix; occupancy tiles answer "no fence near" without touching the grid.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Iterable

import numpy as np
import shapely
from shapely.geometry import LineString

from fieldtrack.gateway.fences.model import (
    Fence,
)
from fieldtrack.gateway.geo import M_PER_DEG

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
