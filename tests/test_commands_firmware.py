"""Commands to the real tracker firmware (MicroPython unix port) through the real
Mosquitto and gateway, queued with ``fieldtrack command send``: sent once, acted on once,
acknowledged, and settled exactly once, also across a kill -9 of the gateway."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import Broker
from harness import GatewayProcess, count, free_port, http_get, wait_until, write_config
from paho.mqtt.enums import CallbackAPIVersion
from test_firmware_e2e import KEY, ROOT, tracker_config, write_drive

from fieldtrack.gateway.store import commands as queue
from fieldtrack.gateway.store.sqlite import Device, Store
from fieldtrack.protocol import cose, frames, topics
from fieldtrack.tools.cli import main

DEVICE = "van-sim"
FIXES = 1500


class Tracker:
    """The firmware driving a drive that ends now (its clock is the drive's GNSS time, so
    expiries an hour ahead of the gateway's clock are valid for it)."""

    def __init__(self, micropython: str, tmp_path: Path, port: int) -> None:
        drive = tmp_path / "drive.nmea"
        write_drive(drive, FIXES, start_t=int(time.time()) - FIXES)
        self.data = tmp_path / "flash"
        tracker_config(self.data, port)
        cfg = json.loads((self.data / "config.json").read_text())
        cfg.update({"sim_pace_ms": 20, "sim_chunk": 256})
        (self.data / "config.json").write_text(json.dumps(cfg))
        env = dict(os.environ, MICROPYPATH=".frozen:%s:%s" % (ROOT / "firmware", ROOT))
        self.proc = subprocess.Popen(
            [micropython, "-X", "heapsize=2m", str(ROOT / "firmware" / "main_sim.py"),
             str(self.data), str(drive), "300"], env=env, stdout=subprocess.DEVNULL)

    def reporting(self) -> dict[str, Any]:
        return dict(json.loads((self.data / "config.json").read_text())["reporting"])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Sends:
    """Counts the commands on the tracker's downlink topic (not its receipts)."""

    def __init__(self, port: int) -> None:
        self.n = 0
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sends-%d" % port)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topics.downlink(DEVICE), 1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: Any) -> None:
        _, inner = cose.unwrap(bytes(msg.payload), 1000)
        if frames.decode_downlink(inner)["type"] == "command":
            with self.lock:
                self.n += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def rig(micropython: str, tmp_path: Path, mosquitto_broker: Broker
        ) -> Iterator[tuple[GatewayProcess, Tracker, Path, int]]:
    http = free_port()
    config = write_config(tmp_path, mosquitto_broker.port, http={"enabled": True, "port": http},
                          filters={"past_action": "off"}, events={"enabled": False})
    store = Store(tmp_path / "fieldtrack.db")
    store.put_device(Device(DEVICE, "vans", KEY, True))
    store.close()
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    gw.start()
    gw.wait_subscribed()
    tracker = Tracker(micropython, tmp_path, mosquitto_broker.port)
    try:
        # positions stored: the tracker is online and its clock is set from GNSS
        wait_until(lambda: count(tmp_path / "fieldtrack.db") > 5, 30, "the tracker's fixes")
        yield gw, tracker, config, http
    finally:
        tracker.stop()
        gw.stop_quietly()


def _cli(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(["command", "-c", str(config), *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _metric(port: int, name: str) -> float:
    _, body = http_get("http://127.0.0.1:%d/metrics" % port)
    m = re.search(r"^%s (\S+)$" % re.escape(name), body, re.M)
    return float(m.group(1)) if m else 0.0


def test_the_tracker_acts_on_locate_and_set_config_and_acknowledges_them(
        rig: tuple[GatewayProcess, Tracker, Path, int], capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    gw, tracker, config, http = rig
    rc, out, err = _cli(capsys, config, "send", DEVICE, "locate", "--wait", "30")
    assert (rc, out) == (0, "1\nok\n"), err
    rc, out, err = _cli(capsys, config, "send", DEVICE, "config", "moving.min_period_s=2",
                        "--wait", "30")
    assert (rc, out) == (0, "2\nok\n"), err
    assert tracker.reporting()["moving"]["min_period_s"] == 2
    rc, out, err = _cli(capsys, config, "send", DEVICE, "config", "colour=red", "--wait", "30")
    assert (rc, out) == (1, "3\n")
    assert "cid 3 rejected: colour: not a setting" in err and "Traceback" not in err
    rc, out, _ = _cli(capsys, config, "list", DEVICE, "--json")
    rows = {r["cid"]: r for r in json.loads(out)}
    assert [(rows[c]["state"], rows[c]["result"]) for c in (1, 2, 3)] == [
        ("acked", "ok"), ("acked", "ok"), ("acked", "rejected")]
    assert all(rows[c]["tries"] == 1 for c in (1, 2, 3))  # answered at once: no re-send
    db = tmp_path / "fieldtrack.db"
    assert count(db, "SELECT COUNT(*) FROM events WHERE kind='command_ack'") == 3
    wait_until(lambda: _metric(http, 'fieldtrack_commands_acked_total{result="ok"}') == 2.0, 5,
               "the acked metric")
    assert _metric(http, 'fieldtrack_commands_acked_total{result="rejected"}') == 1.0
    assert _metric(http, "fieldtrack_commands_sent_total") == 3.0


def test_a_gateway_killed_between_send_and_ack_settles_it_once_and_the_tracker_acts_once(
        rig: tuple[GatewayProcess, Tracker, Path, int], mosquitto_broker: Broker,
        tmp_path: Path) -> None:
    gw, tracker, config, _ = rig
    db = tmp_path / "fieldtrack.db"
    sends = Sends(mosquitto_broker.port)
    try:
        time.sleep(0.5)
        statuses = count(db, "SELECT COUNT(*) FROM events WHERE kind='status'")
        con = queue.sqlite3.connect(db, isolation_level=None, timeout=30)
        row = queue.queue_command(con, DEVICE, "status", source="test")
        wait_until(lambda: sends.n >= 1, 5, "the command on the downlink")
        gw.kill()  # at once: the tracker acts and answers while the gateway is dead
        time.sleep(1.0)
        later = queue.queue_command(con, DEVICE, "locate", source="test")  # while down
        gw.start()
        gw.wait_subscribed(2)
        wait_until(lambda: all(queue.get_command(con, DEVICE, c).state == "acked"  # type: ignore[union-attr]
                               for c in (row.cid, later.cid)), 30, "both acks")
        time.sleep(2.0)  # any re-sent copy has had time to reach the tracker
        acks = [json.loads(d) for (d,) in con.execute(
            "SELECT data FROM events WHERE kind='command_ack' ORDER BY id")]
        assert [a["cid"] for a in acks] == [row.cid, later.cid]  # each once
        assert all(a["result"] == "ok" for a in acks)
        # the tracker made exactly one status report for it, however often it was sent
        assert count(db, "SELECT COUNT(*) FROM events WHERE kind='status'") == statuses + 1
        assert (row.cid, later.cid) == (1, 2)
        con.close()
    finally:
        sends.close()
