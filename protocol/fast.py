"""The gateway's fast decoder: ``cbor2``'s C extension with the same strict limits.

It must agree with the pure codec on every input (a frame, or a ``FrameError``);
the test suite checks that with the shared vectors and with hypothesis.
"""

import io
import re
from typing import Any

import cbor2

from . import frames
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
    if _MAP_HEADS.search(data):  # no byte that can start a map: there is no map to check
        _check_keys(obj)
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
    result: dict[str, Any] = frames.from_wire(loads_strict(data))
    return result


def encode(frame: dict[str, Any]) -> bytes:
    """A frame dict -> CBOR bytes, identical to ``frames.encode``."""
    data: bytes = cbor2.dumps(frames.to_wire(frame), canonical=True)
    return data
