"""The gateway's downlink command queue against a real Mosquitto and the real gateway.

The device here is a script that publishes signed frames as a tracker does and watches
its downlink topic; the tracker itself answers in test_commands_firmware.py.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import Broker
from harness import (
    GatewayProcess,
    Publisher,
    count,
    frame_bytes,
    free_port,
    http_get,
    position,
    wait_until,
    write_config,
)
from paho.mqtt.enums import CallbackAPIVersion

from fieldtrack.gateway.store import commands as queue
from fieldtrack.gateway.store.sqlite import Device, Store
from fieldtrack.protocol import cose, frames, topics

KEY = bytes(range(40, 72))


class DownlinkWatch:
    """Every command published on ft/d/+, verified and decoded, with its arrival time."""

    def __init__(self, port: int) -> None:
        self.seen: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dl-%d" % port)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe("ft/d/+", 1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(lambda: self.client.is_connected(), 10, "the watcher to connect")
        time.sleep(0.2)  # the subscription in place

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: Any) -> None:
        _, device = topics.parse(msg.topic)
        mac, inner = cose.unwrap(bytes(msg.payload), 1000)
        assert mac is not None and mac.kid == device and mac.verify(KEY), "badly signed"
        frame = frames.decode_downlink(inner)
        if frame["type"] == "command":
            with self.lock:
                self.seen.append((time.monotonic(), device, frame))

    def cids(self, device: str) -> list[int]:
        with self.lock:
            return [f["cid"] for _, d, f in self.seen if d == device]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Rig:
    def __init__(self, tmp_path: Path, broker: Broker) -> None:
        self.http = free_port()
        self.db = tmp_path / "fieldtrack.db"
        store = Store(self.db)
        for name in ("van-1", "van-2"):
            store.put_device(Device(name, "vans", KEY, True))
        store.put_device(Device("van-off", "vans", KEY, False))
        store.close()
        self.config = write_config(
            tmp_path, broker.port, http={"enabled": True, "port": self.http},
            pipeline={"command_resend_s": 1.0, "receipt_delay_ms": 0},
            events={"enabled": False}, filters={"past_action": "off"})
        self.gateway = GatewayProcess(self.config, tmp_path / "gateway.log")
        self.watch = DownlinkWatch(broker.port)
        self.device = Publisher(broker.port, "van-1-sim")
        self.seq = 0

    def start(self, times: int = 1) -> None:
        self.gateway.start()
        self.gateway.wait_subscribed(times)

    def conn(self) -> sqlite3.Connection:
        """A connection of another program (a console): the store's file, nothing more."""
        return sqlite3.connect(self.db, isolation_level=None, timeout=30)

    def queue(self, device: str, kind: str, **kw: Any) -> queue.CommandRow:
        con = self.conn()
        try:
            return queue.queue_command(con, device, kind, source="test", **kw)
        finally:
            con.close()

    def get(self, device: str, cid: int) -> queue.CommandRow:
        con = self.conn()
        try:
            row = queue.get_command(con, device, cid)
        finally:
            con.close()
        assert row is not None
        return row

    def send(self, frame: dict[str, Any], device: str = "van-1") -> bytes:
        data = frame_bytes(frame, device, KEY)
        self.device.publish(device, data)
        return data

    def report(self) -> None:
        self.seq += 1
        self.send(position(self.seq, t0=int(time.time()) - 100))

    def ack(self, cid: int, result: str = "ok") -> bytes:
        self.seq += 1
        return self.send({"type": "command_ack", "boot": 1, "seq": self.seq,
                          "t": int(time.time()), "cid": cid, "result": result})

    def metric(self, name: str) -> float:
        _, body = http_get("http://127.0.0.1:%d/metrics" % self.http)
        m = re.search(r"^%s (\S+)$" % re.escape(name), body, re.M)
        return float(m.group(1)) if m else 0.0

    def close(self) -> None:
        self.device.close()
        self.watch.close()
        self.gateway.stop_quietly()


@pytest.fixture
def rig(tmp_path: Path, mosquitto_broker: Broker) -> Iterator[Rig]:
    r = Rig(tmp_path, mosquitto_broker)
    yield r
    r.close()


def test_a_command_goes_out_is_resent_while_unanswered_and_its_ack_settles_it_once(
        rig: Rig) -> None:
    rig.start()
    queued = time.monotonic()
    row = rig.queue("van-1", "locate")
    wait_until(lambda: rig.watch.cids("van-1") == [row.cid], 5, "the first send")
    assert rig.watch.seen[0][0] - queued < 1.5  # picked up within a second, then published
    assert rig.watch.seen[0][2]["exp"] == row.exp and rig.watch.seen[0][2]["kind"] == "locate"
    time.sleep(2.5)
    assert len(rig.watch.cids("van-1")) == 1  # never heard from: not sent again
    rig.report()  # the device is heard from: it gets the command again at once
    wait_until(lambda: len(rig.watch.cids("van-1")) == 2, 3, "a re-send on hearing it")
    wait_until(lambda: len(rig.watch.cids("van-1")) >= 4, 5, "re-sends while online")
    assert rig.get("van-1", row.cid).state == "sent"
    ack = rig.ack(row.cid)
    wait_until(lambda: rig.get("van-1", row.cid).state == "acked", 5, "the ack")
    settled = rig.get("van-1", row.cid)
    assert settled.result == "ok" and settled.tries >= 4
    sends = len(rig.watch.cids("van-1"))
    rig.device.publish("van-1", ack)  # the ack delivered again
    rig.report()
    time.sleep(2.5)
    assert len(rig.watch.cids("van-1")) <= sends + 1  # at most one was under way
    assert count(rig.db, "SELECT COUNT(*) FROM events WHERE kind='command_ack'") == 1
    wait_until(lambda: rig.metric('fieldtrack_commands_acked_total{result="ok"}') == 1.0, 5,
               "the acked metric")
    assert rig.metric("fieldtrack_commands_queued_total") == 1.0
    assert rig.metric("fieldtrack_commands_sent_total") >= 4.0
    assert rig.metric("fieldtrack_commands_pending") == 0.0


def test_a_command_nobody_answers_expires(rig: Rig) -> None:
    rig.start()
    row = rig.queue("van-1", "locate", ttl_s=2)
    wait_until(lambda: rig.get("van-1", row.cid).state == "expired", 6, "the expiry")
    expired = rig.get("van-1", row.cid)
    assert expired.result is None and expired.tries == 1 and "expiry" in (expired.reason or "")
    rig.report()  # heard from after its expiry: nothing more goes out
    time.sleep(1.5)
    assert rig.watch.cids("van-1") == [row.cid]
    wait_until(lambda: rig.metric("fieldtrack_commands_expired_total") == 1.0, 5,
               "the expired metric")
    assert count(rig.db, "SELECT COUNT(*) FROM events WHERE kind='command_expired' AND "
                 "json_extract(data, '$.cid') = %d" % row.cid) == 1


def test_a_disabled_device_gets_nothing(rig: Rig) -> None:
    with pytest.raises(queue.CommandError, match="disabled"):
        rig.queue("van-off", "locate")
    held = rig.queue("van-1", "locate")  # queued, then the device is disabled
    store = Store(rig.db)
    store.put_device(Device("van-1", "vans", KEY, False))
    store.close()
    other = rig.queue("van-2", "status")
    rig.start()
    wait_until(lambda: rig.watch.cids("van-2") == [other.cid], 5, "van-2's command")
    rig.report()  # a disabled device's frames are refused, and it is told nothing
    time.sleep(2.0)
    assert rig.watch.cids("van-1") == [] and rig.watch.cids("van-off") == []
    assert rig.get("van-1", held.cid).state == "queued"
    assert count(rig.db, "SELECT COUNT(*) FROM commands") == 2  # nothing for van-off


def test_a_gateway_killed_between_queue_and_ack_loses_no_command_and_reuses_no_cid(
        rig: Rig) -> None:
    rig.start()
    first = rig.queue("van-1", "status")
    wait_until(lambda: rig.get("van-1", first.cid).state == "sent", 5, "the send")
    rig.gateway.kill()  # kill -9: the command is sent, its ack not yet in
    second = rig.queue("van-1", "locate")  # queued while the gateway is down
    rig.ack(first.cid)  # the device answers while the gateway is down: the broker keeps it
    rig.start(times=2)
    wait_until(lambda: rig.get("van-1", first.cid).state == "acked", 10, "the held ack")
    wait_until(lambda: second.cid in rig.watch.cids("van-1"), 5, "the command queued meanwhile")
    rig.ack(second.cid)
    wait_until(lambda: rig.get("van-1", second.cid).state == "acked", 5, "the second ack")
    rig.gateway.terminate()
    rig.start(times=3)  # a clean restart: the cids go on from where they were
    third = rig.queue("van-1", "locate")
    assert (first.cid, second.cid, third.cid) == (1, 2, 3)
    wait_until(lambda: third.cid in rig.watch.cids("van-1"), 5, "the third command")
    assert count(rig.db, "SELECT COUNT(*) FROM events WHERE kind='command_ack'") == 2
    assert all(c in (1, 2, 3) for c in rig.watch.cids("van-1"))
