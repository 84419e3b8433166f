"""Stable identities of derived events: the same event always gets the same key.

A key says what an event is, not when it was found: kind, fence (or site), and its time
to the millisecond (``kind/fence/seconds.mmm``). Deriving a device's events again,
after late fixes, therefore finds the events it found before under the same keys, and
the store can tell an unchanged event from a new one and from one that no longer holds
(STORE.md, "Late data"). Events that do not come from fixes carry their own key:
attendance verdicts that of the check-in they judge, presence events their arrival.

``seq`` is the number a derived event has in the ``(device, boot, seq)`` columns that
feeds and older consumers dedupe on: 53 bits of a hash of the key, so it survives a
trip through a JSON number.
"""

from __future__ import annotations

from hashlib import blake2b

from fieldtrack.gateway.derive.fence_tracker import Derived

SEQ_BITS = 53


def event_key(e: Derived) -> str:
    """The event's identity within its device."""
    if e.key:
        return e.key
    return "%s/%s/%d.%03d" % (e.kind, e.fence, e.t, e.ms)


def key_seq(key: str) -> int:
    """The ``seq`` of a derived event with this key (``boot`` is -1)."""
    digest = blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEQ_BITS)


def attendance_key(site: str, boot: int, seq: int) -> str:
    """A verdict's key is its check-in's: one verdict per check-in, even if redelivered."""
    return "attendance/%s/%d.%d" % (site, boot, seq)
