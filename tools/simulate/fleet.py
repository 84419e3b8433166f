"""The fleet simulator: virtual vans that drive, decide and publish as the firmware does.

Built for 10,000 devices in one process: the simulation is event driven (a heap of
each device's next instant that matters, never a tick per device per second) and the
edge is one paho-mqtt client publishing QoS 1 with a bounded number in flight.

This module is the ``Fleet`` and its heap. The parts, in the order a frame is made:

- ``legs``: a van's day as stays and drives; ``grid`` and ``gpx`` make the
  day on a street grid with customer visits, or along a GPX track;
- ``config``: ``FleetConfig``, what a fleet is, and its device ids;
- ``tracker``: ``SimDevice``, the firmware's policy and records; ``signer``;
- ``clock`` and ``mqtt``: the clock, and the ``MqttRunner`` that publishes;
- ``register``: device keys from the gateway's store; ``background``: a fleet
  on a thread of its own, for the demo and ``gateway run --sample-publisher``.

Pure: all but the edge (``register``, ``mqtt``, ``background``).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from typing import Any

from fieldtrack.protocol import topics
from fieldtrack.tools.simulate.config import FleetConfig, device_ids
from fieldtrack.tools.simulate.errors import SimulateError
from fieldtrack.tools.simulate.gpx import gpx_day
from fieldtrack.tools.simulate.grid import Site, grid_day
from fieldtrack.tools.simulate.legs import Leg
from fieldtrack.tools.simulate.tracker import Outgoing, SimDevice, firmware_policy, load_policy

DEPOTS = ((0, 0), (-8, -6), (7, 9), (9, -8))


class Fleet:
    """Every device, and a heap of (next second that matters, device index)."""

    def __init__(self, devices: list[SimDevice]) -> None:
        self.devices = devices
        self.heap = [(d.next_t, i) for i, d in enumerate(devices)]
        heapq.heapify(self.heap)

    @classmethod
    def build(cls, cfg: FleetConfig, t0: float, keys: dict[str, bytes | None] | None = None
              ) -> Fleet:
        """``cfg.devices`` trackers powering on within ``start_spread_s`` of ``t0``.

        A device with a key in ``keys`` signs its frames. Each van's route comes from its
        own random stream (seed, index), so the same seed drives the same routes.
        """
        if firmware_policy is None:
            load_policy()  # raises, saying what is missing
        assert firmware_policy is not None
        if cfg.reporting is not None:
            errors = firmware_policy.check(cfg.reporting)
            if errors:
                raise SimulateError("reporting: " + "; ".join(errors))
        keys = keys or {}
        spread = random.Random("%s/start" % cfg.seed)
        shared = random.Random("%s/gnss" % cfg.seed)  # noise, gaps, reboots: drawn in heap order
        devices = []
        city = cfg.city
        depots = cfg.depots or tuple(Site("depot-%d" % k, "depot %d" % k, node)
                                     for k, node in enumerate(DEPOTS))
        for i, device_id in enumerate(device_ids(cfg)):
            rng = random.Random("%s/%d" % (cfg.seed, i))
            start = int(t0 + spread.uniform(0, cfg.start_spread_s))
            legs: Iterator[Leg]
            if cfg.route is not None:
                legs = gpx_day(cfg.route, rng, start)
                origin = (cfg.route.lat0, cfg.route.lon0)
            else:
                legs = grid_day(city, rng, start, cfg.customers, depots[i % len(depots)])
                origin = (city.lat0, city.lon0)
            devices.append(SimDevice(device_id, cfg, legs, shared, keys.get(device_id), start,
                                     spread.randint(1, 40), origin))
        return cls(devices)

    def advance(self, until: float, limit: int = 1 << 30) -> list[Outgoing]:
        """Wake every device whose next second is at or before ``until``."""
        out: list[Outgoing] = []
        heap, devices = self.heap, self.devices
        while heap and heap[0][0] <= until and len(out) < limit:
            t, i = heapq.heappop(heap)
            dev = devices[i]
            out.extend(dev.wake(t))
            heapq.heappush(heap, (dev.next_t, i))
        return out

    def next_due(self) -> float:
        return self.heap[0][0] if self.heap else math.inf

    def drain(self) -> list[Outgoing]:
        """The end: coverage comes back everywhere and every buffer goes out."""
        out: list[Outgoing] = []
        for dev in self.devices:
            if dev.buffer or dev.gap_end is not None:
                dev.flush(out)
        return out

    def offline(self) -> list[Outgoing]:
        if not self.devices or not self.devices[0].cfg.presence:
            return []
        return [(topics.presence(d.id), topics.OFFLINE, True) for d in self.devices]

    def summary(self) -> dict[str, Any]:
        per = {d.id: {"positions": d.counts.positions, "events": d.counts.events,
                      "frames": d.counts.frames, "batches": d.counts.batches,
                      "buffered": d.counts.buffered, "boots": {str(b): n for b, n
                                                                 in d.counts.seqs.items()}}
               for d in self.devices}
        totals = {k: sum(getattr(d.counts, k) for d in self.devices)
                  for k in ("positions", "events", "frames", "batches", "buffered")}
        return {"devices": len(self.devices), "totals": totals, "per_device": per}
