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
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from scenarios import SCENARIOS, Scenario, Score, found_from_events, score  # noqa: E402
from tracks import VAN, Rig  # noqa: E402


def run_pipeline(scn: Scenario, workdir: Path) -> Score:
    rig = Rig(workdir / ("%s-%d.db" % (scn.name.replace(" ", "-"), scn.seed)), scn.index())
    try:
        for f in scn.fixes:
            rig.position(f)
        rig.tick(scn.fixes[-1]["t"] + 3600)
        rows = rig.store.iter_rows("SELECT kind, t, data FROM events WHERE device = ? AND "
                                   "boot = -1 ORDER BY t, id", (VAN.id,))
        events = [(r["kind"], r["t"], json.loads(r["data"])) for r in rows]
    finally:
        rig.close()
    return score(found_from_events(events), scn.truth, scn.every)


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
    print("\nRuns with the exact trip count: %d of %d. Run time %.0f s."
          % (trips_exact, runs, time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
