"""Any byte string is a frame or a FrameError, and both decoders agree on which."""

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fieldtrack.protocol import cose, fast, frames
from fieldtrack.protocol.errors import FrameError

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "protocol" / "vectors" / "v1.json").read_text()
)
VALID = [bytes.fromhex(v["hex"]) for v in VECTORS["valid"]]
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(decode: Any, data: bytes) -> Any:
    try:
        return ("frame", decode(data))
    except FrameError as exc:
        assert exc.code and exc.reason
        return ("error", exc.code)


def assert_agree(data: bytes) -> None:
    pure = outcome(frames.decode, data)
    c2 = outcome(fast.decode, data)
    assert pure[0] == c2[0], (data.hex(), pure, c2)
    if pure[0] == "frame":
        assert pure == c2


@SETTINGS
@given(st.binary(max_size=64))
def test_random_bytes_give_a_frame_or_frame_error(data: bytes) -> None:
    assert_agree(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("flip", "insert", "delete", "truncate")))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
        elif op == "delete" and data:
            del data[draw(st.integers(0, len(data) - 1))]
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))) :]
    return bytes(data)


@SETTINGS
@given(mutated())
def test_mutated_valid_frames_give_a_frame_or_frame_error(data: bytes) -> None:
    assert_agree(data)


@SETTINGS
@given(mutated())
def test_unwrap_of_any_bytes_gives_a_frame_or_frame_error(data: bytes) -> None:
    signed = b"\xd1" + data
    try:
        mac, payload = cose.unwrap(signed, frames.MAX_FRAME_BYTES)
        assert mac is not None
        mac.verify(bytes(32))
    except FrameError:
        pass


fix = st.fixed_dictionaries(
    {
        "t": st.integers(0, 0xFFFFFFFF),
        "lat": st.integers(-900000000, 900000000),
        "lon": st.integers(-1800000000, 1800000000),
        "spd": st.integers(0, 2000),
        "hdg": st.integers(0, 359),
        "alt": st.integers(-10000, 100000),
        "acc": st.integers(0, 65535),
        "sats": st.integers(0, 255),
        "fix": st.integers(0, 3),
        "ign": st.booleans(),
        "buf": st.booleans(),
        "mock": st.booleans(),
    }
)


@SETTINGS
@given(st.lists(fix, min_size=1, max_size=20), st.integers(0, 1000))
def test_any_valid_lossless_batch_round_trips(fixes: list[dict[str, Any]], seq: int) -> None:
    frame = {"type": "batch", "v": 1, "boot": 1, "seq": seq, "res": 1, "fixes": fixes}
    data = frames.encode(frame)
    assert fast.encode(frame) == data
    assert frames.decode(data) == frame
    assert fast.decode(data) == frame


@SETTINGS
@given(st.binary(max_size=300), st.binary(min_size=1, max_size=80),
       st.text(st.characters(codec="utf-8"), min_size=1, max_size=32))
def test_fast_sign_gives_the_pure_signature(payload: bytes, key: bytes, kid: str) -> None:
    assert fast.sign(payload, key, kid) == cose.sign(payload, key, kid)


@SETTINGS
@given(st.integers(-1, 2**32), st.integers(-1, 2**32), st.integers(-1, 2**16 + 1))
def test_fast_receipt_agrees_with_encode(boot: int, seq: int, n: int) -> None:
    def run(encode: Any) -> Any:
        try:
            return encode()
        except FrameError as exc:
            return exc.code
    frame = {"type": "receipt", "boot": boot, "seq": seq, "n": n}
    assert run(lambda: fast.encode_receipt(boot, seq, n)) == run(lambda: frames.encode(frame))


@SETTINGS
@given(mutated())
def test_downlink_decodes_as_decode_or_refuses(data: bytes) -> None:
    try:
        frame = frames.decode_downlink(data)
    except FrameError as exc:
        assert exc.code
        return
    assert frame["type"] in ("command", "receipt") and frame == frames.decode(data)
