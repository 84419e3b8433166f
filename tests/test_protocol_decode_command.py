"""``frames.decode_command`` and ``frames.decode_downlink``: what a tracker decodes, with
``decode``'s checks."""

import pytest

from fieldtrack.protocol import frames
from fieldtrack.protocol.errors import FrameError

COMMAND = {"type": "command", "v": 1, "cid": 7, "kind": "set_config", "exp": 0,
           "args": {"config": {"moving.min_period_s": 5}}}


def test_a_command_decodes_as_decode_does() -> None:
    data = frames.encode(COMMAND)
    assert frames.decode_command(data) == frames.decode(data) == COMMAND


@pytest.mark.parametrize("frame", [
    {"type": "status", "boot": 1, "seq": 2, "t": 3, "fw": "1"},
    {"type": "event", "boot": 1, "seq": 2, "t": 3, "kind": "sos"},
])
def test_other_frames_are_refused(frame: dict[str, object]) -> None:
    with pytest.raises(FrameError) as info:
        frames.decode_command(frames.encode(frame))
    assert info.value.code == "unknown_frame_type"


def test_bad_commands_fail_as_in_decode() -> None:
    data = bytearray(frames.encode(COMMAND))
    data[3] = 0x09  # the kind: 9 is not a command kind
    with pytest.raises(FrameError) as a:
        frames.decode(bytes(data))
    with pytest.raises(FrameError) as b:
        frames.decode_command(bytes(data))
    assert str(a.value) == str(b.value)
    assert a.value.code == "bad_field"


RECEIPT = {"type": "receipt", "v": 1, "boot": 3, "seq": 1207, "n": 60}


@pytest.mark.parametrize("frame", [COMMAND, RECEIPT])
def test_downlink_frames_decode_as_decode_does(frame: dict[str, object]) -> None:
    data = frames.encode(frame)
    assert frames.decode_downlink(data) == frames.decode(data) == frame


def test_a_receipt_is_not_a_command() -> None:
    with pytest.raises(FrameError) as info:
        frames.decode_command(frames.encode(RECEIPT))
    assert info.value.code == "unknown_frame_type"


@pytest.mark.parametrize("data", [b"\x01", b"\x80", bytes.fromhex("83070000")])
def test_downlink_refuses_what_is_no_downlink_frame(data: bytes) -> None:
    with pytest.raises(FrameError) as info:
        frames.decode_downlink(data)
    assert info.value.code == "unknown_frame_type"


def test_bad_receipts_fail_as_in_decode() -> None:
    data = bytes.fromhex("8406031affffffff02")  # seq 2^32 - 1 and n 2 pass the last seq
    with pytest.raises(FrameError) as a:
        frames.decode(data)
    with pytest.raises(FrameError) as b:
        frames.decode_downlink(data)
    assert str(a.value) == str(b.value)
    assert a.value.field == "n"
