"""A van's working day on a street grid: drives block by block, customer visits, the depot."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from fieldtrack.tools.simulate.legs import M_PER_DEG, TURN_MS, Drive, Leg, stay, visit


@dataclass(frozen=True)
class GridCity:
    """Streets every ``block_x`` m east-west and ``block_y`` m north-south around a centre."""

    lat0: float = 52.52
    lon0: float = 13.405
    block_x: float = 160.0
    block_y: float = 120.0
    radius: int = 12  # blocks from the centre to the edge

    def xy(self, node: tuple[int, int]) -> tuple[float, float]:
        return node[0] * self.block_x, node[1] * self.block_y

    def lat_lon(self, node: tuple[int, int]) -> tuple[float, float]:
        x, y = self.xy(node)
        return (self.lat0 + y / M_PER_DEG,
                self.lon0 + x / (M_PER_DEG * math.cos(math.radians(self.lat0))))

    def random_node(self, rng: random.Random) -> tuple[int, int]:
        return rng.randint(-self.radius, self.radius), rng.randint(-self.radius, self.radius)


@dataclass(frozen=True)
class Site:
    """A named place on the grid that vans visit (a customer) or return to (a depot)."""

    id: str
    name: str
    node: tuple[int, int]


def _grid_drive(city: GridCity, rng: random.Random, t: float, a: tuple[int, int],
                b: tuple[int, int]) -> Iterator[Leg]:
    """From junction a to b block by block: straight runs, turns, red lights."""
    steps: list[tuple[int, int]] = []
    ci, cj = a
    axis = rng.randrange(2)
    while (ci, cj) != b:
        di, dj = b[0] - ci, b[1] - cj
        if di and dj:
            if rng.random() < 0.3:
                axis = 1 - axis
        else:
            axis = 0 if di else 1
        step = ((1 if di > 0 else -1), 0) if axis == 0 else (0, (1 if dj > 0 else -1))
        steps.append(step)
        ci, cj = ci + step[0], cj + step[1]
    runs: list[tuple[tuple[int, int], int]] = []
    for step in steps:
        if runs and runs[-1][0] == step:
            runs[-1] = (step, runs[-1][1] + 1)
        else:
            runs.append((step, 1))
    node, v_in = a, 0.0
    for n, (step, blocks) in enumerate(runs):
        vc = rng.uniform(30, 50) / 3.6
        last_run = n == len(runs) - 1
        stops = [k for k in range(1, blocks) if rng.random() < 0.12]  # red lights on the way
        if not last_run and rng.random() < 0.2:
            stops.append(blocks)  # a red light before the turn
        if last_run:
            stops.append(blocks)
        done = 0
        for k in stops + ([] if blocks in stops else [blocks]):
            x0, y0 = city.xy(node)
            node = (node[0] + step[0] * (k - done), node[1] + step[1] * (k - done))
            x1, y1 = city.xy(node)
            stop = k in stops
            leg = Drive(t, x0, y0, x1, y1, v_in, vc, 0.0 if stop else TURN_MS)
            yield leg
            t, done = leg.t1, k
            v_in = 0.0 if stop else TURN_MS
            if stop and not (last_run and k == blocks):
                light = stay(t, rng.uniform(5, 45), x1, y1, leg.hdg, 40.0, True)
                yield light
                t = light.t1


def grid_day(city: GridCity, rng: random.Random, t: float, customers: Sequence[Site],
             depot: Site) -> Iterator[Leg]:
    """A van's endless working day: a few customers, back to the depot, again.

    Without ``customers`` every stop is a new random address in the city.
    """

    def customer() -> Site:
        return rng.choice(customers) if customers else Site("", "", city.random_node(rng))

    here = customer()
    x, y = city.xy(here.node)
    if rng.random() < 0.3:  # met in the middle of a visit
        first = stay(t, rng.uniform(30, 600), x, y, 0, 40.0, False, here.id)
        yield first
        t = first.t1
    hdg = 0
    while True:
        stops = [customer() for _ in range(rng.randint(3, 6))] + [depot]
        for site in stops:
            if site.node == here.node:
                continue
            for leg in _grid_drive(city, rng, t, here.node, site.node):
                yield leg
                t, hdg = leg.t1, leg.hdg
            here = site
            x, y = city.xy(site.node)
            for leg in visit(rng, t, x, y, hdg, 40.0, site.id, long=site is depot):
                yield leg
                t = leg.t1

