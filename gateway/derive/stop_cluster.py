"""Is the device standing still? The fixes of a stop, judged as one cluster.

A parked receiver's fixes scatter around where it stands, now and then one lands
tens of metres off (multipath), and its reported speed stays near zero. Fix by fix,
that looks like short hops; as a cluster it is one place whose centre (the mean of
the fixes close to it) gets more certain with every fix. So a fix is a member when
it lies within a gate around the centre that grows with the scatter seen and the
accuracy reported. A fix beyond the gate is held: it alone proves nothing (it may be
a jump that returns). The device has left only when the held fixes show sustained
displacement: at least two in a row, the last beyond the departure distance, none
coming back towards the centre, with a reported speed of moving or a third fix
further still. Until a cluster has ``ESTABLISHED`` members it is young: the device
may be just passing, and a fix beyond the gate or at moving speed ends it; a fix at
moving speed also ends a stop driven to that lasted less than ``PASSING_S`` (a traffic
light), without waiting for a second one.

``observe`` returns what the fix means (``MOVING``, ``STILL``, ``HELD``,
``DEPARTED``); the fence tracker and the motion rules act on that. Pure logic over a
typed state (``state.Cluster``).
"""

from __future__ import annotations

import math
from typing import Any

from fieldtrack.gateway.derive.state import Cluster, MotionState
from fieldtrack.gateway.geo import M_PER_DEG

MOVING = 0  # not part of a stop: judge the fix on its own
STILL = 1  # a member of the stop: the stop is judged as a whole
HELD = 2  # beyond the stop, not (yet) a departure: evidence of nothing so far
DEPARTED = 3  # the held fixes and this one are a departure, in this order

ESTABLISHED = 3  # members before a cluster is a stop rather than a slow fix or two
PASSING_S = 60  # a stop driven to and shorter than this (a traffic light) ends at speed
GATE_MIN_M = 20.0  # the gate never shrinks below this: a receiver's fixes are not that good
GATE_MAX_M = 80.0
GATE_SIGMAS = 4.0  # the gate, in standard deviations (per axis) of the stop's fixes
DEPART_MIN_M = 50.0  # a departure reaches at least this far, and twice the gate
DECORRELATION_S = 10.0  # fixes closer in time than this err alike: not independent
MAX_HELD = 4  # held fixes that neither return nor depart: scatter, after all
_KY = M_PER_DEG * 1e-7  # metres per 1e-7 degree of latitude


# What a fix is to the stop it may belong to: the verdict (MOVING, STILL, HELD or
# DEPARTED); on DEPARTED the held fixes before this one, [t, lat, lon, acc, spd]; and
# the stop it was judged against (on DEPARTED, the one it left). A plain tuple: one is
# made for every fix.
Observed = tuple[int, list[list[int]], Cluster | None]


def new(fix: dict[str, Any], arrived: bool = True) -> Cluster:
    """A cluster of one fix (its anchor: member offsets are metres from it).

    ``arrived``: the device moved to it (False for a device's very first fix)."""
    lat = fix["lat"]
    return {"t0": fix["t"], "t": fix["t"], "lat0": lat, "lon0": fix["lon"],
            "kx": _KY * math.cos(lat * 1e-7 * math.pi / 180), "n": 1, "sx": 0.0, "sy": 0.0,
            "sq": 0.0, "sacc": float(fix.get("acc", 0) or 0), "held": [], "arrived": arrived}


def established(c: Cluster) -> bool:
    return c["n"] >= ESTABLISHED


def center(c: Cluster) -> tuple[float, float]:
    """The mean of the members, in 1e-7 degrees (floats)."""
    n = c["n"]
    return c["lat0"] + c["sy"] / n / _KY, c["lon0"] + c["sx"] / n / c["kx"]


def sigma(c: Cluster) -> float:
    """Metres: the spread of one fix per axis, from the scatter seen or the accuracy
    reported, whichever is larger (a receiver may claim better than it does)."""
    n = c["n"]
    reported = c["sacc"] / n / 2  # accuracies are about two standard deviations
    if n < 2:
        return max(reported, 1.0)
    mx, my = c["sx"] / n, c["sy"] / n
    var = (c["sq"] / n - mx * mx - my * my) * n / (n - 1) / 2
    seen = math.sqrt(var) if var > 0 else 0.0
    return max(reported, seen, 1.0)


def standard_error(c: Cluster) -> float:
    """Metres per axis: how far the centre may be from where the device stands."""
    independent = 1 + (c["t"] - c["t0"]) / DECORRELATION_S
    n = c["n"] if c["n"] < independent else independent
    return sigma(c) / math.sqrt(n)


def gate(c: Cluster) -> float:
    g = GATE_SIGMAS * sigma(c)
    return GATE_MIN_M if g < GATE_MIN_M else (GATE_MAX_M if g > GATE_MAX_M else g)


def observe(state: MotionState, fix: dict[str, Any], moving_kmh: int) -> Observed:
    """One fix (in fix-time order) against the stop kept in ``state["cluster"]``.

    While the device moves there is no cluster (None): a fix at moving speed costs a
    look-up. When one is not, a cluster starts from the fix before it (``state["last"]``,
    where the device arrived) and the fix is judged against that."""
    c = state.get("cluster")
    spd = fix["spd"]
    if c is None:
        if spd >= moving_kmh:
            return _MOVING  # most fixes: driving
        last = state["last"]
        if last is None:  # the device's very first fix
            c = state["cluster"] = new(fix, arrived=False)
            return STILL, _NONE, c
        c = state["cluster"] = new(last)  # type: ignore[arg-type]
    elif spd >= moving_kmh and (c["n"] < ESTABLISHED or c["t"] - c["t0"] < PASSING_S) \
            and c.get("arrived", True):
        state["cluster"] = None  # young, driven to and moving: it was passing
        return _MOVING
    n = c["n"]
    x = (fix["lon"] - c["lon0"]) * c["kx"]
    y = (fix["lat"] - c["lat0"]) * _KY
    dx = x - c["sx"] / n
    dy = y - c["sy"] / n
    d2 = dx * dx + dy * dy
    # A fix reporting a moving speed joins only when very close: else it is held.
    if d2 <= _GATE_MIN_2 or n > 1 and spd < moving_kmh and d2 <= gate(c) ** 2:
        c["n"] = n + 1  # a member: this runs for every fix of a stop
        c["t"] = fix["t"]
        c["sx"] += x
        c["sy"] += y
        c["sq"] += x * x + y * y
        c["sacc"] += fix.get("acc", 0) or 0
        if c["held"]:
            c["held"] = []  # it came back: what was held was a jump, not a departure
        return STILL, _NONE, c
    if n == 1 and c.get("arrived", True):
        state["cluster"] = None  # not stopped yet: the speed may lag behind
        return _MOVING
    verdict, run = _beyond(c, fix, math.sqrt(d2), moving_kmh)
    if verdict == DEPARTED:
        state["cluster"] = None
    return verdict, run, c


_NONE: list[list[int]] = []  # shared, never changed
_GATE_MIN_2 = GATE_MIN_M * GATE_MIN_M
_MOVING: Observed = (MOVING, _NONE, None)


def _metres(c: Cluster, lat1: int, lon1: int, lat2: int, lon2: int) -> float:
    return math.hypot((lat2 - lat1) * _KY, (lon2 - lon1) * c["kx"])


def _add(c: Cluster, fix: dict[str, Any], x: float, y: float) -> None:
    c["n"] += 1
    c["t"] = fix["t"]
    c["sx"] += x
    c["sy"] += y
    c["sq"] += x * x + y * y
    c["sacc"] += fix.get("acc", 0) or 0


def _beyond(c: Cluster, fix: dict[str, Any], d: float, moving_kmh: int
            ) -> tuple[int, list[list[int]]]:
    held = c["held"]
    if held and held[-1][5] > d + (fix.get("acc", 0) or 0):
        held.clear()  # coming back towards the centre: not a departure, start again
    entry = [fix["t"], fix["lat"], fix["lon"], fix.get("acc", 0) or 0, fix["spd"], round(d)]
    depart = max(DEPART_MIN_M, 2 * gate(c))
    if held and d > depart:
        prev = held[-1]
        fastest = fix["spd"] if fix["spd"] > prev[4] else prev[4]
        # Driving away at the speed reported (twice that, and both fixes' error, at
        # most): a longer step is a jump, whatever the speed says.
        step = _metres(c, prev[1], prev[2], fix["lat"], fix["lon"])
        speeds = fastest >= moving_kmh and \
            step <= fastest / 1.8 * (fix["t"] - prev[0]) + prev[3] + entry[3] + 10
        further = len(held) >= 2 and held[-2][5] <= prev[5] <= d
        if speeds or further:
            return DEPARTED, [h[:5] for h in held]
    held.append(entry)
    if len(held) >= MAX_HELD:
        # Fixes that neither come back nor go away are the stop's own scatter, wider
        # than the gate assumed: they join it (and widen the gate).
        for t, lat, lon, acc, _, _ in held:
            _add(c, {"t": t, "acc": acc}, (lon - c["lon0"]) * c["kx"], (lat - c["lat0"]) * _KY)
        c["held"] = []
        return STILL, _NONE
    return HELD, _NONE
