"""Distances on the Earth, shared by the filters, the geofences, motion and the reports.

Coordinates are integers in 1e-7 degrees (the wire format's unit). ``distance_m`` is
the haversine great-circle distance; ``M_PER_DEG`` is the metres in one degree of
latitude, the scale of the fences' local frames.
"""

from __future__ import annotations

import math

EARTH_RADIUS_M = 6_371_008.8
M_PER_DEG = 111_320.0

_RAD_E7 = math.pi / 180 * 1e-7  # 1e-7 degrees to radians
_DIAMETER_M = 2 * EARTH_RADIUS_M


def distance_m(lat1: int, lon1: int, lat2: int, lon2: int) -> float:
    """Great-circle distance between two points given in 1e-7 degrees (haversine)."""
    p1, p2 = lat1 * _RAD_E7, lat2 * _RAD_E7
    s_lat = math.sin((p2 - p1) * 0.5)
    s_lon = math.sin((lon2 - lon1) * _RAD_E7 * 0.5)
    h = math.sqrt(s_lat * s_lat + math.cos(p1) * math.cos(p2) * s_lon * s_lon)
    return _DIAMETER_M * math.asin(h if h < 1.0 else 1.0)
