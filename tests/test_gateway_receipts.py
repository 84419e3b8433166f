"""Receipts end to end: a real Mosquitto, the gateway as a process, a device client.

The device client is what a tracker does on the wire: it publishes signed frames on
its uplink topic and listens on its own downlink topic, verifying every receipt with
its key. Receipts must cover exactly the keys the store holds, come again for a
resent frame, never come for a forged one, and never before the commit.
"""

from __future__ import annotations

import queue
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import Broker
from harness import (
    GatewayProcess,
    count,
    frame_bytes,
    free_port,
    position,
    wait_until,
    write_config,
)
from paho.mqtt.enums import CallbackAPIVersion

from fieldtrack.gateway.store.sqlite import Device, Store
from fieldtrack.protocol import cose, fast, frames, topics

KEY = bytes(range(32))
QUIET_S = 1.5  # how long "no receipt" is watched for


class DeviceClient:
    """A device on the broker: publishes on ft/u/<id>, collects what ft/d/<id> brings."""

    def __init__(self, port: int, device: str, key: bytes | None) -> None:
        self.device, self.key = device, key
        self.inbox: queue.Queue[bytes] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dev-" + device,
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, msg: self.inbox.put(bytes(msg.payload))
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client.on_subscribe = lambda *args: subscribed.put(True)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(topics.downlink(device), qos=1)
        subscribed.get(timeout=10)

    def send(self, payload: bytes) -> None:
        info = self.client.publish(topics.uplink(self.device), payload, qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()

    def receipts(self, timeout: float = QUIET_S, quiet: float = 0.3) -> list[tuple[int, int, int]]:
        """(boot, seq, n) of the verified receipts that come: the first within ``timeout``,
        each further one within ``quiet`` of the one before."""
        out = []
        wait = timeout
        while True:
            try:
                data = self.inbox.get(timeout=wait)
            except queue.Empty:
                return out
            out.append(self.verify(data))
            wait = quiet

    def verify(self, data: bytes) -> tuple[int, int, int]:
        mac, inner = cose.unwrap(data, frames.MAX_FRAME_BYTES)
        if self.key is not None:
            assert mac is not None and mac.kid == self.device and mac.verify(self.key)
        else:
            assert mac is None
        receipt = frames.decode_downlink(inner)
        assert receipt["type"] == "receipt"
        return receipt["boot"], receipt["seq"], receipt["n"]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def covered(runs: list[tuple[int, int, int]]) -> set[tuple[int, int]]:
    return {(boot, seq + i) for boot, seq, n in runs for i in range(n)}


def stored(db: Path, device: str) -> set[tuple[int, int]]:
    con = sqlite3.connect(db, timeout=30)
    try:
        return {(b, s) for b, s in con.execute(
            "SELECT boot, seq FROM positions WHERE device = ?", (device,))}
    finally:
        con.close()


@pytest.fixture
def gateway(tmp_path: Path, mosquitto_broker: Broker, request: pytest.FixtureRequest) -> Any:
    """A running gateway; config sections may come as the fixture's (indirect) param."""
    sections = getattr(request, "param", {})
    store = Store(tmp_path / "fieldtrack.db")
    store.put_device(Device("van-1", "vans", KEY, True))
    store.put_device(Device("open-1", "phones", None, True))
    store.close()
    gw = GatewayProcess(write_config(tmp_path, mosquitto_broker.port, **sections),
                        tmp_path / "gateway.log")
    gw.start()
    try:
        gw.wait_subscribed()
        yield gw
    finally:
        gw.stop_quietly()


@pytest.fixture
def van(mosquitto_broker: Broker, gateway: GatewayProcess) -> Any:
    client = DeviceClient(mosquitto_broker.port, "van-1", KEY)
    yield client
    client.close()


def batch(seq: int, n: int) -> dict[str, Any]:
    fixes = [{k: v for k, v in position(seq + i).items() if k not in ("type", "boot", "seq")}
             for i in range(n)]
    return {"type": "batch", "boot": 1, "seq": seq, "fixes": fixes}


def test_receipts_cover_exactly_the_stored_keys(tmp_path: Path, van: DeviceClient) -> None:
    for seq in range(5):
        van.send(frame_bytes(position(seq), "van-1", KEY))
    van.send(frame_bytes(batch(5, 60), "van-1", KEY))
    expected = {(1, s) for s in range(65)}
    got: list[tuple[int, int, int]] = []
    deadline = time.monotonic() + 20
    while covered(got) != expected and time.monotonic() < deadline:
        got += van.receipts(1.0)
    assert covered(got) == expected == stored(tmp_path / "fieldtrack.db", "van-1")
    assert sum(n for _, _, n in got) == 65  # no record confirmed twice


def test_a_resent_frame_gets_a_receipt_again(tmp_path: Path, van: DeviceClient) -> None:
    frame = frame_bytes(position(7), "van-1", KEY)
    van.send(frame)
    assert van.receipts(10) == [(1, 7, 1)]
    van.send(frame)  # the device missed the receipt and sends again: a duplicate
    assert van.receipts(10) == [(1, 7, 1)]
    assert count(tmp_path / "fieldtrack.db") == 1


def test_a_forged_frame_gets_no_receipt(tmp_path: Path, van: DeviceClient) -> None:
    van.send(frame_bytes(position(100), "van-1", bytes(32)))  # a key that is not van-1's
    van.send(frame_bytes(position(101), "van-1", KEY))
    # One connection's frames are handled in order: the forged one came first.
    wait_until(lambda: count(tmp_path / "fieldtrack.db",
                             "SELECT COUNT(*) FROM rejects WHERE reason = 'bad_mac'") == 1,
               what="the forged frame's reject")
    assert van.receipts(10) == [(1, 101, 1)]


def test_no_receipt_before_the_commit(tmp_path: Path, van: DeviceClient) -> None:
    db = tmp_path / "fieldtrack.db"
    lock = sqlite3.connect(db, timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the gateway's commit waits for the lock
    try:
        van.send(frame_bytes(position(3), "van-1", KEY))
        assert van.receipts() == []
        assert stored(db, "van-1") == set()
    finally:
        lock.execute("COMMIT")
        lock.close()
    data = van.inbox.get(timeout=20)
    assert stored(db, "van-1") == {(1, 3)}  # already stored when the receipt arrived
    assert van.verify(data) == (1, 3, 1)


def test_a_device_without_a_key_gets_plain_receipts(
        mosquitto_broker: Broker, gateway: GatewayProcess) -> None:
    phone = DeviceClient(mosquitto_broker.port, "open-1", None)
    try:
        phone.send(fast.encode(position(4)))
        assert phone.receipts(10) == [(1, 4, 1)]
    finally:
        phone.close()


@pytest.mark.parametrize("gateway", [{"pipeline": {"receipts": False}}], indirect=True)
def test_receipts_can_be_turned_off(tmp_path: Path, van: DeviceClient) -> None:
    van.send(frame_bytes(position(1), "van-1", KEY))
    wait_until(lambda: count(tmp_path / "fieldtrack.db") == 1, what="the position stored")
    assert van.receipts() == []


HTTP_PORT = free_port()


@pytest.mark.parametrize("gateway", [{"http": {"enabled": True, "port": HTTP_PORT}}],
                         indirect=True)
def test_receipts_sent_are_counted(van: DeviceClient) -> None:
    van.send(frame_bytes(position(1), "van-1", KEY))
    van.send(frame_bytes(position(9), "van-1", KEY))  # not adjacent: a receipt of its own
    got = van.receipts(10)
    assert sorted(got) == [(1, 1, 1), (1, 9, 1)]
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % HTTP_PORT, timeout=5) as r:
        text = r.read().decode()
    assert "fieldtrack_receipts_sent_total 2.0" in text
