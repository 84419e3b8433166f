"""The shared fixtures work: MicroPython, Mosquitto (with persistence), VictoriaMetrics."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
from conftest import Broker, VictoriaMetrics, run_micropython
from influxdb_client import InfluxDBClient, Point
from influxdb_client.client.write_api import SYNCHRONOUS
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def test_micropython_runs_a_script(micropython: str) -> None:
    proc = run_micropython("import sys; print(sys.implementation.name, 1 + 1)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["micropython", "2"]


def test_micropython_imports_the_repo_from_any_directory(micropython: str, tmp_path: Path) -> None:
    proc = run_micropython("import asyncio, protocol; print(protocol.__name__)", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "protocol"


class Subscriber:
    """An MQTT v5 client that records what arrives on one topic."""

    def __init__(self, broker: Broker, topic: str, client_id: str = "sub") -> None:
        self.received: list[bytes] = []
        self.arrived = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.broker, self.topic = broker, topic

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.received.append(bytes(msg.payload))
        self.arrived.set()

    def connect(self) -> None:
        """A persistent session. Mosquitto 2.0.11 keeps a session across its own restart
        only if it was created with clean_start=False (clean_start=True + an expiry
        interval survives a disconnect but not a restart)."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(self.broker.host, self.broker.port, clean_start=False,
                            properties=props)
        self.client.loop_start()
        info = self.client.subscribe(self.topic, qos=1)
        assert info[0] == mqtt.MQTT_ERR_SUCCESS

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(broker: Broker, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_mqtt_qos1_round_trip(mosquitto_broker: Broker) -> None:
    sub = Subscriber(mosquitto_broker, "t/infra")
    sub.connect()
    time.sleep(0.2)  # let the SUBACK arrive before publishing
    try:
        publish(mosquitto_broker, "t/infra", b"\xa1\x00\x01")
        assert sub.arrived.wait(5)
        assert sub.received == [b"\xa1\x00\x01"]
    finally:
        sub.close()


def test_broker_restart_keeps_queued_messages(mosquitto_factory: Callable[..., Broker]) -> None:
    broker = mosquitto_factory(max_queued_messages=100)
    sub = Subscriber(broker, "t/queued", client_id="persistent")
    sub.connect()
    time.sleep(0.2)
    sub.close()
    publish(broker, "t/queued", b"while away")
    broker.stop()
    broker.start()
    sub = Subscriber(broker, "t/queued", client_id="persistent")
    sub.connect()
    try:
        assert sub.arrived.wait(5), "the queued message did not survive the restart"
        assert sub.received == [b"while away"]
    finally:
        sub.close()


def export(vm: VictoriaMetrics, series: str) -> list[dict[str, object]]:
    query = urllib.parse.urlencode({"match[]": series})
    with urllib.request.urlopen("%s/api/v1/export?%s" % (vm.url, query), timeout=5) as r:
        return [json.loads(line) for line in r.read().splitlines() if line.strip()]


def test_victoria_metrics_takes_influx_writes(victoria_metrics: VictoriaMetrics) -> None:
    t_ns = 1_700_000_000_123_000_000
    with InfluxDBClient(url=victoria_metrics.url, token="unused", org="fieldtrack") as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write("positions", record=Point("van").tag("device", "d1").field("speed", 12.5)
                    .time(t_ns))
    deadline = time.monotonic() + 10
    rows: list[dict[str, object]] = []
    while not rows and time.monotonic() < deadline:
        victoria_metrics.flush()
        rows = export(victoria_metrics, "van_speed")
        time.sleep(0.1)
    assert len(rows) == 1
    assert rows[0]["values"] == [12.5]
    assert rows[0]["timestamps"] == [t_ns // 1_000_000]
    assert rows[0]["metric"] == {"__name__": "van_speed", "device": "d1"}
