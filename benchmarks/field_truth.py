"""The scorecard: noisy field scenarios through the real derive path, against their truth.

Run from the repository root:

    .venv/bin/python benchmarks/field_truth.py [--seeds N] [--first S]

Every scenario of ``tests/scenarios.py`` (parked within 3 m inside or outside a
fence's edge for an hour, drive-bys, 30 s fixes through small fences with and without
a fix inside, a service day, a reboot mid-visit) is generated for N seeds and sent,
one position frame per fix, through the gateway's ``Pipeline`` (decode, filters,
store rows), its ``EventEngine`` and a SQLite ``Store``, each frame committed as the
service does; the derived events are read back from the store. Default settings
throughout (margin 5 m plus the accuracy, dwell 600 s, visits from 300 s, trips after
500 m or 300 s, stops of 300 s).

Then the service day again with two hours delivered late (after the rest, in order
or newest first, or half-way through it), the late fixes re-derived by the gateway.
Printed per scenario and in total: precision and recall of geofence enter/exit
(matched on kind and fence within two report periods + 30 s) and of visits (both
ends within one report period + the dwell setting), transitions that match nothing
while the vehicle is parked, the visits' arrive/leave error, trips found / true and
the driving time's error. Targets: precision and recall >= 0.99, zero spurious
transitions while parked, trip count exact, driving time within 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from scenarios import SCENARIOS, Scenario, Score, found_from_events, score  # noqa: E402
from tracks import VAN, Rig  # noqa: E402

LATE_ORDERS = ("in order", "reversed", "interleaved")


def run_pipeline(scn: Scenario, workdir: Path, late: str = "") -> Score:
    """Every fix as it happens; with ``late`` (one of LATE_ORDERS), the two hours from
    30 minutes in are held back and delivered after the rest (in order or newest
    first), or half-way through the rest (interleaved with it)."""
    rig = Rig(workdir / ("%s-%d%s.db" % (scn.name.replace(" ", "-"), scn.seed,
                                         late.replace(" ", "-"))), scn.index())
    t0 = scn.fixes[0]["t"]
    held = [f for f in scn.fixes if late and t0 + 1800 <= f["t"] < t0 + 1800 + 7200]
    live = [f for f in scn.fixes if not held or f["t"] < held[0]["t"] or f["t"] > held[-1]["t"]]
    if late == "reversed":
        held.reverse()
    split = len(live) if late != "interleaved" else (len(live) + len(
        [f for f in live if f["t"] < t0 + 1800])) // 2
    try:
        for f in live[:split] + held + live[split:]:
            rig.position(f)
        rig.tick(scn.fixes[-1]["t"] + 3600)
        rows = rig.store.iter_rows("SELECT kind, t, data FROM events WHERE device = ? AND "
                                   "boot = -1 AND retracted = 0 ORDER BY t, id", (VAN.id,))
        events = [(r["kind"], r["t"], json.loads(r["data"])) for r in rows]
    finally:
        rig.close()
    return score(found_from_events(events), scn.truth, scn.every)


def shifted(scn: Scenario, k: int, dt: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The scenario's fixes and fences k * 0.1 degrees north and ``dt`` s later, so that
    several share one gateway (each its own device and place) and its fixes are recent."""
    dlat = k * 1_000_000  # 1e-7 degrees
    fixes = [dict(f, t=f["t"] + dt, lat=f["lat"] + dlat) for f in scn.fixes]

    def move(c: Any) -> Any:
        if isinstance(c, list) and c and isinstance(c[0], (int, float)):
            return [c[0], c[1] + dlat * 1e-7]
        return [move(x) for x in c]

    features = [dict(f, geometry=dict(f["geometry"], coordinates=move(
        f["geometry"]["coordinates"])), properties=dict(f["properties"],
        id="%d-%s" % (k, f["properties"]["id"]))) for f in scn.features]
    return fixes, features


def run_mqtt(scenarios: list[Scenario], workdir: Path) -> list[Score]:
    """One pass through a real Mosquitto and ``fieldtrack gateway run``: every scenario
    a device of its own (registered with a key, frames COSE-signed), all published at
    once at QoS 1; the events read back from the gateway's store."""
    from harness import GatewayProcess, Publisher, count, frame_bytes, wait_until, write_config

    from fieldtrack.gateway.store.sqlite import Device, Store

    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 1000000\nmax_inflight_messages 1000\n%s"
                    % (port, "user root\n" if os.geteuid() == 0 else ""))
    broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    now = int(time.time())
    dt = now - 600 - max(s.fixes[-1]["t"] for s in scenarios)
    plan = [shifted(s, k, dt) for k, s in enumerate(scenarios)]
    fences = workdir / "fences.geojson"
    fences.write_text(json.dumps({"type": "FeatureCollection",
                                  "features": [f for _, fs in plan for f in fs]}))
    config = write_config(workdir, port, events={"fences_file": str(fences)})
    db = workdir / "fieldtrack.db"
    store = Store(db)
    keys = {}
    for k, _ in enumerate(scenarios):
        keys["van-%d" % k] = os.urandom(32)
        store.put_device(Device("van-%d" % k, "vans", keys["van-%d" % k], True))
    store.close()
    gw = GatewayProcess(config, workdir / "gateway.log")
    total = sum(len(fixes) for fixes, _ in plan)
    try:
        time.sleep(0.5)
        gw.start()
        gw.wait_subscribed()
        pub = Publisher(port)
        for k, (fixes, _) in enumerate(plan):
            device = "van-%d" % k
            pub.publish_many(device, [frame_bytes(dict(f, type="position", boot=1, seq=i + 1),
                                                  device, keys[device])
                                      for i, f in enumerate(fixes)])
        pub.close()
        wait_until(lambda: count(db) == total, 120, "every position stored")
        time.sleep(35)  # the reorder buffer's hold (30 s) releases the last fixes
    finally:
        gw.terminate()
        broker.kill()
        broker.wait(10)
    con = sqlite3.connect(db)
    scores = []
    for k, scn in enumerate(scenarios):
        rows = con.execute("SELECT kind, t, data FROM events WHERE device = ? AND boot = -1 "
                           "AND retracted = 0 ORDER BY t, id", ("van-%d" % k,)).fetchall()
        events = []
        prefix = "%d-" % k
        for kind, t, data in rows:
            d = json.loads(data)
            for key in ("fence", "site"):
                if isinstance(d.get(key), str) and d[key].startswith(prefix):
                    d[key] = d[key][len(prefix):]
            events.append((kind, t - dt, d))
        found = found_from_events(events)
        found.visits = [(f, a - dt, b - dt) for f, a, b in found.visits]
        found.trips = [(a - dt, b) for a, b in found.trips]
        scores.append(score(found, scn.truth, scn.every))
    con.close()
    return scores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ratio(a: int, b: int) -> float:
    return a / b if b else 1.0


def row(name: str, s: Score) -> str:
    errors = s.visit_errors
    driving = (s.driving_found - s.driving_true) / s.driving_true * 100 if s.driving_true else 0.0
    return "| %s | %.3f | %.3f | %d | %.3f | %.3f | %s | %s | %d / %d | %+.1f %% |" % (
        name,
        ratio(s.transitions_tp, s.transitions_found), ratio(s.transitions_tp, s.transitions_true),
        s.spurious_parked,
        ratio(s.visits_tp, s.visits_found), ratio(s.visits_tp, s.visits_true),
        "%d / %d s" % (statistics.median(errors), max(errors)) if errors else "-",
        "%d / %d" % (s.transitions_true, s.visits_true),
        s.trips_found, s.trips_true, driving)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds per scenario (default 5)")
    ap.add_argument("--first", type=int, default=1, help="the first seed (default 1)")
    ap.add_argument("--mqtt", action="store_true",
                    help="also one pass (the first seed) through Mosquitto and the gateway")
    args = ap.parse_args(argv)
    started = time.monotonic()
    seeds = range(args.first, args.first + args.seeds)
    total = Score()
    lines = []
    trips_exact = 0
    runs = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in SCENARIOS.items():
            per = Score()
            for seed in seeds:
                s = run_pipeline(make(seed), Path(tmp))
                trips_exact += s.trips_found == s.trips_true
                runs += 1
                per.add(s)
            total.add(per)
            lines.append(row(name, per))
    print("Seeds %d-%d, %d runs; pipeline + engine + SQLite store, one frame per fix.\n"
          % (seeds[0], seeds[-1], runs))
    print("| Scenario | Transitions precision | Recall | Spurious while parked | Visits "
          "precision | Recall | Arrive/leave error (median / max) | True transitions / "
          "visits | Trips found / true | Driving time error |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for line in lines:
        print(line)
    print(row("**all**", total))
    print("\nRuns with the exact trip count: %d of %d." % (trips_exact, runs))
    print("\nThe service day with two hours (from 30 minutes in) delivered late, after "
          "the rest or half-way through it:\n")
    print("| Delivery | Transitions precision | Recall | Spurious while parked | Visits "
          "precision | Recall | Arrive/leave error (median / max) | True transitions / "
          "visits | Trips found / true | Driving time error |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for order in LATE_ORDERS:
            per = Score()
            for seed in seeds:
                per.add(run_pipeline(SCENARIOS["service day"](seed), Path(tmp), order))
            print(row("late, " + order, per))
    if args.mqtt:
        with tempfile.TemporaryDirectory() as tmp:
            names = list(SCENARIOS)
            scores = run_mqtt([SCENARIOS[n](seeds[0]) for n in names], Path(tmp))
        print("\nSeed %d through Mosquitto and `fieldtrack gateway run` (signed frames, QoS 1,"
              " the events from its store):\n" % seeds[0])
        print("| Scenario | Transitions precision | Recall | Spurious while parked | Visits "
              "precision | Recall | Arrive/leave error (median / max) | True transitions / "
              "visits | Trips found / true | Driving time error |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        over = Score()
        for name, s in zip(names, scores, strict=True):
            over.add(s)
            print(row(name, s))
        print(row("**all**", over))
    print("\nRun time %.0f s." % (time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
