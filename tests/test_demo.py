"""``fieldtrack demo``: its sites, its view, and a bounded run against a real broker."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import Broker, free_port

from fieldtrack.gateway.fences.loader import load as load_fences
from fieldtrack.tools.demo import runner as demo

CLI = ("import sys\nfrom fieldtrack.tools.cli import cli, main\n"
       "from fieldtrack.tools.demo.command import demo\n"
       "if 'demo' not in cli.commands:\n    cli.add_command(demo)\n"
       "sys.exit(main())\n")
DERIVED = ("trip_start", "trip_end", "geofence_enter", "geofence_exit", "visit", "stop")


def run_demo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI, "demo", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_every_demo_site_lies_inside_its_own_fence(tmp_path: Path) -> None:
    path = tmp_path / "fences.geojson"
    path.write_text(json.dumps(demo.fences_document()))
    index = load_fences(path)
    assert len(index) == len(demo.CUSTOMERS) + 1
    for site in (demo.DEPOT, *demo.CUSTOMERS):
        lat, lon = demo.CITY.lat_lon(site.node)
        fence = index.by_id[site.id]
        assert fence.signed_distance(lat, lon) > 50  # a parked van is well inside


def test_the_view_shows_each_van_its_state_and_the_newest_events() -> None:
    snap = demo.Snapshot(
        vans=[demo.VanRow("demo-van-001", 1_767_261_600, 525_200_000, 134_050_000, 38, True),
              demo.VanRow("demo-van-002", 1_767_261_500, 525_210_000, 134_060_000, 0, False,
                          "ACME GmbH"),
              demo.VanRow("demo-van-003")],
        events=[(7, 1_767_261_590, "demo-van-002", "geofence_enter", "ACME GmbH")],
        positions=12, event_count=5, rejects=0)
    text = demo.render(snap, "fieldtrack demo", 1_767_261_600.0)
    lines = text.splitlines()
    van1 = next(ln for ln in lines if ln.startswith("demo-van-001"))
    van2 = next(ln for ln in lines if ln.startswith("demo-van-002"))
    assert "52.52000" in van1 and "13.40500" in van1 and "driving" in van1
    assert "parked" in van2 and "ACME GmbH" in van2
    assert "no fix yet" in next(ln for ln in lines if ln.startswith("demo-van-003"))
    assert any("geofence_enter" in ln and "ACME GmbH" in ln for ln in lines)
    assert "12 positions, 5 events, 0 rejected" in text


def test_a_bounded_demo_stores_positions_and_derived_events(tmp_path: Path,
                                                           mosquitto_broker: Broker) -> None:
    directory = tmp_path / "demo"
    proc = run_demo("--duration", "8", "--no-view", "--speedup", "30", "--dir",
                    str(directory), "--broker", "127.0.0.1:%d" % mosquitto_broker.port)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "demo: stopped" in proc.stderr
    con = sqlite3.connect(directory / "fieldtrack.db")
    vans = {r[0] for r in con.execute("SELECT DISTINCT device FROM positions")}
    assert vans == {"demo-van-%03d" % i for i in range(1, 6)}
    derived = {r[0] for r in con.execute("SELECT kind FROM events WHERE boot = -1")}
    assert derived & set(DERIVED), derived
    assert con.execute("SELECT COUNT(*) FROM rejects").fetchone()[0] == 0
    assert (directory / "fences.geojson").exists()


def test_the_demo_says_when_its_broker_is_not_there(tmp_path: Path) -> None:
    port = free_port()
    proc = run_demo("--duration", "1", "--no-view", "--dir", str(tmp_path / "d"),
                    "--broker", "127.0.0.1:%d" % port)
    assert proc.returncode == 2
    assert "nothing listens on 127.0.0.1:%d" % port in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_demo_broker_starts_and_stops_with_the_demo(tmp_path: Path) -> None:
    port = free_port()
    broker = demo.LocalBroker(tmp_path, port)
    broker.start()
    try:
        assert demo.listening("127.0.0.1", port)
    finally:
        broker.stop()
    assert not demo.listening("127.0.0.1", port)
