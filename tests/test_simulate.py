"""The fleet simulator: real frames, the firmware's policy, gaps, reboots, exactly once.

The pure tests run a fleet without a network and check what it would publish: that
the gateway's own decoder and pipeline accept every frame, that the reports are what
the firmware's policy picks, that gaps and reboots look as they do on a tracker. The
end-to-end test publishes through a real Mosquitto into a gateway process and compares
the store with the simulator's own account of what it published.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from conftest import Broker
from harness import GatewayProcess, count, wait_until, write_config

from fieldtrack.gateway.derive.engine import DeriveConfig, EventEngine
from fieldtrack.gateway.fences.index import FenceIndex
from fieldtrack.gateway.ingest.pipeline import Pipeline, PipelineConfig
from fieldtrack.gateway.store.sqlite import Batch, Device
from fieldtrack.protocol import cose, fast, frames
from fieldtrack.tools.simulate.clock import SimClock
from fieldtrack.tools.simulate.config import FleetConfig, device_ids
from fieldtrack.tools.simulate.errors import SimulateError
from fieldtrack.tools.simulate.fleet import Fleet
from fieldtrack.tools.simulate.gpx import load_gpx
from fieldtrack.tools.simulate.register import register_devices
from fieldtrack.tools.simulate.signer import Signer
from fieldtrack.tools.simulate.tracker import MAX_BATCH, SimDevice

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "firmware"))
import policy as firmware_policy  # noqa: E402  (the tracker's own module, as a reference)

HOUR = 3600
CLI = ("import sys\nfrom fieldtrack.tools.cli import cli, main\n"
       "from fieldtrack.tools.simulate.command import simulate\n"
       "if 'simulate' not in cli.commands:\n    cli.add_command(simulate)\n"
       "sys.exit(main())\n")


def key_of(device_id: str) -> bytes:
    return device_id.encode().ljust(32, b"k")


def run_fleet(cfg: FleetConfig, hours: float, signed: bool = True
              ) -> tuple[Fleet, list[tuple[str, bytes, bool]], int]:
    """Simulate ``hours`` ending a minute ago; returns the fleet, its messages, the start."""
    t0 = int(time.time() - hours * HOUR - 60)
    keys: dict[str, bytes | None] = {d: key_of(d) if signed else None
                                     for d in device_ids(cfg)}
    fleet = Fleet.build(cfg, t0, keys)
    out = fleet.advance(t0 + hours * HOUR) + fleet.drain()
    return fleet, out, t0


def decoded(messages: list[tuple[str, bytes, bool]]) -> list[tuple[str, dict[str, Any]]]:
    """(device, frame) of every uplink message, checked with the gateway's decoder."""
    frames_out = []
    for topic, payload, _ in messages:
        if not topic.startswith("ft/u/"):
            continue
        device = topic.split("/")[2]
        mac, inner = cose.unwrap(payload, frames.MAX_FRAME_BYTES)
        if mac is not None:
            assert mac.kid == device and mac.verify(key_of(device))
        frames_out.append((device, fast.decode(inner)))
    return frames_out


def records(frame: dict[str, Any]) -> list[tuple[int, int]]:
    """The (boot, seq) of every record a frame carries."""
    n = len(frame["fixes"]) if frame["type"] == "batch" else 1
    return [(frame["boot"], frame["seq"] + i) for i in range(n)]


# --- codec and pipeline ------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 23, 24, 255, 256, 1000])
@pytest.mark.parametrize("key_len", [16, 32, 64, 65])
def test_the_signer_makes_the_bytes_of_cose_sign(size: int, key_len: int) -> None:
    payload = bytes(range(256)) * 4
    key = bytes(range(7, 7 + key_len))
    signer = Signer(key, "van-0012")
    assert signer.sign(payload[:size]) == cose.sign(payload[:size], key, "van-0012")


def test_every_frame_passes_the_gateway_pipeline_without_a_reject() -> None:
    cfg = FleetConfig(devices=8, seed=3, gaps=True, reboots=True, gap_every_s=1200,
                          reboot_every_s=2 * HOUR)
    fleet, out, _ = run_fleet(cfg, 3)
    registry = {d: Device(d, "sim", key_of(d), True) for d in device_ids(cfg)}
    engine = EventEngine(DeriveConfig(), FenceIndex([]), {}, time.time)
    pipeline = Pipeline(PipelineConfig(), registry, {}, engine)
    batch = Batch()
    kinds: set[str] = set()
    for topic, payload, _ in out:
        if topic.startswith("ft/u/"):
            outcome = pipeline.process(topic, payload, int(time.time() * 1000), batch)
            assert outcome.reject is None and not outcome.dropped, outcome
            kinds.add(fast.decode(cose.unwrap(payload, 16384)[1])["type"])
    totals = fleet.summary()["totals"]
    assert kinds == {"position", "batch", "event", "status"}
    assert len(batch.positions) == totals["positions"] > 1000
    assert sum(1 for e in batch.events if e[1] >= 0) == totals["events"]
    assert {e[4] for e in batch.events if e[1] == -1} >= {"trip_start", "trip_end"}


def test_frames_are_unsigned_without_a_key() -> None:
    _, out, _ = run_fleet(FleetConfig(devices=2), 0.2, signed=False)
    uplink = [payload for topic, payload, _ in out if topic.startswith("ft/u/")]
    assert uplink and not any(cose.is_mac0(p) for p in uplink)
    assert all(fast.decode(p)["type"] in frames.UPLINK_TYPES for p in uplink)


# --- the firmware's policy -------------------------------------------------------------


def write_gpx(path: Path) -> None:
    """An L-shaped drive in Berlin: 2 km east, a right-angle turn, 1.5 km north."""
    points = [(52.5 + 0.0, 13.4 + i * 0.0015) for i in range(21)]
    points += [(52.5 + j * 0.0015, 13.4 + 20 * 0.0015) for j in range(1, 11)]
    body = "".join('<trkpt lat="%.6f" lon="%.6f"><ele>35</ele></trkpt>' % p for p in points)
    path.write_text('<?xml version="1.0"?><gpx version="1.1" creator="test" '
                    'xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>%s</trkseg>'
                    '</trk></gpx>' % body)


def policy_choice(device: SimDevice, t0: int, t1: int) -> list[int]:
    """The fix times the firmware's policy picks when it sees this van's fix every second."""
    chosen, last_ign = [], None
    pol = firmware_policy.Policy()
    for t in range(t0, t1):
        fix = device.fix(t)
        changed = last_ign is not None and fix["ign"] != last_ign
        last_ign = fix["ign"]
        if pol.due(fix, fix["ign"], changed):
            pol.reported(fix)
            chosen.append(t)
    return chosen


@pytest.mark.parametrize("route", ["gpx", "grid"])
def test_reports_are_those_the_firmware_policy_picks(route: str, tmp_path: Path) -> None:
    if route == "gpx":
        write_gpx(tmp_path / "route.gpx")
        cfg = FleetConfig(devices=1, route=load_gpx(tmp_path / "route.gpx"),
                              gnss_noise_m=0.0, presence=False, start_spread_s=0)
    else:
        cfg = FleetConfig(devices=1, seed=5, gnss_noise_m=0.0, presence=False,
                              start_spread_s=0)
    t0, t1 = 1_767_261_600, 1_767_261_600 + 3 * HOUR
    fleet = Fleet.build(cfg, t0)
    out = fleet.advance(t1 - 1)
    reported = [f["t"] for _, f in decoded(out) if f["type"] == "position"]
    reference = Fleet.build(cfg, t0).devices[0]  # the same van, seen every second
    assert reported == policy_choice(reference, t0, t1)
    assert len(reported) > 200  # driving: about one in 10 s; parked: one in 15 min


def test_a_van_reports_every_10_s_driving_and_every_15_min_parked() -> None:
    _, out, _ = run_fleet(FleetConfig(devices=1, seed=2, gnss_noise_m=0.0), 4)
    fixes = [f for _, f in decoded(out) if f["type"] == "position"]
    gaps = [(b["t"] - a["t"], a["ign"], b["ign"]) for a, b in zip(fixes, fixes[1:], strict=False)]
    driving = [dt for dt, a, b in gaps if a and b]
    parked = [dt for dt, a, b in gaps if not a and not b]
    assert min(driving) >= 10 and max(driving) <= 60
    assert parked and all(dt == 900 for dt in parked)


# --- gaps and reboots --------------------------------------------------------------------


def test_a_gap_sends_its_fixes_late_as_batches_with_buf_and_loses_none() -> None:
    cfg = FleetConfig(devices=3, seed=4, gaps=True, gap_every_s=1200, gap_s=(300, 900))
    fleet, out, _ = run_fleet(cfg, 3)
    per_device: dict[str, list[tuple[int, int]]] = defaultdict(list)
    batches = 0
    for device, frame in decoded(out):
        per_device[device].extend(records(frame))
        if frame["type"] == "batch":
            batches += 1
            assert all(fix["buf"] for fix in frame["fixes"])
            times = [fix["t"] for fix in frame["fixes"]]
            assert times == sorted(times) and 1 <= len(times) <= MAX_BATCH
        elif frame["type"] == "position":
            assert not frame["buf"]
    assert batches >= 6
    for device in fleet.devices:
        sent = per_device[device.id]
        assert sent == sorted(sent)  # oldest first, live records after the buffer
        assert len(sent) == len(set(sent))
        assert sent == [(b, s) for b, n in sorted(device.counts.seqs.items()) for s in range(n)]


def test_batched_fixes_arrive_later_than_they_were_taken() -> None:
    cfg = FleetConfig(devices=1, seed=6, gaps=True, gap_every_s=900, gap_s=(400, 400))
    t0 = 1_767_261_600
    fleet = Fleet.build(cfg, t0)
    lateness = []
    for t in range(t0, t0 + 3 * HOUR, 10):  # publish time is when a step emits the frame
        for _, payload, _ in fleet.advance(t):
            frame = fast.decode(payload) if payload[:1] != b"\x01" else {"type": "presence"}
            if frame["type"] == "batch":
                lateness.extend(t - fix["t"] for fix in frame["fixes"])
    assert lateness and max(lateness) >= 390 and min(lateness) >= 0


def test_a_reboot_counts_boot_up_and_starts_seq_again_with_a_boot_event() -> None:
    cfg = FleetConfig(devices=4, seed=8, reboots=True, reboot_every_s=1800)
    fleet, out, _ = run_fleet(cfg, 3)
    firsts: dict[tuple[str, int], dict[str, Any]] = {}
    last: dict[str, tuple[int, int]] = {}
    for device, frame in decoded(out):
        boot, seq = frame["boot"], frame["seq"]
        prev = last.get(device)
        if prev is not None and boot != prev[0]:
            assert boot == prev[0] + 1 and seq == 0
        elif prev is not None:
            assert seq == prev[1] + 1
        firsts.setdefault((device, boot), frame)
        last[device] = records(frame)[-1]
    boots = defaultdict(list)
    for device, boot in firsts:
        boots[device].append(boot)
    assert all(len(b) >= 3 for b in boots.values())
    assert all(f["type"] == "event" and f["kind"] == "boot" and f["seq"] == 0
               for f in firsts.values())


# --- routes and clock ------------------------------------------------------------------


def test_a_gpx_route_is_driven_where_the_file_says(tmp_path: Path) -> None:
    write_gpx(tmp_path / "route.gpx")
    route = load_gpx(tmp_path / "route.gpx")
    cfg = FleetConfig(devices=3, route=route)
    _, out, _ = run_fleet(cfg, 1)
    fixes = [f for _, f in decoded(out) if f["type"] == "position"]
    assert all(524_999_000 < f["lat"] < 525_151_000 for f in fixes)
    assert all(133_999_000 < f["lon"] < 134_301_000 for f in fixes)
    assert max(f["spd"] for f in fixes) >= 30


@pytest.mark.parametrize("text, message", [
    ("<gpx><trk>", "not valid XML"),
    ("<kml/>", "not a GPX file"),
    ("<gpx/>", "no <trkpt> or <rtept> points"),
    ('<gpx><trk><trkseg><trkpt lat="95" lon="13"/></trkseg></trk></gpx>', "<trkpt> number 1"),
    ('<gpx><rte><rtept lat="52.5" lon="13.4"/><rtept lat="52.5" lon="13.4001"/></rte></gpx>',
     "at least 50 m"),
])
def test_a_bad_gpx_file_is_named_with_its_problem(tmp_path: Path, text: str,
                                                  message: str) -> None:
    path = tmp_path / "bad.gpx"
    path.write_text(text)
    with pytest.raises(SimulateError) as info:
        load_gpx(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_the_clock_replays_the_past_and_never_runs_ahead() -> None:
    wall, mono = [1_000_000.0], [0.0]
    clock = SimClock(10, 60, wall=lambda: wall[0] + mono[0], mono=lambda: mono[0])
    assert clock.now() == 1_000_000.0 - 540
    mono[0] = 30
    assert clock.now() == 1_000_000.0 - 540 + 300
    mono[0] = 60
    assert clock.now() == wall[0] + 60  # caught up with the present
    mono[0] = 120
    assert clock.now() == wall[0] + 120  # and from there, real time


# --- end to end --------------------------------------------------------------------------


def test_every_published_record_is_stored_exactly_once(tmp_path: Path,
                                                       mosquitto_broker: Broker) -> None:
    db = tmp_path / "fieldtrack.db"
    cfg = FleetConfig(devices=20)
    register_devices(db, device_ids(cfg))  # before the gateway loads its registry
    gw = GatewayProcess(write_config(tmp_path, mosquitto_broker.port), tmp_path / "gw.log")
    gw.start()
    try:
        gw.wait_subscribed()
        proc = subprocess.run(
            [sys.executable, "-c", CLI, "simulate", "--devices", "20", "--duration", "5",
             "--speedup", "30", "--broker", "127.0.0.1:%d" % mosquitto_broker.port,
             "--store", str(db), "--gaps", "--reboots", "--summary", str(tmp_path / "s.json"),
             "--quiet"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads((tmp_path / "s.json").read_text())
        totals = summary["totals"]
        assert summary["run"]["unacked"] == 0 and totals["positions"] > 100
        wait_until(lambda: count(db) == totals["positions"] and count(
            db, "SELECT COUNT(*) FROM events WHERE boot >= 0") == totals["events"],
            timeout=20, what="every published record in the store")
        con = sqlite3.connect(db)
        stored: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for table in ("positions", "events"):
            for device, boot, seq in con.execute(
                    "SELECT device, boot, seq FROM %s WHERE boot >= 0" % table):
                stored[device].append((boot, seq))
        for device, counts in summary["per_device"].items():
            expected = [(int(b), s) for b, n in counts["boots"].items() for s in range(n)]
            assert sorted(stored[device]) == sorted(expected), device
        assert count(db, "SELECT COUNT(*) FROM rejects") == 0
        assert con.execute("SELECT COUNT(*) FROM positions WHERE flagged <> ''").fetchone()[0] \
            == 0
    finally:
        gw.stop_quietly()
