"""A van driving a GPX track back and forth, with a customer visit at each end."""

from __future__ import annotations

import math
import random
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from fieldtrack.tools.simulate.errors import SimulateError
from fieldtrack.tools.simulate.legs import M_PER_DEG, TURN_MS, Drive, Leg, stay, visit


@dataclass(frozen=True)
class GpxRoute:
    """A track in local metres east/north of its first point; speeds where it had times."""

    name: str
    lat0: float
    lon0: float
    points: tuple[tuple[float, float, float], ...]  # x, y, altitude
    speeds: tuple[float | None, ...]  # per segment, m/s, from the recorded times


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def load_gpx(path: str | Path) -> GpxRoute:
    """Read the track points (or else route points) of a GPX 1.0/1.1 file."""
    name = str(path)
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise SimulateError("%s: cannot read the route (%s)" % (name, exc.strerror)) from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise SimulateError("%s:%d:%d: not valid XML: %s" % (name, line, column, exc)) from None
    if _local_name(root.tag) != "gpx":
        raise SimulateError("%s: not a GPX file: the root element is <%s>, not <gpx>"
                            % (name, _local_name(root.tag)))
    raw: list[tuple[float, float, float | None, float | None]] = []
    for kind in ("trkpt", "rtept"):
        for n, el in enumerate(e for e in root.iter() if _local_name(e.tag) == kind):
            try:
                lat, lon = float(el.attrib["lat"]), float(el.attrib["lon"])
            except (KeyError, ValueError):
                raise SimulateError("%s: <%s> number %d: needs numeric lat and lon attributes"
                                    % (name, kind, n + 1)) from None
            if not (-85 <= lat <= 85 and -180 <= lon <= 180):
                raise SimulateError("%s: <%s> number %d: lat %s, lon %s is not a place on the "
                                    "map" % (name, kind, n + 1, lat, lon))
            ele = stamp = None
            for child in el:
                text = (child.text or "").strip()
                try:
                    if _local_name(child.tag) == "ele":
                        ele = float(text)
                    elif _local_name(child.tag) == "time":
                        stamp = datetime.fromisoformat(text).timestamp()
                except ValueError:
                    pass  # a point without a usable height or time still has a place
            raw.append((lat, lon, ele, stamp))
        if raw:
            break
    return _route(name, raw)


def _route(name: str, raw: list[tuple[float, float, float | None, float | None]]) -> GpxRoute:
    if not raw:
        raise SimulateError("%s: no <trkpt> or <rtept> points: export the route as a track"
                            % name)
    lat0, lon0 = raw[0][0], raw[0][1]
    cos0 = math.cos(math.radians(lat0))
    points: list[tuple[float, float, float]] = []
    speeds: list[float | None] = []
    last_t: float | None = None
    for lat, lon, ele, stamp in raw:
        x, y = (lon - lon0) * M_PER_DEG * cos0, (lat - lat0) * M_PER_DEG
        alt = ele if ele is not None else (points[-1][2] if points else 40.0)
        if points:
            d = math.hypot(x - points[-1][0], y - points[-1][1])
            if d < 1.0:
                continue  # a repeated point: nothing to drive
            v = d / (stamp - last_t) if stamp is not None and last_t is not None \
                and stamp > last_t else None
            speeds.append(min(v, 40.0) if v is not None and v >= 1.0 else None)
        points.append((x, y, alt))
        last_t = stamp
    length = sum(math.hypot(b[0] - a[0], b[1] - a[1])
                 for a, b in zip(points, points[1:], strict=False))
    if length < 50:
        raise SimulateError("%s: the route is %.0f m long: give a track of at least 50 m"
                            % (name, length))
    return GpxRoute(name, lat0, lon0, tuple(points), tuple(speeds))


def _turn(a: tuple[float, float, float], b: tuple[float, float, float],
          c: tuple[float, float, float]) -> float:
    h1 = math.atan2(b[0] - a[0], b[1] - a[1])
    h2 = math.atan2(c[0] - b[0], c[1] - b[1])
    return abs((math.degrees(h2 - h1) + 180) % 360 - 180)


def gpx_day(route: GpxRoute, rng: random.Random, t: float) -> Iterator[Leg]:
    """Drive the route to its end, visit a customer there, drive it back; again."""
    pts = route.points
    forward = rng.random() < 0.5
    i = rng.randrange(len(pts) - 1)
    vc = rng.uniform(30, 50) / 3.6
    v_in = 0.0
    hdg = 0
    while True:
        order = range(i, len(pts) - 1) if forward else range(len(pts) - 1 - i, 0, -1)
        step = 1 if forward else -1
        for k in order:
            a, b = pts[k], pts[k + step]
            seg = route.speeds[min(k, k + step)]
            if rng.random() < 0.01:
                vc = rng.uniform(30, 50) / 3.6
            v = seg if seg is not None else vc
            end = k + step == (len(pts) - 1 if forward else 0)
            light = False
            if end:
                v_out = 0.0
            else:
                turn = _turn(a, b, pts[k + 2 * step])
                light = rng.random() < (0.15 if turn > 60 else 0.01)
                limit = TURN_MS if turn > 60 else v * (1 - turn / 90) + TURN_MS * turn / 90
                v_out = 0.0 if light else min(v, limit)
            leg = Drive(t, a[0], a[1], b[0], b[1], min(v_in, v), v, min(v_out, v), a[2], b[2])
            yield leg
            t, v_in, hdg = leg.t1, v_out, leg.hdg
            if light:
                stop = stay(t, rng.uniform(5, 40), b[0], b[1], leg.hdg, b[2], True)
                yield stop
                t = stop.t1
        last = pts[-1] if forward else pts[0]
        for parked in visit(rng, t, last[0], last[1], hdg, last[2], "route-end"):
            yield parked
            t = parked.t1
        forward, i, v_in = not forward, 0, 0.0
