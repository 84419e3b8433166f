"""The pure CBOR codec against RFC 8949 Appendix A (corpus/cbor/appendix_a.json)."""

import base64
import json
import math
from pathlib import Path
from typing import Any

import pytest

from fieldtrack.protocol import cbor, cbor_values
from fieldtrack.protocol.errors import FrameError


def _load(corpus: Path | None) -> list[dict[str, Any]]:
    if corpus is None:
        return []
    path = corpus / "cbor" / "appendix_a.json"
    return json.loads(path.read_text()) if path.exists() else []


CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
EXAMPLES = _load(CORPUS if CORPUS.is_dir() else None)
needs_corpus = pytest.mark.skipif(not EXAMPLES, reason="shared/corpus/cbor is not present")

# Examples given in diagnostic notation, as the values this codec decodes them to.
DIAGNOSTIC = {
    "Infinity": math.inf,
    "-Infinity": -math.inf,
    "undefined": cbor_values.UNDEFINED,
    "simple(16)": cbor_values.Simple(16),
    "simple(255)": cbor_values.Simple(255),
    "h''": b"",
    "h'01020304'": b"\x01\x02\x03\x04",
    "(_ h'0102', h'030405')": b"\x01\x02\x03\x04\x05",
    '0("2013-03-21T20:04:00Z")': cbor_values.Tag(0, "2013-03-21T20:04:00Z"),
    "1(1363896240)": cbor_values.Tag(1, 1363896240),
    "1(1363896240.5)": cbor_values.Tag(1, 1363896240.5),
    "23(h'01020304')": cbor_values.Tag(23, b"\x01\x02\x03\x04"),
    "24(h'6449455446')": cbor_values.Tag(24, b"dIETF"),
    '32("http://www.example.com")': cbor_values.Tag(32, "http://www.example.com"),
    "{1: 2, 3: 4}": {1: 2, 3: 4},
}
# Bignums (tags 2 and 3) are returned as Tag objects: frames never carry them.
BIGNUMS = ("c249010000000000000000", "c349010000000000000000")
# RFC 8949 section 3.3: a simple value below 32 in the one-byte form is not well-formed
# (the RFC 7049 example f818 was dropped from the newer RFC).
NOT_WELL_FORMED = ("f818",)


def _expected(example: dict[str, Any]) -> Any:
    if "decoded" in example:
        return example["decoded"]
    return DIAGNOSTIC.get(example["diagnostic"], example["diagnostic"])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b) and type(a) is type(b) or (isinstance(a, float) and a == b)


def _loads(data: bytes) -> Any:
    return cbor.loads(data, allow_indefinite=True)


@needs_corpus
@pytest.mark.parametrize("example", EXAMPLES, ids=[e["hex"] for e in EXAMPLES])
def test_decodes_appendix_a_example(example: dict[str, Any]) -> None:
    data = bytes.fromhex(example["hex"])
    assert base64.b64decode(example["cbor"]) == data
    if example["hex"] in NOT_WELL_FORMED:
        with pytest.raises(FrameError):
            _loads(data)
        return
    if example["hex"] in BIGNUMS:
        assert isinstance(_loads(data), cbor_values.Tag)
        return
    expected = _expected(example)
    if example.get("diagnostic") == "NaN":
        assert math.isnan(_loads(data))
        return
    assert _same(_loads(data), expected), (_loads(data), expected)


@needs_corpus
@pytest.mark.parametrize(
    "example",
    [e for e in EXAMPLES if e["roundtrip"] and e["hex"] not in BIGNUMS + NOT_WELL_FORMED],
    ids=lambda e: e["hex"],
)
def test_encodes_appendix_a_example_to_the_same_bytes(example: dict[str, Any]) -> None:
    value = math.nan if example.get("diagnostic") == "NaN" else _expected(example)
    assert cbor.dumps(value).hex() == example["hex"]


def test_strict_mode_refuses_indefinite_lengths() -> None:
    with pytest.raises(FrameError) as info:
        cbor.loads(bytes.fromhex("9fff"))
    assert info.value.code == "unsupported_cbor"
