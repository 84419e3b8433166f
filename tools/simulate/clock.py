"""The simulation's clock: Unix time that runs faster than the wall, up to the present."""

from __future__ import annotations

import time
from collections.abc import Callable

from fieldtrack.tools.simulate.errors import SimulateError

CATCH_UP_S = 1800.0  # an open-ended run at speedup X replays this much wall time of past


class SimClock:
    """Simulated Unix time: ``speedup`` times as fast as the wall, never ahead of it.

    A run at speedup X replays the recent past: it starts ``lead_s`` back, so fix times
    reach the present at the end of a bounded run (or after CATCH_UP_S of an open one)
    and continue in real time from there. The gateway drops fixes from the future.
    """

    def __init__(self, speedup: float, duration: float | None,
                 wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        if speedup <= 0:
            raise SimulateError("speedup: %s is not a positive number" % speedup)
        self.speedup, self.wall, self.mono = speedup, wall, mono
        lead = (speedup - 1) * (duration if duration is not None else CATCH_UP_S)
        self.start = wall() - lead
        self.m0 = mono()

    def now(self) -> float:
        return min(self.start + (self.mono() - self.m0) * self.speedup, self.wall())

    def wall_delay(self, sim_t: float) -> float:
        """Wall seconds until the clock shows ``sim_t`` (an estimate near the present)."""
        return max(0.0, (sim_t - self.now()) / self.speedup)
