"""A few demo vans that publish signed frames, so ``make run`` shows the gateway working.

The fleet simulator is the real load generator; this is just enough traffic to see
positions and events arrive: each van drives a loop around a block at 30 km/h.
"""

from __future__ import annotations

import math
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fieldtrack.gateway import registry
from fieldtrack.gateway.store import Store
from fieldtrack.protocol import cose, fast, topics

DEMO_DEVICES = ("demo-van-1", "demo-van-2", "demo-van-3")
CENTRE = (525200000, 134050000)  # Berlin, 1e-7 degrees


def demo_keys(store: Store) -> dict[str, bytes]:
    """Register the demo vans (once) and return their keys."""
    devices = store.devices()
    keys = {}
    for device_id in DEMO_DEVICES:
        known = devices.get(device_id)
        if known is not None and known.key is not None:
            keys[device_id] = known.key
        else:
            key = registry.add(store, device_id, group="demo", name="demo van")
            assert key is not None
            keys[device_id] = key
    return keys


def fix_at(index: int, step: int, now: int) -> dict[str, object]:
    """Where van ``index`` is at ``step``: around a 600 m loop, one step a second."""
    angle = (step * 8.33 / 600 * 2 * math.pi + index * 2.0) % (2 * math.pi)
    lat = CENTRE[0] + int(900 * (index + 1) * math.sin(angle) * 10)
    lon = CENTRE[1] + int(1500 * (index + 1) * math.cos(angle) * 10)
    heading = int(math.degrees(angle + math.pi / 2)) % 360
    return {"type": "position", "t": now, "lat": lat, "lon": lon, "spd": 30, "hdg": heading,
            "alt": 38, "acc": 3, "sats": 11, "fix": 2, "ign": True}


class SamplePublisher:
    def __init__(self, host: str, port: int, keys: dict[str, bytes], period_s: float = 2.0):
        self.keys = keys
        self.period_s = period_s
        self.stopping = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fieldtrack-demo-vans")
        self.client.connect(host, port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, name="demo-vans", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        boot = int(time.time()) % 100000
        step = 0
        while not self.stopping.wait(self.period_s):
            now = int(time.time())
            for index, (device, key) in enumerate(sorted(self.keys.items())):
                frame = dict(fix_at(index, step, now), boot=boot, seq=step)
                payload = cose.sign(fast.encode(frame), key, device)
                self.client.publish(topics.uplink(device), payload, qos=1)
            step += 1

    def stop(self) -> None:
        self.stopping.set()
        self.client.loop_stop()
        self.client.disconnect()
