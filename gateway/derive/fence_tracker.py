"""Per-device geofence state with hysteresis: enter, exit, dwell, visits, crossings.

GPS jitter at a boundary is the classic cause of flapping. Here a fix changes nothing
unless it is inside (or outside) by more than a margin that grows with the fix's
reported accuracy, for ``confirm_fixes`` fixes in a row: a fix with 30 m accuracy
cannot prove it is 5 m inside. When two fixes straddle a small fence (sparse
reporting, a fast van), the segment between them is tested and the passage is
reported with interpolated times. Pure logic: state in, events out; the state is a
plain dict so the store can persist it as JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fieldtrack.gateway.derive.state import FenceState, Inside, Pending
from fieldtrack.gateway.fences.index import FenceIndex
from fieldtrack.gateway.fences.model import SLACK_M, Fence
from fieldtrack.gateway.geo import M_PER_DEG

VISIT_KINDS = ("customer", "site")


@dataclass(frozen=True)
class FenceConfig:
    margin_m: float = 5.0  # inside/outside by at least this much (plus the accuracy)
    accuracy_factor: float = 1.0  # how much of the reported accuracy widens the margin
    confirm_fixes: int = 2  # consecutive fixes beyond the margin to change state
    dwell_s: int = 600  # geofence_dwell after this long inside (per fence: dwell_s)
    visit_min_s: int = 300  # a stay this long in a customer/site fence is a visit
    crossing_max_gap_s: int = 300  # segments longer than this in time are not interpolated


@dataclass
class Derived:
    """A derived event: what happened, when (fix time), where, and to which fence."""

    kind: str
    t: int
    lat: int
    lon: int
    fence: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ms: int = 0  # milliseconds within t (the fix's, when the event is dated at a fix)
    judged: int | None = None  # fix time whose judging produced it (None: not from fixes)
    key: str = ""  # an identity of its own (derive.identity; "" = from kind, fence, time)


def new_state() -> FenceState:
    return {"inside": {}, "pending": {}, "last": None}


def track(
    state: FenceState,
    fix: dict[str, Any],
    group: str,
    index: FenceIndex,
    cfg: FenceConfig,
) -> list[Derived]:
    """Advance one device's fence state by one fix (in fix-time order)."""
    t, lat7, lon7 = fix["t"], fix["lat"], fix["lon"]
    inside = state["inside"]
    pending = state["pending"]
    last = state["last"]
    joined = last is not None and 0 < t - last[0] <= cfg.crossing_max_gap_s
    if not joined:
        last = None
    if not inside and not pending and type(lat7) is int and type(lon7) is int:
        # Most fixes: in no fence's state, and no fence's box holds the fix or meets the
        # segment from the last one. Nothing can happen; only "last" moves on.
        if index.clear_e7(last[1], last[2], lat7, lon7) if last is not None \
                else index.clear_e7(lat7, lon7, lat7, lon7):
            state["last"] = [t, lat7, lon7]
            return []
    lat, lon = lat7 * 1e-7, lon7 * 1e-7
    out: list[Derived] = []
    prev = (last[1] * 1e-7, last[2] * 1e-7) if last is not None else None
    near, passed = index.near_along(lat, lon, prev)
    # Most fixes meet no fence at all: every step below is skipped when it has nothing to do.
    candidates = {f.id: f for f in near} if near else {}
    if inside or pending:
        by_id = index.by_id
        for fid in list(inside) + list(pending):
            fence = by_id.get(fid)
            if fence is None:  # the fence was removed: forget it quietly
                inside.pop(fid, None)
                pending.pop(fid, None)
            else:
                candidates[fid] = fence
    if candidates:
        widen = cfg.accuracy_factor * fix.get("acc", 0)
        for fence in candidates.values():
            margin = (fence.margin_m if fence.margin_m is not None else cfg.margin_m)
            threshold = margin + widen
            # Only d's side of -threshold (exit) or +threshold (enter) matters below, so
            # the exact distance is computed only when cheap bounds cannot tell
            # (Fence.signed_distance_about).
            if fence.id in inside:
                d = fence.signed_distance_about(lat, lon, -threshold)
                _maybe_exit(fence, inside, d, threshold, fix, cfg, out)
            elif fence.applies(group, t):
                d = fence.signed_distance_about(lat, lon, threshold)
                _maybe_enter(fence, inside, pending, d, threshold, fix, cfg, out)
            else:  # a streak must not survive the fence's off hours (or a group change)
                pending.pop(fence.id, None)
    for fid, info in inside.items():
        fence = index.by_id[fid]
        dwell = fence.dwell_s if fence.dwell_s is not None else cfg.dwell_s
        if not info["dwell"] and t - info["since"] >= dwell:
            info["dwell"] = True
            out.append(Derived("geofence_dwell", t, lat7, lon7, fid,
                               {"since": info["since"], "seconds": t - info["since"]}))
    if passed and last is not None:
        out.extend(_crossings(last, fix, group, index, inside, pending, candidates, cfg,
                              passed))
    state["last"] = [t, lat7, lon7]
    if len(out) > 1:
        out.sort(key=_fix_time)
    return out


def _fix_time(e: Derived) -> int:
    return e.t


def _maybe_enter(fence: Fence, inside: dict[str, Inside], pending: dict[str, Pending], d: float,
                 threshold: float, fix: dict[str, Any], cfg: FenceConfig,
                 out: list[Derived]) -> None:
    if d <= threshold:
        pending.pop(fence.id, None)
        return
    n, first_t, first_lat, first_lon = pending.get(fence.id, (0, fix["t"], fix["lat"], fix["lon"]))
    n += 1
    if n < cfg.confirm_fixes:
        pending[fence.id] = (n, first_t, first_lat, first_lon)
        return
    pending.pop(fence.id, None)
    inside[fence.id] = {"since": first_t, "lat": first_lat, "lon": first_lon, "out": 0,
                        "out_t": 0, "dwell": False}
    out.append(Derived("geofence_enter", first_t, first_lat, first_lon, fence.id,
                       {"name": fence.name, "kind": fence.kind}))
    if fence.kind == "no-go":
        out.append(Derived("no_go_enter", first_t, first_lat, first_lon, fence.id,
                           {"name": fence.name}))


def _maybe_exit(fence: Fence, inside: dict[str, Inside], d: float, threshold: float,
                fix: dict[str, Any], cfg: FenceConfig, out: list[Derived]) -> None:
    info = inside[fence.id]
    if d >= -threshold:
        info["out"] = 0
        return
    if info["out"] == 0:
        info["out_t"], info["out_lat"], info["out_lon"] = fix["t"], fix["lat"], fix["lon"]
    info["out"] += 1
    if info["out"] < cfg.confirm_fixes:
        return
    del inside[fence.id]
    left = info["out_t"]
    out.append(Derived("geofence_exit", left, info["out_lat"], info["out_lon"], fence.id,
                       {"name": fence.name, "kind": fence.kind, "since": info["since"]}))
    if fence.kind in VISIT_KINDS and left - info["since"] >= cfg.visit_min_s:
        out.append(Derived("visit", left, info["lat"], info["lon"], fence.id,
                           {"site": fence.id, "name": fence.name, "arrive": info["since"],
                            "leave": left, "duration_s": left - info["since"]}))


def _crossings(last: list[int], fix: dict[str, Any], group: str, index: FenceIndex,
               inside: dict[str, Inside], pending: dict[str, Pending], seen: dict[str, Fence],
               cfg: FenceConfig, passed: list[Fence] | None = None) -> list[Derived]:
    """Fences passed between two fixes, neither of which was inside them.

    ``passed``: ``index.along`` of the two fixes, when the caller has it already."""
    out: list[Derived] = []
    a = (last[1] * 1e-7, last[2] * 1e-7)
    b = (fix["lat"] * 1e-7, fix["lon"] * 1e-7)
    widen = cfg.accuracy_factor * fix.get("acc", 0)
    # The segment's length in any fence's local frame is at most this (cos(lat) <= 1).
    # With both ends outside a fence (else the fence is skipped below) no point of the
    # segment is deeper inside than half its length: the signed distance changes by at
    # most a metre per metre. So a segment shorter than the depth (a van standing) can
    # pass no fence; crossing_possible says the same, at more cost.
    reach = math.hypot((b[0] - a[0]) * M_PER_DEG, (b[1] - a[1]) * M_PER_DEG) + 3 * SLACK_M
    for fence in index.along(a, b) if passed is None else passed:
        margin = fence.margin_m if fence.margin_m is not None else cfg.margin_m
        # The same rule as for fixes: a pass that is not deeper than the margin (plus
        # the accuracy) inside the fence may be jitter, not a passage.
        depth = margin + widen
        if reach < depth:
            continue
        if fence.id in inside or fence.id in pending:
            continue
        if not fence.segment_meets_bbox(a, b):
            continue  # it cannot meet the fence: cheaper to know than the tests below
        if not fence.applies(group, fix["t"]):
            continue
        if not fence.crossing_possible(a, b, depth):
            continue  # it cannot get that deep between its ends: no passage either way
        da = fence.signed_distance_about(*a, 0.0)
        if da > 0:
            continue  # one end is inside: the hysteresis rules decide, not interpolation
        db = fence.signed_distance_about(*b, 0.0)
        if db > 0:
            continue
        if not fence.crossing_possible(a, b, depth, da, db):
            continue  # too far from the fence at both ends to get that deep between
        span = fence.crossing(a, b, depth=depth)
        if span is None:
            continue
        dt = fix["t"] - last[0]
        t_in = last[0] + round(span[0] * dt)
        t_out = last[0] + round(span[1] * dt)
        lat_in = round(last[1] + span[0] * (fix["lat"] - last[1]))
        lon_in = round(last[2] + span[0] * (fix["lon"] - last[2]))
        lat_out = round(last[1] + span[1] * (fix["lat"] - last[1]))
        lon_out = round(last[2] + span[1] * (fix["lon"] - last[2]))
        data = {"name": fence.name, "kind": fence.kind, "interpolated": True}
        out.append(Derived("geofence_enter", t_in, lat_in, lon_in, fence.id, dict(data)))
        if fence.kind == "no-go":
            out.append(Derived("no_go_enter", t_in, lat_in, lon_in, fence.id,
                               {"name": fence.name, "interpolated": True}))
        out.append(Derived("geofence_exit", t_out, lat_out, lon_out, fence.id,
                           dict(data, since=t_in)))
    return out
