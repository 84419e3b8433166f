"""Geofences from a GeoJSON FeatureCollection (RFC 7946): every mistake names the
feature and the field.
"""

from __future__ import annotations

import json
import math
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import shapely
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from fieldtrack.gateway.errors import FenceError
from fieldtrack.gateway.fences.index import FenceIndex
from fieldtrack.gateway.fences.model import DAYS, KINDS, ActiveHours, Fence
from fieldtrack.gateway.geo import M_PER_DEG


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
