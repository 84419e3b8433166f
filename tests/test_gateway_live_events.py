"""The running gateway picks up a changed fences file (on change and on SIGHUP) and keeps
the previous fences when the new file is broken."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from conftest import Broker
from harness import GatewayProcess, Publisher, count, frame_bytes, position, wait_until
from harness import write_config as write_gateway_config

from fieldtrack.gateway.store.sqlite import Device, Store


def fences(n: int) -> str:
    feats = [{"type": "Feature", "properties": {"id": "site-%d" % i, "kind": "customer",
                                                "radius_m": 50},
              "geometry": {"type": "Point", "coordinates": [13.405 + i * 0.01, 52.52]}}
             for i in range(n)]
    return json.dumps({"type": "FeatureCollection", "features": feats})


def loaded(log: Path) -> list[str]:
    return [json.loads(line)["msg"] for line in log.read_text().splitlines()
            if line.startswith("{") and "geofences" in line]


def test_fences_reload_on_change_and_sighup(tmp_path: Path, mosquitto_broker: Broker) -> None:
    fence_file = tmp_path / "fences.geojson"
    fence_file.write_text(fences(2))
    config = write_gateway_config(tmp_path, mosquitto_broker.port,
                                  events={"fences_file": str(fence_file)})
    store = Store(tmp_path / "fieldtrack.db")
    store.put_device(Device("van-1", "vans", None, True))
    store.close()
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    log = tmp_path / "gateway.log"
    gw.start()
    try:
        gw.wait_subscribed()
        assert any("loaded 2 geofences" in m for m in loaded(log))
        fence_file.write_text(fences(5))  # edited in place: noticed by its new mtime
        wait_until(lambda: any("loaded 5 geofences" in m for m in loaded(log)), what="reload")
        fence_file.write_text("{ broken")
        wait_until(lambda: any("not reloaded" in m for m in loaded(log)), what="refusal")
        fence_file.write_text(fences(3))
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any("loaded 3 geofences" in m for m in loaded(log)), what="SIGHUP")
        # and it still stores what arrives
        pub = Publisher(mosquitto_broker.port)
        pub.publish("van-1", frame_bytes(position(1), "van-1", None))
        pub.close()
        wait_until(lambda: count(tmp_path / "fieldtrack.db") == 1, what="a position")
        assert gw.terminate() == 0
    finally:
        gw.stop_quietly()


def test_presence_and_last_will_become_online_and_offline_events(
    tmp_path: Path, mosquitto_broker: Broker
) -> None:
    config = write_gateway_config(tmp_path, mosquitto_broker.port)
    store = Store(tmp_path / "fieldtrack.db")
    store.put_device(Device("van-1", "vans", None, True))
    store.close()
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    gw.start()
    db = tmp_path / "fieldtrack.db"
    try:
        gw.wait_subscribed()
        pub = Publisher(mosquitto_broker.port)
        pub.client.publish("ft/s/van-1", b"\x01", qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: count(db, "SELECT COUNT(*) FROM events WHERE kind='device_online'")
                   == 1, what="online")
        pub.client.publish("ft/s/van-1", b"\x00", qos=1, retain=True).wait_for_publish(5)
        wait_until(lambda: count(db, "SELECT COUNT(*) FROM events WHERE kind='device_offline'")
                   == 1, what="offline")
        pub.close()
    finally:
        gw.stop_quietly()
