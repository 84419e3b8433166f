"""Attendance: a phone's check-in is believed only if its fix backs it, and both
outcomes are kept: a row in the attendance table and an attendance_accepted or
attendance_rejected event, through the real pipeline and store.

Defaults: accuracy at most 50 m, at most 600 s old, at most 60 s ahead; inside the
site's fence allowing for the reported accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tracks import MONDAY, Rig, at, circle, fences

from fieldtrack.gateway.derive.identity import attendance_key, key_seq
from fieldtrack.gateway.store.sqlite import Device

NOW = MONDAY  # 09:00 in Berlin
TECH = Device("tech-1", "techs", None, True)
SITES = fences(
    circle("depot", 0, 0, 50, kind="site", name="Depot"),
    circle("morning-site", 0, 1000, 50, kind="site",
           active_hours={"tz": "Europe/Berlin", "mon-fri": "07:00-08:00"}),
)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path / "store.db", SITES, devices=[TECH], now=NOW)
    yield r
    r.close()


def check_in(north_m: float = 20, east_m: float = 0, *, kind: str = "check_in",
             site: str = "depot", age_s: int = 30, acc: int | None = 10, seq: int = 1,
             **data: Any) -> dict[str, Any]:
    lat, lon = at(north_m, east_m)
    frame = {"type": "event", "boot": 1, "seq": seq, "t": NOW - age_s, "kind": kind,
             "lat": lat, "lon": lon, "data": {"site": site, **data}}
    if acc is not None:
        frame["acc"] = acc
    return frame


def attendance_rows(rig: Rig) -> list[tuple[Any, ...]]:
    return list(rig.store.db.execute(
        "SELECT device, boot, seq, kind, site, t, accepted, reason, distance_m "
        "FROM attendance ORDER BY id"))


def derived(rig: Rig) -> list[tuple[str, int, int, dict[str, Any]]]:
    rows = rig.store.db.execute(
        "SELECT kind, t, seq, data FROM events WHERE boot = -1 ORDER BY id")
    return [(kind, t, seq, json.loads(data)) for kind, t, seq, data in rows]


@pytest.mark.parametrize(("frame", "accepted", "reason", "distance_m"), [
    (check_in(20, 0), True, "ok", 30.0),
    (check_in(58, 0), True, "ok", -8.0),  # 8 m outside, but the fix says +-10 m
    (check_in(70, 0), False, "outside_site", -20.0),
    (check_in(site="nowhere"), False, "unknown_site", None),
    (check_in(acc=80), False, "accuracy_too_low", 30.0),
    (check_in(acc=None), False, "no_accuracy", None),
    (check_in(mock=True), False, "mock_location", 30.0),
    (check_in(age_s=600), True, "ok", 30.0),
    (check_in(age_s=601), False, "too_old", 30.0),
    (check_in(age_s=-61), False, "in_the_future", 30.0),
    (check_in(0, 1020, site="morning-site"), False, "outside_site_hours", 30.0),
    (check_in(kind="check_out"), True, "ok", 30.0),
], ids=["inside", "outside-within-accuracy", "outside", "unknown-site", "poor-accuracy",
        "no-accuracy", "mock-location", "600-s-old", "601-s-old", "future", "site-closed",
        "check-out"])
def test_a_check_in_is_judged_and_recorded_in_the_attendance_table_and_as_an_event(
    rig: Rig, frame: dict[str, Any], accepted: bool, reason: str, distance_m: float | None,
) -> None:
    outcome = rig.send(frame, TECH.id)
    assert outcome.reject is None
    site, t = frame["data"]["site"], frame["t"]
    rows = attendance_rows(rig)
    assert [row[:8] for row in rows] == [
        ("tech-1", 1, 1, frame["kind"], site, t, int(accepted), reason)]
    if distance_m is None:
        assert rows[0][8] is None
    else:
        assert rows[0][8] == pytest.approx(distance_m, abs=0.15)  # metres, to 0.1 m
    kind = "attendance_accepted" if accepted else "attendance_rejected"
    expected = {"check": frame["kind"], "site": site, "reason": reason, "seq": 1,
                "fence": site}
    if distance_m is not None:
        expected["distance_m"] = rows[0][8]
    assert derived(rig) == [(kind, t, key_seq(attendance_key(site, 1, 1)), expected)]
    # The phone's own event is stored as sent, beside the verdict.
    raw = rig.store.db.execute("SELECT kind, t, data FROM events WHERE boot = 1").fetchall()
    assert [(k, tt, json.loads(d)["site"]) for k, tt, d in raw] == [(frame["kind"], t, site)]


def test_a_check_in_without_a_position_is_rejected(rig: Rig) -> None:
    frame = check_in()
    del frame["lat"], frame["lon"], frame["acc"]
    rig.send(frame, TECH.id)
    assert [row[6:] for row in attendance_rows(rig)] == [(0, "no_position", None)]
    assert [(k, d["reason"]) for k, _, _, d in derived(rig)] \
        == [("attendance_rejected", "no_position")]


def test_a_redelivered_check_in_is_recorded_once(rig: Rig) -> None:
    rig.send(check_in(), TECH.id)
    rig.send(check_in(), TECH.id, at=NOW + 5)
    rig.restart()
    rig.send(check_in(), TECH.id, at=NOW + 10)
    assert len(attendance_rows(rig)) == 1
    assert [k for k, _, _, _ in derived(rig)] == ["attendance_accepted"]


def test_check_in_and_check_out_of_a_day_are_both_kept(rig: Rig) -> None:
    # In at 08:59:30 UTC; out at 17:00 from 70 m away, then from the door.
    rig.send(check_in(seq=1), TECH.id)
    evening = -8 * 3600
    rig.send(check_in(70, 0, kind="check_out", seq=2, age_s=evening), TECH.id,
             at=NOW + 8 * 3600 + 5)
    rig.send(check_in(45, 0, kind="check_out", seq=3, age_s=evening - 60), TECH.id,
             at=NOW + 8 * 3600 + 65)
    assert [row[2:8] for row in attendance_rows(rig)] == [
        (1, "check_in", "depot", NOW - 30, 1, "ok"),
        (2, "check_out", "depot", NOW + 8 * 3600, 0, "outside_site"),
        (3, "check_out", "depot", NOW + 8 * 3600 + 60, 1, "ok"),
    ]
    assert [k for k, _, _, _ in derived(rig)] \
        == ["attendance_accepted", "attendance_rejected", "attendance_accepted"]
