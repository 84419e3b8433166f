"""Nothing lost end to end, under faults that pile up: the MicroPython tracker drives
and reports while the broker, either gateway process and the tracker itself are killed
with -9 in a random order, and the tracker drops out of coverage now and then.

Every record the tracker wrote to flash must end in the store exactly once. The tracker
deletes a record only when the gateway's receipt says it is stored, so neither the
broker's lost queue nor a gateway killed between commit and acknowledgement may cost
a record or store one twice. The faults come from a seeded schedule, several seeds.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Broker
from harness import GatewayProcess, wait_until
from test_firmware_e2e import run_tracker, write_drive
from test_firmware_no_loss import assert_all_once, configure, gateway, made, start, wait_drained

FAULTS = ("broker", "gateway", "pipeline", "tracker", "coverage")


def _restart_gateway(gw: GatewayProcess) -> None:
    assert gw.proc is not None
    gw.proc.wait(20)  # the MQTT process ends when its pipeline process dies
    gw.start()


def _kill_pipeline(gw: GatewayProcess) -> bool:
    pid = gw.pipeline_pid()
    if pid is None:  # still starting: nothing to kill this time
        return False
    os.kill(pid, signal.SIGKILL)
    return True


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_records_survive_broker_gateway_and_tracker_kills_together(
        micropython: str, tmp_path: Path, mosquitto_factory: Callable[..., Broker],
        seed: int) -> None:
    rng = random.Random(seed)
    # The broker as shipped: persistence on, a late snapshot, so a kill loses its queue.
    broker = mosquitto_factory(persistence=True, autosave_interval=60)
    write_drive(tmp_path / "drive.nmea", 500)
    (tmp_path / "empty.nmea").write_text("")
    data = tmp_path / "flash"
    configure(data, broker.port, sim_pace_ms=4)
    gw = gateway(tmp_path, broker)
    db = tmp_path / "fieldtrack.db"
    expected: dict[int, int] = {}
    done: list[str] = []
    tracker: subprocess.Popen[str] | None = None
    try:
        tracker = start(micropython, data, tmp_path / "drive.nmea", 120)
        for _ in range(8):
            time.sleep(rng.uniform(0.4, 1.5))
            fault = rng.choice(FAULTS)
            if fault == "broker":
                broker.kill()
                time.sleep(rng.uniform(0.1, 1.0))
                broker.start()
            elif fault == "gateway":
                gw.kill()
                time.sleep(rng.uniform(0.1, 1.0))
                gw.start()
            elif fault == "pipeline":
                if not _kill_pipeline(gw):
                    continue
                _restart_gateway(gw)
            elif fault == "tracker":
                tracker.send_signal(signal.SIGKILL)
                out, err = tracker.communicate(timeout=10)
                assert "Traceback" not in err, err
                made(out, expected)
                tracker = start(micropython, data, tmp_path / "drive.nmea", 120)
            else:
                down = data / "network.down"
                if down.exists():
                    down.unlink()
                else:
                    down.write_text("")
            done.append(fault)
        # The faults end; the tracker finishes its drive and empties its journal.
        (data / "network.down").unlink(missing_ok=True)
        out, err = tracker.communicate(timeout=180)
        assert "Traceback" not in err, err
        made(out, expected)
        final = run_tracker(micropython, data, tmp_path / "empty.nmea", 90)
        assert final["left"] == 0, final
        expected[final["boot"]] = final["seq"]
        wait_drained(db, expected)
        assert_all_once(db, expected)
        assert sum(expected.values()) > 150, expected
        assert len(done) >= 5, done
        print("faults %s: %d records made in %d boots, all stored once"
              % (" ".join(done), sum(expected.values()), len(expected)))
    finally:
        if tracker is not None and tracker.poll() is None:
            tracker.kill()
            tracker.communicate()
        gw.stop_quietly()


def test_a_killed_gateway_is_restartable_while_its_pipeline_runs(
        tmp_path: Path, mosquitto_broker: Broker) -> None:
    """The chaos test above restarts the gateway right after a kill: the store and the
    broker session must accept a new gateway at once (no stale lock, no lingering
    pipeline process holding the store)."""
    gw = gateway(tmp_path, mosquitto_broker)
    try:
        wait_until(lambda: gw.pipeline_pid() is not None, what="the pipeline process")
        pipeline = gw.pipeline_pid()
        gw.kill()
        wait_until(lambda: not Path("/proc/%d" % pipeline).exists()
                   or b"zombie" in Path("/proc/%d/status" % pipeline).read_bytes().lower(),
                   what="the pipeline process to end with its gateway")
        gw.start()
        gw.wait_subscribed(times=2)
    finally:
        gw.stop_quietly()
