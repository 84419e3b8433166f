"""Receipts: after a commit, which records of each device the gateway has settled.

A device keeps each record until a receipt covers it (protocol SPEC section 16), so a
broker that loses frames it acknowledged cannot lose data. The pipeline process notes
the keys of every authenticated frame it settled for good (stored, found stored
already, or refused for a reason a resend cannot change); once the commit has made
that durable, ``build`` turns the notes into one receipt per run of consecutive keys,
signed like a command, for the MQTT process to publish. Pure logic: no sockets, no SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fieldtrack.gateway.ingest.pipeline import Outcome
from fieldtrack.gateway.store.sqlite import Device
from fieldtrack.protocol import fast, topics
from fieldtrack.protocol.schema import MAX_RECEIPT

# Refusals that sending the frame again cannot change: the device may delete its copy.
# (A filter's drop leaves the frame accepted, so it needs no entry here.)
# boot_behind is not here: after `fieldtrack devices reset-epochs` the same frame is taken.
FINAL_REJECTS = frozenset({
    "bad_boot",  # its boot (>= 2^31) is no counter; the frame is kept as a reject
    "key_reused",  # its keys are stored with other content; the frame is kept as a reject
})

Run = tuple[str, int, int, int]  # (device, boot, first seq, number of records)

# A device's held runs go out once this many frames wait: below the tracker's window of
# 4 unconfirmed frames (firmware/app.py), so a device streaming live never stalls on it.
FLUSH_FRAMES = 3


def settled(outcome: Outcome) -> Run | None:
    """The records one processed message settled for good, or None: no receipt is due.

    None for a frame that failed authentication or decoding (it names no keys anyone
    can trust) and for one refused for a reason an operator may still remove.
    """
    if outcome.keys is None or outcome.device is None:
        return None
    if outcome.reject is not None and outcome.reject.reason not in FINAL_REJECTS:
        return None
    boot, seq, n = outcome.keys
    return (outcome.device, boot, seq, n)


def merge(runs: Iterable[Run]) -> list[Run]:
    """Runs of one device and boot that touch or overlap become one, in key order.

    A run longer than a receipt can name (``MAX_RECEIPT`` records) is split.
    """
    out: list[Run] = []
    key: tuple[str, int] | None = None  # the (device, boot) of the run being grown
    start = end = 0  # its first seq and the seq after its last
    for device, boot, seq, n in sorted(runs):
        if key == (device, boot) and seq <= end:
            end = max(end, seq + n)
            continue
        if key is not None:
            _split(out, key, start, end)
        key, start, end = (device, boot), seq, seq + n
    if key is not None:
        _split(out, key, start, end)
    return out


def _split(out: list[Run], key: tuple[str, int], start: int, end: int) -> None:
    while start < end:
        n = min(end - start, MAX_RECEIPT)
        out.append((key[0], key[1], start, n))
        start += n


def build(runs: Iterable[Run], registry: Mapping[str, Device]) -> list[tuple[str, bytes]]:
    """``(topic, payload)`` of every receipt for ``runs``, merged.

    Signed with the device's key, as its commands are; plain for a device without a
    key. A device no longer registered, or disabled since, is told nothing.
    """
    out = []
    for device_id, boot, seq, n in merge(runs):
        device = registry.get(device_id)
        if device is None or not device.enabled:
            continue
        payload = fast.encode_receipt(boot, seq, n)
        if device.key is not None:
            payload = fast.sign(payload, device.key, device_id)
        out.append((topics.downlink(device_id), payload))
    return out


class Holdback:
    """Settled runs held per device for up to ``delay_s``, so that one receipt covers
    several frames of a device that reports often.

    Holding is safe: the runs are committed already, and a receipt that never comes
    (the gateway stops first) only makes the device send the records again, which the
    store drops as duplicates. A device's runs go out together, when ``FLUSH_FRAMES``
    of its frames wait or its oldest has waited ``delay_s``.
    """

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.held: dict[str, tuple[float, list[Run]]] = {}  # device -> (since, runs)
        self.next_due = float("inf")  # when the oldest held run is due

    def add(self, runs: Iterable[Run], now: float) -> None:
        for run in runs:
            entry = self.held.get(run[0])
            if entry is None:
                self.held[run[0]] = (now, [run])
                self.next_due = min(self.next_due, now + self.delay_s)
            else:
                entry[1].append(run)

    def due(self, now: float) -> list[Run]:
        """Take the runs whose time has come (all of them with ``delay_s`` 0)."""
        out: list[Run] = []
        if not self.held:
            return out
        next_due = float("inf")
        for device, (since, runs) in list(self.held.items()):
            if len(runs) >= FLUSH_FRAMES or now - since >= self.delay_s:
                out.extend(runs)
                del self.held[device]
            else:
                next_due = min(next_due, since + self.delay_s)
        self.next_due = next_due
        return out

