"""Position filters: which fixes are too wrong to trust, Traccar's set as the reference.

Pure logic: a fix and the device's newest accepted fix in, a list of the filters the
fix fails out. Each filter is switched by one config key to ``off``, ``drop`` (the
fix is not stored) or ``flag`` (stored, with the filter's name in ``flagged``).
Filters that compare with the previous fix only run when the fix is newer than it:
a late fix from a tracker's buffer is judged on its own, never against the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fieldtrack.gateway.geo import distance_m
from fieldtrack.gateway.store.sqlite import DeviceState

ACTIONS = ("off", "drop", "flag")


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


def failed_filters(
    fix: dict[str, Any], last: DeviceState | None, now_s: int, cfg: FilterConfig
) -> list[tuple[str, str, str]]:
    """The filters ``fix`` fails, as (name, action, detail), in a fixed order.

    Most fixes fail none: each test is a comparison, and a detail is worded only for
    a filter that is on and failed.
    """
    out: list[tuple[str, str, str]] = []
    t = fix["t"]
    if fix["fix"] == 0 and cfg.invalid_action != "off":
        out.append(("invalid", cfg.invalid_action, "the receiver had no fix"))
    if fix["lat"] == 0 and fix["lon"] == 0 and cfg.zero_action != "off":
        out.append(("zero", cfg.zero_action, "coordinates 0, 0"))
    if t > now_s + cfg.future_s and cfg.future_action != "off":
        out.append(("future", cfg.future_action, "fix time %d s in the future" % (t - now_s)))
    if t < now_s - cfg.past_s and cfg.past_action != "off":
        out.append(("past", cfg.past_action, "fix time %d s in the past" % (now_s - t)))
    if fix["acc"] > cfg.accuracy_m and cfg.accuracy_action != "off":
        out.append(("accuracy", cfg.accuracy_action,
                    "accuracy %d m worse than %d m" % (fix["acc"], cfg.accuracy_m)))
    if last is None or t < last.t:
        return out
    dist = distance_m(last.lat, last.lon, fix["lat"], fix["lon"])
    dt = t - last.t
    if dt == 0 and dist < 0.5 and cfg.duplicate_action != "off":
        out.append(("duplicate", cfg.duplicate_action, "same time and place as the previous fix"))
    if dt > 0 and cfg.teleport_action != "off":
        kmh = dist / dt * 3.6
        if kmh > cfg.teleport_kmh:
            out.append(("teleport", cfg.teleport_action, "%.0f km/h from the previous fix" % kmh))
    if dt < cfg.min_period_s and cfg.min_period_action != "off":
        out.append(("min_period", cfg.min_period_action, "%d s after the previous fix" % dt))
    if dist < cfg.min_distance_m and cfg.min_distance_action != "off":
        out.append(("min_distance", cfg.min_distance_action,
                    "%.1f m from the previous fix" % dist))
    return out
