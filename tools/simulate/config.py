"""What a simulated fleet is: how many vans, where they drive, what goes wrong; their ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fieldtrack.protocol import topics
from fieldtrack.protocol.errors import FrameError
from fieldtrack.tools.simulate.errors import SimulateError
from fieldtrack.tools.simulate.gpx import GpxRoute
from fieldtrack.tools.simulate.grid import GridCity, Site


@dataclass(frozen=True)
class FleetConfig:
    """A fleet's options: the same config, seed included, publishes the same frames."""

    devices: int = 10
    prefix: str = "sim"
    seed: int = 1
    city: GridCity = field(default_factory=GridCity)
    customers: tuple[Site, ...] = ()  # empty: every stop is a random address
    depots: tuple[Site, ...] = ()
    route: GpxRoute | None = None  # drive this instead of the grid
    gaps: bool = False
    gap_every_s: float = 1800.0  # mean time between coverage gaps
    gap_s: tuple[float, float] = (60.0, 600.0)
    reboots: bool = False
    reboot_every_s: float = 4 * 3600.0  # mean time between reboots
    reporting: dict[str, Any] | None = None  # the firmware's reporting config
    gnss_noise_m: float = 1.4  # standard deviation per axis of the wandering GNSS error
    status_period_s: int = 3600
    presence: bool = True
    start_spread_s: float = 10.0  # devices power on within this long of the start
    group: str = "sim"


def device_ids(cfg: FleetConfig) -> list[str]:
    """PREFIX-001, PREFIX-002, ... (as many digits as the count needs, at least three)."""
    if cfg.devices < 1:
        raise SimulateError("devices: %d; simulate at least one" % cfg.devices)
    width = max(3, len(str(cfg.devices)))
    ids = ["%s-%0*d" % (cfg.prefix, width, i + 1) for i in range(cfg.devices)]
    try:
        topics.check_device_id(ids[-1])  # the longest; all share the prefix's characters
    except FrameError:
        raise SimulateError("prefix %r: device ids like %s must be 1..%d of letters, digits, "
                            "'-' and '_'" % (cfg.prefix, ids[-1], topics.MAX_DEVICE_ID)) from None
    return ids

