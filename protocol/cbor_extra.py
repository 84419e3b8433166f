"""The parts of the CBOR codec that frames never use: floats, simple values other than
false/true/null, and indefinite lengths. ``cbor`` imports this module on first use.
"""

import struct

from .cbor_values import Simple
from .errors import MALFORMED, TRUNCATED, UNSUPPORTED_CBOR, FrameError

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated
    pass


def encode(out: bytearray, obj: "Any") -> None:
    """Append a float or a simple value; anything else cannot be encoded."""
    if isinstance(obj, float):
        out.extend(_float(obj))
    elif isinstance(obj, Simple):
        if obj.value < 24:
            out.append(0xE0 | obj.value)
        else:
            out.append(0xF8)
            out.append(obj.value)
    else:
        raise FrameError(UNSUPPORTED_CBOR, "cannot encode a %s" % type(obj).__name__)


def _float(x: float) -> bytes:
    """The shortest of half, single and double that holds ``x`` exactly."""
    for fmt, ib in ((">e", b"\xf9"), (">f", b"\xfa")):
        try:
            packed = struct.pack(fmt, x)
        except (OverflowError, ValueError):
            continue
        y = struct.unpack(fmt, packed)[0]
        if y == x or (x != x and y != y):
            return ib + packed
    return b"\xfb" + struct.pack(">d", x)


def _half(h: int) -> float:
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        val = mant * 2.0**-24
    elif exp == 31:
        val = float("inf") if mant == 0 else float("nan")
    else:
        val = (mant + 1024) * 2.0 ** (exp - 25)
    return -val if h & 0x8000 else val


def indefinite_item(dec: "Any", major: int, depth: int) -> "Any":
    """An item of indefinite length (the decoder allows them: ``_Decoder.indefinite``)."""
    if major == 2:
        return bytes(_chunks(dec, 2))
    if major == 3:
        return dec.text(_chunks(dec, 3))
    if major == 4:
        arr = []
        while _peek(dec) != 0xFF:
            arr.append(dec.item(depth + 1))
        dec.pos += 1
        return arr
    if major == 5:
        m: dict[Any, Any] = {}
        while _peek(dec) != 0xFF:
            dec.entry(m, depth)
        dec.pos += 1
        return m
    raise FrameError(MALFORMED, "indefinite length on major type %d" % major)


def _peek(dec: "Any") -> int:
    if dec.pos >= len(dec.data):
        raise FrameError(TRUNCATED, "the data ends inside a CBOR item")
    b: int = dec.data[dec.pos]
    return b


def _chunks(dec: "Any", major: int) -> bytes:
    parts: list[bytes] = []
    while True:
        ib = dec.byte()
        if ib == 0xFF:
            return b"".join(parts)
        if ib >> 5 != major or ib & 0x1F == 31:
            raise FrameError(MALFORMED, "bad chunk in an indefinite-length string")
        parts.append(dec.take(dec.argument(ib & 0x1F)))


def simple(dec: "Any", info: int) -> "Any":
    """A major type 7 item other than false, true and null."""
    if info < 24:
        return Simple(info)
    if info == 24:
        v = dec.byte()
        if v < 32:
            raise FrameError(MALFORMED, "simple value %d in two bytes" % v)
        return Simple(v)
    if info == 25:
        return _half(int.from_bytes(dec.take(2), "big"))
    if info == 26:
        return struct.unpack(">f", dec.take(4))[0]
    if info == 27:
        return struct.unpack(">d", dec.take(8))[0]
    if info == 31:
        raise FrameError(MALFORMED, "unexpected break")
    raise FrameError(MALFORMED, "reserved simple value %d" % info)
