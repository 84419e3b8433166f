"""Position filters: which fixes are too wrong to trust, Traccar's set as the reference.

Pure logic: a fix and the device's newest accepted fix in, a list of the filters the
fix fails out. Each filter is switched by one config key to ``off``, ``drop`` (the
fix is not stored) or ``flag`` (stored, with the filter's name in ``flagged``).
Filters that compare with the previous fix only run when the fix is newer than it:
a late fix from a tracker's buffer is judged on its own, never against the future.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .store import DeviceState

ACTIONS = ("off", "drop", "flag")
EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class FilterConfig:
    """Each ``*_action`` is off, drop or flag; the numbers are the thresholds."""

    invalid_action: str = "drop"  # no fix (fix type 0)
    zero_action: str = "drop"  # 0, 0 ("null island")
    future_action: str = "drop"
    future_s: int = 300
    past_action: str = "flag"
    past_s: int = 30 * 86400
    duplicate_action: str = "drop"  # same time and place as the newest fix
    accuracy_action: str = "flag"
    accuracy_m: int = 100
    teleport_action: str = "drop"
    teleport_kmh: int = 300
    min_period_action: str = "off"
    min_period_s: int = 0
    min_distance_action: str = "off"
    min_distance_m: int = 0


def distance_m(lat1: int, lon1: int, lat2: int, lon2: int) -> float:
    """Great-circle distance between two points given in 1e-7 degrees (haversine)."""
    p1, p2 = math.radians(lat1 * 1e-7), math.radians(lat2 * 1e-7)
    dp = p2 - p1
    dl = math.radians((lon2 - lon1) * 1e-7)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def failed_filters(
    fix: dict[str, Any], last: DeviceState | None, now_s: int, cfg: FilterConfig
) -> list[tuple[str, str, str]]:
    """The filters ``fix`` fails, as (name, action, detail), in a fixed order."""
    out: list[tuple[str, str, str]] = []

    def check(name: str, action: str, failed: bool, detail: str) -> None:
        if action != "off" and failed:
            out.append((name, action, detail))

    t = fix["t"]
    check("invalid", cfg.invalid_action, fix["fix"] == 0, "the receiver had no fix")
    check("zero", cfg.zero_action, fix["lat"] == 0 and fix["lon"] == 0, "coordinates 0, 0")
    check("future", cfg.future_action, t > now_s + cfg.future_s,
          "fix time %d s in the future" % (t - now_s))
    check("past", cfg.past_action, t < now_s - cfg.past_s,
          "fix time %d s in the past" % (now_s - t))
    check("accuracy", cfg.accuracy_action, fix["acc"] > cfg.accuracy_m,
          "accuracy %d m worse than %d m" % (fix["acc"], cfg.accuracy_m))
    if last is None or t < last.t:
        return out
    dist = distance_m(last.lat, last.lon, fix["lat"], fix["lon"])
    dt = t - last.t
    check("duplicate", cfg.duplicate_action, dt == 0 and dist < 0.5,
          "same time and place as the previous fix")
    if dt > 0:
        kmh = dist / dt * 3.6
        check("teleport", cfg.teleport_action, kmh > cfg.teleport_kmh,
              "%.0f km/h from the previous fix" % kmh)
    check("min_period", cfg.min_period_action, dt < cfg.min_period_s,
          "%d s after the previous fix" % dt)
    check("min_distance", cfg.min_distance_action, dist < cfg.min_distance_m,
          "%.1f m from the previous fix" % dist)
    return out
