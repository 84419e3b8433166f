"""Per-device geofence state with hysteresis: enter, exit, dwell, visits, crossings.

GPS jitter at a boundary is the classic cause of flapping. Here a fix changes nothing
unless it is inside (or outside) by more than a margin that grows with the fix's
reported accuracy, for ``confirm_fixes`` fixes in a row: a fix with 30 m accuracy
cannot prove it is 5 m inside. When two fixes straddle a small fence (sparse
reporting, a fast van), the segment between them is tested and the passage is
reported with interpolated times; fixes inside that never confirmed an entry, between
two outside, are a passage too when the way passes deep enough or they are deeper
than their accuracy can explain (a lone one must also lie on the way). A fix thrown
aside and back (multipath) hides the way: the way from the fix before it to the one
after it is tested instead.

While the device stands still (``stop_cluster``), its fixes are not judged one by
one: the stop is, by the mean of its fixes, whose error shrinks with their number.
A van parked 3 m inside an edge is inside once that mean is more than three standard
errors inside, and it never flaps (the mean does not). The entry is then dated when
the stop began. Pure logic: state in, events out; the state is a plain dict so the
store can persist it as JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from fieldtrack.gateway.derive import stop_cluster
from fieldtrack.gateway.derive.state import Cluster, FenceState, Inside, Lone, Pending
from fieldtrack.gateway.derive.stop_cluster import Observed
from fieldtrack.gateway.fences.index import FenceIndex
from fieldtrack.gateway.fences.model import SLACK_M, Fence
from fieldtrack.gateway.geo import M_PER_DEG, distance_m

VISIT_KINDS = ("customer", "site")
STOP_SIGMAS = 3.0  # a stop is inside when its mean is this many standard errors inside
STOP_FLOOR_M = 0.5  # ...and at least this much (an error that does not average out)
STOP_MIN_S = 120  # a stop is judged once it lasts this long: a receiver's error drifts
RUN_SIGMAS = 3.0  # unconfirmed fixes inside, this many standard deviations deep together
LONE_SIGMAS = 2.0  # ...or one alone, on the way between its neighbours, this many deep
RUN_MAX = 8  # fixes in such a run, at most
STANDING_KMH = 5  # both the last fix inside and the one outside this slow: no passage
JUMP_SHARE = 0.1  # a fix off its neighbours' way by more than its error, but by at most
# this share of the way (about 11 degrees), jumped (multipath); further off, it turned
_MM = 1e-3  # a millimetre: inside by more than this is inside
_M_PER_E7 = M_PER_DEG * 1e-7  # metres per 1e-7 degree of latitude
_RAD_PER_E7 = math.pi / 180 * 1e-7


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
    lat: int | None  # None: no position known (a device heard of before its first fix)
    lon: int | None
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
    observed: Observed | None = None,
) -> list[Derived]:
    """Advance one device's fence state by one fix (in fix-time order).

    ``observed``: what the fix is to the device's stop (``motion.observe``); without
    it every fix is judged on its own."""
    if observed is not None and observed[0] != stop_cluster.MOVING:
        cluster = observed[2]
        if observed[0] == stop_cluster.STILL and cluster is not None \
                and cluster["n"] >= stop_cluster.ESTABLISHED \
                and fix["t"] - cluster["t0"] < STOP_MIN_S \
                and not state["inside"] and not state["pending"] and not state.get("lone"):
            return []  # most fixes of a stop: too early to judge, nothing to dwell in
        return _observed(state, fix, group, index, cfg, observed)
    t, lat7, lon7 = fix["t"], fix["lat"], fix["lon"]
    inside = state["inside"]
    pending = state["pending"]
    lone = state.get("lone")
    last = state["last"]
    joined = last is not None and 0 < t - last[0] <= cfg.crossing_max_gap_s
    if not joined:
        last = None
    if not inside and not pending and not lone and type(lat7) is int and type(lon7) is int:
        # Most fixes: in no fence's state, and no fence's box holds the fix or meets the
        # segment from the last one. Nothing can happen; only "last" moves on.
        if index.clear_e7(last[1], last[2], lat7, lon7) if last is not None \
                else index.clear_e7(lat7, lon7, lat7, lon7):
            state["back"] = last
            state["last"] = [t, lat7, lon7]
            return []
    lat, lon = lat7 * 1e-7, lon7 * 1e-7
    out: list[Derived] = []
    prev = (last[1] * 1e-7, last[2] * 1e-7) if last is not None else None
    near, passed = index.near_along(lat, lon, prev)
    # Most fixes meet no fence at all: every step below is skipped when it has nothing to do.
    candidates = {f.id: f for f in near} if near else {}
    if inside or pending or lone:
        by_id = index.by_id
        for fid in list(inside) + list(pending) + (list(lone) if lone else []):
            fence = by_id.get(fid)
            if fence is None:  # the fence was removed: forget it quietly
                inside.pop(fid, None)
                pending.pop(fid, None)
                if lone:
                    lone.pop(fid, None)
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
                run = lone.get(fence.id) if lone else None
                if run is not None or (last is not None and d > -SLACK_M):
                    # Inside at all? Cheaply (a point-in-polygon test) when it is not;
                    # when it is, how deep (or, from the inner disc, at least how deep).
                    depth = fence.signed_distance_about(lat, lon, _MM) \
                        if -SLACK_M < d <= threshold else d
                    if run is not None and depth <= _MM:
                        del lone[fence.id]  # type: ignore[union-attr]
                        _run_passage(fence, run, fix, cfg, out)
                        continue
                    if depth > _MM:
                        if lone is None:
                            lone = state["lone"] = {}
                        _run_step(lone, fence.id, run, last, fix, depth)
                _maybe_enter(fence, inside, pending, d, threshold, fix, cfg, out)
                if lone and fence.id in inside:
                    lone.pop(fence.id, None)  # confirmed fix by fix
            else:  # a streak must not survive the fence's off hours (or a group change)
                pending.pop(fence.id, None)
                if lone:
                    lone.pop(fence.id, None)
    if inside:
        _dwell(inside, index, t, lat7, lon7, cfg, out)
    if passed and last is not None:
        out.extend(_crossings(last, fix, group, index, inside, pending, candidates, cfg,
                              passed))
    back = state.get("back")
    if passed and last is not None and back is not None:
        out.extend(_jumped(back, last, fix, group, index, state, cfg))
    state["back"] = last
    state["last"] = [t, lat7, lon7]
    if len(out) > 1:
        out.sort(key=_fix_time)
    return out


def _fix_time(e: Derived) -> int:
    return e.t


def _observed(state: FenceState, fix: dict[str, Any], group: str, index: FenceIndex,
              cfg: FenceConfig, observed: Observed) -> list[Derived]:
    """A fix that is part of a stop, held beyond it, or the end of it."""
    verdict, run, cluster = observed
    if verdict == stop_cluster.HELD or cluster is None:
        return []  # beyond the stop, not yet a departure: it may be a jump
    if verdict == stop_cluster.DEPARTED:
        # Crossings on the way out start from the stop's centre, at its last fix.
        clat, clon = stop_cluster.center(cluster)
        state["last"], state["back"] = [cluster["t"], round(clat), round(clon)], None
        out: list[Derived] = []
        for t, lat, lon, acc, _ in run:
            out.extend(track(state, {"t": t, "lat": lat, "lon": lon, "acc": acc},
                             group, index, cfg))
        out.extend(track(state, fix, group, index, cfg))
        if len(out) > 1:
            out.sort(key=_fix_time)
        return out
    if cluster["n"] >= stop_cluster.ESTABLISHED:
        if fix["t"] - cluster["t0"] < STOP_MIN_S and not state["inside"]:
            if state["pending"] or state.get("lone"):
                state["pending"], state["lone"] = {}, {}
            return []  # most fixes of a stop: too early to judge, nothing to dwell in
        return _judge_stop(state, fix, group, index, cfg, cluster)
    if not cluster.get("arrived", True):
        # Never seen moving: where it stands is for its stop to say, not a fix.
        state["last"], state["back"] = [fix["t"], fix["lat"], fix["lon"]], None
        return []
    return track(state, fix, group, index, cfg)


def _judge_stop(state: FenceState, fix: dict[str, Any], group: str, index: FenceIndex,
                cfg: FenceConfig, cluster: Cluster) -> list[Derived]:
    """A fix of an established stop: the stop's mean decides, not the fix."""
    t = fix["t"]
    inside, pending = state["inside"], state["pending"]
    if pending:
        pending.clear()  # streaks of single fixes mean nothing once a stop is judged
    if state.get("lone"):
        state["lone"] = {}
    out: list[Derived] = []
    if t - cluster["t0"] < STOP_MIN_S:
        if inside:
            _dwell(inside, index, t, fix["lat"], fix["lon"], cfg, out)
        return out
    clat, clon = stop_cluster.center(cluster)
    lat7, lon7 = round(clat), round(clon)
    if not inside and index.clear_e7(lat7, lon7, lat7, lon7):
        return out
    lat, lon = clat * 1e-7, clon * 1e-7
    need = STOP_SIGMAS * stop_cluster.standard_error(cluster)
    if need < STOP_FLOOR_M:
        need = STOP_FLOOR_M
    candidates = {f.id: f for f in index.near(lat, lon)}
    by_id = index.by_id
    for fid in list(inside):
        fence = by_id.get(fid)
        if fence is None:
            del inside[fid]
        else:
            candidates[fid] = fence
    began = cluster["t0"]
    for fence in candidates.values():
        if fence.id in inside:
            if fence.signed_distance_about(lat, lon, -need) < -need:
                # The stop is outside, whatever the fixes before it said.
                info = inside[fence.id]
                left = began if began > info["since"] else info["since"]
                info["out_t"], info["out_lat"], info["out_lon"] = left, lat7, lon7
                _leave(fence, inside, cfg, out)
        elif fence.applies(group, t) and fence.signed_distance_about(lat, lon, need) > need:
            # Since the stop began, unless the fence's hours opened it since (looked at
            # every quarter of an hour): then from now.
            since = began if fence.hours is None or all(
                fence.applies(group, x) for x in range(began, t, 900)) else t
            _arrive(fence, inside, since, lat7, lon7, out)
            inside[fence.id]["stop"] = True
    _dwell(inside, index, t, lat7, lon7, cfg, out)
    if len(out) > 1:
        out.sort(key=_fix_time)
    return out


def _run_step(lone: dict[str, Lone], fid: str, run: Lone | None, last: list[int] | None,
              fix: dict[str, Any], depth: float) -> None:
    """A fix ``depth`` metres inside a fence the device is not (yet) in."""
    sigma = max(1.0, (fix.get("acc", 0) or 0) / 2)  # accuracies are about two deviations
    t, lat, lon, acc = fix["t"], fix["lat"], fix["lon"], fix.get("acc", 0) or 0
    if run is None:
        if last is None:
            return
        lone[fid] = [last[0], last[1], last[2], t, lat, lon, acc, t, lat, lon, 1,
                     depth / sigma, depth, _speed(fix)]
    elif run[10] >= RUN_MAX:
        del lone[fid]  # a long stay along the edge: the fix-by-fix rules decide
    else:
        run[7:14] = [t, lat, lon, run[10] + 1, run[11] + depth / sigma, run[12] + depth,
                     _speed(fix)]


def _speed(fix: dict[str, Any]) -> float:
    """The reported speed, km/h; -1 when the fix has none."""
    spd = fix.get("spd")
    return -1.0 if spd is None else float(spd)


def _run_passage(fence: Fence, run: Lone, fix: dict[str, Any], cfg: FenceConfig,
                 out: list[Derived]) -> None:
    """Fixes inside ``fence``, not confirmed, between two outside: a passage?

    Yes when the way from the fix before them to this one passes deep enough (the
    rule for two fixes with none inside), or when they are deep: several together
    ``RUN_SIGMAS`` standard deviations (z-scores summed over the square root of their
    number) and on average deeper than the margin by their standard error; a single
    one on the way between its neighbours ``LONE_SIGMAS``, alone, or ``RUN_SIGMAS``
    averaged with where the way puts it. A single one off the way is an outlier: only
    the way is judged."""
    t0, lat0, lon0, t1, lat1, lon1, acc1, tk, latk, lonk, k = (int(v) for v in run[:11])
    t, lat, lon = fix["t"], fix["lat"], fix["lon"]
    if not t0 < t1 <= tk < t or t - t0 > (k + 1) * cfg.crossing_max_gap_s:
        return
    acc = fix.get("acc", 0) or 0
    if distance_m(lat0, lon0, lat, lon) < 2 * (acc1 + acc) + 10:
        return  # the two outside are where it stands: jitter, not a passage
    if len(run) > 13 and 0 <= run[13] < STANDING_KMH and 0 <= _speed(fix) < STANDING_KMH:
        return  # standing inside when it came out: the fix outside jumped, no passage
    margin = fence.margin_m if fence.margin_m is not None else cfg.margin_m
    a, b = (lat0 * 1e-7, lon0 * 1e-7), (lat * 1e-7, lon * 1e-7)
    way = fence.crossing(a, b, depth=margin + cfg.accuracy_factor * max(acc, acc1) / 2)
    if k == 1:
        deep = _lone_deep(fence, run, fix, acc)
        if deep is None:
            if way is not None:
                _passage(fence, [t0, lat0, lon0], fix, way, out)
            return
    else:
        # Their mean deeper than the margin by its standard error (the mean deviation,
        # as their depths in metres and in deviations tell it, over the root of k).
        deep = run[11] / math.sqrt(k) >= RUN_SIGMAS and \
            run[12] / k > margin + run[12] / run[11] / math.sqrt(k)
    if not (way is not None or deep):
        return
    p1, pk = (lat1 * 1e-7, lon1 * 1e-7), (latk * 1e-7, lonk * 1e-7)
    into, out_of = fence.crossing(a, p1), fence.crossing(pk, b)
    f_in = into[0] if into else 0.5
    f_out = out_of[1] if out_of else 0.5
    t_in = t0 + round(f_in * (t1 - t0))
    t_out = tk + round(f_out * (t - tk))
    where_in = (round(lat0 + f_in * (lat1 - lat0)), round(lon0 + f_in * (lon1 - lon0)))
    where_out = (round(latk + f_out * (lat - latk)), round(lonk + f_out * (lon - lonk)))
    _passage_events(fence, t_in, where_in, t_out, where_out, out)


def _lone_deep(fence: Fence, run: Lone, fix: dict[str, Any], acc: int) -> bool | None:
    """Is a lone fix inside deep enough? None: it is an outlier, off the way."""
    t0, lat0, lon0, t1, lat1, lon1, acc1 = (int(v) for v in run[:7])
    t, lat, lon = fix["t"], fix["lat"], fix["lon"]
    f = (t1 - t0) / (t - t0)
    way_lat, way_lon = lat0 + f * (lat - lat0), lon0 + f * (lon - lon0)
    off = distance_m(round(way_lat), round(way_lon), lat1, lon1)
    z = run[11]
    if off > 1.5 * math.hypot(acc1, acc) + 5:  # three deviations, and 5 m of road
        # However deep: a jump sideways keeps the speed, and so looks like a passage.
        return None
    # Where the way puts it and where it is, weighed by how well each is known: the
    # way's error from its two ends (taken as good as this one), the fix's its own.
    s1, s2 = max(1.0, acc1 / 2), max(1.0, acc / 2)
    var_way = s2 * s2 * (f * f + (1 - f) * (1 - f))
    w = s1 * s1 / (s1 * s1 + var_way)
    mid = ((lat1 + w * (way_lat - lat1)) * 1e-7, (lon1 + w * (way_lon - lon1)) * 1e-7)
    sigma = math.sqrt(1 / (1 / (s1 * s1) + 1 / var_way))
    return z >= LONE_SIGMAS or fence.signed_distance(*mid) / sigma >= RUN_SIGMAS


def _passage(fence: Fence, last: list[int], fix: dict[str, Any], span: tuple[float, float],
             out: list[Derived]) -> None:
    """Enter and exit at the fractions ``span`` of the segment from ``last`` to ``fix``."""
    dt = fix["t"] - last[0]
    t_in = last[0] + round(span[0] * dt)
    t_out = last[0] + round(span[1] * dt)
    where_in = (round(last[1] + span[0] * (fix["lat"] - last[1])),
                round(last[2] + span[0] * (fix["lon"] - last[2])))
    where_out = (round(last[1] + span[1] * (fix["lat"] - last[1])),
                 round(last[2] + span[1] * (fix["lon"] - last[2])))
    _passage_events(fence, t_in, where_in, t_out, where_out, out)


def _passage_events(fence: Fence, t_in: int, where_in: tuple[int, int], t_out: int,
                    where_out: tuple[int, int], out: list[Derived]) -> None:
    data = {"name": fence.name, "kind": fence.kind, "interpolated": True}
    out.append(Derived("geofence_enter", t_in, *where_in, fence.id, dict(data)))
    if fence.kind == "no-go":
        out.append(Derived("no_go_enter", t_in, *where_in, fence.id,
                           {"name": fence.name, "interpolated": True}))
    out.append(Derived("geofence_exit", t_out, *where_out, fence.id, dict(data, since=t_in)))


def _arrive(fence: Fence, inside: dict[str, Inside], t: int, lat: int, lon: int,
            out: list[Derived]) -> None:
    inside[fence.id] = {"since": t, "lat": lat, "lon": lon, "out": 0, "out_t": 0,
                        "dwell": False}
    out.append(Derived("geofence_enter", t, lat, lon, fence.id,
                       {"name": fence.name, "kind": fence.kind}))
    if fence.kind == "no-go":
        out.append(Derived("no_go_enter", t, lat, lon, fence.id, {"name": fence.name}))


def _leave(fence: Fence, inside: dict[str, Inside], cfg: FenceConfig,
           out: list[Derived]) -> None:
    """Exit at ``out_t`` (and the visit, for a long enough stay)."""
    info = inside.pop(fence.id)
    left = info["out_t"]
    out.append(Derived("geofence_exit", left, info.get("out_lat", info["lat"]),
                       info.get("out_lon", info["lon"]), fence.id,
                       {"name": fence.name, "kind": fence.kind, "since": info["since"]}))
    if fence.kind in VISIT_KINDS and left - info["since"] >= cfg.visit_min_s:
        out.append(Derived("visit", left, info["lat"], info["lon"], fence.id,
                           {"site": fence.id, "name": fence.name, "arrive": info["since"],
                            "leave": left, "duration_s": left - info["since"]}))


def _dwell(inside: dict[str, Inside], index: FenceIndex, t: int, lat7: int, lon7: int,
           cfg: FenceConfig, out: list[Derived]) -> None:
    for fid, info in inside.items():
        fence = index.by_id[fid]
        dwell = fence.dwell_s if fence.dwell_s is not None else cfg.dwell_s
        if not info["dwell"] and t - info["since"] >= dwell:
            info["dwell"] = True
            out.append(Derived("geofence_dwell", t, lat7, lon7, fid,
                               {"since": info["since"], "seconds": t - info["since"]}))


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
    _arrive(fence, inside, first_t, first_lat, first_lon, out)


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
    _leave(fence, inside, cfg, out)


def _jumped(back: list[int], last: list[int], fix: dict[str, Any], group: str,
            index: FenceIndex, state: FenceState, cfg: FenceConfig) -> list[Derived]:
    """Passages that a jump of ``last`` aside and back hid: on the way from ``back`` to
    ``fix`` and on neither of the two ways through ``last``, with ``last`` outside.

    A jump is ``last`` off the way between its neighbours (where the way is at its
    time) by more than three of their deviations (taken as ``fix``'s: the last fix's
    accuracy is not kept) and 5 m of road, and by at most ``JUMP_SHARE`` of the way:
    further off, the vehicle turned."""
    t0, t1, t = back[0], last[0], fix["t"]
    if not t0 < t1 < t or t - t0 > 2 * cfg.crossing_max_gap_s:
        return []
    lat, lon = fix["lat"], fix["lon"]
    f = (t1 - t0) / (t - t0)
    # In metres on the local plane (the ways are short): where the way is at ``last``'s
    # time, how far ``last`` is from it, and how long the way is.
    ky, kx = _M_PER_E7, _M_PER_E7 * math.cos(lat * _RAD_PER_E7)
    dy, dx = (lat - back[1]) * ky, (lon - back[2]) * kx
    oy = (last[1] - back[1]) * ky - f * dy
    ox = (last[2] - back[2]) * kx - f * dx
    off2 = oy * oy + ox * ox
    acc = fix.get("acc", 0) or 0
    error = 2.1 * acc + 5  # 1.5 * hypot(acc, acc)
    if off2 <= error * error or off2 > JUMP_SHARE * JUMP_SHARE * (dy * dy + dx * dx):
        return []
    a, m, b = ((p[1] * 1e-7, p[2] * 1e-7) for p in (back, last, (t, lat, lon)))
    inside, pending, lone = state["inside"], state["pending"], state.get("lone") or {}
    hidden = []
    for fence in index.along(a, b):
        if fence.id in inside or fence.id in pending or fence.id in lone \
                or fence.signed_distance(*m) > 0:
            continue  # the jump itself is inside: the rules for fixes inside decide
        margin = fence.margin_m if fence.margin_m is not None else cfg.margin_m
        depth = margin + cfg.accuracy_factor * acc / 2
        if fence.crossing(a, m, depth) is None and fence.crossing(m, b, depth) is None:
            hidden.append(fence)
    if not hidden:
        return []
    return _crossings(back, fix, group, index, inside, pending, {}, cfg, hidden)


def _crossings(last: list[int], fix: dict[str, Any], group: str, index: FenceIndex,
               inside: dict[str, Inside], pending: dict[str, Pending], seen: dict[str, Fence],
               cfg: FenceConfig, passed: list[Fence] | None = None) -> list[Derived]:
    """Fences passed between two fixes, neither of which was inside them.

    ``passed``: ``index.along`` of the two fixes, when the caller has it already."""
    out: list[Derived] = []
    a = (last[1] * 1e-7, last[2] * 1e-7)
    b = (fix["lat"] * 1e-7, fix["lon"] * 1e-7)
    # The way between two fixes is as uncertain as about one of them, whose standard
    # deviation is about half its accuracy.
    widen = cfg.accuracy_factor * fix.get("acc", 0) / 2
    # The segment's length in any fence's local frame is at most this (cos(lat) <= 1).
    # With both ends outside a fence (else the fence is skipped below) no point of the
    # segment is deeper inside than half its length: the signed distance changes by at
    # most a metre per metre. So a segment shorter than the depth (a van standing) can
    # pass no fence; crossing_possible says the same, at more cost.
    reach = math.hypot((b[0] - a[0]) * M_PER_DEG, (b[1] - a[1]) * M_PER_DEG) + 3 * SLACK_M
    for fence in index.along(a, b) if passed is None else passed:
        margin = fence.margin_m if fence.margin_m is not None else cfg.margin_m
        # As for fixes: a pass that is not deeper than the margin (plus the way's
        # deviation) inside the fence may be jitter, not a passage.
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
        _passage(fence, last, fix, span, out)
    return out
