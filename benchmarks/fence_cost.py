"""What geofences cost the gateway per fix, from 100 to 100,000 fences in one city.

Run from the repository root:

    .venv/bin/python benchmarks/fence_cost.py [--quick] [--repeats R] [--profile]

The city: a 30 x 20 km rectangle around Berlin's centre with a street grid every
250 m. Two layouts of N fences, both irregular polygons of 20 vertices, both measured:

- **city** (the targets are judged on it): the inside of every block is cut into 5 x 5
  lots of 47.6 m, and a fence takes 1 x 1 lot (3/4 of them: shops, small customer
  sites, 30-44 m across), 2 x 2 lots (1/5: yards, supermarkets, larger sites, 45-91 m)
  or 3 x 3 lots (1/20: depots, 92-139 m), 2 m clear of its lots' edges, so no fence
  crosses another. 100,000 such fences fill 83 % of the lots (117 km² of fences on the
  600 km² city; the 30-200 m sizes of the stress layout would not fit). 1 in 1,000 is
  a work area drawn round a whole block (238 m across) and the fences on it: the only
  nesting, about 1 % of the fences at 100,000.
- **dense** (a stress case, not a city): 30-200 m across at random places in their
  blocks regardless of one another; at 100,000, 94 % of them overlap another and a
  point inside a fence is inside 2.2 of them.

About 5 % are no-go zones, 5 % speed zones, 5 % have active hours and 5 % apply to
another device group only, so every rule of the tracker is on the path. The sets are
nested and spread over the whole city at every N (the first 1,000 fences of the
100,000 are the 1,000-fence set, and so on) and all are parsed from one GeoJSON
FeatureCollection with ``fences.loader.parse``.

The fixes: vans report every 10 s while they drive the street grid at 30-50 km/h.
Half of their stops are at one of the first 100 fences of the layout (present in every set): the
van leaves the street at the point nearest the fence, parks at its centre for 1-5
minutes and leaves the way it came; the other half are at the kerb (0-50 s). Every
fix has GNSS noise (sigma 2 m) and a reported accuracy of 2-6 m. So most fixes are
outside every fence and some inside, and every device's fence state is realistic: the
first fixes of every device are run untimed, and every repeat starts from a copy of
the states they left.

Measured side by side in one run, medians over the repeats, in CPU time of this
process (``time.process_time``: other jobs on a shared machine distort it less than
wall-clock time):

1. The fence stage per fix: ``fence_tracker.track(state, fix, group, index, cfg)``,
   devices interleaved as the gateway sees them, for both layouts and N = 100, 1,000,
   10,000 and 100,000 fences; after one untimed pass (what the fences build when first
   needed then exists, as in a gateway that has run a while), every chunk of fixes
   runs through both layouts and all N in turn, and the ratio 100,000 / 1,000 is taken
   within each repeat. Beside it, the index look-up alone (the fences whose bounding box holds
   the fix or meets the segment from the device's previous fix: what ``track`` asks
   the index for).
2. Brute force: ``Fence.signed_distance`` of every fence for a sample of the same
   fixes (fewer at higher N), N = 100, 1,000, 10,000, both layouts.
3. The whole pipeline: ``Pipeline.process`` on position frames (COSE-signed and
   unsigned) from a few hundred devices, with an ``EventEngine``, with 10,000 fences
   of the city loaded and with none: positions per CPU second, frames decoded, authenticated,
   filtered, turned into rows and judged (the store is not part of it).

Per layout and N it also reports (untimed) how the fences overlap, the share of fixes
within 20 m of a fence and inside one, and the derived events per 1,000 fixes, counted
and hashed, so two versions of the fence code can be compared for identical behaviour
as well as for speed.

Targets: at most 10 us per fix at 10,000 fences; the cost at 100,000 fences at most
twice the cost at 1,000, both judged on the city layout (the dense layout's figures
are printed beside them). Exit status 0 when both pass on the city, 1 when one fails.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import hashlib
import io
import math
import os
import platform
import pstats
import random
import statistics
import sys
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import shapely  # noqa: E402

from fieldtrack.gateway.derive import fence_tracker  # noqa: E402
from fieldtrack.gateway.derive.engine import DeriveConfig, EventEngine  # noqa: E402
from fieldtrack.gateway.fences.index import FenceIndex  # noqa: E402
from fieldtrack.gateway.fences.loader import parse  # noqa: E402
from fieldtrack.gateway.ingest.pipeline import Pipeline, PipelineConfig  # noqa: E402
from fieldtrack.gateway.store.sqlite import Batch, Device  # noqa: E402
from fieldtrack.protocol import cose, fast, topics  # noqa: E402

M_PER_DEG = 111_320.0
LAT0, LON0 = 52.5200, 13.4050  # Berlin, Alexanderplatz
KX = M_PER_DEG * math.cos(math.radians(LAT0))
HALF_W, HALF_H = 15_000.0, 10_000.0  # the city: 30 x 20 km
STREET_M = 250.0  # a street grid: blocks of 250 x 250 m
KERB_M = 6.0  # half a street's width: fences keep this far from its centre line
BLOCKS_X, BLOCKS_Y = int(HALF_W // STREET_M), int(HALF_H // STREET_M)
T0 = 1_767_261_600  # 2026-01-01 10:00 UTC, a Thursday: inside most active hours
PERIOD_S = 10
VERTICES = 20
ANCHORS = 100  # stops are at these fences, present in every set
GROUP = "delivery"

LOTS = 5  # city layout: lots per block side
LOT_M = (STREET_M - 2 * KERB_M) / LOTS  # 47.6 m
SETBACK_M = 2.0  # a fence keeps this far from its lots' edges: neighbours >= 4 m apart
# (lots a side, share of the fences, smallest across in metres): shops, small customer
# sites and houses; yards, supermarkets and larger customer sites; depots.
LOT_CLASSES = ((1, 0.75, 30.0), (2, 0.20, 45.0), (3, 0.05, 92.0))
ZONE_SHARE = 0.001  # work areas round a whole block, with the fences on it inside
NEAR_M = 20.0  # a fix this close to a fence, or inside one, is "near a fence"
LAYOUTS = ("city", "dense")

SIZES = (100, 1_000, 10_000, 100_000)
BRUTE_SIZES = (100, 1_000, 10_000)
PIPELINE_FENCES = 10_000
TARGET_US_10K = 10.0
TARGET_RATIO = 2.0

CHUNK = 25  # fixes per device that run through every N before the next ones do
CLOCK = time.process_time  # CPU time: other jobs on a shared machine distort it less

FULL: dict[str, Any] = {"repeats": 7, "devices": 200, "warm": 20, "fixes": 100,
        "brute": {100: 400, 1_000: 100, 10_000: 12},
        "pipe_devices": 300, "pipe_warm": 5, "pipe_frames": 30, "pipe_repeats": 5}
QUICK: dict[str, Any] = {"repeats": 3, "devices": 100, "warm": 20, "fixes": 40,
         "brute": {100: 100, 1_000: 25, 10_000: 4},
         "pipe_devices": 150, "pipe_warm": 3, "pipe_frames": 12, "pipe_repeats": 3}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- fences -------------------------------------------------------------------------


def dense_centres(n: int, g: np.random.Generator) -> np.ndarray:
    """The stress layout: centres and radii of ``n`` fences 30-200 m across, each at a
    random place in a random block, regardless of the others (so they overlap)."""
    radius = np.exp(g.uniform(math.log(15.0), math.log(100.0), n))
    bx = g.integers(-BLOCKS_X, BLOCKS_X, n) * STREET_M
    by = g.integers(-BLOCKS_Y, BLOCKS_Y, n) * STREET_M
    room = STREET_M - 2 * (radius + KERB_M)
    cx = bx + radius + KERB_M + g.uniform(0, 1, n) * room
    cy = by + radius + KERB_M + g.uniform(0, 1, n) * room
    return np.stack([cx, cy, radius], axis=1)


def city_centres(n: int, g: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The city layout: centres and radii of ``n`` fences on lots, and which are work areas.

    The inside of every block (the block less ``KERB_M`` along each street) is cut into
    ``LOTS`` x ``LOTS`` lots. A fence takes 1 x 1, 2 x 2 or 3 x 3 lots (``LOT_CLASSES``)
    and keeps ``SETBACK_M`` from their edges, so no two fences meet. The largest are
    placed first, at a random corner of a random block, then the others in random free
    lots; the result is shuffled so that the first ``k`` fences, for every ``k``, are
    spread over the whole city. ``ZONE_SHARE`` of them are work areas drawn round a whole
    block and the fences on it: the only fences that contain others.
    """
    n_zone = round(n * ZONE_SHARE)
    counts = [round((n - n_zone) * share) for _, share, _ in LOT_CLASSES]
    counts[0] = n - n_zone - sum(counts[1:])
    nbx, nby = 2 * BLOCKS_X, 2 * BLOCKS_Y
    free = np.ones((nbx, nby, LOTS, LOTS), dtype=bool)
    rows: list[tuple[float, float, float]] = []  # (x0, y0, side) of each fence's square
    sizes: list[tuple[float, float]] = []  # (smallest, largest) across, metres
    for (k, _, low), count in zip(reversed(LOT_CLASSES), reversed(counts), strict=True):
        side = k * LOT_M - 2 * SETBACK_M
        placed = 0
        while placed < count:
            bi, bj = int(g.integers(nbx)), int(g.integers(nby))
            if k * 2 > LOTS:  # one per block, at a corner
                spots = [(i, j) for i in (0, LOTS - k) for j in (0, LOTS - k)]
            else:
                spots = [(i, j) for i in range(LOTS - k + 1) for j in range(LOTS - k + 1)]
            block = free[bi, bj]
            spots = [(i, j) for i, j in spots if block[i:i + k, j:j + k].all()]
            if not spots:
                continue
            i, j = spots[int(g.integers(len(spots)))]
            block[i:i + k, j:j + k] = False
            rows.append(((bi - BLOCKS_X) * STREET_M + KERB_M + i * LOT_M + SETBACK_M,
                         (bj - BLOCKS_Y) * STREET_M + KERB_M + j * LOT_M + SETBACK_M, side))
            sizes.append((low, side))
            placed += 1
    sq = np.array(rows)
    lo, hi = np.array(sizes).T
    radius = np.exp(g.uniform(np.log(lo), np.log(hi))) / 2
    cx = sq[:, 0] + radius + g.uniform(0, 1, len(sq)) * (sq[:, 2] - 2 * radius)
    cy = sq[:, 1] + radius + g.uniform(0, 1, len(sq)) * (sq[:, 2] - 2 * radius)
    used = np.argwhere(~free.reshape(nbx, nby, -1).all(axis=2))
    pick = used[g.choice(len(used), n_zone, replace=False)]
    inner = (STREET_M - 2 * KERB_M) / 2
    zx = (pick[:, 0] - BLOCKS_X) * STREET_M + STREET_M / 2
    zy = (pick[:, 1] - BLOCKS_Y) * STREET_M + STREET_M / 2
    out = np.concatenate([np.stack([cx, cy, radius], axis=1),
                          np.stack([zx, zy, np.full(n_zone, inner)], axis=1)])
    zone = np.concatenate([np.zeros(len(sq), dtype=bool), np.ones(n_zone, dtype=bool)])
    order = g.permutation(n)
    return out[order], zone[order]


def fence_rings(centres: np.ndarray, zone: np.ndarray, g: np.random.Generator) -> np.ndarray:
    """``VERTICES``-vertex rings (closed), in metres east and north of the city centre.

    A fence is an irregular star round its centre (so always valid), its vertices at
    0.6-1 of its radius; a work area is the square inside its block's kerbs, five
    vertices a side.
    """
    n = len(centres)
    cx, cy, radius = centres[:, 0:1], centres[:, 1:2], centres[:, 2:3]
    step = 2 * math.pi / VERTICES
    ang = ((np.arange(VERTICES)[None, :] + g.uniform(-0.3, 0.3, (n, VERTICES))) * step
           + g.uniform(0, 2 * math.pi, (n, 1)))
    rad = radius * g.uniform(0.6, 1.0, (n, VERTICES))
    ring = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=2)
    if zone.any():
        t = np.arange(VERTICES // 4) / (VERTICES // 4) * 2 - 1  # -1 .. 0.6 along a side
        one = np.ones_like(t)
        edge = np.concatenate([np.stack([t, -one], 1), np.stack([one, t], 1),
                               np.stack([-t, one], 1), np.stack([-one, -t], 1)])
        ring[zone] = centres[zone, None, :2] + edge[None] * centres[zone, None, 2:3]
    return np.concatenate([ring, ring[:, :1]], axis=1)


def fences_doc(layout: str, n: int, seed: int = 1
               ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """A FeatureCollection of ``n`` fences of ``layout`` ("city" or "dense"); their centres
    and radii, and their rings, in metres east and north of the city centre."""
    g = np.random.default_rng(seed)
    if layout == "city":
        centres, zone = city_centres(n, g)
    else:
        centres, zone = dense_centres(n, g), np.zeros(n, dtype=bool)
    rings_m = fence_rings(centres, zone, g)
    lon = np.round(LON0 + rings_m[:, :, 0] / KX, 7)
    lat = np.round(LAT0 + rings_m[:, :, 1] / M_PER_DEG, 7)
    rings = np.stack([lon, lat], axis=2).tolist()
    roll = g.uniform(0, 1, n).tolist()
    depot = centres[:, 2] * 2 > 2 * LOT_M - 2 * SETBACK_M  # 3 x 3 lots (and work areas)
    big = depot.tolist() if layout == "city" else [False] * n
    features = []
    for i in range(n):
        props: dict[str, Any] = {"id": "f%06d" % i, "name": "Site %d" % i, "kind": "customer"}
        r = roll[i]
        if r < 0.05:
            props["kind"] = "no-go"
        elif r < 0.10:
            props.update(kind="speed-zone", speed_limit_kmh=20)
        elif zone[i]:
            props["kind"] = "work-area"
        elif big[i]:
            props["kind"] = "depot"
        elif 0.20 <= r < 0.30:
            props["kind"] = "site"
        if 0.10 <= r < 0.15:
            props["active_hours"] = {"tz": "Europe/Berlin", "mon-fri": "07:00-18:00"}
        elif 0.15 <= r < 0.20:
            props["groups"] = ["cleaning"]
        features.append({"type": "Feature", "properties": props,
                         "geometry": {"type": "Polygon", "coordinates": [rings[i]]}})
    return {"type": "FeatureCollection", "features": features}, centres, rings_m


def layout_stats(rings_m: np.ndarray, n: int) -> tuple[float, float, float, float]:
    """Of the first ``n`` fences: the share that overlap another, the others each
    overlaps, their total area in km², and how many fences a point inside one is inside
    (their area over the area they cover; from 400,000 random points of the city)."""
    polys = shapely.polygons(rings_m[:n])
    tree = shapely.STRtree(polys)
    a, b = tree.query(polys, predicate="intersects")
    pairs = a != b
    others = np.bincount(a[pairs], minlength=n)
    g = np.random.default_rng(7)
    pts = shapely.points(g.uniform(-HALF_W, HALF_W, 400_000), g.uniform(-HALF_H, HALF_H, 400_000))
    hit, _ = tree.query(pts, predicate="within")
    depth = len(hit) / max(1, len(np.unique(hit)))
    area = float(shapely.area(polys).sum())
    return 100.0 * float((others > 0).mean()), float(others.mean()), area / 1e6, depth


# --- fixes --------------------------------------------------------------------------


def street_row(y: float) -> float:
    """The nearest east-west street to ``y``, inside the city."""
    k = round(y / STREET_M)
    return max(-BLOCKS_Y, min(BLOCKS_Y, k)) * STREET_M


def route(x: float, y: float, ex: float, ey: float) -> list[tuple[float, float]]:
    """Waypoints from (x, y) on an east-west street to (ex, ey) on another, by the grid."""
    if y == ey:
        return [(ex, ey)]
    xv = round(x / STREET_M) * STREET_M  # the nearest north-south street
    return [(xv, y), (xv, ey), (ex, ey)]


def device_tracks(n_dev: int, n_fix: int, anchors: list[tuple[float, float, float]],
                  seed: int) -> list[list[dict[str, Any]]]:
    """``n_fix`` fixes of each of ``n_dev`` vans, in the protocol's units.

    A van drives the street grid at 30-50 km/h. Half of its stops are at one of the
    anchor fences (the nearest of eight picked at random): it leaves the street at the
    point nearest the fence, parks anywhere within half the fence's radius of its
    centre for 1-5 minutes and leaves the way it came. The other half are at the kerb
    anywhere within 3 km (0-50 s).
    """
    rng = random.Random(seed)
    tracks = []
    for _ in range(n_dev):
        x = rng.uniform(-HALF_W, HALF_W)
        y = street_row(rng.uniform(-HALF_H, HALF_H))
        t = T0 + rng.randrange(PERIOD_S)
        stay = rng.randrange(0, 10)  # fixes left at the current stop
        way: list[tuple[float, float]] = []
        back: tuple[float, float] | None = None  # the street point to leave a fence by
        speed = 0.0
        fixes: list[dict[str, Any]] = []
        while len(fixes) < n_fix:
            if stay > 0:
                stay -= 1
                speed = 0.0
            else:
                if not way:
                    start = [back] if back is not None else []
                    sx, sy = back if back is not None else (x, y)
                    if rng.random() < 0.5:
                        picks = [rng.choice(anchors) for _ in range(8)]
                        fx, fy, fr = min(picks, key=lambda p: abs(p[0] - sx) + abs(p[1] - sy))
                        off, bearing = fr * rng.uniform(0, 0.5), rng.uniform(0, 2 * math.pi)
                        px, py = fx + off * math.cos(bearing), fy + off * math.sin(bearing)
                        back = (px, street_row(py))
                        way = start + route(sx, sy, *back) + [(px, py)]
                    else:
                        ex = min(HALF_W, max(-HALF_W, sx + rng.uniform(-3000, 3000)))
                        ey = street_row(sy + rng.uniform(-3000, 3000))
                        back = None
                        way = start + route(sx, sy, ex, ey)
                    speed = rng.uniform(8.3, 13.9)
                left = speed * PERIOD_S
                while way and left > 0:
                    wx, wy = way[0]
                    gap = math.hypot(wx - x, wy - y)
                    if gap <= left:
                        x, y = wx, wy
                        left -= gap
                        way.pop(0)
                    else:
                        x += (wx - x) * left / gap
                        y += (wy - y) * left / gap
                        left = 0.0
                if not way:
                    stay = rng.randrange(6, 30) if back is not None else rng.randrange(0, 5)
            lat = LAT0 + (y + rng.gauss(0, 2.0)) / M_PER_DEG
            lon = LON0 + (x + rng.gauss(0, 2.0)) / KX
            fixes.append({"t": t, "lat": round(lat * 1e7), "lon": round(lon * 1e7),
                          "spd": round(speed * 3.6), "hdg": rng.randrange(360), "alt": 38,
                          "acc": rng.randrange(2, 7), "sats": 11, "fix": 2,
                          "ign": True, "buf": False, "mock": False})
            t += PERIOD_S
        tracks.append(fixes)
    return tracks


def interleave(tracks: list[list[dict[str, Any]]], start: int, stop: int
               ) -> list[tuple[int, dict[str, Any]]]:
    """(device number, fix) for fixes start..stop-1 of every device, in arrival order."""
    return [(d, tr[k]) for k in range(start, stop) for d, tr in enumerate(tracks)]


# --- 1. the fence stage ------------------------------------------------------------------


def warm_states(index: FenceIndex, warm: list[tuple[int, dict[str, Any]]],
                n_dev: int, cfg: fence_tracker.FenceConfig) -> list[dict[str, Any]]:
    states = [fence_tracker.new_state() for _ in range(n_dev)]
    for d, fix in warm:
        fence_tracker.track(states[d], fix, GROUP, index, cfg)
    return states


def run_track(index: FenceIndex, states: list[dict[str, Any]],
              fixes: list[tuple[int, dict[str, Any]]], cfg: fence_tracker.FenceConfig,
              events: list[Any]) -> float:
    """CPU seconds of ``track`` over ``fixes``; the events it derives go to ``events``."""
    track = fence_tracker.track
    t0 = CLOCK()
    for d, fix in fixes:
        events.extend(track(states[d], fix, GROUP, index, cfg))
    return CLOCK() - t0


def lookups(timed: list[tuple[int, dict[str, Any]]], tracks: list[list[dict[str, Any]]],
            start: int) -> list[tuple[float, float, tuple[float, float] | None]]:
    """(lat, lon, the device's previous fix) of every timed fix: what ``track`` looks up."""
    out = []
    seen: dict[int, dict[str, Any]] = {d: tr[start - 1] for d, tr in enumerate(tracks)}
    for d, fix in timed:
        last = seen[d]
        prev = None
        if 0 < fix["t"] - last["t"] <= fence_tracker.FenceConfig().crossing_max_gap_s:
            prev = (last["lat"] * 1e-7, last["lon"] * 1e-7)
        out.append((fix["lat"] * 1e-7, fix["lon"] * 1e-7, prev))
        seen[d] = fix
    return out


def run_lookups(index: FenceIndex,
                points: list[tuple[float, float, tuple[float, float] | None]]) -> float:
    """CPU seconds to find the candidates of every fix: the fences whose bounding box
    holds it and those whose bounding box meets the segment from the previous fix."""
    both = getattr(index, "near_along", None)
    t0 = CLOCK()
    if both is not None:
        for lat, lon, prev in points:
            both(lat, lon, prev)
    else:
        for lat, lon, prev in points:
            index.near(lat, lon)
            if prev is not None:
                index.along(prev, (lat, lon))
    return CLOCK() - t0


def events_digest(events: list[Any]) -> str:
    h = hashlib.sha256()
    for e in events:
        h.update(repr((e.kind, e.t, e.lat, e.lon, e.fence, sorted(e.data.items()))).encode())
    return h.hexdigest()[:12]


# --- 2. brute force ----------------------------------------------------------------------


def run_brute(index: FenceIndex, sample: list[dict[str, Any]]) -> float:
    """CPU microseconds per fix to take the signed distance to every fence."""
    fences = index.fences
    t0 = CLOCK()
    for fix in sample:
        lat, lon = fix["lat"] * 1e-7, fix["lon"] * 1e-7
        for f in fences:
            f.signed_distance(lat, lon)
    return (CLOCK() - t0) / len(sample) * 1e6


# --- 3. the whole pipeline ---------------------------------------------------------------


class Clock:
    """The gateway's clock, following the fixes: a fix is received a second after it is taken."""

    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


def device_key(device: str) -> bytes:
    return hashlib.sha256(b"benchmark key " + device.encode()).digest()[:16]


def pipeline_messages(tracks: list[list[dict[str, Any]]], signed: bool
                      ) -> tuple[dict[str, Device], list[tuple[str, bytes, int]]]:
    """The registry and (topic, payload, receive time ms) of every frame, interleaved."""
    names = ["van-%04d" % d for d in range(len(tracks))]
    registry = {n: Device(n, GROUP, device_key(n) if signed else None, True) for n in names}
    out = []
    for k in range(len(tracks[0])):
        for d, name in enumerate(names):
            fix = tracks[d][k]
            payload = fast.encode(dict(fix, type="position", boot=1, seq=k))
            if signed:
                payload = cose.sign(payload, registry[name].key or b"", name)
            out.append((topics.uplink(name), payload, (fix["t"] + 1) * 1000 + d % 1000))
    return registry, out


def run_pipeline(index: FenceIndex, registry: dict[str, Device],
                 messages: list[tuple[str, bytes, int]], warm: int) -> float:
    """Positions per CPU second through ``Pipeline.process`` after ``warm`` messages."""
    clock = Clock()
    engine = EventEngine(DeriveConfig(), index, {}, clock)
    pipe = Pipeline(PipelineConfig(), registry, {}, engine, clock)
    batch = Batch()
    for topic, data, rms in messages[:warm]:
        clock.now = rms / 1000
        pipe.process(topic, data, rms, batch)
    timed = messages[warm:]
    gc.collect()
    t0 = CLOCK()
    for i, (topic, data, rms) in enumerate(timed):
        clock.now = rms / 1000
        outcome = pipe.process(topic, data, rms, batch)
        if outcome.reject is not None:
            raise RuntimeError("frame rejected: %s" % outcome.reject)
        if i % 100 == 99:
            batch = Batch()  # what a commit would take away
    return len(timed) / (CLOCK() - t0)


# --- the report --------------------------------------------------------------------------


def machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                         platform.processor() or "?")
    except OSError:
        model = platform.processor() or "?"
    try:
        load = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = "?"
    return ("nproc %d (%s); Python %s; shapely %s (GEOS %s); numpy %s; load average %s"
            % (os.cpu_count() or 0, model, platform.python_version(), shapely.__version__,
               shapely.geos_version_string, np.__version__, load))


def n_(n: float) -> str:
    return f"{n:,}"


def us(v: float) -> str:
    return "%.1f µs" % v if v < 100 else f"{v:,.0f} µs"


def span(values: list[float], fmt: str = "%.1f") -> str:
    return "%s-%s" % (fmt % min(values), fmt % max(values))


def rotate(seq: list[Any], k: int) -> list[Any]:
    k %= len(seq)
    return seq[k:] + seq[:k]


LAYOUT_NAMES = {"city": "city", "dense": "stress (dense)"}
LAYOUT_TITLES = {
    "city": "City layout: one fence per lot, none crossing another; 30-139 m across (3/4 of "
            "them 30-44 m), 1 in 1,000 a work area round a whole block and its fences.",
    "dense": "Stress layout (not a city): fences 30-200 m across at random places in their "
             "blocks, regardless of one another.",
}


def build_layout(name: str, n_dev: int, warm_n: int, fix_n: int,
                 cfg: fence_tracker.FenceConfig) -> dict[str, Any]:
    """The fences of one layout at every N, the vans' fixes, their warmed-up states, and
    what the fixes meet (untimed)."""
    log("%s layout: generating and parsing %s fences..." % (name, n_(max(SIZES))))
    doc, centres, rings_m = fences_doc(name, max(SIZES))
    all_fences = parse(doc, "benchmark")
    del doc
    indexes = {n: FenceIndex(all_fences[:n]) for n in SIZES}
    anchors = [(float(x), float(y), float(r)) for x, y, r in centres[:ANCHORS]]
    tracks = device_tracks(n_dev, warm_n + fix_n, anchors, seed=2)
    warm = interleave(tracks, 0, warm_n)
    timed = interleave(tracks, warm_n, warm_n + fix_n)
    points = lookups(timed, tracks, warm_n)
    chunks = [interleave(tracks, k, min(k + CHUNK, warm_n + fix_n))
              for k in range(warm_n, warm_n + fix_n, CHUNK)]
    plain = [fix for _, fix in timed]
    log("%s layout: %d vans x (%d warm-up + %d timed) = %s timed fixes, %.0f %% stopped"
        % (name, n_dev, warm_n, fix_n, n_(len(timed)),
           100.0 * sum(f["spd"] == 0 for f in plain) / len(plain)))
    states0 = {n: warm_states(indexes[n], warm, n_dev, cfg) for n in SIZES}
    for n in SIZES:  # an untimed pass first: what fences build lazily exists, as in a gateway
        run_track(indexes[n], copy.deepcopy(states0[n]), timed, cfg, [])
    # What the fixes meet: boxes holding the fix, fixes within NEAR_M of a fence, inside one.
    xy = shapely.points([((f["lon"] * 1e-7 - LON0) * KX, (f["lat"] * 1e-7 - LAT0) * M_PER_DEG)
                         for f in plain])
    meet, stats = {}, {}
    for n in SIZES:
        idx = indexes[n]
        boxes = inside = 0
        for lat, lon, _ in points:
            cands = idx.near(lat, lon)
            boxes += len(cands)
            inside += any(f.signed_distance(lat, lon) > 0 for f in cands)
        hit, _ = shapely.STRtree(shapely.polygons(rings_m[:n])).query(
            xy, predicate="dwithin", distance=NEAR_M)
        meet[n] = (boxes / len(points), 100.0 * len(np.unique(hit)) / len(points),
                   100.0 * inside / len(points))
        stats[n] = layout_stats(rings_m, n)
    return {"indexes": indexes, "anchors": anchors, "timed": timed, "points": points,
            "chunks": chunks, "plain": plain, "states0": states0, "meet": meet,
            "stats": stats}


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer fixes and repeats (< 1 min)")
    ap.add_argument("--repeats", type=int, help="repeats of every measurement")
    ap.add_argument("--profile", action="store_true",
                    help="also print a cProfile of track() at 10,000 fences")
    args = ap.parse_args()
    p = dict(QUICK if args.quick else FULL)
    if args.repeats:
        p["repeats"] = p["pipe_repeats"] = args.repeats
    started = time.perf_counter()
    cfg = fence_tracker.FenceConfig()
    n_dev, warm_n, fix_n = p["devices"], p["warm"], p["fixes"]
    lay = {name: build_layout(name, n_dev, warm_n, fix_n, cfg) for name in LAYOUTS}
    n_timed = n_dev * fix_n
    n_chunks = len(lay["city"]["chunks"])

    # 1 and 2, side by side: every chunk of fixes goes through every layout and N in turn.
    settings = [(name, n) for name in LAYOUTS for n in SIZES]
    brute_settings = [(name, n) for name in LAYOUTS for n in BRUTE_SIZES]
    track_us: dict[tuple[str, int], list[float]] = {k: [] for k in settings}
    look_us: dict[tuple[str, int], list[float]] = {k: [] for k in settings}
    brute_us: dict[tuple[str, int], list[float]] = {k: [] for k in brute_settings}
    ratios: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    digests: dict[tuple[str, int], tuple[int, str]] = {}
    for r in range(p["repeats"]):
        states = {(name, n): copy.deepcopy(lay[name]["states0"][n]) for name, n in settings}
        events: dict[tuple[str, int], list[Any]] = {k: [] for k in settings}
        cpu = dict.fromkeys(settings, 0.0)
        gc.collect()
        for c in range(n_chunks):
            for name, n in rotate(settings, r + c):
                cpu[(name, n)] += run_track(lay[name]["indexes"][n], states[(name, n)],
                                            lay[name]["chunks"][c], cfg, events[(name, n)])
        for k in settings:
            track_us[k].append(cpu[k] / n_timed * 1e6)
            digest = (len(events[k]), events_digest(events[k]))
            if digests.setdefault(k, digest) != digest:
                raise RuntimeError("track derived different events in two repeats")
        for name, n in rotate(settings, r):
            look_us[(name, n)].append(run_lookups(lay[name]["indexes"][n], lay[name]["points"])
                                      / n_timed * 1e6)
        for name, n in rotate(brute_settings, r):
            k, plain = p["brute"][n], lay[name]["plain"]
            step = max(1, len(plain) // k)
            brute_us[(name, n)].append(run_brute(lay[name]["indexes"][n],
                                                 plain[r % step::step][:k]))
        for name in LAYOUTS:
            ratios[name].append(track_us[(name, 100_000)][-1] / track_us[(name, 1_000)][-1])
            log("repeat %d/%d, %s: track() %s µs/fix; brute force %s µs/fix"
                % (r + 1, p["repeats"], name,
                   ", ".join("%s: %.1f" % (n_(n), track_us[(name, n)][-1]) for n in SIZES),
                   ", ".join("%s: %.0f" % (n_(n), brute_us[(name, n)][-1])
                             for n in BRUTE_SIZES)))

    # 3. the whole pipeline, with PIPELINE_FENCES fences of the city and with none.
    city = lay["city"]
    pipe_tracks = device_tracks(p["pipe_devices"], p["pipe_frames"], city["anchors"], seed=3)
    warm_msgs = p["pipe_devices"] * p["pipe_warm"]
    plans = {signed: pipeline_messages(pipe_tracks, signed) for signed in (True, False)}
    empty = FenceIndex([])
    pipe_settings = [(s, n) for s in (True, False) for n in (0, PIPELINE_FENCES)]
    pipe_rate: dict[tuple[bool, int], list[float]] = {k: [] for k in pipe_settings}
    for r in range(p["pipe_repeats"]):
        for signed, n in rotate(pipe_settings, r):
            registry, msgs = plans[signed]
            rate = run_pipeline(city["indexes"][n] if n else empty, registry, msgs, warm_msgs)
            pipe_rate[(signed, n)].append(rate)
        log("pipeline repeat %d/%d: %s positions/s"
            % (r + 1, p["pipe_repeats"], ", ".join(
                "%s, %s fences: %.0f" % ("signed" if s else "unsigned", n_(n),
                                         pipe_rate[(s, n)][-1]) for s, n in pipe_settings)))

    med = {k: statistics.median(v) for k, v in track_us.items()}
    lmed = {k: statistics.median(v) for k, v in look_us.items()}
    bmed = {k: statistics.median(v) for k, v in brute_us.items()}
    ratio = {name: statistics.median(v) for name, v in ratios.items()}
    ok_10k = med[("city", 10_000)] <= TARGET_US_10K
    ok_ratio = ratio["city"] <= TARGET_RATIO

    print("Machine: %s" % machine())
    print("Times are CPU time of this process (time.process_time), medians of %d repeats "
          "[min-max]; every chunk of %d fixes per van runs through both layouts and all N "
          "in turn. Fixes per layout: %d vans, %s timed (after %d per van untimed)."
          % (p["repeats"], CHUNK, n_dev, n_(n_timed), warm_n))
    for name in LAYOUTS:
        L = lay[name]
        print()
        print(LAYOUT_TITLES[name])
        print()
        print("| Fences | Overlapping another | Fences at a point inside one "
              "| Boxes holding the fix | Fixes within %.0f m of a fence | Fixes inside "
              "| Events per 1,000 fixes (digest) | track() per fix | Index look-up per fix "
              "| Brute force per fix |" % NEAR_M)
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in SIZES:
            k = (name, n)
            brute = ("%s [%s] (%d fixes)" % (us(bmed[k]), span(brute_us[k], "%.0f"), p["brute"][n])
                     if k in bmed else "-")
            over, _, _, depth = L["stats"][n]
            boxes, near, inside = L["meet"][n]
            print("| %s | %.1f %% | %.2f | %.2f | %.1f %% | %.1f %% | %.1f (%s) | %s [%s] "
                  "| %s [%s] | %s |"
                  % (n_(n), over, depth, boxes, near, inside,
                     1000.0 * digests[k][0] / n_timed, digests[k][1], us(med[k]),
                     span(track_us[k]), us(lmed[k]), span(look_us[k]), brute))
    print()
    timed_msgs = len(plans[True][1]) - warm_msgs
    print("| Pipeline.process + EventEngine, %d devices, %s timed frames "
          "| No fences | %s fences (city) | With / without |"
          % (p["pipe_devices"], n_(timed_msgs), n_(PIPELINE_FENCES)))
    print("|---|---:|---:|---:|")
    for signed in (True, False):
        a = statistics.median(pipe_rate[(signed, 0)])
        b = statistics.median(pipe_rate[(signed, PIPELINE_FENCES)])
        print("| %s single-position frames, positions per CPU second | %s [%s] | %s [%s] "
              "| %.2f |" % ("COSE-signed" if signed else "Unsigned", f"{a:,.0f}",
                            span(pipe_rate[(signed, 0)], "%.0f"), f"{b:,.0f}",
                            span(pipe_rate[(signed, PIPELINE_FENCES)], "%.0f"), b / a))
    print()
    print("| Target | Layout | Measured | Result |")
    print("|---|---|---:|---|")
    for name in LAYOUTS:
        m = med[(name, 10_000)]
        verdict = "PASS" if m <= TARGET_US_10K else "FAIL"
        print("| Fence stage at 10,000 fences ≤ %.0f µs per fix | %s | %.1f µs [%s] | %s |"
              % (TARGET_US_10K, LAYOUT_NAMES[name], m, span(track_us[(name, 10_000)]),
                 verdict if name == "city" else "(%s)" % verdict.lower()))
    for name in LAYOUTS:
        verdict = "PASS" if ratio[name] <= TARGET_RATIO else "FAIL"
        print("| Fence stage at 100,000 fences ≤ %.0fx the cost at 1,000 | %s | %.2fx [%s] | %s |"
              % (TARGET_RATIO, LAYOUT_NAMES[name], ratio[name], span(ratios[name], "%.2f"),
                 verdict if name == "city" else "(%s)" % verdict.lower()))
    print()
    print("Verdicts are taken on the city layout; the stress layout's are in brackets.")
    print("Run time %.0f s." % (time.perf_counter() - started))

    if args.profile:
        states_p = copy.deepcopy(city["states0"][10_000])
        prof = cProfile.Profile()
        prof.enable()
        for d, fix in city["timed"]:
            fence_tracker.track(states_p[d], fix, GROUP, city["indexes"][10_000], cfg)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
        print()
        print("cProfile of track() at 10,000 fences of the city (%s fixes):" % n_(n_timed))
        print(out.getvalue())
    return 0 if ok_10k and ok_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
