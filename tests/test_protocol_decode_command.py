"""``frames.decode_command``: a tracker decodes commands only, with ``decode``'s checks."""

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
