"""A small, strict CBOR (RFC 8949) codec that runs on CPython and on MicroPython.

It is the reference implementation of the wire format and the one the firmware
uses. It covers what frames need (integers, byte and text strings, arrays, maps,
true/false/null, tags) and codes floats, undefined and simple values so that it can
be checked against RFC 8949 Appendix A: those, and indefinite lengths, are in
``cbor_extra``, imported on first use, so that a device does not load them. Decoding
untrusted bytes is bounded: a size limit, a nesting limit, no trailing bytes;
indefinite lengths and duplicate map keys are refused unless explicitly allowed.
"""

from .cbor_values import Tag
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

try:
    from typing import Any
except ImportError:  # MicroPython: annotations are not evaluated
    pass

MAX_UINT64 = 0xFFFFFFFFFFFFFFFF

_extras: "Any" = None


def _extra() -> "Any":
    """The ``cbor_extra`` module, imported on first use: frames never need it."""
    global _extras
    if _extras is None:
        from . import cbor_extra

        _extras = cbor_extra
    return _extras


# --- encoding -------------------------------------------------------------


def head(out: bytearray, major: int, n: int) -> None:
    """Append the head of a data item: major type and argument, shortest form."""
    mt = major << 5
    if n < 24:
        out.append(mt | n)
    elif n < 0x100:
        out.append(mt | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(mt | 25)
        out.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        out.append(mt | 26)
        out.extend(n.to_bytes(4, "big"))
    elif n <= MAX_UINT64:
        out.append(mt | 27)
        out.extend(n.to_bytes(8, "big"))
    else:
        raise FrameError(UNSUPPORTED_CBOR, "integer %d is over 64 bits" % n)


def _encode(out: bytearray, obj: Any) -> None:
    # One growing bytearray: no small bytes object per item (a 60-fix batch must be
    # encodable inside an ESP32's heap).
    if obj is False:
        out.append(0xF4)
    elif obj is True:
        out.append(0xF5)
    elif obj is None:
        out.append(0xF6)
    elif isinstance(obj, int):
        if obj >= 0:
            head(out, 0, obj)
        else:
            head(out, 1, -1 - obj)
    elif isinstance(obj, (list, tuple)):
        head(out, 4, len(obj))
        for item in obj:
            _encode(out, item)
    elif isinstance(obj, (bytes, bytearray)):
        head(out, 2, len(obj))
        out.extend(obj)
    elif isinstance(obj, str):
        b = obj.encode("utf-8")
        head(out, 3, len(b))
        out.extend(b)
    elif isinstance(obj, dict):
        # Deterministic encoding (RFC 8949 section 4.2.1): keys sorted by their bytes.
        items = []
        for k, v in obj.items():
            kb = bytearray()
            _encode(kb, k)
            items.append((bytes(kb), v))
        items.sort(key=lambda kv: kv[0])
        head(out, 5, len(items))
        for kb2, v in items:
            out.extend(kb2)
            _encode(out, v)
    elif isinstance(obj, Tag):
        head(out, 6, obj.tag)
        _encode(out, obj.value)
    else:  # a float, a simple value, or what cannot be encoded
        _extra().encode(out, obj)


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` in preferred serialization with deterministically ordered maps."""
    out = bytearray()
    _encode(out, obj)
    return bytes(out)


# --- decoding -------------------------------------------------------------


class _Decoder:
    def __init__(
        self, data: bytes, max_depth: int, allow_indefinite: bool, allow_tags: "Any"
    ) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.allow_indefinite = allow_indefinite
        self.allow_tags = allow_tags

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise FrameError(TRUNCATED, "the data ends inside a CBOR item")
        b = self.data[self.pos : end]
        self.pos = end
        return b

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise FrameError(TRUNCATED, "the data ends inside a CBOR item")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def argument(self, info: int) -> int:
        if info < 24:
            return info
        if info == 24:
            return self.byte()
        if info == 25:
            return int.from_bytes(self.take(2), "big")
        if info == 26:
            return int.from_bytes(self.take(4), "big")
        if info == 27:
            return int.from_bytes(self.take(8), "big")
        raise FrameError(MALFORMED, "reserved additional information %d" % info)

    def indefinite(self) -> None:
        if not self.allow_indefinite:
            raise FrameError(UNSUPPORTED_CBOR, "indefinite-length items are not allowed")

    def item(self, depth: int) -> "Any":
        if depth > self.max_depth:
            raise FrameError(TOO_DEEP, "nesting deeper than %d" % self.max_depth)
        ib = self.byte()
        major = ib >> 5
        info = ib & 0x1F
        if major == 7:
            return self.simple(info)
        if info == 31:
            self.indefinite()
            return _extra().indefinite_item(self, major, depth)
        arg = self.argument(info)
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return bytes(self.take(arg))
        if major == 3:
            return self.text(self.take(arg))
        if major == 4:
            if arg > len(self.data) - self.pos:
                raise FrameError(TRUNCATED, "array longer than the data")
            arr: list[Any] = [None] * arg  # one allocation of the final size
            for i in range(arg):
                arr[i] = self.item(depth + 1)
            return arr
        if major == 5:
            if arg > len(self.data) - self.pos:
                raise FrameError(TRUNCATED, "map longer than the data")
            m: dict[Any, Any] = {}
            for _ in range(arg):
                self.entry(m, depth)
            return m
        # major 6: a tag
        if self.allow_tags is not None and arg not in self.allow_tags:
            raise FrameError(UNSUPPORTED_CBOR, "tag %d is not allowed here" % arg)
        return Tag(arg, self.item(depth + 1))

    def simple(self, info: int) -> "Any":
        if info == 20:
            return False
        if info == 21:
            return True
        if info == 22:
            return None
        return _extra().simple(self, info)

    def entry(self, m: dict[Any, Any], depth: int) -> None:
        k = self.item(depth + 1)
        if not isinstance(k, (int, str)) or k is True or k is False:
            raise FrameError(UNSUPPORTED_CBOR, "map keys are integers or text")
        if k in m:
            raise FrameError(DUPLICATE_KEY, "map key %r appears twice" % (k,))
        m[k] = self.item(depth + 1)

    def text(self, b: bytes) -> str:
        try:
            return str(b, "utf-8")
        except UnicodeError:
            raise FrameError(MALFORMED, "text string is not valid UTF-8") from None

def loads(
    data: "bytes | bytearray | memoryview",
    max_size: int = 16384,
    max_depth: int = 16,
    allow_indefinite: bool = False,
    allow_tags: "Any" = None,
) -> "Any":
    """Decode exactly one CBOR data item from ``data``.

    Raises ``FrameError`` for anything else: more than ``max_size`` bytes, nesting
    deeper than ``max_depth``, trailing bytes, truncation, malformed items, duplicate
    map keys, and indefinite lengths unless ``allow_indefinite``. ``allow_tags``, when
    not None, is the collection of tag numbers accepted.
    """
    if len(data) > max_size:
        raise FrameError(TOO_LARGE, "%d bytes is over the limit of %d" % (len(data), max_size))
    if not data:
        raise FrameError(TRUNCATED, "empty input")
    dec = _Decoder(bytes(data), max_depth, allow_indefinite, allow_tags)
    obj = dec.item(0)
    if dec.pos != len(dec.data):
        raise FrameError(TRAILING, "%d bytes after the end of the item" % (len(dec.data) - dec.pos))
    return obj


def iter_array(
    data: "bytes | bytearray | memoryview", max_size: int = 16384, max_depth: int = 16
) -> "Any":
    """The items of exactly one definite-length CBOR array, decoded one at a time.

    A device walks a long array (a flash segment of records) without holding all of it
    decoded at once. The checks are those of ``loads``; an error is raised when the
    iteration reaches it.
    """
    if len(data) > max_size:
        raise FrameError(TOO_LARGE, "%d bytes is over the limit of %d" % (len(data), max_size))
    dec = _Decoder(bytes(data), max_depth, False, None)
    ib = dec.byte()
    if ib >> 5 != 4 or ib & 0x1F == 31:
        raise FrameError(MALFORMED, "expected a definite-length array")
    n = dec.argument(ib & 0x1F)
    if n > len(dec.data) - dec.pos:
        raise FrameError(TRUNCATED, "array longer than the data")
    for _ in range(n):
        yield dec.item(1)
    if dec.pos != len(dec.data):
        raise FrameError(TRAILING, "%d bytes after the end of the item" % (len(dec.data) - dec.pos))
