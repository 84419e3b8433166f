"""The gateway with real parts: a real Mosquitto, the gateway as a process, kill -9.

Each fault test publishes a known set of frames and asserts that the store ends with
every one of them exactly once.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Broker
from harness import (
    GatewayProcess,
    Publisher,
    count,
    frame_bytes,
    position,
    wait_until,
    write_config,
)

from fieldtrack.gateway.store.sqlite import Device, Store

KEY = bytes(range(32))


def start_gateway(tmp_path: Path, broker: Broker, **sections: dict[str, object]) -> GatewayProcess:
    config = write_config(tmp_path, broker.port, **sections)
    store = Store(tmp_path / "fieldtrack.db")
    store.put_device(Device("van-1", "vans", KEY, True))
    store.put_device(Device("van-2", "vans", None, True))
    store.close()
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    gw.start()
    gw.wait_subscribed()  # on a first start nothing is queued for it yet
    return gw


def assert_exactly_once(db: Path, device: str, n: int) -> None:
    assert count(db, "SELECT COUNT(*) FROM positions WHERE device='%s'" % device) == n
    assert count(db, "SELECT COUNT(DISTINCT seq) FROM positions WHERE device='%s'" % device) == n
    assert count(db, "SELECT MIN(seq) FROM positions WHERE device='%s'" % device) == 0
    assert count(db, "SELECT MAX(seq) FROM positions WHERE device='%s'" % device) == n - 1


def test_frames_arrive_and_sigterm_exits_cleanly(tmp_path: Path, mosquitto_broker: Broker) -> None:
    gw = start_gateway(tmp_path, mosquitto_broker)
    pub = Publisher(mosquitto_broker.port)
    try:
        pub.publish_many("van-1", [frame_bytes(position(i), "van-1", KEY) for i in range(300)])
        pub.publish_many("van-2", [frame_bytes(position(i), "van-2", None) for i in range(100)])
        db = tmp_path / "fieldtrack.db"
        wait_until(lambda: count(db) == 400, what="400 positions stored")
        assert gw.terminate() == 0
        assert_exactly_once(db, "van-1", 300)
        assert_exactly_once(db, "van-2", 100)
        log = (tmp_path / "gateway.log").read_text()
        assert "stopped cleanly" in log
        assert KEY.hex() not in log and "Traceback" not in log
    finally:
        pub.close()
        gw.stop_quietly()


def test_frames_published_while_the_gateway_is_down_arrive(
    tmp_path: Path, mosquitto_broker: Broker
) -> None:
    """The persistent session: the broker queues for the stopped gateway."""
    gw = start_gateway(tmp_path, mosquitto_broker)
    db = tmp_path / "fieldtrack.db"
    pub = Publisher(mosquitto_broker.port)
    try:
        pub.publish_many("van-2", [frame_bytes(position(i), "van-2", None) for i in range(50)])
        wait_until(lambda: count(db) == 50, what="first 50 positions")
        assert gw.terminate() == 0
        pub.publish_many("van-2", [frame_bytes(position(i), "van-2", None)
                                   for i in range(50, 2500)])
        gw.start()
        wait_until(lambda: count(db) == 2500, timeout=60, what="all 2500 positions")
        assert_exactly_once(db, "van-2", 2500)
    finally:
        pub.close()
        gw.stop_quietly()


def stream_with_fault(tmp_path: Path, broker: Broker, n: int,
                      fault: Callable[[GatewayProcess, Path], None]) -> None:
    """Publish n signed frames while ``fault`` strikes; then every one is stored once."""
    gw = start_gateway(tmp_path, broker)
    db = tmp_path / "fieldtrack.db"
    pub = Publisher(broker.port)
    payloads = [frame_bytes(position(i), "van-1", KEY) for i in range(n)]
    sender = threading.Thread(target=pub.publish_many, args=("van-1", payloads))
    try:
        sender.start()
        fault(gw, db)
        sender.join(120)
        wait_until(lambda: count(db) == n, timeout=90, what="all positions after the fault")
        assert_exactly_once(db, "van-1", n)
    finally:
        pub.close()
        gw.stop_quietly()


@pytest.mark.slow
def test_kill_9_mid_stream_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, mosquitto_broker: Broker
) -> None:
    def kill_twice(gw: GatewayProcess, db: Path) -> None:
        for threshold in (500, 1500):
            wait_until(lambda t=threshold: count(db) >= t, timeout=60, what="progress")  # type: ignore[misc]
            wait_until(lambda: gw.pipeline_pid() is not None, timeout=20,
                       what="the pipeline process")
            pipeline = gw.pipeline_pid()
            assert pipeline is not None
            gw.kill()
            # The pipeline process ends with it: no second writer is left behind.
            wait_until(lambda p=pipeline: not Path("/proc/%d" % p).exists()  # type: ignore[misc]
                       or b"Z" in Path("/proc/%d/stat" % p).read_bytes().split(b")")[-1][:3],
                       timeout=20, what="the pipeline process to end")
            gw.start()

    stream_with_fault(tmp_path, mosquitto_broker, 4000, kill_twice)


@pytest.mark.slow
def test_a_killed_pipeline_process_stops_the_gateway_and_a_restart_loses_nothing(
    tmp_path: Path, mosquitto_broker: Broker
) -> None:
    def kill_pipeline(gw: GatewayProcess, db: Path) -> None:
        wait_until(lambda: count(db) >= 600, timeout=60, what="progress")
        wait_until(lambda: gw.pipeline_pid() is not None, timeout=20, what="the pipeline process")
        pipeline = gw.pipeline_pid()
        assert pipeline is not None
        os.kill(pipeline, signal.SIGKILL)
        assert gw.proc is not None and gw.proc.wait(30) == 2
        gw.start()

    stream_with_fault(tmp_path, mosquitto_broker, 3000, kill_pipeline)
    log = (tmp_path / "gateway.log").read_text()
    assert "the pipeline process died" in log and "Traceback" not in log


@pytest.mark.slow
def test_broker_restart_mid_stream_loses_nothing(tmp_path: Path, mosquitto_broker: Broker) -> None:
    def restart_broker(gw: GatewayProcess, db: Path) -> None:
        wait_until(lambda: count(db) >= 700, timeout=60, what="progress")
        mosquitto_broker.stop()
        mosquitto_broker.start()

    stream_with_fault(tmp_path, mosquitto_broker, 3000, restart_broker)
    log = (tmp_path / "gateway.log").read_text()
    assert "disconnected" in log or "reconnect" in log


def test_rejected_frames_are_stored_with_their_reason(
    tmp_path: Path, mosquitto_broker: Broker
) -> None:
    gw = start_gateway(tmp_path, mosquitto_broker)
    db = tmp_path / "fieldtrack.db"
    pub = Publisher(mosquitto_broker.port)
    try:
        pub.publish("van-1", frame_bytes(position(1), "van-1", None))  # unsigned, has a key
        pub.publish("van-1", frame_bytes(position(2), "van-1", bytes(32)))  # wrong key
        pub.publish("ghost", frame_bytes(position(3), "ghost", None))
        pub.publish("van-2", b"\xff\x00 not cbor")
        wait_until(lambda: count(db, "SELECT COUNT(*) FROM rejects") == 4, what="4 rejects")
        rows = count(db, "SELECT COUNT(DISTINCT reason) FROM rejects")
        assert rows == 4
        assert count(db) == 0
    finally:
        pub.close()
        gw.stop_quietly()
