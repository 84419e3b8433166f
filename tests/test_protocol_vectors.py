"""The shared test vectors, run against every implementation of the codec."""

import json
from pathlib import Path
from typing import Any

import pytest

from fieldtrack.protocol import cose, fast, frames, jsonform
from fieldtrack.protocol.errors import FrameError

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "protocol" / "vectors" / "v1.json").read_text()
)
DOWNLINK_TYPES = ("command", "receipt")  # what frames.decode_downlink takes
IMPLEMENTATIONS = {
    "pure": (frames.encode, frames.decode),
    "cbor2": (fast.encode, fast.decode),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def codec(request: pytest.FixtureRequest) -> Any:
    return IMPLEMENTATIONS[request.param]


def _names(kind: str) -> list[str]:
    return [v["name"] for v in VECTORS[kind]]


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=_names("valid"))
def test_encodes_frame_to_exact_bytes(codec: Any, vector: dict[str, Any]) -> None:
    encode, _ = codec
    assert encode(jsonform.from_json(vector["frame"])).hex() == vector["hex"]


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=_names("valid"))
def test_decodes_bytes_to_exact_frame(codec: Any, vector: dict[str, Any]) -> None:
    _, decode = codec
    assert jsonform.to_json(decode(bytes.fromhex(vector["hex"]))) == vector["frame"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=_names("invalid"))
def test_rejects_invalid_bytes_with_its_code(codec: Any, vector: dict[str, Any]) -> None:
    _, decode = codec
    with pytest.raises(FrameError) as info:
        decode(bytes.fromhex(vector["hex"]))
    assert info.value.code == vector["error"]


@pytest.mark.parametrize("sign", [cose.sign, fast.sign], ids=["pure", "fast"])
@pytest.mark.parametrize("vector", VECTORS["signed"], ids=_names("signed"))
def test_signs_to_exact_cose_mac0(vector: dict[str, Any], sign: Any) -> None:
    key = bytes.fromhex(vector["key"])
    payload = bytes.fromhex(vector["payload"])
    assert sign(payload, key, vector["kid"]).hex() == vector["hex"]


@pytest.mark.parametrize("vector", VECTORS["signed"], ids=_names("signed"))
def test_unwraps_and_verifies_signed_frame(vector: dict[str, Any]) -> None:
    mac, payload = cose.unwrap(bytes.fromhex(vector["hex"]), frames.MAX_FRAME_BYTES)
    assert mac is not None
    assert mac.kid == vector["kid"]
    assert payload.hex() == vector["payload"]
    assert mac.verify(bytes.fromhex(vector["key"]))
    assert not mac.verify(bytes(32))


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=_names("valid"))
def test_downlink_entry_point_takes_commands_and_receipts_only(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    if vector["frame"]["type"] in DOWNLINK_TYPES:
        assert jsonform.to_json(frames.decode_downlink(data)) == vector["frame"]
    else:
        with pytest.raises(FrameError) as info:
            frames.decode_downlink(data)
        assert info.value.code == "unknown_frame_type"


def test_vectors_cover_every_frame_type_and_event_kind() -> None:
    types = {v["frame"]["type"] for v in VECTORS["valid"]}
    kinds = {v["frame"]["kind"] for v in VECTORS["valid"] if v["frame"]["type"] == "event"}
    commands = {v["frame"]["kind"] for v in VECTORS["valid"] if v["frame"]["type"] == "command"}
    assert types == set(frames.TYPES)
    assert kinds == {name for _, name in frames.EVENT_KINDS}
    assert commands == {name for _, name in frames.COMMAND_KINDS}


RECEIPTS = [v for v in VECTORS["valid"] if v["frame"]["type"] == "receipt"]


@pytest.mark.parametrize("vector", RECEIPTS, ids=[v["name"] for v in RECEIPTS])
def test_fast_receipt_encodes_to_exact_bytes(vector: dict[str, Any]) -> None:
    f = vector["frame"]
    assert fast.encode_receipt(f["boot"], f["seq"], f["n"]).hex() == vector["hex"]


@pytest.mark.parametrize("args", [(0, 0, 0), (0, 0xFFFFFFFF, 2), (-1, 0, 1), (0, 0, 65537),
                                  (True, 0, 1)])
def test_fast_receipt_refuses_as_encode_does(args: tuple[Any, Any, Any]) -> None:
    with pytest.raises(FrameError) as a:
        fast.encode_receipt(*args)
    with pytest.raises(FrameError) as b:
        frames.encode({"type": "receipt", "boot": args[0], "seq": args[1], "n": args[2]})
    assert str(a.value) == str(b.value)
