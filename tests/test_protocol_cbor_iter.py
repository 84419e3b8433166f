"""``cbor.iter_array``: the items of one array, one at a time, checked as ``loads`` does."""

import pytest

from fieldtrack.protocol import cbor
from fieldtrack.protocol.errors import FrameError


def test_items_are_those_of_loads() -> None:
    value = [[1, 2, b"\x83\x01\x02\x03"], [1, 3, b""], {"a": [True, None]}, -7, "text"]
    data = cbor.dumps(value)
    assert list(cbor.iter_array(data)) == cbor.loads(data)
    assert list(cbor.iter_array(cbor.dumps([]))) == []


@pytest.mark.parametrize("data,code", [
    (bytes.fromhex("8201"), "truncated"),
    (bytes.fromhex("820102ff"), "trailing_bytes"),
    (bytes.fromhex("9f01ff"), "malformed_cbor"),
    (bytes.fromhex("a10102"), "malformed_cbor"),
    (bytes.fromhex("8181818101"), "too_deep"),
])
def test_bad_input_raises_frame_error(data: bytes, code: str) -> None:
    with pytest.raises(FrameError) as info:
        list(cbor.iter_array(data, max_depth=2))
    assert info.value.code == code


def test_size_limit() -> None:
    with pytest.raises(FrameError) as info:
        list(cbor.iter_array(cbor.dumps([b"x" * 100]), max_size=50))
    assert info.value.code == "too_large"
