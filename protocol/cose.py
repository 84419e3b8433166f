"""Frame authentication: COSE_Mac0 (RFC 9052) with HMAC 256/64 (RFC 9053, alg 4).

An authenticated frame is ``17([protected, {4: kid}, payload, tag])`` where
``protected`` is the byte string of ``{1: 4}``, ``kid`` is the device id in UTF-8,
``payload`` is the plain frame's CBOR bytes and ``tag`` is the first 8 bytes of
HMAC-SHA-256 over ``["MAC0", protected, h'', payload]``. HMAC is written out here
because MicroPython has ``hashlib.sha256`` but no ``hmac`` module.
"""

import hashlib

from . import cbor
from .cbor_values import Tag
from .errors import BAD_MAC, NOT_A_FRAME, FrameError

try:
    from typing import Any
except ImportError:  # MicroPython
    pass

COSE_MAC0_TAG = 17
ALG_HMAC_256_64 = 4
PROTECTED = b"\xa1\x01\x04"  # {1: 4}
TAG_BYTES = 8
_BLOCK = 64


try:
    import hmac as _hmac  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    _hmac = None  # type: ignore[assignment]  # MicroPython: no hmac module


def hmac_sha256(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA-256 (RFC 2104): the standard library's where there is one."""
    if _hmac is not None:
        return _hmac.new(key, msg, hashlib.sha256).digest()
    return hmac_sha256_pure(key, msg)


def hmac_sha256_pure(key: bytes, msg: bytes) -> bytes:
    """HMAC-SHA-256 written out, for MicroPython."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    inner.update(msg)
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    outer.update(inner.digest())
    return outer.digest()


# ["MAC0", protected, h'', payload] up to the payload's length: the same every time.
_MAC0_PREFIX = b"\x84\x64MAC0\x43\xa1\x01\x04\x40"


def mac_structure(payload: bytes) -> bytes:
    """The CBOR of ["MAC0", protected, h'', payload] (RFC 9052 section 6.3)."""
    head = bytearray()
    cbor.head(head, 2, len(payload))
    return _MAC0_PREFIX + bytes(head) + payload


def mac_tag(key: bytes, payload: bytes) -> bytes:
    """The 8-byte HMAC 256/64 tag of ``payload`` under ``key``."""
    return hmac_sha256(key, mac_structure(payload))[:TAG_BYTES]


def sign(payload: bytes, key: bytes, kid: str) -> bytes:
    """Wrap a frame's CBOR bytes in a COSE_Mac0 made with the device key."""
    body = [PROTECTED, {4: kid.encode("utf-8")}, payload, mac_tag(key, payload)]
    return cbor.dumps(Tag(COSE_MAC0_TAG, body))


def is_mac0(data: bytes) -> bool:
    """True when ``data`` starts like a COSE_Mac0 (tag 17) rather than a plain frame."""
    return len(data) > 0 and data[0] == 0xD1


class Mac0:
    """A parsed, not yet verified, COSE_Mac0: who claims to speak, and what."""

    def __init__(self, kid: str, payload: bytes, tag: bytes) -> None:
        self.kid = kid
        self.payload = payload
        self.tag = tag

    def verify(self, key: bytes) -> bool:
        """Constant-time check of the tag under ``key``."""
        expected = mac_tag(key, self.payload)
        diff = len(expected) ^ len(self.tag)
        for a, b in zip(expected, self.tag):
            diff |= a ^ b
        return diff == 0


def parse(item: "object") -> Mac0:
    """Check the shape of a decoded ``Tag(17, ...)`` and return its parts."""
    if not isinstance(item, Tag) or item.tag != COSE_MAC0_TAG:
        raise FrameError(NOT_A_FRAME, "expected a COSE_Mac0 (tag 17)")
    body = item.value
    if not isinstance(body, list) or len(body) != 4:
        raise FrameError(BAD_MAC, "a COSE_Mac0 has 4 items")
    protected, unprotected, payload, tag = body
    if protected != PROTECTED:
        raise FrameError(BAD_MAC, "only HMAC 256/64 ({1: 4})")
    if not isinstance(unprotected, dict) or not isinstance(unprotected.get(4), bytes):
        raise FrameError(BAD_MAC, "no key id (label 4)")
    if not isinstance(payload, bytes) or not isinstance(tag, bytes) or len(tag) != TAG_BYTES:
        raise FrameError(BAD_MAC, "needs bytes payload, 8-byte tag")
    try:
        kid = str(unprotected[4], "utf-8")
    except UnicodeError:
        raise FrameError(BAD_MAC, "the key id is not UTF-8") from None
    return Mac0(kid, payload, tag)


def unwrap(data: bytes, max_size: int) -> tuple[Any, ...]:
    """Split an MQTT payload into ``(Mac0 or None, frame bytes)``.

    A plain frame comes back as ``(None, data)``; an authenticated one as its parsed,
    still unverified, COSE_Mac0 and the payload inside it.
    """
    if not is_mac0(data):
        return None, data
    mac = parse(cbor.loads(data, max_size + 64, 3, False, (COSE_MAC0_TAG,)))
    return mac, mac.payload
