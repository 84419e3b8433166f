"""Noisy field scenarios with their ground truth, generated from a seed.

A scenario is a vehicle's true path (straight legs at constant speed, stops, silences)
and fences, all in metres around ``tracks.ORIGIN``. The truth comes from the noise-free
path, looked at every second: when it enters and leaves each fence, its visits (a stay
of ``VISIT_MIN_S`` in a customer or site fence), its trips (driving, with stops shorter
than ``STOP_MIN_S`` inside them) and its driving time. The fixes are what a receiver
would report along that path: Gaussian error of a standard deviation per axis drawn
from 3-8 m per scenario, 1-2 % multipath outliers 15-70 m off (reporting the same
accuracy as the others), an accuracy field of about twice the standard deviation, a
speed of about zero while standing and the ignition on while driving.

The kinds (``SCENARIOS``): parked within 3 m inside or outside a fence's edge for an
hour, drive-bys of fences the road cuts through or passes, 30 s fixes through small
fences with and without a fix inside, a service day (depot, customers, a no-go zone)
and a reboot in the middle of a visit. ``score`` compares derived events with the
truth.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tracks import MONDAY, circle, fix, rectangle

from fieldtrack.gateway.fences.index import FenceIndex
from fieldtrack.gateway.fences.loader import parse

VISIT_MIN_S = 300  # the gateway's defaults (FenceConfig, MotionConfig)
STOP_MIN_S = 300
DWELL_S = 600
TRIP_MIN_M = 500
TRIP_MIN_S = 300
VISIT_KINDS = ("customer", "site")


# --- the true path -------------------------------------------------------------------


@dataclass(frozen=True)
class Leg:
    """From t0 to t1 the vehicle goes straight from (n0, e0) to (n1, e1); ``report``
    False while the device is silent (switched off, rebooting)."""

    t0: int
    t1: int
    n0: float
    e0: float
    n1: float
    e1: float
    report: bool = True
    poor: int = 0  # the first seconds after a reboot: a cold start's poor fixes

    @property
    def moving(self) -> bool:
        return (self.n0, self.e0) != (self.n1, self.e1)

    def at(self, t: float) -> tuple[float, float]:
        k = 0.0 if self.t1 == self.t0 else (t - self.t0) / (self.t1 - self.t0)
        return self.n0 + k * (self.n1 - self.n0), self.e0 + k * (self.e1 - self.e0)

    @property
    def kmh(self) -> float:
        if self.t1 == self.t0:
            return 0.0
        return math.hypot(self.n1 - self.n0, self.e1 - self.e0) / (self.t1 - self.t0) * 3.6


class Path:
    """A vehicle's day, written as what it does: drive, park, go silent."""

    def __init__(self, t0: int, north_m: float, east_m: float) -> None:
        self.t, self.n, self.e = t0, north_m, east_m
        self.legs: list[Leg] = []

    def drive(self, north_m: float, east_m: float, kmh: float) -> Path:
        seconds = max(1, round(math.hypot(north_m - self.n, east_m - self.e) / (kmh / 3.6)))
        self.legs.append(Leg(self.t, self.t + seconds, self.n, self.e, north_m, east_m))
        self.t, self.n, self.e = self.t + seconds, north_m, east_m
        return self

    def park(self, seconds: int) -> Path:
        self.legs.append(Leg(self.t, self.t + seconds, self.n, self.e, self.n, self.e))
        self.t += seconds
        return self

    def reboot(self, silent_s: int, poor_s: int) -> Path:
        """Silent for ``silent_s``, then poor fixes for ``poor_s`` (standing still)."""
        self.legs.append(Leg(self.t, self.t + silent_s, self.n, self.e, self.n, self.e,
                             report=False))
        self.t += silent_s
        self.legs.append(Leg(self.t, self.t, self.n, self.e, self.n, self.e, poor=poor_s))
        return self

    def leg_at(self, t: float) -> Leg:
        for leg in self.legs:
            if leg.t0 <= t < leg.t1:
                return leg
        return self.legs[-1]


# --- the truth -----------------------------------------------------------------------


@dataclass
class Truth:
    transitions: list[tuple[str, int, str]] = field(default_factory=list)  # kind, t, fence
    visits: list[tuple[str, int, int]] = field(default_factory=list)  # fence, arrive, leave
    trips: list[tuple[int, int]] = field(default_factory=list)  # start, end
    parked: list[tuple[int, int]] = field(default_factory=list)  # stops >= STOP_MIN_S

    @property
    def driving_s(self) -> int:
        return sum(b - a for a, b in self.trips)


def truth_of(path: Path, index: FenceIndex) -> Truth:
    truth = Truth()
    t_start, t_end = path.legs[0].t0, path.legs[-1].t1
    state: dict[str, int | None] = {f.id: None for f in index.fences}  # since when inside
    for t in range(t_start, t_end + 1):
        n, e = path.leg_at(t).at(t) if t < t_end else (path.n, path.e)
        lat, lon = _deg(n, e)
        for fence in index.fences:
            inside = fence.signed_distance(lat, lon) > 0
            since = state[fence.id]
            if inside and since is None:
                state[fence.id] = t
                truth.transitions.append(("geofence_enter", t, fence.id))
            elif not inside and since is not None:
                state[fence.id] = None
                truth.transitions.append(("geofence_exit", t, fence.id))
                if fence.kind in VISIT_KINDS and t - since >= VISIT_MIN_S:
                    truth.visits.append((fence.id, since, t))
    # Trips: driving legs joined across stops shorter than STOP_MIN_S.
    runs: list[list[int]] = []  # [start, end, metres]
    for leg in path.legs:
        if leg.moving:
            metres = math.hypot(leg.n1 - leg.n0, leg.e1 - leg.e0)
            if runs and leg.t0 - runs[-1][1] < STOP_MIN_S:
                runs[-1][1] = leg.t1
                runs[-1][2] += round(metres)
            else:
                runs.append([leg.t0, leg.t1, round(metres)])
    truth.trips = [(a, b) for a, b, m in runs if m >= TRIP_MIN_M or b - a >= TRIP_MIN_S]
    still_from = t_start
    for a, b, _ in runs + [[t_end, t_end, 0]]:
        if a - still_from >= STOP_MIN_S:
            truth.parked.append((still_from, a))
        still_from = b
    return truth


def _deg(north_m: float, east_m: float) -> tuple[float, float]:
    from tracks import lat_lon
    return lat_lon(north_m, east_m)


# --- the fixes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Receiver:
    sigma_m: float  # standard deviation of the error, per axis
    outliers: float  # share of fixes thrown 15-70 m off
    every: int  # seconds between fixes
    ignition: bool  # the device reports the ignition


def receiver(rng: random.Random, every: int) -> Receiver:
    return Receiver(rng.uniform(3.0, 8.0), rng.uniform(0.01, 0.02), every, rng.random() < 0.5)


def sample(path: Path, rx: Receiver, rng: random.Random) -> list[dict[str, Any]]:
    """The fixes a receiver reports along ``path``: every ``rx.every`` s while it reports."""
    fixes: list[dict[str, Any]] = []
    t = path.legs[0].t0
    poor_until = -1
    end = path.legs[-1].t1
    while t <= end:
        leg = path.leg_at(t)
        if not leg.report:
            t = leg.t1  # the first fix after a silence comes at its end
            poor_until = max(poor_until, t + _poor_after(path, t))
            continue
        n, e = leg.at(t) if t < end else (path.n, path.e)
        sigma = rx.sigma_m * (3 if t < poor_until else 1)
        acc = max(2, round(sigma * rng.uniform(1.6, 2.2)))
        if rng.random() < rx.outliers:
            r, a = rng.uniform(15, 70), rng.uniform(0, 2 * math.pi)
            n, e = n + r * math.cos(a), e + r * math.sin(a)
        else:
            n, e = n + rng.gauss(0, sigma), e + rng.gauss(0, sigma)
        moving = leg.moving and t < leg.t1
        kmh = leg.kmh if moving else 0.0
        spd = max(0, round(kmh + rng.gauss(0, 1.0))) if moving else round(abs(rng.gauss(0, 0.6)))
        ign = rx.ignition and (moving or _short_stop(path, t))
        f = fix(t, n, e, spd=spd, acc=acc, ign=ign)
        if not rx.ignition:
            f["ign"] = False
        fixes.append(f)
        t += rx.every
    return fixes


def _poor_after(path: Path, t: int) -> int:
    for leg in path.legs:
        if leg.poor and leg.t0 == t:
            return leg.poor
    return 0


def _short_stop(path: Path, t: int) -> bool:
    """Standing in traffic (a stop shorter than STOP_MIN_S between drives): engine on."""
    leg = path.leg_at(t)
    return not leg.moving and leg.t1 - leg.t0 < STOP_MIN_S and leg.t0 > path.legs[0].t0


# --- the scenarios -------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    seed: int
    features: list[dict[str, Any]]
    fixes: list[dict[str, Any]]
    truth: Truth
    every: int

    def index(self) -> FenceIndex:
        return FenceIndex(parse({"type": "FeatureCollection", "features": self.features},
                                self.name))


def _build(name: str, seed: int, features: list[dict[str, Any]], path: Path,
           rx: Receiver, rng: random.Random) -> Scenario:
    index = FenceIndex(parse({"type": "FeatureCollection", "features": features}, name))
    return Scenario(name, seed, features, sample(path, rx, rng), truth_of(path, index),
                    rx.every)


def parked_at_edge(seed: int, inside: bool) -> Scenario:
    """To a customer, parked 2-3 m inside (or outside) its west edge for an hour, back."""
    rng = random.Random(seed)
    offset = rng.uniform(2.0, 3.0) * (1 if inside else -1)
    north = rng.uniform(-40, 40)
    site = rectangle("yard", -60, 1500, 60, 1620, kind="customer")
    kmh = rng.uniform(30, 50)
    path = (Path(MONDAY, north, 0).park(120).drive(north, 1500 - 40, kmh)
            .drive(north, 1500 + offset, 10).park(3600).drive(north, 1500 - 40, 10)
            .drive(north, 0, kmh).park(600))
    name = "parked %s the edge" % ("inside" if inside else "outside")
    return _build(name, seed, [site], path, receiver(rng, rng.choice([10, 15])), rng)


def drive_by(seed: int) -> Scenario:
    """A road east past four fences: two it cuts through (20-30 m deep), two it passes
    15-25 m away; a stop at a traffic light between them."""
    rng = random.Random(seed)
    deep, clear = rng.uniform(20, 30), rng.uniform(15, 25)
    features = [
        rectangle("cut", -deep, 800, 200 - deep, 1000, kind="customer"),
        rectangle("passed", clear, 1600, clear + 200, 1800, kind="customer"),
        circle("round", 0, 2600, rng.uniform(50, 80), kind="site"),
        circle("beside", -(clear + 60), 3400, 60, kind="site"),
    ]
    kmh = rng.uniform(30, 50)
    path = (Path(MONDAY, 0, 0).park(120).drive(0, 2000, kmh).park(rng.randint(30, 90))
            .drive(0, 4200, kmh).park(600))
    return _build("drive-by", seed, features, path, receiver(rng, 10), rng)


def sparse_small(seed: int, fix_inside: bool) -> Scenario:
    """30 s fixes at 60-90 km/h along a road through small fences: circles 50 m across
    and a gate 100 m across, each centred on a fix of the true path or half-way."""
    rng = random.Random(seed)
    kmh = rng.uniform(60, 90)
    step = kmh / 3.6 * 30
    start = 0.0
    features = []
    for i in range(5):
        k = 4 + 5 * i
        centre = start + (k if fix_inside else k + 0.5) * step
        radius = 50 if i == 2 else 25
        features.append(circle("gate-%d" % i, 0, centre, radius, kind="site"))
    end = start + 30 * step
    path = Path(MONDAY, 0, start).park(120).drive(0, end, kmh).park(600)
    rx = receiver(rng, 30)
    return _build("30 s fixes, %s fix inside" % ("a" if fix_inside else "no"), seed, features,
                  path, rx, rng)


def service_day(seed: int) -> Scenario:
    """From the depot to four customers (15-50 min each, parked anywhere in their
    fence), through a no-go zone once, with traffic stops, and back."""
    rng = random.Random(seed)
    features = [circle("depot", 0, 0, 80, kind="depot"),
                rectangle("quarry", -100, 2400, 100, 2600, kind="no-go")]
    stops = [(0, 4000), (1500, 5200), (2600, 3000), (1200, 800)]
    for i, (n, e) in enumerate(stops):
        features.append(circle("customer-%d" % i, n, e, rng.uniform(40, 70), kind="customer"))
    path = Path(MONDAY, 10, 10).park(900)
    for i, (n, e) in enumerate(stops):
        r = 0.4 * rng.uniform(0, 40)
        a = rng.uniform(0, 2 * math.pi)
        if i == 1:
            path.drive(path.n, path.e + 500, rng.uniform(30, 50)).park(rng.randint(20, 90))
        path.drive(n + r * math.cos(a), e + r * math.sin(a), rng.uniform(30, 55))
        path.park(rng.randint(15, 50) * 60)
    path.drive(10, 10, rng.uniform(30, 55)).park(1200)
    return _build("service day", seed, features, path, receiver(rng, 10), rng)


def reboot_mid_visit(seed: int) -> Scenario:
    """40 min at a customer; 15 min in the device restarts: 60-180 s silent, then 30 s
    of a cold start's poor fixes."""
    rng = random.Random(seed)
    site = circle("acme", 0, 2000, 60, kind="customer")
    path = (Path(MONDAY, 0, 0).park(120).drive(0, 2000 + rng.uniform(-20, 20), 40)
            .park(900).reboot(rng.randint(60, 180), 30).park(1500).drive(0, 4500, 40)
            .park(600))
    return _build("reboot mid-visit", seed, [site], path, receiver(rng, 10), rng)


SCENARIOS: dict[str, Callable[[int], Scenario]] = {
    "parked inside the edge": lambda s: parked_at_edge(s, True),
    "parked outside the edge": lambda s: parked_at_edge(s, False),
    "drive-by": drive_by,
    "30 s fixes, a fix inside": lambda s: sparse_small(s, True),
    "30 s fixes, no fix inside": lambda s: sparse_small(s, False),
    "service day": service_day,
    "reboot mid-visit": reboot_mid_visit,
}


# --- scoring -------------------------------------------------------------------------


@dataclass
class Found:
    """What the gateway derived: the same shapes as ``Truth``."""

    transitions: list[tuple[str, int, str]]
    visits: list[tuple[str, int, int]]
    trips: list[tuple[int, int]]


@dataclass
class Score:
    transitions_tp: int = 0
    transitions_found: int = 0
    transitions_true: int = 0
    visits_tp: int = 0
    visits_found: int = 0
    visits_true: int = 0
    spurious_parked: int = 0
    visit_errors: list[int] = field(default_factory=list)  # |arrive| and |leave| errors, s
    trips_found: int = 0
    trips_true: int = 0
    driving_found: int = 0
    driving_true: int = 0

    def add(self, other: Score) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(other, name)
            if isinstance(value, list):
                getattr(self, name).extend(value)
            else:
                setattr(self, name, getattr(self, name) + value)


def score(found: Found, truth: Truth, every: int) -> Score:
    """A visit matches within one report period and the dwell setting at both ends
    (the bar of the product); a transition, one of the same kind and fence within two
    report periods and 30 s."""
    tol = every + DWELL_S
    s = Score()
    matched = _match([(k, f) for k, _, f in found.transitions],
                     [t for _, t, _ in found.transitions],
                     [(k, f) for k, _, f in truth.transitions],
                     [t for _, t, _ in truth.transitions], 2 * every + 30)
    s.transitions_tp = len(matched)
    s.transitions_found, s.transitions_true = len(found.transitions), len(truth.transitions)
    hit = {i for i, _ in matched}
    for i, (_, t, _) in enumerate(found.transitions):
        if i not in hit and any(a <= t <= b for a, b in truth.parked):
            s.spurious_parked += 1
    pairs = _match([f for f, _, _ in found.visits], [a for _, a, _ in found.visits],
                   [f for f, _, _ in truth.visits], [a for _, a, _ in truth.visits], tol)
    for i, j in pairs:
        (_, fa, fl), (_, ta, tl) = found.visits[i], truth.visits[j]
        if abs(fl - tl) <= tol:
            s.visits_tp += 1
            s.visit_errors += [abs(fa - ta), abs(fl - tl)]
    s.visits_found, s.visits_true = len(found.visits), len(truth.visits)
    s.trips_found, s.trips_true = len(found.trips), len(truth.trips)
    s.driving_found = sum(b - a for a, b in found.trips)
    s.driving_true = truth.driving_s
    return s


def _match(keys_a: list[Any], times_a: list[int], keys_b: list[Any], times_b: list[int],
           tol: int) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, closest in time first."""
    candidates = sorted((abs(ta - tb), i, j)
                        for i, (ka, ta) in enumerate(zip(keys_a, times_a, strict=True))
                        for j, (kb, tb) in enumerate(zip(keys_b, times_b, strict=True))
                        if ka == kb and abs(ta - tb) <= tol)
    used_a: set[int] = set()
    used_b: set[int] = set()
    out = []
    for _, i, j in candidates:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((i, j))
    return out


def found_from_events(events: Iterable[tuple[str, int, dict[str, Any]]]) -> Found:
    """(kind, t, data) of derived events (data with ``fence`` for fence events)."""
    found = Found([], [], [])
    for kind, t, data in events:
        if kind in ("geofence_enter", "geofence_exit"):
            found.transitions.append((kind, t, str(data.get("fence", ""))))
        elif kind == "visit":
            found.visits.append((str(data.get("site", data.get("fence", ""))),
                                 int(data["arrive"]), int(data["leave"])))
        elif kind == "trip_end":
            found.trips.append((int(data["start"]), t))
    return found
