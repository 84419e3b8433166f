"""Downlink commands to the MicroPython tracker: checked, applied, acknowledged once."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from conftest import Broker
from harness import count, wait_until
from paho.mqtt.enums import CallbackAPIVersion
from test_firmware_e2e import KEY, ROOT, start_gateway, tracker_config, write_drive

from fieldtrack.protocol import cose, fast, topics

DRIVE_T0 = 1_767_261_600  # the device's clock: the drive's GNSS time (city_track)
FRESH = DRIVE_T0 + 3600  # an expiry within the day ahead of that clock


def command(cid: int, kind: str, key: bytes | None = KEY, exp: int = FRESH,
            **args: object) -> bytes:
    frame = {"type": "command", "cid": cid, "kind": kind, "exp": exp, "args": args}
    payload = fast.encode(frame)
    return cose.sign(payload, key, "van-sim") if key is not None else payload


def test_commands_are_verified_applied_and_acknowledged(micropython: str, tmp_path: Path,
                                                        mosquitto_broker: Broker) -> None:
    write_drive(tmp_path / "drive.nmea", 600)
    data = tmp_path / "flash"
    tracker_config(data, mosquitto_broker.port)
    cfg = json.loads((data / "config.json").read_text())
    cfg["sim_pace_ms"] = 15
    cfg["sim_chunk"] = 256
    (data / "config.json").write_text(json.dumps(cfg))
    gw = start_gateway(tmp_path, mosquitto_broker)
    online: list[bytes] = []
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="operator")
    pub.on_message = lambda c, u, m: online.append(m.payload)
    pub.connect("127.0.0.1", mosquitto_broker.port)
    pub.subscribe(topics.presence("van-sim"), 1)
    pub.loop_start()
    env = dict(os.environ, MICROPYPATH=".frozen:%s:%s" % (ROOT / "firmware", ROOT))
    tracker = subprocess.Popen(
        [micropython, "-X", "heapsize=2m", str(ROOT / "firmware" / "main_sim.py"), str(data),
         str(tmp_path / "drive.nmea"), "30"], env=env, stdout=subprocess.PIPE, text=True)
    db = tmp_path / "fieldtrack.db"
    try:
        wait_until(lambda: topics.ONLINE in online, what="the tracker online")
        down = topics.downlink("van-sim")
        sends = [
            command(5, "set_config", config={"moving.min_period_s": 2}),
            command(6, "set_config", config={"moving.min_period_s": 0}),
            command(7, "set_config", config={"colour": "red"}),
            command(5, "reboot"),  # a replayed command id: ignored
            command(8, "reboot", key=bytes(32)),  # forged: ignored
            command(9, "reboot", key=None),  # unsigned: ignored
            command(10, "locate"),
            # other downlink frames: ignored, never answered
            cose.sign(fast.encode({"type": "status", "boot": 1, "seq": 9, "t": FRESH}),
                      KEY, "van-sim"),
            cose.sign(bytes([0x84, 0x07, 1, 2, 3]), KEY, "van-sim"),  # an unknown type
            cose.sign(bytes([0x84, 0x06, 1, 0, 0]), KEY, "van-sim"),  # a receipt of 0
            b"\xff\x00 not cbor",
        ]
        for payload in sends:
            pub.publish(down, payload, qos=1).wait_for_publish(5)
            time.sleep(0.2)
        wait_until(lambda: count(db, "SELECT COUNT(*) FROM events WHERE kind='command_ack'")
                   >= 4, timeout=30, what="four acks")
        time.sleep(1.0)
        con = sqlite3.connect(db)
        acks = {json.loads(d)["cid"]: json.loads(d) for (d,) in con.execute(
            "SELECT data FROM events WHERE kind='command_ack'")}
        assert sorted(acks) == [5, 6, 7, 10]
        assert acks[5]["result"] == "ok"
        assert acks[6]["result"] == "rejected" and "min_period_s" in acks[6]["reason"]
        assert acks[7]["result"] == "rejected" and "colour" in acks[7]["reason"]
        assert acks[10]["result"] == "ok"
        saved = json.loads((data / "config.json").read_text())
        assert saved["reporting"]["moving"]["min_period_s"] == 2
        assert tracker.poll() is None  # the forged and unsigned reboots were not obeyed
    finally:
        tracker.kill()
        tracker.wait()
        pub.loop_stop()
        pub.disconnect()
        gw.stop_quietly()
