"""A van's day as legs: stays and straight drives, each with its position at any time.

A route (``grid``, ``gpx``) yields legs one after another; a tracker asks the
current leg where the van is. The motion is in local metres east/north of an origin.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

M_PER_DEG = 111_320.0  # as the firmware's policy: 11.132 mm per 1e-7 degree
TURN_MS = 4.2  # 15 km/h through a turn
A_UP, A_DOWN = 1.2, 1.8  # m/s^2: a loaded van in town


class Leg:
    """A piece of a van's day between t0 and t1: where it is, how fast, engine on or off."""

    __slots__ = ("t0", "t1", "x0", "y0", "hdg", "alt0", "ign", "site")

    def __init__(self, t0: float, t1: float, x0: float, y0: float, hdg: int, alt0: float,
                 ign: bool, site: str) -> None:
        self.t0, self.t1, self.x0, self.y0 = t0, t1, x0, y0
        self.hdg, self.alt0, self.ign, self.site = hdg, alt0, ign, site

    def state(self, t: float) -> tuple[float, float, float, float]:
        """(x, y, speed m/s, altitude) at ``t``: a stay stays."""
        return self.x0, self.y0, 0.0, self.alt0

    @property
    def moving(self) -> bool:
        return False


class Drive(Leg):
    """A straight drive: accelerate from v0, cruise at vc, brake to v1 at the end."""

    __slots__ = ("ux", "uy", "length", "v0", "vc", "a1", "ta", "tc", "sa", "sc", "alt1")

    def __init__(self, t0: float, x0: float, y0: float, x1: float, y1: float, v0: float,
                 vc: float, v1: float, alt0: float = 40.0, alt1: float = 40.0) -> None:
        length = math.hypot(x1 - x0, y1 - y0)
        hdg = round(math.degrees(math.atan2(x1 - x0, y1 - y0))) % 360
        vc = max(vc, v0, v1, 0.5)
        da, dd = (vc * vc - v0 * v0) / (2 * A_UP), (vc * vc - v1 * v1) / (2 * A_DOWN)
        if da + dd > length:  # too short to reach the cruise speed: a lower peak
            peak = math.sqrt((2 * A_UP * A_DOWN * length + A_DOWN * v0 * v0 + A_UP * v1 * v1)
                             / (A_UP + A_DOWN))
            vc = peak
            da, dd = (vc * vc - v0 * v0) / (2 * A_UP), (vc * vc - v1 * v1) / (2 * A_DOWN)
        if vc < max(v0, v1) or da < 0 or dd < 0:  # braking harder than usual: uniformly
            self.a1 = (v1 * v1 - v0 * v0) / (2 * length)
            self.ta = 2 * length / (v0 + v1)
            self.tc, self.sa, self.sc, self.vc = 0.0, length, length, v1
            total = self.ta
        else:
            self.a1, self.vc = A_UP, vc
            self.ta = (vc - v0) / A_UP
            self.tc = max(0.0, length - da - dd) / vc
            self.sa, self.sc = da, length - dd
            total = self.ta + self.tc + (vc - v1) / A_DOWN
        super().__init__(t0, t0 + total, x0, y0, hdg, alt0, True, "")
        self.ux, self.uy = (x1 - x0) / length, (y1 - y0) / length
        self.length, self.v0, self.alt1 = length, v0, alt1

    def state(self, t: float) -> tuple[float, float, float, float]:
        tau = min(max(t - self.t0, 0.0), self.t1 - self.t0)
        if tau < self.ta:
            s, v = self.v0 * tau + self.a1 * tau * tau / 2, self.v0 + self.a1 * tau
        elif tau < self.ta + self.tc:
            s, v = self.sa + self.vc * (tau - self.ta), self.vc
        else:
            u = tau - self.ta - self.tc
            s, v = self.sc + self.vc * u - A_DOWN * u * u / 2, self.vc - A_DOWN * u
        s = min(s, self.length)
        alt = self.alt0 + (self.alt1 - self.alt0) * s / self.length
        return self.x0 + self.ux * s, self.y0 + self.uy * s, max(v, 0.0), alt

    @property
    def moving(self) -> bool:
        return True


def stay(t: float, seconds: float, x: float, y: float, hdg: int, alt: float, ign: bool,
         site: str = "") -> Leg:
    """Standing at (x, y) for ``seconds``: parked, or waiting at a red light."""
    return Leg(t, t + seconds, x, y, hdg, alt, ign, site)


def visit(rng: random.Random, t: float, x: float, y: float, hdg: int, alt: float,
          site: str, long: bool = False) -> Iterator[Leg]:
    """Park (engine on), engine off for the visit, engine on again, drive off."""
    for seconds, ign in ((rng.uniform(10, 30), True),
                         (rng.uniform(900, 2400) if long else rng.uniform(180, 900), False),
                         (rng.uniform(15, 60), True)):
        leg = stay(t, seconds, x, y, hdg, alt, ign, site)
        yield leg
        t = leg.t1
