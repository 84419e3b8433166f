"""Derived events from noisy field scenarios (``scenarios.py``), against their truth.

Each scenario is generated from a seed (noise of 3-8 m per axis, 1-2 % outliers of
15-70 m) and replayed live through the real event engine; the events are compared
with the truth of the noise-free path. Several seeds each, so no rule is fitted to
one. The same scenarios through the pipeline and the store are the scorecard,
``benchmarks/field_truth.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from scenarios import SCENARIOS, Scenario, Score, Truth, found_from_events, score
from tracks import MONDAY, Clock, Rig, circle, engine, fences, fix, of_kind, replay

SEEDS = [11, 12, 13, 14]
EVERY_MAX = 15  # the longest report period of the parked scenarios


def derive(scn: Scenario) -> list[tuple[str, int, dict[str, Any]]]:
    clock = Clock()
    events = replay(engine(scn.index(), clock), scn.fixes, clock)
    return [(e.kind, e.t, dict(e.data, fence=e.fence) if e.fence else dict(e.data))
            for e in events]


def scored(name: str, seed: int) -> tuple[Score, Truth, list[tuple[str, int, dict[str, Any]]]]:
    scn = SCENARIOS[name](seed)
    events = derive(scn)
    return score(found_from_events(events), scn.truth, scn.every), scn.truth, events


@pytest.mark.parametrize("seed", SEEDS)
def test_a_van_parked_3_m_inside_an_edge_for_an_hour_arrives_once_and_visits(
    seed: int,
) -> None:
    s, truth, events = scored("parked inside the edge", seed)
    fence_events = [(k, d.get("fence")) for k, _, d in events
                    if k.startswith("geofence") or k == "visit"]
    assert fence_events == [("geofence_enter", "yard"), ("geofence_dwell", "yard"),
                            ("geofence_exit", "yard"), ("visit", "yard")]
    assert s.transitions_tp == s.transitions_true == 2 and s.visits_tp == 1
    assert max(s.visit_errors) <= EVERY_MAX + 600  # a report period + dwell
    assert truth.parked and s.spurious_parked == 0


@pytest.mark.parametrize("seed", SEEDS)
def test_a_van_parked_3_m_outside_an_edge_for_an_hour_never_enters(seed: int) -> None:
    _, _, events = scored("parked outside the edge", seed)
    assert [k for k, _, _ in events if k.startswith("geofence") or k == "visit"] == []


@pytest.mark.parametrize("seed", SEEDS)
def test_jitter_and_outliers_while_parked_make_no_trip_and_no_stop_twice(seed: int) -> None:
    # An hour standing with 1-2 % jumps of 15-70 m: one trip there, one back, and the
    # hour is one stop.
    s, truth, events = scored("parked outside the edge", seed)
    assert s.trips_found == s.trips_true == 2
    stops = [t for k, t, _ in events if k == "stop"]
    parked = truth.parked[1]  # the hour (the first is before the drive there)
    assert len([t for t in stops if parked[0] - 30 <= t <= parked[1]]) == 1


@pytest.mark.parametrize("name", ["30 s fixes, a fix inside", "30 s fixes, no fix inside",
                                  "drive-by"])
def test_passages_through_small_fences_are_found_and_none_is_invented(name: str) -> None:
    total = Score()
    for seed in SEEDS:
        total.add(scored(name, seed)[0])
    assert total.transitions_found == total.transitions_tp  # precision 1
    assert total.transitions_tp >= 0.95 * total.transitions_true
    assert total.transitions_true >= 4 * len(SEEDS)


def test_a_service_day_gives_every_transition_visit_and_trip() -> None:
    total = Score()
    for seed in SEEDS:
        s = scored("service day", seed)[0]
        assert s.trips_found == s.trips_true == 5
        total.add(s)
    assert total.transitions_found == total.transitions_tp == total.transitions_true
    assert total.visits_found == total.visits_tp == total.visits_true == 4 * len(SEEDS)
    assert abs(total.driving_found - total.driving_true) <= 0.05 * total.driving_true


@pytest.mark.parametrize("seed", SEEDS)
def test_a_reboot_in_the_middle_of_a_visit_is_still_one_visit(seed: int) -> None:
    s, _, events = scored("reboot mid-visit", seed)
    assert [k for k, _, _ in events if k in ("geofence_enter", "geofence_exit", "visit")] \
        == ["geofence_enter", "geofence_exit", "visit"]
    assert s.visits_tp == 1 and s.spurious_parked == 0


def test_the_truth_follows_the_noise_free_path() -> None:
    # 30 s fixes at 60-90 km/h through five gates: each entered and left once, 2-7 s
    # apart (50 m or 100 m across); one trip, from the end of the first 120 s standing.
    scn = SCENARIOS["30 s fixes, no fix inside"](1)
    kinds = [(k, f) for k, _, f in scn.truth.transitions]
    assert kinds == [(k, "gate-%d" % i) for i in range(5)
                     for k in ("geofence_enter", "geofence_exit")]
    times = [t for _, t, _ in scn.truth.transitions]
    assert all(1 <= b - a <= 7 for a, b in zip(times[::2], times[1::2], strict=True))
    assert len(scn.truth.trips) == 1 and scn.truth.trips[0][0] == scn.fixes[0]["t"] + 120
    assert all(b["t"] - a["t"] == 30 for a, b in zip(scn.fixes, scn.fixes[1:], strict=False))



@pytest.mark.parametrize("order", ["in order", "reversed", "interleaved"])
def test_a_service_day_with_two_hours_delivered_late_gives_the_same_events(
    tmp_path: Path, order: str,
) -> None:
    # Through the pipeline and the store: two hours held back (stops, visits, a trip)
    # and sent after the rest, or half-way through it; the late span is re-derived.
    scn = SCENARIOS["service day"](SEEDS[0])
    t0 = scn.fixes[0]["t"]
    held = [f for f in scn.fixes if t0 + 1800 <= f["t"] < t0 + 9000]
    live = [f for f in scn.fixes if f not in held]
    if order == "reversed":
        held.reverse()
    split = len(live) if order != "interleaved" else len(live) // 2 + 90
    rig = Rig(tmp_path / "store.db", scn.index())
    for f in live[:split] + held + live[split:]:
        rig.position(f)
    rig.tick(rig.clock.now + 3600)
    rows = rig.store.iter_rows("SELECT kind, t, data FROM events WHERE boot = -1 AND "
                               "retracted = 0 ORDER BY t, id")
    events = [(r["kind"], r["t"], json.loads(r["data"])) for r in rows]
    rig.close()
    s = score(found_from_events(events), scn.truth, scn.every)
    assert s.transitions_found == s.transitions_tp == s.transitions_true == 13
    assert s.visits_found == s.visits_tp == s.visits_true == 4
    assert s.trips_found == s.trips_true == 5


def _drive_east(points: list[tuple[float, float]], every: int = 30) -> list[dict[str, Any]]:
    """Fixes every ``every`` s at 72 km/h (20 m/s), at the (north, east) points given."""
    t0 = MONDAY + 120
    start = [fix(MONDAY + k * every, 0, 0) for k in range(0, 120 // every)]
    return start + [fix(t0 + k * every, n, e, spd=72, acc=12) for k, (n, e) in
                    enumerate(points)]


def test_a_fix_thrown_aside_at_a_small_fence_does_not_hide_the_passage() -> None:
    # 600 m apart along a road east; the fix at the gate (50 m across) lands 60 m north:
    # neither way through it passes the gate, the way from the fix before to the one
    # after does, straight through.
    gate = fences(circle("gate", 0, 1800, 25, kind="site"))
    way = [(0, 0), (0, 600), (0, 1200), (60, 1800), (0, 2400), (0, 3000)]
    clock = Clock()
    events = of_kind(replay(engine(gate, clock), _drive_east(way), clock),
                     "geofence_enter", "geofence_exit")
    assert [(e.kind, e.fence) for e in events] == [("geofence_enter", "gate"),
                                                   ("geofence_exit", "gate")]
    passing = MONDAY + 120 + 3 * 30  # the true time at the gate's centre
    assert all(abs(e.t - passing) <= 30 for e in events)
    # The same way with the fix on the road: one passage as well, not two.
    clock = Clock()
    straight = [(0, 0), (0, 600), (0, 1200), (0, 1800), (0, 2400), (0, 3000)]
    events = of_kind(replay(engine(gate, clock), _drive_east(straight), clock),
                     "geofence_enter", "geofence_exit")
    assert [(e.kind, e.fence) for e in events] == [("geofence_enter", "gate"),
                                                   ("geofence_exit", "gate")]


def test_a_turn_is_not_a_jump_the_corner_it_cuts_is_not_passed() -> None:
    # East 600 m, then north at a corner: the way from the fix before the corner to the
    # one after it cuts across a yard that the van drove round.
    yard = fences(circle("yard", 300, 900, 40, kind="customer"))
    way = [(0, 0), (0, 600), (0, 1200), (600, 1200), (1200, 1200)]
    clock = Clock()
    events = replay(engine(yard, clock), _drive_east(way), clock)
    assert of_kind(events, "geofence_enter", "geofence_exit") == []


def test_a_van_that_stops_just_inside_while_a_fix_jumps_out_makes_no_passage() -> None:
    # Service day, seed 54: at customer-1 the van stops 12 and 38 m inside, then one
    # fix at 0 km/h lands 25 m outside. Standing, not a passage: no enter/exit pair
    # seconds long, only the visit's.
    s, truth, events = scored("service day", 54)
    pairs = [(k, t) for k, t, d in events
             if d.get("fence") == "customer-1" and k in ("geofence_enter", "geofence_exit")]
    assert len(pairs) == 2, pairs
    assert s.spurious_parked == 0
    assert s.transitions_found == s.transitions_tp == s.transitions_true
