"""The tracker's MQTT client, under the real MicroPython, against a real Mosquitto."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from conftest import Broker
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]

ROUND_TRIP = """
import json, time, mqtt
got, acks = [], []
c = mqtt.MQTTClient("mp-test", "127.0.0.1", %d, keepalive=5)
c.on_message = lambda t, p: got.append([t.decode(), p.decode()])
c.on_ack = acks.append
c.connect()
c.subscribe("ft/d/mp-test", 1)
time.sleep(0.2); c.poll()
pids = [c.publish("ft/d/mp-test", "hello %%d" %% i, qos=1) for i in range(20)]
c.publish("ft/d/mp-test", "qos0", qos=0)
deadline = time.time() + 10
while (len(acks) < 20 or len(got) < 21) and time.time() < deadline:
    c.poll(); time.sleep(0.01)
c.disconnect()
print(json.dumps({"got": got, "acks": acks, "pids": pids, "inflight": len(c.inflight)}))
"""

WILL = """
import time, mqtt
c = mqtt.MQTTClient("mp-will", "127.0.0.1", %d, keepalive=2,
                    will=("ft/s/mp-will", b"\\x00", 1, True))
c.connect()
c.publish("ft/s/mp-will", b"\\x01", qos=1, retain=True)
for _ in range(20):
    c.poll(); time.sleep(0.02)
print("connected")
time.sleep(60)
"""


def _env() -> dict[str, str]:
    return dict(os.environ, MICROPYPATH=".frozen:%s:%s" % (ROOT / "firmware", ROOT))


def test_publish_subscribe_and_acknowledgements(micropython: str,
                                                mosquitto_broker: Broker) -> None:
    proc = subprocess.run([micropython, "-c", ROUND_TRIP % mosquitto_broker.port],
                          capture_output=True, text=True, timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert sorted(result["acks"]) == sorted(result["pids"])
    assert result["inflight"] == 0
    assert [p for _, p in result["got"]] == ["hello %d" % i for i in range(20)] + ["qos0"]


def test_last_will_marks_the_tracker_offline(micropython: str, mosquitto_broker: Broker) -> None:
    seen: list[bytes] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watcher")
    sub.on_message = lambda c, u, m: seen.append(m.payload)
    sub.connect("127.0.0.1", mosquitto_broker.port)
    sub.subscribe("ft/s/mp-will", 1)
    sub.loop_start()
    proc = subprocess.Popen([micropython, "-c", WILL % mosquitto_broker.port], env=_env(),
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
        deadline = time.time() + 5
        while b"\x01" not in seen and time.time() < deadline:
            time.sleep(0.05)
        proc.kill()  # the tracker loses power: no DISCONNECT, the broker sends the will
        deadline = time.time() + 10
        while (not seen or seen[-1] != b"\x00") and time.time() < deadline:
            time.sleep(0.05)
        assert seen[-1] == b"\x00" and b"\x01" in seen
    finally:
        proc.kill()
        proc.wait()
        sub.loop_stop()
        sub.disconnect()
