"""Operating the gateway: /metrics, /healthz, structured logs without secrets."""

from __future__ import annotations

import json
from pathlib import Path

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
)
from harness import write_config as write_gateway_config

from fieldtrack.gateway.store.sqlite import Device, Store

KEY = bytes(range(100, 132))
PASSWORD = "s3cret-broker-password"


def test_metrics_health_and_logs(tmp_path: Path, mosquitto_broker: Broker) -> None:
    http_port = free_port()
    config = write_gateway_config(
        tmp_path, mosquitto_broker.port,
        http={"enabled": True, "port": http_port},
        mqtt={"username": "fieldtrack-gateway", "password": PASSWORD},
    )
    store = Store(tmp_path / "fieldtrack.db")
    store.put_device(Device("van-7", "vans", KEY, True))
    store.close()
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    gw.start()
    gw.wait_subscribed()
    base = "http://127.0.0.1:%d" % http_port
    pub = Publisher(mosquitto_broker.port)
    try:
        wait_until(lambda: http_get(base + "/healthz")[0] == 200, what="healthy")
        pub.publish_many("van-7", [frame_bytes(position(i), "van-7", KEY) for i in range(20)])
        pub.publish("van-7", frame_bytes(position(99), "van-7", bytes(32)))  # bad MAC
        db = tmp_path / "fieldtrack.db"
        wait_until(lambda: count(db) == 20 and count(db, "SELECT COUNT(*) FROM rejects") == 1)

        def metric(name: str) -> float:
            _, text = http_get(base + "/metrics")
            for line in text.splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
            return -1.0

        wait_until(lambda: metric("fieldtrack_positions_stored_total") == 20, what="metric")
        assert metric("fieldtrack_frames_in_total") == 21
        assert metric('fieldtrack_rejects_total{reason="bad_mac"}') == 1
        assert metric("fieldtrack_mqtt_connected") == 1
        assert metric("fieldtrack_stage_seconds_count") > 0
        mosquitto_broker.stop()
        wait_until(lambda: http_get(base + "/healthz")[0] == 503, what="unhealthy without a broker")
        mosquitto_broker.start()
        wait_until(lambda: http_get(base + "/healthz")[0] == 200, what="healthy again")
        assert gw.terminate() == 0
        log = (tmp_path / "gateway.log").read_text()
        entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert entries and all({"time", "level", "logger", "msg"} <= e.keys() for e in entries)
        assert any(e["level"] == "info" and "bad_mac" in e["msg"] for e in entries)
        assert PASSWORD not in log and KEY.hex() not in log
    finally:
        pub.close()
        gw.stop_quietly()


def test_a_busy_metrics_port_is_reported_and_nothing_is_left_running(
    tmp_path: Path, mosquitto_broker: Broker
) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_gateway_config(tmp_path, mosquitto_broker.port,
                                      http={"enabled": True, "port": port})
        done = subprocess.run(
            [sys.executable, "-c", "import sys; from fieldtrack.tools.cli import main; "
             "sys.exit(main())", "gateway", "run", "-c", str(config)],
            capture_output=True, text=True, timeout=60,
        )
    # Exits (its pipeline process ended with it) with the reason, not a traceback.
    assert done.returncode == 2
    assert "[http] 127.0.0.1:%d: cannot listen" % port in done.stderr
    assert "Traceback" not in done.stderr
