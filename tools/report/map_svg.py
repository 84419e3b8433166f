"""The day's map as inline SVG: tracks, stops, speeding and fences, without map tiles.

A report is often made where there is no network, and a map that fetched tiles would
also tell a tile server where the fleet has been. So the map is drawn from the data
alone, in a local metric projection: equirectangular about the centre of what is
drawn, which at a city's or a region's scale is true to well under one per cent, so
the scale bar holds across the map and north is up. A faint grid at the scale bar's
step stands in for the streets.

Each device's track has its own colour (the Okabe-Ito colour-blind-safe set first);
stops are numbered as in the stops table; speeding is a triangle; fences are drawn as
their polygons (holes left open) or circles, coloured by kind.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Protocol

from fieldtrack.gateway.geo import M_PER_DEG
from fieldtrack.tools.report.days import MOTION
from fieldtrack.tools.report.model import DeviceDay, FenceShape, Report

WIDTH = 960
MIN_HEIGHT, MAX_HEIGHT = 420, 760
PAD = 36  # pixels around what is drawn
MIN_EXTENT_M = 300.0  # a single stop is not drawn at the scale of a room
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7A3E9D",
           "#8C6D31", "#333333")
FENCE_COLOURS = {"site": "#2E7D32", "customer": "#2E7D32", "depot": "#455A64",
                 "no-go": "#C62828", "speed-zone": "#EF6C00", "work-area": "#6A1B9A"}
LEGEND_MAX = 10  # devices named in the map's legend; the tables name them all


def device_colours(devices: Sequence[str]) -> dict[str, str]:
    """A distinct colour per device, in the order given; past the palette, golden-angle hues."""
    out = {}
    for i, device in enumerate(devices):
        if i < len(PALETTE):
            out[device] = PALETTE[i]
        else:
            out[device] = "hsl(%d, 70%%, 40%%)" % round((i * 137.508) % 360)
    return out


@dataclass(frozen=True)
class Projection:
    """Degrees -> SVG pixels: metres east and north of (lat0, lon0), scaled, y down."""

    lat0: float
    lon0: float
    px_per_m: float
    cx: float  # pixel position of (lat0, lon0)
    cy: float
    width: int
    height: int

    def xy(self, lat: float, lon: float) -> tuple[float, float]:
        x = (lon - self.lon0) * M_PER_DEG * math.cos(math.radians(self.lat0))
        y = (lat - self.lat0) * M_PER_DEG
        return self.cx + x * self.px_per_m, self.cy - y * self.px_per_m


def fit(points: Sequence[tuple[float, float]], width: int = WIDTH) -> Projection:
    """The projection that shows every (lat, lon) point, centred, with PAD to spare."""
    lats = [p[0] for p in points]
    lons = [p[1] for p in points]
    lat0 = (min(lats) + max(lats)) / 2
    lon0 = (min(lons) + max(lons)) / 2
    k = M_PER_DEG * math.cos(math.radians(lat0))
    w_m = max((max(lons) - min(lons)) * k, MIN_EXTENT_M)
    h_m = max((max(lats) - min(lats)) * M_PER_DEG, MIN_EXTENT_M)
    height = int(min(MAX_HEIGHT, max(MIN_HEIGHT, (width - 2 * PAD) * h_m / w_m + 2 * PAD)))
    scale = min((width - 2 * PAD) / w_m, (height - 2 * PAD) / h_m)
    return Projection(lat0, lon0, scale, width / 2, height / 2, width, height)


def nice_length(metres: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is not longer than ``metres``."""
    power = 10 ** math.floor(math.log10(metres))
    return max(m * power for m in (1, 2, 5) if m * power <= metres)


def _length_label(metres: float) -> str:
    return "%g km" % (metres / 1000) if metres >= 1000 else "%g m" % metres


class _Placed(Protocol):
    @property
    def lat(self) -> float | None: ...
    @property
    def lon(self) -> float | None: ...


def _points(device: DeviceDay) -> Iterable[tuple[float, float]]:
    yield from ((lat, lon) for _, lat, lon in device.track)
    items: list[_Placed] = [*device.stops, *device.idles, *device.visits,
                            *device.fence_events, *device.overspeeds, *device.checks]
    for item in items:
        if item.lat is not None and item.lon is not None:
            yield item.lat, item.lon


def _fence_points(fence: FenceShape) -> Iterable[tuple[float, float]]:
    for polygon in fence.polygons:
        yield from polygon[0]


def render_svg(report: Report, width: int = WIDTH) -> str:
    """The map of ``report`` as an ``<svg>`` element; "" when there is nothing to place."""
    points = [p for d in report.devices for p in _points(d)]
    used = {f for d in report.devices
            for f in (*(v.site for v in d.visits), *(e.fence for e in d.fence_events),
                      *(c.site for c in d.checks))}
    points += [p for f in report.fences if f.id in used for p in _fence_points(f)]
    if not points:
        return ""
    proj = fit(points, width)
    colours = device_colours([d.device for d in report.devices])
    step = nice_length(proj.width / 5 / proj.px_per_m)
    parts = [
        '<svg class="map" role="img" viewBox="0 0 %d %d" width="%d" height="%d" '
        'font-family="sans-serif" font-size="11">' % (proj.width, proj.height, proj.width,
                                                     proj.height),
        "<title>Tracks, stops and fences on %s</title>" % report.day.date.isoformat(),
        '<rect width="100%" height="100%" fill="#F4F2EC"/>',
        _grid(proj, step),
    ]
    parts += [_fence(proj, f) for f in report.fences if _visible(proj, f)]
    for device in report.devices:
        parts.append(_track(proj, device, colours[device.device]))
    for device in report.devices:
        parts.append(_markers(proj, report, device, colours[device.device]))
    parts += [_scale_bar(proj, step), _north_arrow(proj), _legend(report, colours), "</svg>"]
    return "\n".join(p for p in parts if p)


def _grid(proj: Projection, step: float) -> str:
    d = []
    origin_x, origin_y = proj.cx % (step * proj.px_per_m), proj.cy % (step * proj.px_per_m)
    x = origin_x
    while x < proj.width:
        d.append("M%.1f 0V%d" % (x, proj.height))
        x += step * proj.px_per_m
    y = origin_y
    while y < proj.height:
        d.append("M0 %.1fH%d" % (y, proj.width))
        y += step * proj.px_per_m
    return '<path class="grid" d="%s" stroke="#DDD9CE" stroke-width="1" fill="none"/>' % (
        "".join(d))


def _visible(proj: Projection, fence: FenceShape) -> bool:
    xs, ys = zip(*(proj.xy(lat, lon) for lat, lon in _fence_points(fence)), strict=True)
    return max(xs) >= 0 and min(xs) <= proj.width and max(ys) >= 0 and min(ys) <= proj.height


def _fence(proj: Projection, fence: FenceShape) -> str:
    colour = FENCE_COLOURS.get(fence.kind, "#555555")
    title = "<title>%s (%s)</title>" % (escape(fence.name), escape(fence.kind))
    style = ('fill="%s" fill-opacity="0.14" stroke="%s" stroke-width="1.5" '
             'stroke-dasharray="%s"' % (colour, colour, "6 3" if fence.kind == "no-go" else "none"))
    if fence.circle is not None:
        lat, lon, radius = fence.circle
        x, y = proj.xy(lat, lon)
        shape = '<circle cx="%.1f" cy="%.1f" r="%.1f" %s/>' % (x, y, radius * proj.px_per_m,
                                                               style)
        top = y - radius * proj.px_per_m
    else:
        d = "".join(_ring(proj, ring) for polygon in fence.polygons for ring in polygon)
        shape = '<path d="%s" fill-rule="evenodd" %s/>' % (d, style)
        x = sum(proj.xy(*p)[0] for p in fence.polygons[0][0]) / len(fence.polygons[0][0])
        top = min(proj.xy(*p)[1] for polygon in fence.polygons for p in polygon[0])
    label = ('<text x="%.1f" y="%.1f" text-anchor="middle" fill="%s" stroke="#F4F2EC" '
             'stroke-width="3" paint-order="stroke">%s</text>'
             % (x, top - 4, colour, escape(fence.name)))
    return '<g class="fence" data-fence="%s">%s%s%s</g>' % (escape(fence.id), title, shape,
                                                             label)


def _ring(proj: Projection, ring: Sequence[tuple[float, float]]) -> str:
    xy = [proj.xy(lat, lon) for lat, lon in ring]
    return "M" + "L".join("%.1f %.1f" % p for p in xy) + "Z"


def _track(proj: Projection, device: DeviceDay, colour: str) -> str:
    """One path per device; a data gap lifts the pen, and points closer than a pixel to
    the last one drawn are left out (a day of 1 Hz fixes would be megabytes otherwise)."""
    if not device.track:
        return ""
    d: list[str] = []
    last_t: int | None = None
    last_xy = (math.inf, math.inf)
    pending = ""
    for t, lat, lon in device.track:
        x, y = proj.xy(lat, lon)
        if last_t is None or t - last_t > MOTION.gap_max_s:
            d.append(pending)
            d.append("M%.1f %.1f" % (x, y))
            last_xy, pending = (x, y), ""
        elif math.hypot(x - last_xy[0], y - last_xy[1]) >= 1.0:
            d.append("L%.1f %.1f" % (x, y))
            last_xy, pending = (x, y), ""
        else:
            pending = "L%.1f %.1f" % (x, y)  # the segment's end is drawn even if close
        last_t = t
    d.append(pending)
    x0, y0 = proj.xy(device.track[0][1], device.track[0][2])
    return ('<g class="device" data-device="%s"><title>%s</title>'
            '<path class="track" d="%s" fill="none" stroke="%s" stroke-width="3" '
            'stroke-linejoin="round" stroke-linecap="round" stroke-opacity="0.9"/>'
            '<circle class="start" cx="%.1f" cy="%.1f" r="4.5" fill="#FFFFFF" stroke="%s" '
            'stroke-width="2"/></g>'
            % (escape(device.device), escape(_who(device)), "".join(d), colour, x0, y0,
               colour))


def _who(device: DeviceDay) -> str:
    return "%s (%s)" % (device.device, device.name) if device.name else device.device


def _markers(proj: Projection, report: Report, device: DeviceDay, colour: str) -> str:
    def hm(t: int) -> str:
        return report.day.local(t).strftime("%H:%M")

    out = []
    for n, stop in enumerate(device.stops, 1):
        if stop.lat is None or stop.lon is None:
            continue
        x, y = proj.xy(stop.lat, stop.lon)
        out.append(
            '<g class="stop" data-device="%s"><title>%s stop %d: %s-%s (%d min)</title>'
            '<circle cx="%.1f" cy="%.1f" r="8" fill="%s" stroke="#FFFFFF" stroke-width="1.5"/>'
            '<text x="%.1f" y="%.1f" text-anchor="middle" font-size="10" font-weight="bold" '
            'fill="#FFFFFF">%d</text></g>'
            % (escape(device.device), escape(_who(device)), n, hm(stop.since), hm(stop.until),
               stop.seconds // 60, x, y, colour, x, y + 3.5, n))
    for over in device.overspeeds:
        if over.lat is None or over.lon is None:
            continue
        x, y = proj.xy(over.lat, over.lon)
        out.append(
            '<path class="overspeed" data-device="%s" d="M%.1f %.1fl6.5 11h-13z" fill="#FFFFFF" '
            'stroke="%s" stroke-width="2"><title>%s: %d km/h in a %d km/h limit at %s</title>'
            "</path>" % (escape(device.device), x, y - 7, colour, escape(_who(device)),
                         over.max_kmh, over.limit_kmh, hm(over.t)))
    return "\n".join(out)


def _scale_bar(proj: Projection, step: float) -> str:
    px = step * proj.px_per_m
    x, y = 16.0, proj.height - 18.0
    half = px / 2
    return (
        '<g class="scale-bar"><rect x="%.1f" y="%.1f" width="%.1f" height="26" rx="3" '
        'fill="#FFFFFF" fill-opacity="0.8"/>'
        '<rect x="%.1f" y="%.1f" width="%.1f" height="5" fill="#222222"/>'
        '<rect x="%.1f" y="%.1f" width="%.1f" height="5" fill="#FFFFFF" stroke="#222222"/>'
        '<text x="%.1f" y="%.1f">0</text><text x="%.1f" y="%.1f" text-anchor="end">%s</text>'
        "</g>" % (x - 6, y - 16, px + 12, x, y, half, x + half, y, half, x, y - 4, x + px,
                  y - 4, _length_label(step)))


def _north_arrow(proj: Projection) -> str:
    x, y = proj.width - 26.0, 16.0
    return ('<g class="north-arrow"><path d="M%.1f %.1fl9 24l-9 -6l-9 6z" fill="#222222"/>'
            '<text x="%.1f" y="%.1f" text-anchor="middle" font-weight="bold" font-size="12">N'
            "</text></g>" % (x, y + 14, x, y + 10))


def _legend(report: Report, colours: dict[str, str]) -> str:
    shown = report.devices[:LEGEND_MAX]
    rows = ['<text x="20" y="%d">%s</text><path d="M8 %dh8" stroke="%s" stroke-width="3"/>'
            % (24 + 15 * i, escape(_who(d)), 20 + 15 * i, colours[d.device])
            for i, d in enumerate(shown)]
    more = len(report.devices) - len(shown)
    if more:
        rows.append('<text x="8" y="%d">and %d more</text>' % (24 + 15 * len(shown), more))
    longest = max([len(_who(d)) for d in shown] + [12])
    return ('<g class="legend" transform="translate(8 4)"><rect width="%d" height="%d" '
            'rx="3" fill="#FFFFFF" fill-opacity="0.8"/>%s</g>'
            % (28 + 6.5 * longest, 12 + 15 * len(rows), "".join(rows)))
