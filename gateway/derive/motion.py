"""Trips, stops, idling, overspeed and the odometer, from one device's fixes in order.

Traccar's defaults are the reference: a trip needs 500 m or 300 s, a stop of 300 s
ends it, a data gap over an hour ends it. Ignition decides when the device reports
it; motion decides otherwise. GPS jitter while parked moves a fix by metres, never
at a plausible speed for long: the odometer only grows on a step that is both longer
than the fixes' accuracy and made at driving speed. And a stopped device leaves its
stop only on sustained displacement (``stop_cluster``): one jump of 15-70 m with a
speed of about zero, or a modem's scatter, is neither a trip nor distance. Pure logic
over a typed state (``state.MotionState``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fieldtrack.gateway.derive import stop_cluster
from fieldtrack.gateway.derive.fence_tracker import Derived
from fieldtrack.gateway.derive.state import Cluster, MotionState, Trip
from fieldtrack.gateway.derive.stop_cluster import Observed
from fieldtrack.gateway.geo import EARTH_RADIUS_M, distance_m


@dataclass(frozen=True)
class MotionConfig:
    moving_kmh: int = 5
    trip_min_distance_m: int = 500
    trip_min_duration_s: int = 300
    stop_min_s: int = 300
    gap_max_s: int = 3600
    idle_min_s: int = 300
    speed_limit_kmh: int = 0  # global limit, 0 = only fence limits
    overspeed_tolerance_kmh: int = 0
    overspeed_min_s: int = 20
    odometer_min_step_m: float = 10.0


def new_state() -> MotionState:
    return {"last": None, "odometer_m": 0.0, "ign_seen": False, "trip": None,
            "still_since": None, "stop_sent": False, "idle_sent": False, "over": None}


def observe(state: MotionState, fix: dict[str, Any], cfg: MotionConfig) -> Observed:
    """Whether the fix is part of a stop (``stop_cluster``); call before ``step``."""
    return stop_cluster.observe(state, fix, cfg.moving_kmh)


def step(state: MotionState, fix: dict[str, Any], fence_limit: int | None,
         cfg: MotionConfig, observed: Observed | None = None) -> list[Derived]:
    """One fix in fix-time order; ``observed`` is ``observe``'s answer for it (asked
    here when None)."""
    out: list[Derived] = []
    if observed is None:
        observed = observe(state, fix, cfg)
    verdict, run, left = observed
    t, lat, lon, spd = fix["t"], fix["lat"], fix["lon"], fix["spd"]
    acc = fix.get("acc", 0)
    ign = bool(fix.get("ign", False))
    last = state["last"]
    if verdict == stop_cluster.STILL and state["stop_sent"] and state["trip"] is None \
            and not ign and last is not None and fence_limit is None \
            and state["over"] is None and not cfg.speed_limit_kmh:
        # Parked, its stop reported, engine off: nothing can happen but the time passing.
        last["t"], last["lat"], last["lon"], last["acc"], last["spd"] = t, lat, lon, acc, spd
        return out
    if ign:
        state["ign_seen"] = True
    moved = 0.0
    if last is not None:
        gap = t - last["t"]
        if gap > cfg.gap_max_s and state["trip"] is not None:
            _end_trip(state, last["t"], last["lat"], last["lon"], "gap", cfg, out)
        if verdict == stop_cluster.MOVING:
            step_m = _step_m(last["lat"], last["lon"], lat, lon)
            # Two fixes of a van standing still can each be off by their accuracy, in
            # opposite directions: only a step longer than both together can be motion.
            floor = acc + last.get("acc", 0)
            if floor < cfg.odometer_min_step_m:
                floor = cfg.odometer_min_step_m
            if step_m > floor and (spd >= cfg.moving_kmh
                                   or (gap > 0 and step_m / gap * 3.6 >= cfg.moving_kmh)):
                moved = step_m
    if verdict == stop_cluster.DEPARTED:
        moved = _departure_m(left, run, fix, last)
    state["odometer_m"] += moved
    if verdict == stop_cluster.MOVING:
        moving = spd >= cfg.moving_kmh or moved > 0
    else:
        moving = verdict == stop_cluster.DEPARTED
    driving = (ign and moving) if state["ign_seen"] else moving
    if driving:
        if state["still_since"] is not None:
            state["still_since"] = None
        state["stop_sent"] = state["idle_sent"] = False
        trip = state["trip"]
        if trip is None:
            first = run[0] if run else None
            trip = state["trip"] = {
                "start": _left_at(left, first) if first else t,
                "lat": first[1] if first else lat, "lon": first[2] if first else lon,
                "dist": 0.0, "max": max([spd] + [h[4] for h in run]), "announced": False}
        trip["dist"] += moved
        if spd > trip["max"]:
            trip["max"] = spd
        if not trip["announced"] and _qualifies(trip, t, cfg):
            trip["announced"] = True
            out.append(Derived("trip_start", trip["start"], trip["lat"], trip["lon"]))
    else:
        since = state["still_since"]
        if since is None:
            since = state["still_since"] = t
            arrived = t
            if last is not None:
                arrived = _arrived_at(last, fix)
                if left is not None and left["n"] == 2 and left["t0"] == last["t"] \
                        and last.get("spd", 0) < cfg.moving_kmh:
                    # The fix before was the first standing (its speed said so, its
                    # place did not look like it yet): the stop began there.
                    since = arrived = state["still_since"] = last["t"]
            if state["trip"] is not None:
                state["trip"]["arrived"] = arrived
        still = t - since
        trip = state["trip"]
        if trip is not None and (
            (state["ign_seen"] and not ign) or still >= cfg.stop_min_s
        ):
            end_t = trip.get("arrived", since) if not (state["ign_seen"] and not ign) else t
            _end_trip(state, end_t, lat, lon, "ignition" if state["ign_seen"] and not ign
                      else "stop", cfg, out)
        if still >= cfg.stop_min_s and not state["stop_sent"]:
            state["stop_sent"] = True
            out.append(Derived("stop", since, lat, lon, "", {"since": since}))
        if ign and still >= cfg.idle_min_s and not state["idle_sent"]:
            state["idle_sent"] = True
            out.append(Derived("idle", since, lat, lon, "", {"since": since, "seconds": still}))
    if state["over"] is not None or fence_limit is not None or cfg.speed_limit_kmh:
        _overspeed(state, fix, fence_limit, cfg, out)
    if last is None:
        state["last"] = {"t": t, "lat": lat, "lon": lon, "acc": acc, "spd": spd}
    else:  # in place: this runs for every fix
        last["t"], last["lat"], last["lon"], last["acc"], last["spd"] = t, lat, lon, acc, spd
    return out


def _step_m(lat1: int, lon1: int, lat2: int, lon2: int) -> float:
    """``distance_m`` for the step between two fixes: on the plane tangent at the first
    when they are within 0.01 degree (about a kilometre; there it differs from the
    haversine by under a millimetre), which costs a third of it."""
    dlat, dlon = lat2 - lat1, lon2 - lon1
    if -100_000 < dlat < 100_000 and -100_000 < dlon < 100_000:
        dy = dlat * _M_PER_E7
        dx = dlon * _M_PER_E7 * math.cos((lat1 + dlat * 0.5) * _RAD_E7)
        return math.sqrt(dx * dx + dy * dy)
    return distance_m(lat1, lon1, lat2, lon2)


_M_PER_E7 = EARTH_RADIUS_M * math.pi / 180 * 1e-7  # metres per 1e-7 degree of a great circle
_RAD_E7 = math.pi / 180 * 1e-7


def _arrived_at(last: Any, fix: dict[str, Any]) -> int:
    """When the device stopped: the last fix moving, plus the time its speed needed to
    where it stands, but not after the first fix standing."""
    spd = last.get("spd", 0)
    if spd <= 0:
        return int(fix["t"])
    way = _step_m(last["lat"], last["lon"], fix["lat"], fix["lon"]) / (spd / 3.6)
    return min(int(fix["t"]), last["t"] + round(way))


def _left_at(left: Cluster | None, first: list[int]) -> int:
    """When the device left its stop: the first fix away, less the time its speed
    needed from the stop's centre, but not before the stop's last fix."""
    t, lat, lon, _, spd = first[:5]
    if left is None or spd <= 0:
        return t
    lat0, lon0 = stop_cluster.center(left)
    away = _step_m(round(lat0), round(lon0), lat, lon) / (spd / 3.6)
    return max(left["t"], t - round(away))


def _departure_m(left: Cluster | None, run: list[list[int]], fix: dict[str, Any],
                 last: Any) -> float:
    """From the stop's centre through the held fixes to this one."""
    if left is not None:
        lat0, lon0 = stop_cluster.center(left)
        a = (round(lat0), round(lon0))
    elif last is not None:
        a = (last["lat"], last["lon"])
    else:
        return 0.0
    total = 0.0
    for h in run:
        total += _step_m(a[0], a[1], h[1], h[2])
        a = (h[1], h[2])
    return total + _step_m(a[0], a[1], fix["lat"], fix["lon"])


def _qualifies(trip: Trip, t: int, cfg: MotionConfig) -> bool:
    return bool(trip["dist"] >= cfg.trip_min_distance_m
                or t - trip["start"] >= cfg.trip_min_duration_s)


def _end_trip(state: MotionState, end_t: int, lat: int, lon: int, why: str,
              cfg: MotionConfig, out: list[Derived]) -> None:
    trip = state["trip"]
    state["trip"] = None
    if trip is None:
        return
    if not (trip["announced"] or _qualifies(trip, end_t, cfg)):
        return  # a shuffle across the yard is not a trip
    if not trip["announced"]:
        out.append(Derived("trip_start", trip["start"], trip["lat"], trip["lon"]))
    duration = max(0, end_t - trip["start"])
    avg = trip["dist"] / duration * 3.6 if duration else 0.0
    out.append(Derived("trip_end", end_t, lat, lon, "", {
        "start": trip["start"], "distance_m": round(trip["dist"]), "duration_s": duration,
        "max_kmh": trip["max"], "avg_kmh": round(avg, 1), "ended_by": why,
    }))


def _overspeed(state: MotionState, fix: dict[str, Any], fence_limit: int | None,
               cfg: MotionConfig, out: list[Derived]) -> None:
    limit = fence_limit if fence_limit is not None else (cfg.speed_limit_kmh or None)
    over = state["over"]
    if limit is None or fix["spd"] <= limit + cfg.overspeed_tolerance_kmh:
        state["over"] = None
        return
    if over is None or over["limit"] != limit:
        over = state["over"] = {"start": fix["t"], "lat": fix["lat"], "lon": fix["lon"],
                                "max": fix["spd"], "limit": limit, "sent": False}
    over["max"] = max(over["max"], fix["spd"])
    if not over["sent"] and fix["t"] - over["start"] >= cfg.overspeed_min_s:
        over["sent"] = True
        out.append(Derived("overspeed", over["start"], over["lat"], over["lon"], "",
                           {"limit_kmh": limit, "max_kmh": over["max"],
                            "seconds": fix["t"] - over["start"]}))
