"""The gateway's fast decoder: ``cbor2``'s C extension with the same strict limits.

It must agree with the pure codec on every input (a frame, or a ``FrameError``);
the test suite checks that with the shared vectors and with hypothesis. The frames a
gateway sees most (signed positions and batches) take direct paths that check every
value with whole-column operations; anything they do not recognise, valid or not,
goes the general way, which also words every error.
"""

import hmac
import io
import operator
import re
from itertools import accumulate
from typing import Any

import cbor2

from . import cose, frames
from .errors import (
    DUPLICATE_KEY,
    MALFORMED,
    TOO_DEEP,
    TOO_LARGE,
    TRAILING,
    TRUNCATED,
    UNSUPPORTED_CBOR,
    FrameError,
)
from .schema import FIX_FIELDS, MAX_BATCH, U32


def _no_tags(decoder: Any, tag: Any) -> Any:
    raise FrameError(UNSUPPORTED_CBOR, "tag %d is not allowed in a frame" % tag.tag)


def _refuse_semantic(decoder: Any) -> Any:
    raise FrameError(UNSUPPORTED_CBOR, "tags are not allowed in a frame")


# cbor2 decodes some tags itself (bignums, dates, ...): turn every one of them off.
_SEMANTIC = {tag: _refuse_semantic for tag in range(0, 300)}
_SEMANTIC.update({tag: _refuse_semantic for tag in (1004, 55799, 52, 54, 260, 261)})


_MAP_HEADS = re.compile(b"[\xa0-\xbf]")


def _check_keys(obj: Any) -> None:
    """Map keys are integers or text, as the pure codec insists (cbor2 allows more)."""
    if type(obj) is dict:
        for key, value in obj.items():
            if type(key) is not int and type(key) is not str:
                raise FrameError(UNSUPPORTED_CBOR, "map keys are integers or text")
            _check_keys(value)
    elif type(obj) is list:
        for value in obj:
            if type(value) is dict or type(value) is list:
                _check_keys(value)


def loads_strict(data: bytes) -> Any:
    """One CBOR data item, with the pure codec's limits and refusals."""
    obj = _load(data)
    if _MAP_HEADS.search(data):  # no byte that can start a map: there is no map to check
        _check_keys(obj)
    return obj


def _load(data: bytes) -> Any:
    """``loads_strict`` short of the map-key check (a frame of integers has no map)."""
    if len(data) > frames.MAX_FRAME_BYTES:
        raise FrameError(
            TOO_LARGE, "%d bytes is over the limit of %d" % (len(data), frames.MAX_FRAME_BYTES)
        )
    if not data:
        raise FrameError(TRUNCATED, "empty input")
    fp = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        fp,
        tag_hook=_no_tags,
        semantic_decoders=_SEMANTIC,
        max_depth=frames.MAX_DEPTH,
        allow_indefinite=False,
        allow_duplicate_keys=False,
    )
    try:
        obj = decoder.decode()
    except FrameError:
        raise
    except cbor2.CBORDecodeEOF:
        raise FrameError(TRUNCATED, "the data ends inside a CBOR item") from None
    except Exception as exc:  # cbor2 raises several types; all mean "not valid CBOR"
        raise _translate(exc) from None
    if fp.tell() != len(data):
        raise FrameError(TRAILING, "%d bytes after the end of the item" % (len(data) - fp.tell()))
    return obj


# cbor2's messages -> the pure codec's codes, so both paths report the same reason.
_MESSAGES = (
    ("indefinite", UNSUPPORTED_CBOR),
    ("uplicate", DUPLICATE_KEY),
    ("depth", TOO_DEEP),
    ("semantic tag", UNSUPPORTED_CBOR),
    ("premature end", TRUNCATED),
    ("UTF-8", MALFORMED),
)


def _translate(exc: BaseException) -> FrameError:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, FrameError):
            return cause
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    for needle, code in _MESSAGES:
        if needle in text:
            return FrameError(code, "invalid CBOR: %s" % text)
    return FrameError(MALFORMED, "invalid CBOR: %s" % text)


def decode(data: bytes) -> dict[str, Any]:
    """CBOR bytes -> a checked frame dict, as ``frames.decode`` but faster."""
    obj = _load(data)
    if type(obj) is list and obj and type(obj[0]) is int:
        head = obj[0]
        frame = (_position(obj) if head == 0 and len(obj) == 12
                 else _batch(obj) if head == 1 and len(obj) >= 14 else None)
        if frame is not None:
            return frame
    if _MAP_HEADS.search(data):
        _check_keys(obj)
    result: dict[str, Any] = frames.from_wire(obj)
    return result


# --- direct paths: position and batch frames ------------------------------------

_FIX_NAMES = tuple(name for name, _, _ in FIX_FIELDS)
_FIX_LO = tuple(lo for _, lo, _ in FIX_FIELDS) + (0,)  # ... and the flags
_FIX_HI = tuple(hi for _, _, hi in FIX_FIELDS) + (0xFFFF,)
_INT = {int}


def _fix_ok(values: list[Any]) -> bool:
    """The 8 fix fields and the flags: exact integers (not booleans), in range."""
    for v, lo, hi in zip(values, _FIX_LO, _FIX_HI):
        if type(v) is not int or v < lo or v > hi:
            return False
    return True


def _position(items: list[Any]) -> dict[str, Any] | None:
    boot, seq = items[1], items[2]
    if not (type(boot) is int and type(seq) is int and 0 <= boot <= U32 and 0 <= seq <= U32
            and _fix_ok(items[3:12])):
        return None
    t, lat, lon, spd, hdg, alt, acc, sats, flags = items[3:12]
    return {"type": "position", "v": 1, "boot": boot, "seq": seq, "t": t, "lat": lat,
            "lon": lon, "spd": spd, "hdg": hdg, "alt": alt, "acc": acc, "sats": sats,
            "fix": flags & 3, "ign": bool(flags & 4), "buf": bool(flags & 8),
            "mock": bool(flags & 16)}


def _column(first: int, col: Any, n: int, step: Any = operator.add,
            scale: int = 1) -> list[int] | None:
    """A batch column's values: the first fix's, then one per delta (``None``: not ints)."""
    if type(col) is int:
        deltas = [col * scale] * (n - 1)
    elif type(col) is not list or len(col) != n - 1 or not set(map(type, col)) <= _INT:
        return None
    else:
        deltas = [d * scale for d in col] if scale != 1 else col
    return list(accumulate(deltas, step, initial=first))


# How each batch column goes from one fix to the next: coordinates in steps of ``res``,
# headings wrapping at 360, flags by xor, the rest by adding.
_STEPS = (operator.add, operator.add, operator.add, operator.add, None, operator.add,
          operator.add, operator.add, operator.xor)


def _in_range(values: list[int], lo: int, hi: int) -> bool:
    return min(values) >= lo and max(values) <= hi


def _batch(items: list[Any]) -> dict[str, Any] | None:
    boot, seq, res, n = items[1], items[2], items[3], items[13]
    if not (type(boot) is int and type(seq) is int and type(res) is int and type(n) is int
            and 0 <= boot <= U32 and 0 <= seq <= U32 and 1 <= res <= 1000
            and 1 <= n <= MAX_BATCH and seq + n - 1 <= U32 and _fix_ok(items[4:13])):
        return None
    first = items[4:13]
    if n == 1:
        cols = [[v] for v in first]
    else:
        if len(items) < 23:
            return None
        deltas = items[14:23]
        cols = []
        for c in range(9):
            col = _column(first[c], deltas[c], n, _STEPS[c] or _add_degrees,
                          res if c in (1, 2) else 1)
            if col is None:
                return None
            cols.append(col)
        for values, lo, hi in zip(cols, _FIX_LO, _FIX_HI):
            if not _in_range(values, lo, hi):
                return None
    fixes = [{"t": t, "lat": lat, "lon": lon, "spd": spd, "hdg": hdg, "alt": alt, "acc": acc,
              "sats": sats, "fix": f & 3, "ign": bool(f & 4), "buf": bool(f & 8),
              "mock": bool(f & 16)}
             for t, lat, lon, spd, hdg, alt, acc, sats, f in zip(*cols)]
    return {"type": "batch", "v": 1, "boot": boot, "seq": seq, "res": res, "fixes": fixes}


def _add_degrees(a: int, b: int) -> int:
    return (a + b) % 360


# --- COSE_Mac0 ----------------------------------------------------------------------

_MAC0_START = b"\xd1\x84\x43\xa1\x01\x04\xa1\x04"  # 17([h'a10104', {4: ...


def _bstr(data: bytes, i: int) -> tuple[bytes | None, int]:
    """The byte string whose head is at ``i``, and where it ends (``None``: not one)."""
    if i >= len(data):
        return None, i
    b = data[i]
    if 0x40 <= b <= 0x57:
        start, size = i + 1, b - 0x40
    elif b == 0x58 and i + 1 < len(data):
        start, size = i + 2, data[i + 1]
    elif b == 0x59 and i + 2 < len(data):
        start, size = i + 3, (data[i + 1] << 8) | data[i + 2]
    else:
        return None, i
    end = start + size
    if end > len(data):
        return None, i
    return data[start:end], end


def unwrap(data: bytes, max_size: int) -> tuple[Any, ...]:
    """As ``cose.unwrap``; a COSE_Mac0 laid out as devices sign it is read in place."""
    if len(data) <= max_size + 64 and data[:8] == _MAC0_START:
        kid, i = _bstr(data, 8)
        if kid is not None:
            payload, i = _bstr(data, i)
            if payload is not None and i + 9 == len(data) and data[i] == 0x48:
                try:
                    mac = cose.Mac0(kid.decode("utf-8"), payload, data[i + 1 :])
                except UnicodeError:
                    pass  # the general path words the error
                else:
                    return mac, payload
    return cose.unwrap(data, max_size)


def _bstr_head(size: int) -> bytes:
    if size < 24:
        return bytes((0x40 + size,))
    if size < 256:
        return bytes((0x58, size))
    if size < 65536:
        return bytes((0x59, size >> 8, size & 0xFF))
    return b"\x5a" + size.to_bytes(4, "big")


_MAC0_PREFIX = b"\x84\x64MAC0\x43\xa1\x01\x04\x40"  # as in cose.mac_structure


def sign(payload: bytes, key: bytes, kid: str) -> bytes:
    """As ``cose.sign`` (the same bytes), with the C HMAC: the gateway signs receipts."""
    body = _bstr_head(len(payload)) + payload
    tag = hmac.digest(key, _MAC0_PREFIX + body, "sha256")[: cose.TAG_BYTES]
    kid_bytes = kid.encode("utf-8")
    return _MAC0_START + _bstr_head(len(kid_bytes)) + kid_bytes + body + b"\x48" + tag


_RECEIPT_H = frames.TYPE_CODES["receipt"]


def encode_receipt(boot: int, seq: int, n: int) -> bytes:
    """A receipt's CBOR bytes, as ``encode`` of its dict gives them (and its errors)."""
    if (type(boot) is int and type(seq) is int and type(n) is int and 0 <= boot <= U32
            and 0 <= seq <= U32 and 1 <= n <= frames.MAX_RECEIPT and seq + n - 1 <= U32):
        data: bytes = cbor2.dumps([_RECEIPT_H, boot, seq, n])
        return data
    return encode({"type": "receipt", "boot": boot, "seq": seq, "n": n})


def verify(mac: cose.Mac0, key: bytes) -> bool:
    """As ``Mac0.verify``, with the C HMAC in one call; constant time."""
    expected = hmac.digest(key, cose.mac_structure(mac.payload), "sha256")[: cose.TAG_BYTES]
    return hmac.compare_digest(expected, mac.tag)


def encode(frame: dict[str, Any]) -> bytes:
    """A frame dict -> CBOR bytes, identical to ``frames.encode``."""
    data: bytes = cbor2.dumps(frames.to_wire(frame), canonical=True)
    return data
