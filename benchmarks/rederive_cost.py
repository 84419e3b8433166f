"""Re-derivation cost: what late fixes cost the gateway's pipeline process.

Run from the repository root (about a minute):

    .venv/bin/python benchmarks/rederive_cost.py [--rounds N]

One device, a fix every 10 s, a day of service driving between a depot, customers and
a no-go zone (``service_day``, built as the tests build tracks). Two hours of it are
out of coverage and delivered late; the rest arrives live. Each case goes through the
real pipeline, event engine and SQLite store (a file in a temp dir, WAL,
``synchronous=FULL`` as the gateway uses it), one MQTT message per fix, committed like
the pipeline process commits a message at a time, and re-derived after each commit as
it does (``ingest.corrections``, re-derivation delay 2 s of the messages' arrival
clock). Measured per delivery order: how many re-derivations ran, how many fixes they
judged again, and their wall time (reading the checkpoint and the positions, judging,
comparing, and the commit with fsync), best of ``--rounds``; and the same for a gap
delivered two days late (its span runs from the checkpoint before the gap to now). For
scale: the CPU time of the whole day delivered on time, one commit per message.

The final events must equal those of on-time delivery in every case (checked).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tracks import MONDAY, Rig, Track, circle, fences, rectangle  # noqa: E402

T = MONDAY
FENCES = (
    rectangle("depot", -100, -100, 100, 100, kind="depot"),
    *(circle("cust-%d" % i, 2000 * (i % 3), 3000 * (1 + i // 3), 60, kind="customer")
      for i in range(9)),
    circle("quarry", 0, 3675, 25, kind="no-go"),
)
Fix = dict[str, Any]
Delivery = list[tuple[float, Fix]]


def service_day(days: int = 1, seed: int = 1) -> list[Fix]:
    """Per day: the depot, then nine customers (20-50 min each), back; parked overnight."""
    rng = random.Random(seed)
    track = Track(T)
    for _ in range(days):
        track.park(1800, noise_m=(2, 5), seed=rng.randrange(1 << 30))
        for i in range(9):
            track.drive(2000 * (i % 3), 3000 * (1 + i // 3), 36)
            track.park(rng.randrange(1200, 3000, 10), noise_m=(2, 5),
                       seed=rng.randrange(1 << 30))
        track.drive(0, 0, 54).park(86400 - (track.t - T) % 86400, every=300)
    return [dict(f, seq=i + 1) for i, f in enumerate(track.fixes)]


def split(fixes: list[Fix], gap: tuple[int, int]) -> tuple[list[Fix], list[Fix], list[Fix]]:
    before = [f for f in fixes if f["t"] < gap[0]]
    late = [dict(f, buf=True) for f in fixes if gap[0] <= f["t"] < gap[1]]
    after = [f for f in fixes if f["t"] >= gap[1]]
    return before, late, after


def live(fixes: list[Fix]) -> Delivery:
    return [(f["t"] + 1.0, f) for f in fixes]


def burst(fixes: list[Fix], start: float) -> Delivery:
    return [(start + i / 10, f) for i, f in enumerate(fixes)]


def run(path: Path, delivery: Delivery) -> tuple[float, Rig]:
    rig = Rig(path, fences(*FENCES))
    rig.store.db.execute("PRAGMA synchronous=FULL")
    started = time.process_time()
    for arrival, f in delivery:
        rig.send(dict(f, type="position", boot=1), at=max(rig.clock.now, arrival))
    end = max(rig.clock.now, delivery[-1][0]) + 60
    rig.tick(end)
    rig.tick(end + 60)
    return time.process_time() - started, rig


def outcome(rig: Rig) -> list[tuple[Any, ...]]:
    return sorted(rig.store.db.execute(
        "SELECT kind, t, ms, key, data FROM events WHERE boot = -1 AND retracted = 0 AND "
        "kind NOT IN ('device_online', 'device_offline')").fetchall())


def cases(fixes: list[Fix], gap: tuple[int, int]) -> dict[str, Delivery]:
    before, late, after = split(fixes, gap)
    back = gap[1] + 1

    def interleaved() -> Delivery:
        out, left = live(before), list(late)
        for arrival, f in live(after):
            out.append((arrival, f))
            out.extend(burst(left[:30], arrival + 0.1))
            del left[:30]
        return out + burst(left, out[-1][0] + 1)

    return {
        "on time": live(fixes),
        "late, oldest first on return": live(before) + burst(late, back) + live(after),
        "late, newest first on return": live(before) + burst(late[::-1], back) + live(after),
        "late, 30 per live fix": interleaved(),
        "late, in order after the day": live(before) + live(after)
        + burst(late, after[-1]["t"] + 60),
    }


def table(rows: list[tuple[str, ...]], head: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="best of N rounds (default 3)")
    args = ap.parse_args(argv)
    fixes = service_day()
    gap = (T + 3 * 3600, T + 5 * 3600)  # 10:00-12:00 UTC out of coverage
    n_late = len(split(fixes, gap)[1])
    print("one device, %d fixes in the day, %d of them (2 h) late; %d fences"
          % (len(fixes), n_late, len(FENCES)))
    rows: list[tuple[str, ...]] = []
    expected: list[tuple[Any, ...]] | None = None
    on_time = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name, delivery in cases(fixes, gap).items():
            best = None
            for r in range(args.rounds):
                cpu, rig = run(Path(tmp) / ("%s-%d.db" % (name.replace(" ", "_"), r)), delivery)
                got = outcome(rig)
                done = rig.corrected
                rig.close()
                if expected is None:
                    expected = got
                if got != expected:
                    print("FAIL: %s ends with other events than on time" % name)
                    return 1
                if best is None or done.seconds < best[1].seconds:
                    best = (cpu, done)
            assert best is not None
            cpu, done = best
            if name == "on time":
                on_time = cpu
            per_fix = "%.1f us" % (done.seconds / done.fixes * 1e6) if done.fixes else "-"
            rows.append((name, str(done.rederived), "%d" % done.fixes,
                         "%.0f ms" % (done.seconds * 1000), per_fix,
                         "%d / %d / %d" % (done.added, done.changed, done.retracted)))
        print(table(rows, ("delivery", "re-derivations", "fixes judged again", "re-deriving",
                           "per fix judged again", "events added / corrected / retracted")))
        print("\nfor scale: the day on time, one commit per message: %.2f s CPU (%.0f us per "
              "fix)" % (on_time, on_time / len(fixes) * 1e6))
        # Two days late: the gap of the first day arrives at the end of the third.
        fixes3 = service_day(days=3)
        before, late, after = split(fixes3, gap)
        delivery = live(before) + live(after) + burst(late, after[-1]["t"] + 60)
        cpu, rig = run(Path(tmp) / "days.db", delivery)
        done = rig.corrected
        per_fix = done.seconds / done.fixes * 1e6 if done.fixes else 0.0
        rig.close()
        print("\n2 h delivered 2 days late (3 days of history, %d fixes): %d re-derivation, "
              "%d fixes judged again in %.0f ms (%.1f us per fix); %d added, %d corrected, "
              "%d retracted" % (len(fixes3), done.rederived, done.fixes, done.seconds * 1000,
                                per_fix, done.added, done.changed, done.retracted))
    return 0


if __name__ == "__main__":
    sys.exit(main())
