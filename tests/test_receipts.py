"""Receipts without a network: which frames earn one, how runs merge, how they are signed."""

from __future__ import annotations

from typing import Any

import pytest

from fieldtrack.gateway.ingest import receipts
from fieldtrack.gateway.ingest.authenticate import Rejected
from fieldtrack.gateway.ingest.pipeline import Pipeline, PipelineConfig
from fieldtrack.gateway.store.sqlite import Batch, Device
from fieldtrack.protocol import cose, fast, frames

NOW = 1_767_261_600
KEY = bytes(range(32))
U32 = 0xFFFFFFFF
REGISTRY = {
    "van-1": Device("van-1", "vans", KEY, True),
    "open-1": Device("open-1", "phones", None, True),
    "off-1": Device("off-1", "vans", KEY, False),
}


def pos(seq: int, boot: int = 1, **kw: Any) -> dict[str, Any]:
    return dict({"type": "position", "boot": boot, "seq": seq, "t": NOW - 600 + seq,
                 "lat": 525200000 + seq * 100, "lon": 134050000, "spd": 30, "hdg": 90,
                 "alt": 38, "acc": 3, "sats": 11, "fix": 2, "ign": True}, **kw)


def batch(seq: int, n: int, boot: int = 1) -> dict[str, Any]:
    fixes = [{k: v for k, v in pos(seq + i).items() if k not in ("type", "boot", "seq")}
             for i in range(n)]
    return {"type": "batch", "boot": boot, "seq": seq, "fixes": fixes}


def signed(frame: dict[str, Any], device: str = "van-1", key: bytes = KEY) -> bytes:
    return cose.sign(fast.encode(frame), key, device)


def settled(topic: str, data: bytes, pipeline: Pipeline | None = None) -> receipts.Run | None:
    p = pipeline or Pipeline(PipelineConfig(), dict(REGISTRY), {}, clock=lambda: float(NOW))
    return receipts.settled(p.process(topic, data, NOW * 1000, Batch()))


# --- which frames earn a receipt ----------------------------------------------------


def test_a_stored_position_is_settled() -> None:
    assert settled("ft/u/van-1", signed(pos(7))) == ("van-1", 1, 7, 1)


def test_a_batch_settles_all_its_records() -> None:
    assert settled("ft/u/van-1", signed(batch(100, 60))) == ("van-1", 1, 100, 60)


def test_a_redelivered_frame_is_settled_again() -> None:
    p = Pipeline(PipelineConfig(), dict(REGISTRY), {}, clock=lambda: float(NOW))
    data = signed(pos(7))
    assert settled("ft/u/van-1", data, p) == settled("ft/u/van-1", data, p) == ("van-1", 1, 7, 1)


def test_a_fix_dropped_by_a_filter_is_settled() -> None:
    # Latitude and longitude 0: the default zero filter drops it for good.
    assert settled("ft/u/van-1", signed(pos(3, lat=0, lon=0))) == ("van-1", 1, 3, 1)


def test_a_new_boot_far_behind_is_not_settled_until_the_operator_resets() -> None:
    p = Pipeline(PipelineConfig(max_boot_lag=3), dict(REGISTRY), {}, clock=lambda: float(NOW))
    assert settled("ft/u/van-1", signed(pos(1, boot=10)), p) is not None
    outcome = p.process("ft/u/van-1", signed(pos(2, boot=5)), NOW * 1000, Batch())
    assert outcome.reject is not None and outcome.reject.reason == "boot_behind"
    assert receipts.settled(outcome) is None


def test_a_frame_with_a_boot_that_is_no_counter_is_settled() -> None:
    p = Pipeline(PipelineConfig(), dict(REGISTRY), {}, clock=lambda: float(NOW))
    outcome = p.process("ft/u/van-1", signed(pos(2, boot=U32)), NOW * 1000, Batch())
    assert outcome.reject is not None and outcome.reject.reason == "bad_boot"
    assert receipts.settled(outcome) == ("van-1", U32, 2, 1)


def test_a_plain_frame_of_a_device_without_a_key_is_settled() -> None:
    assert settled("ft/u/open-1", fast.encode(pos(4))) == ("open-1", 1, 4, 1)


@pytest.mark.parametrize(("topic", "data"), [
    ("ft/u/van-1", signed(pos(1), key=bytes(32))),  # forged: bad_mac
    ("ft/u/van-1", fast.encode(pos(1))),  # unsigned from a device with a key
    ("ft/u/van-1", signed(pos(1), device="open-1")),  # signed as another device
    ("ft/u/ghost", fast.encode(pos(1))),  # unknown device
    ("ft/u/off-1", signed(pos(1), device="off-1")),  # disabled device
    ("ft/u/van-1", cose.sign(b"\x83\x00\x01", KEY, "van-1")),  # authentic, but no frame
])
def test_frames_that_fail_authentication_or_decoding_are_not_settled(
        topic: str, data: bytes) -> None:
    assert settled(topic, data) is None


def test_a_reject_an_operator_may_remove_is_not_settled() -> None:
    outcome = Pipeline(PipelineConfig(), dict(REGISTRY), {}).process(
        "ft/u/van-1", signed(pos(1)), NOW * 1000, Batch())
    outcome.reject = Rejected("boot_behind", "needs an operator", "van-1")
    assert receipts.settled(outcome) is None


# --- merging ----------------------------------------------------------------------------


def test_adjacent_runs_of_one_device_and_boot_merge() -> None:
    runs = [("van-1", 1, 0, 1), ("van-1", 1, 1, 1), ("van-1", 1, 2, 60)]
    assert receipts.merge(runs) == [("van-1", 1, 0, 62)]


def test_overlapping_and_repeated_runs_merge() -> None:
    runs = [("van-1", 1, 5, 3), ("van-1", 1, 5, 3), ("van-1", 1, 6, 1), ("van-1", 1, 4, 2)]
    assert receipts.merge(runs) == [("van-1", 1, 4, 4)]


def test_a_gap_keeps_runs_apart() -> None:
    assert receipts.merge([("van-1", 1, 3, 1), ("van-1", 1, 0, 2)]) == [
        ("van-1", 1, 0, 2), ("van-1", 1, 3, 1)]


def test_runs_of_other_boots_or_devices_never_merge() -> None:
    runs = [("van-1", 2, 1, 1), ("van-1", 1, 0, 1), ("van-2", 1, 1, 1)]
    assert receipts.merge(runs) == [("van-1", 1, 0, 1), ("van-1", 2, 1, 1), ("van-2", 1, 1, 1)]


def test_a_run_longer_than_a_receipt_is_split() -> None:
    runs = [("van-1", 1, 0, 255)] + [("van-1", 1, s, 255) for s in range(255, 70_000, 255)]
    out = receipts.merge(runs)
    assert out == [("van-1", 1, 0, 65_536), ("van-1", 1, 65_536, 70_125 - 65_536)]


def test_a_run_may_end_at_the_last_seq() -> None:
    out = receipts.merge([("van-1", 1, U32, 1), ("van-1", 1, U32 - 1, 1)])
    assert out == [("van-1", 1, U32 - 1, 2)]
    assert receipts.build(out, REGISTRY)  # and it encodes


def test_nothing_settled_nothing_sent() -> None:
    assert receipts.merge([]) == [] and receipts.build([], REGISTRY) == []


# --- building ---------------------------------------------------------------------------


def test_receipts_are_signed_with_the_device_key() -> None:
    [(topic, payload)] = receipts.build([("van-1", 1, 0, 2), ("van-1", 1, 2, 1)], REGISTRY)
    assert topic == "ft/d/van-1"
    mac, inner = cose.unwrap(payload, frames.MAX_FRAME_BYTES)
    assert mac is not None and mac.kid == "van-1" and mac.verify(KEY)
    assert frames.decode_downlink(inner) == {"type": "receipt", "v": 1, "boot": 1, "seq": 0,
                                             "n": 3}


def test_a_device_without_a_key_gets_plain_receipts() -> None:
    [(topic, payload)] = receipts.build([("open-1", 2, 9, 1)], REGISTRY)
    assert topic == "ft/d/open-1"
    assert frames.decode_downlink(payload)["seq"] == 9


def test_unknown_and_disabled_devices_are_told_nothing() -> None:
    assert receipts.build([("ghost", 1, 0, 1), ("off-1", 1, 0, 1)], REGISTRY) == []


# --- holding a device's receipts back to merge them ---------------------------------


def test_a_held_run_goes_out_when_its_delay_has_passed() -> None:
    hold = receipts.Holdback(1.0)
    hold.add([("van-1", 1, 0, 1)], now=10.0)
    assert hold.due(10.5) == []
    assert hold.next_due == 11.0
    assert hold.due(11.0) == [("van-1", 1, 0, 1)]
    assert hold.held == {} and hold.next_due == float("inf")


def test_a_device_with_enough_frames_waiting_is_told_at_once() -> None:
    hold = receipts.Holdback(5.0)
    hold.add([("van-1", 1, 0, 1), ("van-2", 1, 0, 1), ("van-1", 1, 1, 1)], now=0.0)
    assert hold.due(0.1) == []
    hold.add([("van-1", 1, 2, 1)], now=0.2)  # its third frame: no stall of its window
    assert hold.due(0.2) == [("van-1", 1, 0, 1), ("van-1", 1, 1, 1), ("van-1", 1, 2, 1)]
    assert list(hold.held) == ["van-2"] and hold.next_due == 5.0


def test_no_delay_sends_every_run_after_its_commit() -> None:
    hold = receipts.Holdback(0.0)
    hold.add([("van-1", 1, 0, 1)], now=3.0)
    assert hold.due(3.0) == [("van-1", 1, 0, 1)]


def test_held_runs_of_one_device_become_one_receipt() -> None:
    hold = receipts.Holdback(1.0)
    hold.add([("van-1", 1, 0, 1)], now=0.0)
    hold.add([("van-1", 1, 1, 1)], now=0.4)
    [(_, payload)] = receipts.build(hold.due(1.0), REGISTRY)
    mac, inner = cose.unwrap(payload, frames.MAX_FRAME_BYTES)
    assert mac is not None and mac.verify(KEY)
    assert frames.decode_downlink(inner) == {"type": "receipt", "v": 1, "boot": 1, "seq": 0,
                                             "n": 2}
