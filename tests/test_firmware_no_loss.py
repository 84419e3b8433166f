"""Nothing lost, nothing twice: the MicroPython tracker killed with -9 offline and online,
the broker killed with -9 while records wait for receipts, the state file cut between
write and rename or lost, a captured command replayed after a reset.

The tracker runs the real firmware on the unix port; the broker is a real Mosquitto, the
gateway the real one with a SQLite store, whose receipts let the tracker delete records.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import Broker
from harness import GatewayProcess, UplinkWatch, count, wait_until, write_config
from paho.mqtt.enums import CallbackAPIVersion
from test_firmware_e2e import KEY, ROOT, run_tracker, tracker_config, write_drive

from fieldtrack.gateway.store.sqlite import Device, Store
from fieldtrack.protocol import cose, fast, topics

DEVICE = "van-sim"
DRIVE_T0 = 1_767_261_600  # the device's clock is the drive's GNSS time (city_track)
ERA_BASE = 1 << 24


def _env() -> dict[str, str]:
    return dict(os.environ, MICROPYPATH=".frozen:%s:%s" % (ROOT / "firmware", ROOT))


def gateway(tmp_path: Path, broker: Broker) -> GatewayProcess:
    """The gateway with the filters that judge a replayed drive off (every run of the
    simulated tracker drives the same file again) and room for many boots."""
    off = {name + "_action": "off" for name in ("past", "duplicate", "teleport", "future")}
    config = write_config(tmp_path, broker.port, filters=off, events={"enabled": False},
                          pipeline={"max_boot_lag": 1000})
    store = Store(tmp_path / "fieldtrack.db")
    store.put_device(Device(DEVICE, "vans", KEY, True))
    store.close()
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    gw.start()
    gw.wait_subscribed()
    return gw


def configure(data: Path, port: int, **extra: object) -> None:
    """A provisioned tracker (its first state: boot 0), tracing what it puts on flash."""
    tracker_config(data, port)
    (data / "state.json").write_text('{"boot": 0, "cid": 0}')
    cfg = json.loads((data / "config.json").read_text())
    cfg.update({"sim_trace": True, "sim_pace_ms": 3, "sim_chunk": 256, **extra})
    (data / "config.json").write_text(json.dumps(cfg))


def start(micropython: str, data: Path, nmea_file: Path,
          seconds: int = 60) -> subprocess.Popen[str]:
    return subprocess.Popen([micropython, "-X", "heapsize=2m",
                             str(ROOT / "firmware" / "main_sim.py"), str(data), str(nmea_file),
                             str(seconds)],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def made(out: str, into: dict[int, int]) -> None:
    """What a traced run said it had on flash: boot -> records 0 .. n - 1."""
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "made":
            boot, n = int(parts[1]), int(parts[2])
            into[boot] = max(into.get(boot, 0), n)


def stored(db: Path) -> dict[int, list[int]]:
    """boot -> sorted seqs in the store (positions and events), duplicates kept."""
    con = sqlite3.connect(db)
    out: dict[int, list[int]] = {}
    for table in ("positions", "events"):
        for boot, seq in con.execute("SELECT boot, seq FROM %s WHERE device = ?" % table,
                                     (DEVICE,)):
            out.setdefault(boot, []).append(seq)
    con.close()
    return {b: sorted(s) for b, s in out.items()}


def assert_all_once(db: Path, expected: dict[int, int]) -> None:
    """Every record each boot made is in the store exactly once, and nothing else is."""
    have = stored(db)
    for boot, n in expected.items():
        seqs = have.get(boot, [])
        assert len(seqs) == len(set(seqs)), "boot %d: stored twice" % boot
        assert set(range(n)) <= set(seqs), "boot %d: lost %s" % (
            boot, sorted(set(range(n)) - set(seqs)))
        # Records made in the step a kill cut short are on flash without their trace
        # line: a few more may come, but never a hole.
        assert seqs == list(range(len(seqs))) and len(seqs) <= n + 8
    assert set(have) <= set(expected)


def drained(db: Path, expected: dict[int, int]) -> Callable[[], bool]:
    return lambda: all(len(stored(db).get(b, [])) >= n for b, n in expected.items())


def wait_drained(db: Path, expected: dict[int, int]) -> None:
    try:
        wait_until(drained(db, expected), what="every record made")
    except AssertionError:
        have = stored(db)
        con = sqlite3.connect(db)
        rejects = con.execute("SELECT reason, detail FROM rejects LIMIT 5").fetchall()
        con.close()
        raise AssertionError("not stored: %s; stored: %s; rejects: %s" % (
            {b: sorted(set(range(n)) - set(have.get(b, []))) for b, n in expected.items()
             if len(have.get(b, [])) < n}, {b: len(v) for b, v in have.items()},
            rejects)) from None


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_offline_and_online_loses_and_duplicates_nothing(
        micropython: str, tmp_path: Path, mosquitto_broker: Broker, seed: int) -> None:
    rng = random.Random(seed)
    write_drive(tmp_path / "drive.nmea", 400)
    (tmp_path / "empty.nmea").write_text("")
    data = tmp_path / "flash"
    configure(data, mosquitto_broker.port)
    gw = gateway(tmp_path, mosquitto_broker)
    expected: dict[int, int] = {}
    try:
        for _ in range(6):
            down = data / "network.down"
            if rng.random() < 0.5:
                down.write_text("")  # out of coverage for this run
            elif down.exists():
                down.unlink()
            proc = start(micropython, data, tmp_path / "drive.nmea")
            time.sleep(rng.uniform(0.5, 1.6))
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=10)
            assert "Traceback" not in err, err
            made(out, expected)
        (data / "network.down").unlink(missing_ok=True)
        final = run_tracker(micropython, data, tmp_path / "empty.nmea", 60)
        assert final["left"] == 0
        expected[final["boot"]] = final["seq"]
        db = tmp_path / "fieldtrack.db"
        wait_drained(db, expected)
        assert sum(expected.values()) > 200
        assert_all_once(db, expected)
        print("tracker kills: %d records made in %d boots, all stored once"
              % (sum(expected.values()), len(expected)))
        assert count(db, "SELECT COUNT(*) FROM rejects") == 0
    finally:
        gw.stop_quietly()


@pytest.mark.slow
@pytest.mark.parametrize("options", [{"persistence": False},
                                     {"persistence": True, "autosave_interval": 3600}],
                         ids=["persistence-off", "persistence-late"])
def test_a_broker_killed_with_unconfirmed_records_gets_them_again(
        micropython: str, tmp_path: Path, mosquitto_factory: Callable[..., Broker],
        options: dict[str, object]) -> None:
    broker = mosquitto_factory(**options)
    write_drive(tmp_path / "drive.nmea", 300)
    data = tmp_path / "flash"
    configure(data, broker.port, sim_pace_ms=0)
    gw = gateway(tmp_path, broker)
    watch = UplinkWatch(broker.port, DEVICE)
    db = tmp_path / "fieldtrack.db"
    try:
        gw.terminate()  # its session stays: the broker queues the frames for it
        proc = start(micropython, data, tmp_path / "drive.nmea", 60)
        wait_until(lambda: watch.seen > 5, what="frames through the broker")
        time.sleep(1.0)  # the drive is recorded and published: PUBACKed, no receipt
        broker.kill()  # everything it acknowledged and queued is gone
        assert count(db) == 0
        broker.start()
        gw.start()
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err[-2000:]
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["left"] == 0
        expected = {summary["boot"]: summary["seq"]}
        wait_drained(db, expected)
        assert_all_once(db, expected)
        assert expected[summary["boot"]] > 150
        print("broker kill (%s): %d records made, all stored once"
              % (options, expected[summary["boot"]]))
    finally:
        watch.close()
        gw.stop_quietly()


STATE_WRITER = """
import sys, app
i = 1
while True:
    app._write_json(%r, {"boot": i, "cid": 0})
    sys.stdout.write("%%d\\n" %% i)
    i += 1
"""


@pytest.mark.parametrize("seed", [1, 2])
def test_the_state_file_survives_kill_9_at_any_point_of_a_write(
        micropython: str, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "state.json"
    for _ in range(10):
        proc = subprocess.Popen([micropython, "-c", STATE_WRITER % str(path)], env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.3, 0.8))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
        if not out.split():
            continue  # killed while loading
        last = int(out.split()[-1])
        state = json.loads(path.read_text())  # never missing, never torn
        assert state["boot"] in (last, last + 1)


def boot_of(micropython: str, data: Path, nmea_file: Path) -> int:
    (data / "network.down").write_text("")
    return run_tracker(micropython, data, nmea_file, 1)["boot"]


def test_a_crash_between_write_and_rename_keeps_the_old_counter(
        micropython: str, tmp_path: Path) -> None:
    (tmp_path / "empty.nmea").write_text("")
    data = tmp_path / "flash"
    tracker_config(data, 9)
    (data / "state.json").write_text(json.dumps({"boot": 7, "cid": 3}))
    (data / "state.json.tmp").write_text('{"boot": 8, "ci')  # the new file, cut short
    assert boot_of(micropython, data, tmp_path / "empty.nmea") == 8
    assert json.loads((data / "state.json").read_text()) == {"boot": 8, "cid": 3}


@pytest.mark.parametrize("damage", ["erased", "corrupt"])
def test_a_lost_state_starts_a_random_era_then_counts_on(
        micropython: str, tmp_path: Path, damage: str) -> None:
    (tmp_path / "empty.nmea").write_text("")
    eras = []
    for device in range(3):
        data = tmp_path / ("flash%d" % device)
        tracker_config(data, 9)
        if damage == "corrupt":
            (data / "state.json").write_text('{"boot": 12, "cid"')
        first = boot_of(micropython, data, tmp_path / "empty.nmea")
        assert ERA_BASE <= first < 1 << 31
        assert boot_of(micropython, data, tmp_path / "empty.nmea") == first + 1
        eras.append(first)
    assert len(set(eras)) == 3  # random: three devices, three eras


def _command(cid: int, kind: str, exp: int) -> bytes:
    frame = {"type": "command", "cid": cid, "kind": kind, "exp": exp, "args": {}}
    return cose.sign(fast.encode(frame), KEY, DEVICE)


def _acks(db: Path) -> dict[int, str]:
    con = sqlite3.connect(db)
    out = {json.loads(d)["cid"]: json.loads(d)["result"] for (d,) in con.execute(
        "SELECT data FROM events WHERE kind = 'command_ack'")}
    con.close()
    return out


@pytest.mark.slow
def test_a_replayed_reboot_is_refused_after_the_reset_and_after_a_lost_state(
        micropython: str, tmp_path: Path, mosquitto_broker: Broker) -> None:
    write_drive(tmp_path / "drive.nmea", 2000)
    data = tmp_path / "flash"
    configure(data, mosquitto_broker.port, sim_pace_ms=10)
    gw = gateway(tmp_path, mosquitto_broker)
    db = tmp_path / "fieldtrack.db"
    op = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="operator")
    op.connect("127.0.0.1", mosquitto_broker.port)
    op.loop_start()

    def send(payload: bytes) -> None:
        op.publish(topics.downlink(DEVICE), payload, qos=1).wait_for_publish(5)

    def running(boot_positions: int) -> subprocess.Popen[str]:
        proc = start(micropython, data, tmp_path / "drive.nmea", 120)
        wait_until(lambda: count(db) > boot_positions, what="positions of the new boot")
        return proc

    reboot = _command(5, "reboot", DRIVE_T0 + 3600)
    proc = running(0)
    try:
        send(reboot)
        proc.wait(20)  # it obeyed: a restart
        proc = running(count(db))
        send(reboot)  # captured and replayed after the reset: the cid is remembered
        send(_command(6, "reboot", 0))  # no expiry: refused
        send(_command(7, "reboot", DRIVE_T0 + 3 * 86400))  # too far ahead: refused
        wait_until(lambda: {6, 7} <= set(_acks(db)), what="the refusals")
        assert proc.poll() is None
        proc.kill()
        proc.wait()
        (data / "state.json").unlink()  # the state is lost: executed cids forgotten
        proc = running(count(db))
        send(_command(4, "reboot", DRIVE_T0 - 60))  # captured long ago: expired
        wait_until(lambda: 4 in _acks(db), what="the expired answer")
        time.sleep(0.5)
        assert proc.poll() is None
        acks = _acks(db)
        assert (acks[4], acks[5], acks[6], acks[7]) == ("expired", "ok", "rejected", "rejected")
        con = sqlite3.connect(db)
        boots = [b for (b,) in con.execute("SELECT DISTINCT boot FROM events ORDER BY boot")]
        con.close()
        assert boots[:2] == [1, 2] and boots[-1] >= ERA_BASE  # the lost state: a new era
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        op.loop_stop()
        op.disconnect()
        gw.stop_quietly()
