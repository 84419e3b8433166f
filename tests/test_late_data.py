"""Late data: a buffer delivered hours late, in any order, ends as if it had come on time.

A service day (depot, a customer visit, a no-go quarry passed between two fixes, two
more trips) with two hours out of coverage. The buffer arrives when coverage returns:
oldest first, newest first, shuffled, interleaved with live fixes, or after the live
fixes. Every delivery goes through the real pipeline and SQLite store (``tracks.Rig``,
re-deriving after each commit as the pipeline process does) and must end with the same
derived events, visits, derive state and daily report as the same fixes delivered on
time. Seeded: noise while parked, the stay at the customer and the shuffles vary.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from harness import GatewayProcess, Publisher, count, frame_bytes, free_port, position, wait_until
from harness import write_config as write_gateway_config
from test_feed_sink import Subscriber, make_sink
from tracks import MONDAY, VAN, Rig, Track, at, circle, collection, fences, rectangle, write

from fieldtrack.gateway.derive.engine import DeriveConfig
from fieldtrack.gateway.sinks.influx import event_lines
from fieldtrack.gateway.sinks.outbox import Outbox
from fieldtrack.gateway.store.sqlite import Device, Store
from fieldtrack.tools.export.command import export as export_command
from fieldtrack.tools.report.days import build
from fieldtrack.tools.report.model import parse_day
from fieldtrack.tools.report.reader import read_day

T = MONDAY
DAY_FENCES = (
    rectangle("depot", -100, -100, 100, 100, kind="depot"),
    circle("acme", 0, 3000, 60, kind="customer", name="ACME Ltd"),
    circle("quarry", 0, 3675, 25, kind="no-go"),
)
GAP = (T + 1300, T + 1300 + 7200)  # out of coverage: on the way to ACME until the third stop
PRESENCE = ("device_online", "device_offline")

Fix = dict[str, Any]
Delivery = list[tuple[float, Fix]]  # (arrival, fix), in arrival order


def service_day(seed: int) -> list[Fix]:
    """Depot 20 min, 3 km to ACME, 40-55 min there, past the quarry at 54 km/h (150 m
    between fixes), 6 km, 30 min stop, 2 km north, parked an hour. Seqs in fix-time order."""
    rng = random.Random(seed)
    track = (Track(T).park(1200, noise_m=(2, 5), seed=seed)
             .drive(0, 3000, 36)
             .park(rng.randrange(2400, 3300, 10), noise_m=(2, 5), seed=seed + 1)
             .drive(0, 9000, 54)
             .park(1800, noise_m=(2, 5), seed=seed + 2)
             .drive(2000, 9000, 36)
             .park(3600, noise_m=(2, 5), seed=seed + 3))
    return [dict(f, seq=i + 1) for i, f in enumerate(track.fixes)]


def split(fixes: list[Fix]) -> tuple[list[Fix], list[Fix], list[Fix]]:
    """Live before the gap, the buffer (flagged ``buf``), live after it."""
    before = [f for f in fixes if f["t"] < GAP[0]]
    buffered = [dict(f, buf=True) for f in fixes if GAP[0] <= f["t"] < GAP[1]]
    after = [f for f in fixes if f["t"] >= GAP[1]]
    return before, buffered, after


def live(fixes: list[Fix]) -> Delivery:
    return [(f["t"] + 1.0, f) for f in fixes]


def burst(fixes: list[Fix], start: float) -> Delivery:
    """A buffer replayed at 10 fixes a second."""
    return [(start + i / 10, f) for i, f in enumerate(fixes)]


def on_time(fixes: list[Fix], rng: random.Random) -> Delivery:
    return live(fixes)


def oldest_first(fixes: list[Fix], rng: random.Random) -> Delivery:
    before, buffered, after = split(fixes)
    return live(before) + burst(buffered, GAP[1] + 1) + live(after)


def newest_first(fixes: list[Fix], rng: random.Random) -> Delivery:
    before, buffered, after = split(fixes)
    return live(before) + burst(buffered[::-1], GAP[1] + 1) + live(after)


def shuffled(fixes: list[Fix], rng: random.Random) -> Delivery:
    before, buffered, after = split(fixes)
    mixed = list(buffered)
    rng.shuffle(mixed)
    return live(before) + burst(mixed, GAP[1] + 1) + live(after)


def interleaved(fixes: list[Fix], rng: random.Random) -> Delivery:
    """Live fixes as they happen; after each, the next 10-40 buffered fixes (oldest first)."""
    before, buffered, after = split(fixes)
    out = live(before)
    left = list(buffered)
    for arrival, f in live(after):
        out.append((arrival, f))
        n = rng.randint(10, 40)
        out.extend(burst(left[:n], arrival + 0.1))
        del left[:n]
    return out + burst(left, out[-1][0] + 1)


def after_live(fixes: list[Fix], rng: random.Random) -> Delivery:
    """Every live fix first; the buffer, in order, only at the end of the day."""
    before, buffered, after = split(fixes)
    return live(before) + live(after) + burst(buffered, after[-1]["t"] + 60)


def deliver(path: Path, delivery: Delivery, config: DeriveConfig | None = None) -> Rig:
    rig = Rig(path, fences(*DAY_FENCES), config=config)
    for arrival, f in delivery:
        frame = dict(f, type="position", boot=1)
        outcome = rig.send(frame, at=max(rig.clock.now, arrival))
        assert outcome.reject is None and not outcome.dropped, outcome
    end = max(rig.clock.now, delivery[-1][0]) + 60
    rig.tick(end)
    rig.tick(end + 60)  # the reorder hold and the re-derivation delay have passed
    return rig


def outcome(rig: Rig) -> dict[str, Any]:
    """Everything a consumer of the store sees, less presence (which follows arrivals)."""
    db = rig.store.db
    events = sorted(db.execute(
        "SELECT kind, t, ms, key, lat, lon, data FROM events WHERE boot = -1 AND retracted = 0 "
        "AND kind NOT IN (?, ?)", PRESENCE).fetchall())
    visits = sorted(db.execute(
        "SELECT site, arrive, leave, duration_s FROM visits WHERE retracted = 0").fetchall())
    report = build(parse_day("2026-01-05"), read_day(rig.store, parse_day("2026-01-05")))
    (day,) = report.devices
    state = {k: rig.engine.states[VAN.id][k] for k in ("fences", "motion", "released_t")}
    return {"events": events, "visits": visits, "state": json.loads(json.dumps(state)),
            "distance_m": day.distance_m, "trips": len(day.trips), "driving_s": day.driving_s}


DELIVERIES: dict[str, Callable[[list[Fix], random.Random], Delivery]] = {
    "oldest-first": oldest_first, "newest-first": newest_first, "shuffled": shuffled,
    "interleaved-with-live": interleaved, "in-order-after-live": after_live,
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_on_time_the_day_has_its_visit_no_go_entry_and_trips(seed: int,
                                                             tmp_path: Path) -> None:
    rig = deliver(tmp_path / "s.db", on_time(service_day(seed), random.Random(seed)))
    got = outcome(rig)
    kinds = [(kind, json.loads(data).get("fence", "")) for kind, _, _, _, _, _, data
             in got["events"]]
    assert ("no_go_enter", "quarry") in kinds and ("visit", "acme") in kinds
    assert [site for site, *_ in got["visits"]] == ["acme"]
    assert got["trips"] == 3 and 10_900 <= got["distance_m"] <= 11_100
    assert rig.corrected.rederived == 0
    rig.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("how", list(DELIVERIES))
def test_a_buffer_delivered_late_ends_as_if_on_time(how: str, seed: int,
                                                    tmp_path: Path) -> None:
    fixes = service_day(seed)
    expected = outcome(deliver(tmp_path / "on-time.db", on_time(fixes, random.Random(seed))))
    rig = deliver(tmp_path / "late.db", DELIVERIES[how](fixes, random.Random(seed)))
    assert outcome(rig) == expected
    if how != "oldest-first":  # else every buffered fix is newer than the judged ones
        assert rig.corrected.rederived >= 1 and rig.engine.late_fixes > 0
    assert rig.engine.redo == set() and "redo" not in rig.engine.states[VAN.id]
    rig.close()


def test_a_buffer_after_live_data_is_re_derived_once_per_quiet_spell(tmp_path: Path) -> None:
    fixes = service_day(1)
    rig = deliver(tmp_path / "s.db", after_live(fixes, random.Random(1)))
    _, buffered, _ = split(fixes)
    assert rig.engine.late_fixes == len(buffered)
    assert rig.corrected.rederived == 1  # 10 fixes a second: one quiet spell, at the end
    # Checkpoints: one an hour of fix time. The newest before the gap is the first fix's,
    # so every later fix was judged again, once.
    cps = [t for (t,) in rig.store.db.execute("SELECT t FROM derive_checkpoints ORDER BY t")]
    assert cps[0] == T and all(3600 <= b - a < 3700 for a, b in zip(cps, cps[1:], strict=False))
    assert len(cps) == 3
    assert rig.corrected.fixes == len(fixes) - 1
    assert rig.corrected.added > 0 and rig.corrected.retracted > 0  # trips stitched again
    rig.close()


def test_re_derivation_survives_a_restart_before_it_ran(tmp_path: Path) -> None:
    # The late fixes are committed with their device's mark; the gateway stops before
    # the re-derivation and does it when it starts again.
    fixes = service_day(2)
    expected = outcome(deliver(tmp_path / "on-time.db", on_time(fixes, random.Random(2))))
    delivery = after_live(fixes, random.Random(2))
    rig = Rig(tmp_path / "late.db", fences(*DAY_FENCES),
              config=DeriveConfig(rederive_delay_s=1e9))  # never due while it runs
    for arrival, f in delivery:
        rig.send(dict(f, type="position", boot=1), at=max(rig.clock.now, arrival))
    assert rig.corrected.rederived == 0
    rig.config = DeriveConfig()
    rig.restart()
    assert rig.engine.redo == {VAN.id}
    rig.tick(rig.clock.now + 60)
    rig.tick(rig.clock.now + 60)
    assert outcome(rig) == expected
    rig.close()


# --- retractions reach the store, the feed and InfluxDB ---------------------------------


def quarry_pass() -> list[Fix]:
    """54 km/h east, a fix every 50 s: 3300 m, then 4050 m; the straight line between them
    crosses the quarry (3675 m, radius 25 m). Then on east, a fix every 10 s."""
    fixes = Track(T, 0, 3300, every=50, spd=54).drive(0, 4050, 54).fixes
    fixes += Track(T + 50, 0, 4050, every=10, spd=54).drive(0, 6000, 54).fixes[1:]
    return [dict(f, seq=i + 1) for i, f in enumerate(fixes)]


def detour() -> Fix:
    """The fix between the two: 300 m north of the quarry. No straight line passed it."""
    lat, lon = at(300, 3675)
    return dict(quarry_pass()[0], t=T + 25, lat=lat, lon=lon, seq=1000, buf=True)


def test_a_late_fix_that_removes_a_crossing_retracts_it_in_the_store(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "s.db", fences(*DAY_FENCES))
    for f in quarry_pass():
        rig.send(dict(f, type="position", boot=1), at=f["t"] + 1)
    rig.tick(T + 300)
    crossing = {"geofence_enter", "no_go_enter", "geofence_exit"}
    rows = rig.store.db.execute("SELECT key, revision FROM events WHERE retracted = 0 AND "
                                "kind IN ('geofence_enter', 'no_go_enter', 'geofence_exit')")
    keys = dict(rows.fetchall())
    assert len(keys) == 3 and set(keys.values()) == {0}
    rig.send(dict(detour(), type="position", boot=1), at=T + 400)
    rig.tick(T + 460)
    retracted = rig.store.db.execute(
        "SELECT key, kind, revision, retracted FROM events WHERE key IN (%s)"
        % ", ".join("?" * len(keys)), tuple(keys)).fetchall()
    assert sorted(r[1] for r in retracted) == sorted(crossing)
    assert {(r[2], r[3]) for r in retracted} == {(1, 1)}
    # Moved to the end of the log, where the sinks' cursors will find them.
    top = rig.store.db.execute("SELECT key FROM events ORDER BY id DESC LIMIT 3").fetchall()
    assert {k for (k,) in top} == set(keys)
    assert rig.corrected.retracted == 3 and rig.corrected.added == 0
    rig.close()


def test_a_retraction_reaches_the_feed_and_influx_lines(mosquitto_broker: Any,
                                                        tmp_path: Path) -> None:
    rig = Rig(tmp_path / "s.db", fences(*DAY_FENCES))
    for f in quarry_pass():
        rig.send(dict(f, type="position", boot=1), at=f["t"] + 1)
    rig.tick(T + 300)
    sink = make_sink(mosquitto_broker.port)
    outbox = Outbox(rig.store.path, sink)
    sub = Subscriber(mosquitto_broker.port, "fieldtrack/event/#")
    try:
        wait_until(lambda: outbox.step(rig.store) or True, 5, "the sink")
        while outbox.step(rig.store):
            pass
        wait_until(lambda: any(json.loads(p)["kind"] == "no_go_enter"
                               for _, p, _ in sub.received()), 5, "the no-go entry")
        first = [json.loads(p) for _, p, _ in sub.received()]
        entry = next(d for d in first if d["kind"] == "no_go_enter")
        assert (entry["revision"], entry["retracted"]) == (0, False)
        rig.send(dict(detour(), type="position", boot=1), at=T + 400)
        rig.tick(T + 460)
        while outbox.step(rig.store):
            pass
        wait_until(lambda: len(sub.received()) >= len(first) + 3, 5, "the retractions")
        later = [json.loads(p) for _, p, _ in sub.received()[len(first):]]
        assert sorted(d["kind"] for d in later) == ["geofence_enter", "geofence_exit",
                                                    "no_go_enter"]
        gone = next(d for d in later if d["kind"] == "no_go_enter")
        assert {k: gone[k] for k in ("key", "time", "seq")} \
            == {k: entry[k] for k in ("key", "time", "seq")}
        assert (gone["revision"], gone["retracted"]) == (1, True)
        # InfluxDB: the same point, written again with count 0.
        rows = rig.store.events_after(0, 1000)
        (line,) = event_lines([r for r in rows if r["key"] == entry["key"]])
        assert " count=0i," in line and "retracted=true" in line
    finally:
        sub.close()
        sink.close()
        rig.close()


# --- identity: two events of one kind in one second stay two ----------------------------


def test_two_check_ins_in_one_second_are_two_verdicts_and_two_points(tmp_path: Path) -> None:
    # A double tap: two check-in frames of the same second, both refused (no such site
    # fix quality does not matter here). Keyed by their own boot and seq, not by time.
    rig = Rig(tmp_path / "s.db", fences(*DAY_FENCES))
    lat, lon = at(0, 3000)
    for seq in (1, 2):
        rig.send({"type": "event", "boot": 1, "seq": seq, "t": T, "kind": "check_in",
                  "lat": lat, "lon": lon, "acc": 8, "data": {"site": "acme"}}, at=T + 1)
    rows = rig.store.events_after(0, 100)
    verdicts = [r for r in rows if r["kind"] == "attendance_accepted"]
    assert len(verdicts) == 2 and len({r["key"] for r in verdicts}) == 2
    stamps = {line.rsplit(" ", 1)[1] for line in event_lines(verdicts)}
    assert len(stamps) == 2
    rig.close()


def test_two_fences_entered_at_one_fix_are_two_events_and_two_points(tmp_path: Path) -> None:
    # Two fences with the same edge (a yard and the site drawn on it): one fix enters both.
    overlapping = (circle("yard", 0, 1000, 60, kind="site"),
                   circle("gate", 0, 1000, 60, kind="site"))
    rig = Rig(tmp_path / "s.db", fences(*overlapping))
    track = Track(T, 0, 700, every=10, spd=18).drive(0, 1000, 18).park(120)
    for i, f in enumerate(track.fixes):
        rig.send(dict(f, type="position", boot=1, seq=i + 1, ms=250), at=f["t"] + 1)
    rig.tick(T + 400)
    rows = [r for r in rig.store.events_after(0, 100) if r["kind"] == "geofence_enter"]
    assert sorted(json.loads(r["data"])["fence"] for r in rows) == ["gate", "yard"]
    assert len({(r["t"], r["ms"]) for r in rows}) == 1 and len({r["key"] for r in rows}) == 2
    assert len({line.rsplit(" ", 1)[1] for line in event_lines(rows)}) == 2
    rig.close()


# --- the running gateway ------------------------------------------------------------------


def test_the_gateway_counts_late_fixes_and_re_derivations_in_metrics(
    tmp_path: Path, mosquitto_broker: Any,
) -> None:
    http_port = free_port()
    config = write_gateway_config(tmp_path, mosquitto_broker.port,
                                  http={"enabled": True, "port": http_port},
                                  events={"reorder_hold_s": 0.2, "rederive_delay_s": 0.5})
    store = Store(tmp_path / "fieldtrack.db")
    store.put_device(Device("van-1", "vans", None, True))
    store.close()
    db = tmp_path / "fieldtrack.db"
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    gw.start()
    pub = Publisher(mosquitto_broker.port)
    try:
        gw.wait_subscribed()
        t0 = int(time.time()) - 3 * 3600  # from a buffer, three hours ago
        pub.publish_many("van-1", [frame_bytes(position(s, t0=t0), "van-1", None)
                                   for s in range(30, 61)])
        wait_until(lambda: count(db, "SELECT COALESCE(MAX(json_extract(state, '$.released_t')), "
                                 "0) FROM derive_state") == t0 + 60, what="the live fixes judged")
        pub.publish_many("van-1", [frame_bytes(position(s, t0=t0), "van-1", None)
                                   for s in range(29, 0, -1)])  # newest first

        def metric(name: str) -> float:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % http_port,
                                        timeout=2) as r:
                text = r.read().decode()
            for line in text.splitlines():
                if line.startswith(name + " "):
                    return float(line.rsplit(" ", 1)[1])
            return -1.0

        wait_until(lambda: metric("fieldtrack_rederivations_total") >= 1, what="re-derived")
        assert metric("fieldtrack_late_fixes_total") == 29
        assert metric("fieldtrack_rederived_fixes_total") >= 59
        log = (tmp_path / "gateway.log").read_text()
        assert "late fixes for van-1 from " in log
        assert count(db, "SELECT json_extract(state, '$.redo') IS NULL FROM derive_state") == 1
    finally:
        pub.close()
        gw.stop_quietly()


def test_a_version_1_store_gains_the_late_data_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
        "CREATE TABLE events (id INTEGER PRIMARY KEY, device TEXT NOT NULL, boot INTEGER NOT "
        "NULL, seq INTEGER NOT NULL, t INTEGER NOT NULL, kind TEXT NOT NULL, lat INTEGER, lon "
        "INTEGER, acc INTEGER, data TEXT NOT NULL DEFAULT '{}', received INTEGER NOT NULL, "
        "UNIQUE (device, boot, seq));"
        "INSERT INTO events (device, boot, seq, t, kind, received) "
        "VALUES ('van-1', -1, 7, 100, 'stop', 0);"
        "CREATE TABLE visits (id INTEGER PRIMARY KEY, device TEXT NOT NULL, site TEXT NOT NULL, "
        "arrive INTEGER NOT NULL, leave INTEGER NOT NULL, duration_s INTEGER NOT NULL, "
        "lat INTEGER NOT NULL, lon INTEGER NOT NULL, UNIQUE (device, site, arrive));")
    con.close()
    store = Store(path)
    row = store.db.execute("SELECT kind, ms, key, judged, retracted, revision FROM events")
    assert row.fetchall() == [("stop", 0, None, None, 0, 0)]
    assert store.db.execute("SELECT retracted FROM visits").fetchall() == []
    version = store.db.execute("SELECT value FROM meta WHERE key = 'schema_version'")
    assert version.fetchone() == ("2",)
    store.close()


def test_a_checkpoint_it_cannot_judge_from_is_logged_and_not_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    fixes = service_day(1)
    before, buffered, after = split(fixes)
    rig = Rig(tmp_path / "s.db", fences(*DAY_FENCES))
    for arrival, f in live(before) + live(after):
        rig.send(dict(f, type="position", boot=1), at=arrival)
    rig.store.db.execute("UPDATE derive_checkpoints SET state = '{}'")  # not a state
    for arrival, f in burst(buffered, after[-1]["t"] + 60):
        rig.send(dict(f, type="position", boot=1), at=arrival)
    rig.tick(rig.clock.now + 60)
    assert "re-derivation of van-1 failed" in caplog.text
    assert rig.engine.redo == set() and "redo" not in rig.engine.states[VAN.id]
    assert rig.corrected.rederived == 0
    stored = rig.store.db.execute("SELECT json_extract(state, '$.redo') FROM derive_state")
    assert stored.fetchone() == (None,)
    rig.close()


# --- the real path: signed frames over MQTT, the gateway, the export ----------------------

KEY = bytes(range(7, 39))


def gateway_day(tmp_path: Path, broker: Any, name: str,
                frames: list[Fix]) -> tuple[list[Any], str]:
    """The fixes published in this order to a gateway of its own: its exported events, its
    log."""
    where = tmp_path / name
    where.mkdir()
    fence_file = write(where / "fences.geojson", collection(*DAY_FENCES))
    config = write_gateway_config(where, broker.port, events={
        "fences_file": str(fence_file), "reorder_hold_s": 0.5, "rederive_delay_s": 1.0})
    store = Store(where / "fieldtrack.db")
    store.put_device(Device("van-1", "vans", KEY, True))
    store.close()
    db = where / "fieldtrack.db"
    gw = GatewayProcess(config, where / "gateway.log")
    gw.start()
    pub = Publisher(broker.port)
    try:
        gw.wait_subscribed()
        pub.publish_many("van-1", [frame_bytes(dict(f, type="position", boot=1), "van-1", KEY)
                                   for f in frames])
        last = max(f["t"] for f in frames)
        wait_until(lambda: count(db, "SELECT COALESCE(MAX(json_extract(state, '$.released_t'))"
                                 ", 0) FROM derive_state WHERE json_extract(state, '$.redo') "
                                 "IS NULL") == last, 60, "every fix judged, none waiting")
        assert count(db) == len(frames)
    finally:
        pub.close()
        assert gw.terminate() == 0
    result = CliRunner().invoke(export_command, ["events", "--store", str(db)])
    assert result.exit_code == 0, result.output
    docs = [json.loads(line) for line in result.stdout.splitlines()]
    return sorted((d["kind"], d["time"], d["key"], d.get("lat"), d.get("lon"),
                   json.dumps(d["data"], sort_keys=True))
                  for d in docs if d["boot"] == -1 and d["kind"] not in PRESENCE), \
        (where / "gateway.log").read_text()


@pytest.mark.slow
def test_through_mqtt_the_gateway_exports_the_same_day_whatever_the_order(
    tmp_path: Path, mosquitto_broker: Any,
) -> None:
    shift = int(time.time()) - 86400 - T  # yesterday: no filter flags the fixes
    before, buffered, after = ([dict(f, t=f["t"] + shift) for f in part]
                               for part in split(service_day(4)))
    fixes = before + [dict(f, buf=False) for f in buffered] + after
    assert len(before) > 100 and len(buffered) == 720 and len(after) > 100
    on_time, log = gateway_day(tmp_path, mosquitto_broker, "on-time", fixes)
    assert "late fixes" not in log.replace("0 late fixes", "")
    assert [k for k, *_ in on_time].count("visit") == 1
    assert "no_go_enter" in [k for k, *_ in on_time]
    rng = random.Random(4)
    shuffled = list(buffered)
    rng.shuffle(shuffled)
    per_live = -(-len(buffered) // len(after))  # the buffer spread over the live fixes
    late = {
        "newest-first": before + buffered[::-1] + after,
        "interleaved": before + [f for i, live_fix in enumerate(after) for f in
                                 [live_fix, *buffered[i * per_live:(i + 1) * per_live]]],
        "after-live": before + after + buffered,
        "shuffled": before + shuffled + after,
    }
    for name, frames in late.items():
        assert sorted(f["seq"] for f in frames) == [f["seq"] for f in fixes]
        events, log = gateway_day(tmp_path, mosquitto_broker, name, frames)
        assert events == on_time, name
        assert "late fixes for van-1 from" in log, name  # it was re-derived
