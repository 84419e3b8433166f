"""The whole chain: NMEA -> firmware (real MicroPython) -> Mosquitto -> gateway -> store.

The tracker runs on the unix port with a simulated board whose GNSS UART is an NMEA
file generated from a city drive. Every fix it records must reach the gateway's store
exactly once, with the coordinates the NMEA text said, also across a coverage gap
that spans a reboot (store and forward on flash).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import Broker
from harness import GatewayProcess, count, wait_until, write_config

from fieldtrack.gateway.store.sqlite import Device, Store

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "firmware"))
import nmea  # noqa: E402
import policy  # noqa: E402
from city_track import city_track  # noqa: E402

KEY = bytes(range(7, 39))


def _nmea_coord(v: int, lat: bool) -> tuple[str, str]:
    a = abs(v)
    deg, rest = divmod(a, 10_000_000)
    minutes = rest * 60 / 10_000_000
    text = ("%02d%08.5f" if lat else "%03d%08.5f") % (deg, minutes)
    return text, ("N" if v >= 0 else "S") if lat else ("E" if v >= 0 else "W")


def _sentence(body: str) -> str:
    c = 0
    for ch in body:
        c ^= ord(ch)
    return "$%s*%02X\r\n" % (body, c)


def write_drive(path: Path, n: int, start_t: int | None = None) -> list[tuple[int, int, int]]:
    """RMC+GGA+GSA per second for a city drive (from ``start_t``, else the track's own
    start); returns (t, lat, lon) as parsed."""
    expected = []
    out = []
    track = (city_track(n, seed=3, period_s=1) if start_t is None
             else city_track(n, seed=3, start_t=start_t, period_s=1))
    for fix in track:
        t = fix["t"]
        hms = time.strftime("%H%M%S", time.gmtime(t))
        dmy = time.strftime("%d%m%y", time.gmtime(t))
        la, ns = _nmea_coord(fix["lat"], True)
        lo, ew = _nmea_coord(fix["lon"], False)
        knots = fix["spd"] / 1.852
        out.append(_sentence("GPRMC,%s.00,A,%s,%s,%s,%s,%.2f,%d.0,%s,,,A"
                             % (hms, la, ns, lo, ew, knots, fix["hdg"], dmy)))
        out.append(_sentence("GPGGA,%s.00,%s,%s,%s,%s,1,%02d,0.9,%d.0,M,45.0,M,,"
                             % (hms, la, ns, lo, ew, fix["sats"], fix["alt"])))
        out.append(_sentence("GPGSA,A,3,01,02,03,04,05,06,07,08,,,,,1.6,0.9,1.3"))
        expected.append((t, nmea.coordinate(la.encode(), ns.encode()),
                         nmea.coordinate(lo.encode(), ew.encode())))
    path.write_text("".join(out))
    return expected


def policy_choice(nmea_file: Path, reporting: dict[str, object]) -> list[int]:
    """The fix times the firmware's policy picks from the file (the tracker's own code)."""
    chosen = []
    pol = policy.Policy(reporting)
    parser = nmea.Parser()
    parser.feed(nmea_file.read_bytes())
    parser.flush()
    for nf in parser.fixes:
        if nf.time() is None or nf.fix_type() == 0:
            continue
        fix = {"t": nf.time(), "lat": nf.lat, "lon": nf.lon, "spd": nf.speed_kmh(),
               "hdg": nf.heading()}
        if pol.due(fix, None, False):
            pol.reported(fix)
            chosen.append(fix["t"])
    return chosen


def tracker_config(directory: Path, port: int) -> None:
    every = {"min_period_s": 1, "max_period_s": 5, "min_distance_m": 5, "min_angle_deg": 10,
             "min_speed_delta_kmh": 5}
    cfg = {"device_id": "van-sim", "key": KEY.hex(),
           "mqtt": {"host": "127.0.0.1", "port": port, "keepalive_s": 30},
           "reporting": {"moving": every, "stopped": dict(every, max_period_s=30),
                         "moving_kmh": 5},
           "buffer": {"capacity_records": 20000, "segment_records": 32,
                      "receipt_timeout_s": 3},
           "status_period_s": 3600, "sim_pace_ms": 0}
    directory.mkdir(exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg))


def run_tracker(micropython: str, data: Path, nmea_file: Path, seconds: int) -> dict[str, int]:
    env = dict(os.environ, MICROPYPATH=".frozen:%s:%s" % (ROOT / "firmware", ROOT))
    proc = subprocess.run([micropython, "-X", "heapsize=2m", str(ROOT / "firmware" / "main_sim.py"),
                           str(data), str(nmea_file), str(seconds)],
                          capture_output=True, text=True, timeout=seconds + 60, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def start_gateway(tmp_path: Path, broker: Broker) -> GatewayProcess:
    """The gateway; its receipts let the tracker delete what is stored."""
    config = write_config(tmp_path, broker.port, filters={"past_action": "off"},
                          events={"enabled": False})
    store = Store(tmp_path / "fieldtrack.db")
    store.put_device(Device("van-sim", "vans", KEY, True))
    store.close()
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    gw.start()
    gw.wait_subscribed()
    return gw


def test_every_recorded_fix_reaches_the_store_once(micropython: str, tmp_path: Path,
                                                   mosquitto_broker: Broker) -> None:
    expected = write_drive(tmp_path / "drive.nmea", 400)
    data = tmp_path / "flash"
    tracker_config(data, mosquitto_broker.port)
    gw = start_gateway(tmp_path, mosquitto_broker)
    try:
        result = run_tracker(micropython, data, tmp_path / "drive.nmea", 60)
        assert result["left"] == 0 and result["dropped"] == 0
        db = tmp_path / "fieldtrack.db"
        records = result["seq"]  # records 0..seq-1 of this boot: fixes, events, status
        wait_until(lambda: count(db) + count(db, "SELECT COUNT(*) FROM events WHERE boot >= 0")
                   >= records, what="every record")
        con = sqlite3.connect(db)
        rows = con.execute("SELECT seq, t, lat, lon FROM positions ORDER BY seq").fetchall()
        events = con.execute("SELECT seq FROM events WHERE boot >= 0").fetchall()
        assert sorted([r[0] for r in rows] + [e[0] for e in events]) == list(range(records))
        truth = {t: (lat, lon) for t, lat, lon in expected}
        assert all(truth[t] == (lat, lon) for _, t, lat, lon in rows)
        reporting = json.loads((data / "config.json").read_text())["reporting"]
        assert [t for _, t, _, _ in rows] == policy_choice(tmp_path / "drive.nmea", reporting)
        assert len(rows) > 200  # moving: about one a second; parked: one in 30 s
        assert count(db, "SELECT COUNT(*) FROM rejects") == 0
    finally:
        gw.stop_quietly()


def test_a_broker_outage_across_a_reboot_loses_nothing(micropython: str, tmp_path: Path,
                                                      mosquitto_broker: Broker) -> None:
    write_drive(tmp_path / "drive.nmea", 300)
    (tmp_path / "empty.nmea").write_text("")
    data = tmp_path / "flash"
    tracker_config(data, mosquitto_broker.port)
    (data / "sos.pressed").write_text("")  # and the driver presses SOS, on backup power
    (data / "power.lost").write_text("")
    gw = start_gateway(tmp_path, mosquitto_broker)
    try:
        mosquitto_broker.stop()  # the broker is unreachable for this stretch of the drive
        offline = run_tracker(micropython, data, tmp_path / "drive.nmea", 5)
        assert offline["left"] == offline["seq"] > 150  # everything waits on flash
        db = tmp_path / "fieldtrack.db"
        assert count(db) == 0
        mosquitto_broker.start()  # the link returns; the tracker restarts (a new boot)
        online = run_tracker(micropython, data, tmp_path / "empty.nmea", 60)
        assert online["left"] == 0 and online["boot"] == offline["boot"] + 1
        wait_until(lambda: count(db, "SELECT COUNT(*) FROM positions WHERE boot = %d"
                                 % offline["boot"]) > 0, what="buffered fixes")
        first_boot = "FROM positions WHERE boot = %d" % offline["boot"]
        first_events = "FROM events WHERE boot = %d" % offline["boot"]
        wait_until(lambda: count(db, "SELECT COUNT(*) " + first_boot)
                   + count(db, "SELECT COUNT(*) " + first_events) == offline["seq"],
                   what="all buffered records")
        con = sqlite3.connect(db)
        seqs = [r[0] for r in con.execute("SELECT seq " + first_boot)]
        seqs += [r[0] for r in con.execute("SELECT seq " + first_events)]
        assert sorted(seqs) == list(range(offline["seq"]))
        assert con.execute("SELECT MIN(buf) " + first_boot).fetchone()[0] == 1
        kinds = {r[0] for r in con.execute("SELECT kind " + first_events)}
        assert {"boot", "sos", "power_lost", "status"} <= kinds
    finally:
        gw.stop_quietly()
