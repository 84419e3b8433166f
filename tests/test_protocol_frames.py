"""Frame behaviour beyond the vectors: budgets, batch coding, forward compatibility."""

import hashlib
import hmac
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldtrack.protocol import cbor, cose, frames
from fieldtrack.protocol.errors import FrameError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from city_track import city_track  # noqa: E402

TRACK = city_track(300)


def position(fix: dict[str, Any], seq: int = 1200) -> dict[str, Any]:
    return dict(fix, type="position", boot=3, seq=seq)


def test_single_position_fits_32_bytes_on_a_city_track() -> None:
    sizes = [len(frames.encode(position(f, 1200 + i))) for i, f in enumerate(TRACK)]
    assert max(sizes) <= 32


def test_batch_of_60_costs_at_most_12_bytes_per_fix() -> None:
    total = 0
    for start in range(0, len(TRACK), 60):
        chunk = TRACK[start : start + 60]
        total += len(frames.encode({"type": "batch", "boot": 3, "seq": start, "fixes": chunk}))
    assert total / len(TRACK) <= 12


@pytest.mark.parametrize("res", [1, 7, 10, 100])
def test_batch_error_never_exceeds_half_the_resolution(res: int) -> None:
    chunk = TRACK[:120]
    frame = {"type": "batch", "boot": 3, "seq": 0, "res": res, "fixes": chunk[:255]}
    decoded = frames.decode(frames.encode(frame))["fixes"]
    for sent, got in zip(chunk, decoded, strict=True):
        assert abs(sent["lat"] - got["lat"]) <= res // 2
        assert abs(sent["lon"] - got["lon"]) <= res // 2
        assert {k: v for k, v in sent.items() if k not in ("lat", "lon")} == {
            k: v for k, v in got.items() if k not in ("lat", "lon")
        }


def test_lossless_batch_round_trips_exactly() -> None:
    frame = {"type": "batch", "boot": 3, "seq": 9, "res": 1, "fixes": TRACK[:60]}
    assert frames.decode(frames.encode(frame))["fixes"] == TRACK[:60]


def test_heading_delta_wraps_through_north() -> None:
    fixes = [dict(TRACK[0], hdg=h, t=TRACK[0]["t"] + i) for i, h in enumerate((350, 5, 355, 0))]
    wire = frames.to_wire({"type": "batch", "boot": 0, "seq": 0, "fixes": fixes})
    assert wire[14 + 4] == [15, -10, 5]
    assert [f["hdg"] for f in frames.decode(frames.encode(
        {"type": "batch", "boot": 0, "seq": 0, "fixes": fixes}))["fixes"]] == [350, 5, 355, 0]


def test_newer_device_extra_items_and_keys_are_ignored() -> None:
    wire = frames.to_wire(position(TRACK[0]))
    wire.append({0: 120, 99: "future"})
    wire.append("a field from version 1.1")
    decoded = frames.decode(cbor.dumps(wire))
    assert decoded["ms"] == 120
    assert "future" not in decoded.values()


def test_unknown_field_in_a_frame_dict_is_an_error_naming_it() -> None:
    with pytest.raises(FrameError) as info:
        frames.encode(dict(position(TRACK[0]), speed=40))
    assert info.value.field == "speed"


def test_missing_field_is_an_error_naming_it() -> None:
    frame = position(TRACK[0])
    del frame["lon"]
    with pytest.raises(FrameError) as info:
        frames.encode(frame)
    assert info.value.field == "lon"


def test_batch_sequence_overflow_is_rejected() -> None:
    frame = {"type": "batch", "boot": 0, "seq": 0xFFFFFFFF, "fixes": TRACK[:2]}
    with pytest.raises(FrameError) as info:
        frames.encode(frame)
    assert info.value.field == "seq"


def test_tampered_signed_frame_fails_verification() -> None:
    key = bytes(range(32))
    signed = bytearray(cose.sign(frames.encode(position(TRACK[0])), key, "van-1"))
    signed[20] ^= 0x01
    mac, _ = cose.unwrap(bytes(signed), frames.MAX_FRAME_BYTES)
    assert mac is not None and not mac.verify(key)


def test_cose_overhead_is_20_bytes_plus_the_key_id() -> None:
    payload = frames.encode(position(TRACK[0]))
    assert 24 <= len(payload) < 256  # a one-byte length for the payload string
    assert len(cose.sign(payload, bytes(32), "van-0012")) - len(payload) == 20 + len("van-0012")


def test_event_accuracy_without_a_position_is_an_error() -> None:
    with pytest.raises(FrameError) as info:
        frames.encode({"type": "event", "boot": 1, "seq": 1, "t": 1, "kind": "sos", "acc": 5})
    assert info.value.field == "acc"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.binary(max_size=300))
def test_hand_written_hmac_matches_the_standard_library(key: bytes, msg: bytes) -> None:
    assert cose.hmac_sha256_pure(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()
