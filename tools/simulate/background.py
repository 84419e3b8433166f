"""A fleet publishing from a thread of its own, beside a gateway or the demo."""

from __future__ import annotations

import threading

from fieldtrack.tools.simulate.clock import SimClock
from fieldtrack.tools.simulate.config import FleetConfig, device_ids
from fieldtrack.tools.simulate.fleet import Fleet
from fieldtrack.tools.simulate.mqtt import MqttRunner, RunStats
from fieldtrack.tools.simulate.register import register_devices


class BackgroundFleet:
    """A fleet publishing from its own thread: for the demo and ``gateway run``."""

    def __init__(self, runner: MqttRunner, duration: float | None = None,
                 delay_s: float = 0.0) -> None:
        self.runner = runner
        self.duration = duration
        self.delay_s = delay_s  # e.g. until a running gateway has reloaded its registry
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.stats = RunStats()
        self.thread = threading.Thread(target=self._run, name="fleet-simulator", daemon=True)

    def _run(self) -> None:
        try:
            if self.stopping.wait(self.delay_s):
                self.runner.client.disconnect()  # stopped before it began
                return
            self.stats = self.runner.run(self.stopping, self.duration)
        except BaseException as exc:  # reported by stop(), in the caller's thread
            self.error = exc

    def start(self) -> None:
        self.runner.connect()
        self.thread.start()

    def stop(self, timeout: float = 40.0) -> RunStats:
        self.stopping.set()
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.stats


def sample_fleet(host: str, port: int, store_path: str, devices: int = 3,
                 speedup: float = 1.0) -> BackgroundFleet:
    """A few signed, registered vans for ``gateway run --sample-publisher``.

    Vans new to the store wait until a running gateway has reloaded its registry.
    """
    from fieldtrack.gateway.ingest.worker import REGISTRY_POLL_S

    cfg = FleetConfig(devices=devices, prefix="demo-van", group="demo")
    keys, added = register_devices(store_path, device_ids(cfg), group=cfg.group)
    clock = SimClock(speedup, None)
    fleet = Fleet.build(cfg, clock.now(), keys)
    runner = MqttRunner(fleet, host, port, clock, client_id="fieldtrack-sample-vans")
    return BackgroundFleet(runner, delay_s=REGISTRY_POLL_S + 1 if added else 0.0)
