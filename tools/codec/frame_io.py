"""Frames for people: bytes in any common spelling -> JSON, and JSON -> bytes.

The library side of ``fieldtrack decode`` and ``fieldtrack encode``.
"""

import base64
import binascii
import json
import string
from typing import Any

from fieldtrack.protocol import cose, fast, frames, jsonform, topics
from fieldtrack.protocol.errors import FrameError

_HEX = set(string.hexdigits + string.whitespace)


class InputError(ValueError):
    """Input that is neither hex, base64 nor a frame; the message says which."""


def parse_bytes(text: str, form: str = "auto") -> bytes:
    """Hex (spaces allowed, optional 0x) or base64 text -> bytes."""
    cleaned = text.strip()
    if form in ("auto", "hex"):
        h = cleaned[2:] if cleaned.lower().startswith("0x") else cleaned
        if h and set(h) <= _HEX:
            try:
                return bytes.fromhex("".join(h.split()))
            except ValueError:
                if form == "hex":
                    raise InputError("odd number of hex digits") from None
        elif form == "hex":
            raise InputError("not hex: use the digits 0-9 and a-f") from None
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("neither hex nor base64") from None


def describe(data: bytes, key: bytes | None = None) -> dict[str, Any]:
    """Decode an MQTT payload into a JSON-ready description.

    A signed frame shows its key id and, when ``key`` is given, whether the MAC holds.
    """
    out: dict[str, Any] = {"bytes": len(data)}
    mac, payload = cose.unwrap(data, frames.MAX_FRAME_BYTES)
    if mac is not None:
        out["kid"] = mac.kid
        out["mac"] = "unchecked" if key is None else ("valid" if mac.verify(key) else "INVALID")
    out["frame"] = jsonform.to_json(fast.decode(payload))
    return out


def build(frame_json: Any, key: bytes | None = None, kid: str | None = None) -> bytes:
    """A frame in JSON form -> its payload bytes, signed when ``key`` is given."""
    frame = jsonform.from_json(frame_json)
    payload = fast.encode(frame)
    if key is None:
        return payload
    if not kid:
        raise InputError("signing needs the device id: add --kid DEVICE_ID")
    topics.check_device_id(kid)
    return cose.sign(payload, key, kid)


def load_json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            "%s: line %d column %d: %s" % (source, exc.lineno, exc.colno, exc.msg)
        ) from None


__all__ = ["FrameError", "InputError", "build", "describe", "load_json", "parse_bytes"]
