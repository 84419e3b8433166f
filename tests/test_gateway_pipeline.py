"""The pipeline without a network: every reject reason, filters, late fixes, dedup."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fieldtrack.gateway.geo import distance_m
from fieldtrack.gateway.ingest.pipeline import Pipeline, PipelineConfig
from fieldtrack.gateway.ingest.position_filter import FilterConfig
from fieldtrack.gateway.store.sqlite import Batch, Device, Store
from fieldtrack.protocol import cbor, cose, fast

NOW = 1_767_261_600
KEY = bytes(range(32))
REGISTRY = {
    "van-1": Device("van-1", "vans", KEY, True),
    "van-2": Device("van-2", "vans", bytes(32), True),
    "open-1": Device("open-1", "phones", None, True),
    "off-1": Device("off-1", "vans", None, False),
}


def pos(seq: int, t: int = NOW - 60, **kw: Any) -> dict[str, Any]:
    frame = {"type": "position", "boot": 1, "seq": seq, "t": t, "lat": 525200000,
             "lon": 134050000, "spd": 30, "hdg": 90, "alt": 38, "acc": 3, "sats": 11,
             "fix": 2, "ign": True}
    frame.update(kw)
    return frame


def signed(frame: dict[str, Any], device: str = "van-1", key: bytes = KEY) -> bytes:
    return cose.sign(fast.encode(frame), key, device)


def make(filters: FilterConfig | None = None) -> Pipeline:
    return Pipeline(PipelineConfig(filters=filters or FilterConfig()), dict(REGISTRY), {},
                    clock=lambda: float(NOW))


def run(p: Pipeline, topic: str, data: bytes) -> tuple[Any, Batch]:
    batch = Batch()
    return p.process(topic, data, NOW * 1000, batch), batch


def reason(p: Pipeline, topic: str, data: bytes) -> str | None:
    outcome, batch = run(p, topic, data)
    if outcome.reject is None:
        return None
    assert batch.rejects[0][3] == outcome.reject.reason
    assert not batch.positions
    return outcome.reject.reason


def test_signed_position_from_its_own_topic_is_accepted() -> None:
    outcome, batch = run(make(), "ft/u/van-1", signed(pos(1)))
    assert outcome.reject is None
    assert len(batch.positions) == 1
    assert batch.positions[0][:3] == ("van-1", 1, 1)


@pytest.mark.parametrize(
    ("topic", "data", "expected"),
    [
        ("ft/x/van-1", signed(pos(1)), "bad_topic"),
        ("ft/d/van-1", signed(pos(1)), "bad_topic"),
        ("ft/u/ghost", fast.encode(pos(1)), "unknown_device"),
        ("ft/u/off-1", fast.encode(pos(1)), "disabled_device"),
        ("ft/u/van-1", fast.encode(pos(1)), "mac_required"),
        ("ft/u/van-1", signed(pos(1), "van-2", bytes(32)), "device_mismatch"),
        ("ft/u/van-1", signed(pos(1), "van-1", bytes(32)), "bad_mac"),
        ("ft/u/open-1", signed(pos(1), "open-1"), "no_key"),
        ("ft/u/open-1", b"\x00\x01garbage", "trailing_bytes"),
        ("ft/u/open-1", b"", "truncated"),
        ("ft/u/open-1", cbor.dumps([0, 1, 1, NOW, 900000001, 0, 0, 0, 0, 0, 0, 2]), "bad_field"),
        ("ft/u/open-1", cbor.dumps([7, 1, 1]), "unknown_frame_type"),
        ("ft/u/open-1", fast.encode({"type": "command", "cid": 1, "kind": "reboot"}),
         "unexpected_type"),
        ("ft/u/van-1", b"\xd1\x84\x43\xa1\x01\x05\xa0\x40\x40", "bad_mac"),
    ],
    ids=lambda v: v if isinstance(v, str) and not v.startswith("ft/") else None,
)
def test_reject_reasons(topic: str, data: bytes, expected: str) -> None:
    assert reason(make(), topic, data) == expected


def test_a_new_boot_far_behind_is_rejected_as_boot_behind() -> None:
    p = make()
    run(p, "ft/u/van-1", signed(pos(1, boot=10)))
    assert reason(p, "ft/u/van-1", signed(pos(1, boot=6))) == "boot_behind"
    assert reason(p, "ft/u/van-1", signed(pos(2, boot=7))) is None


@pytest.mark.parametrize(
    ("fix", "name"),
    [
        ({"fix": 0}, "invalid"),
        ({"lat": 0, "lon": 0}, "zero"),
        ({"t": NOW + 3600}, "future"),
    ],
)
def test_dropping_filters_store_nothing_and_record_a_reject(fix: dict[str, Any], name: str) -> None:
    outcome, batch = run(make(), "ft/u/van-1", signed(pos(1, **fix)))
    assert outcome.reject is None
    assert not batch.positions
    assert [r[3] for r in batch.rejects] == ["filter_" + name]


def test_flagging_filter_keeps_the_fix_with_its_flag() -> None:
    _, batch = run(make(), "ft/u/van-1", signed(pos(1, acc=250)))
    assert batch.positions[0][16] == "accuracy"


def test_teleport_is_dropped_but_normal_driving_is_not() -> None:
    p = make()
    run(p, "ft/u/van-1", signed(pos(1, t=NOW - 100)))
    _, ok = run(p, "ft/u/van-1", signed(pos(2, t=NOW - 90, lat=525200000 + 800)))  # ~9 m/10 s
    _, far = run(p, "ft/u/van-1", signed(pos(3, t=NOW - 80, lat=535200000)))  # 111 km/10 s
    assert len(ok.positions) == 1
    assert not far.positions and far.rejects[0][3] == "filter_teleport"


def test_late_fix_is_stored_and_does_not_move_the_device_state() -> None:
    p = make()
    run(p, "ft/u/van-1", signed(pos(5, t=NOW - 10, lat=525300000)))
    _, batch = run(p, "ft/u/van-1", signed(pos(4, t=NOW - 20, lat=525290000)))
    assert len(batch.positions) == 1
    assert p.states["van-1"].t == NOW - 10
    assert p.states["van-1"].lat == 525300000
    assert "van-1" not in batch.states


def test_redelivered_newest_fix_is_not_a_duplicate_reject() -> None:
    p = make()
    run(p, "ft/u/van-1", signed(pos(5)))
    outcome, batch = run(p, "ft/u/van-1", signed(pos(5)))
    assert not batch.rejects and outcome.reject is None
    assert len(batch.positions) == 1  # the store's unique key ignores the copy


def test_same_fix_under_a_new_sequence_number_is_a_duplicate() -> None:
    p = make()
    run(p, "ft/u/van-1", signed(pos(5)))
    _, batch = run(p, "ft/u/van-1", signed(pos(6)))
    assert [r[3] for r in batch.rejects] == ["filter_duplicate"]


def test_late_fix_is_not_judged_against_a_newer_fix() -> None:
    p = make()
    run(p, "ft/u/van-1", signed(pos(5, t=NOW - 10)))
    # 1 km away an hour earlier: fine as history, a teleport only if compared to the newer fix.
    _, batch = run(p, "ft/u/van-1", signed(pos(4, t=NOW - 3600, lat=525290000)))
    assert len(batch.positions) == 1


def test_batch_frame_gives_one_row_per_fix_with_consecutive_seqs() -> None:
    fixes = [{k: v for k, v in pos(0, t=NOW - 100 + 10 * i, lat=525200000 + 100 * i).items()
              if k not in ("type", "boot", "seq")} for i in range(5)]
    frame = {"type": "batch", "boot": 2, "seq": 40, "fixes": fixes}
    _, batch = run(make(), "ft/u/van-1", signed(frame))
    assert [r[2] for r in batch.positions] == [40, 41, 42, 43, 44]


def test_events_status_and_acks_become_event_rows() -> None:
    p = make()
    frames = [
        {"type": "event", "boot": 1, "seq": 1, "t": NOW, "kind": "sos", "data": {}},
        {"type": "status", "boot": 1, "seq": 2, "t": NOW, "batt_pct": 80},
        {"type": "command_ack", "boot": 1, "seq": 3, "t": NOW, "cid": 9, "result": "ok"},
    ]
    kinds = []
    for f in frames:
        _, batch = run(p, "ft/u/van-1", signed(f))
        kinds.append(batch.events[0][4])
    assert kinds == ["sos", "status", "command_ack"]


def test_redelivered_frame_is_stored_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.put_device(REGISTRY["van-1"])
    p = Pipeline(PipelineConfig(), store.devices(), {}, clock=lambda: float(NOW))
    data = signed(pos(1))
    for _ in range(3):
        batch = Batch()
        p.process("ft/u/van-1", data, NOW * 1000, batch)
        store.commit(batch)
    con = sqlite3.connect(tmp_path / "s.db")
    assert con.execute("SELECT COUNT(*) FROM positions").fetchone()[0] == 1


def test_distance_of_one_degree_of_latitude_is_about_111_km() -> None:
    assert 111_000 < distance_m(0, 0, 10_000_000, 0) < 111_400
