"""Frames as JSON: byte strings become lowercase hex, everything else is as is.

Used by the test vectors and by ``fieldtrack decode``/``encode``.
"""

try:
    from typing import Any
except ImportError:  # MicroPython
    pass

from .errors import BAD_FIELD, FrameError

# Fields whose values are byte strings on the wire.
BYTES_FIELDS = ("sha256", "value")


def to_json(obj: "Any") -> "Any":
    """A frame dict (or any value in one) -> a JSON-compatible value."""
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_json(v) for v in obj]
    return obj


def from_json(obj: "Any", key: str = "") -> "Any":
    """The inverse of ``to_json``: hex strings in ``BYTES_FIELDS`` become bytes."""
    if isinstance(obj, dict):
        return {k: from_json(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_json(v) for v in obj]
    if key in BYTES_FIELDS and isinstance(obj, str):
        try:
            return bytes.fromhex(obj)
        except ValueError:
            raise FrameError(BAD_FIELD, "expected hex digits", key) from None
    return obj
