"""Attendance: a phone's check-in or check-out is believed only if the fix backs it.

Accepted when the site exists, the reported position is inside the site's fence
allowing for the reported accuracy, the accuracy is good enough, the phone did not
flag a mock location, and the event time is recent (and, if the site has active
hours, within them). Otherwise rejected with the reason. Both outcomes are recorded:
a supervisor wants to see the refused check-in as much as the accepted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fieldtrack.gateway.fences.index import FenceIndex


@dataclass(frozen=True)
class AttendanceConfig:
    max_accuracy_m: int = 50
    max_age_s: int = 600  # how old a check-in may be when it reaches the gateway
    max_future_s: int = 60


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    reason: str  # "ok" or why not
    distance_m: float | None  # signed: metres inside the site's fence (negative: outside)


def judge(event: dict[str, Any], index: FenceIndex, now_s: int,
          cfg: AttendanceConfig) -> Verdict:
    """Decide on one check_in / check_out event frame (in its dict form)."""
    site = event.get("data", {}).get("site")
    fence = index.by_id.get(site) if isinstance(site, str) else None
    if fence is None:
        return Verdict(False, "unknown_site", None)
    if "lat" not in event or "lon" not in event:
        return Verdict(False, "no_position", None)
    acc = event.get("acc")
    if acc is None or acc == 0:
        return Verdict(False, "no_accuracy", None)
    d = fence.signed_distance(event["lat"] * 1e-7, event["lon"] * 1e-7)
    if event.get("data", {}).get("mock"):
        return Verdict(False, "mock_location", d)
    if acc > cfg.max_accuracy_m:
        return Verdict(False, "accuracy_too_low", d)
    if d < -acc:
        return Verdict(False, "outside_site", d)
    t = event["t"]
    if t < now_s - cfg.max_age_s:
        return Verdict(False, "too_old", d)
    if t > now_s + cfg.max_future_s:
        return Verdict(False, "in_the_future", d)
    if fence.hours is not None and not fence.hours.active(t):
        return Verdict(False, "outside_site_hours", d)
    return Verdict(True, "ok", d)
