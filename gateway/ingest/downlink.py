"""Downlink commands: which queued commands go out now, signed for their device.

The queue is the store's ``commands`` table (``store/commands.py``); the pipeline
process loads its pending rows, asks ``Downlink.due`` what to publish at each turn and
hands the signed frames to the MQTT process (QoS 1 on ``ft/d/<device>``). A command is
published at once, then again while no ack has settled it:

- as soon as its device is heard from after being offline or unknown (a presence
  message saying online, or any uplink frame): a command sent while the device was away
  may never have reached it;
- every ``resend_s`` (30 s) while the device is online, in case a copy was lost;

never to a disabled or unregistered device, and never after its expiry, when it is given
up as ``expired``. A device's commands go out in cid order, so a device, which acts
only on a cid higher than the last it acted on, does not skip one. A copy the device
already acted on is ignored by it (its cid is not higher): re-sending is always safe.

Pure logic: no sockets, no SQL; times are Unix seconds passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from fieldtrack.gateway.store.commands import CommandError, CommandRow, encode
from fieldtrack.gateway.store.sqlite import Device
from fieldtrack.protocol import fast, topics

RESEND_S = 30.0


@dataclass(slots=True)
class Pending:
    """A command still to be delivered, as this process holds it."""

    id: int
    device: str
    cid: int
    kind: str
    exp: int  # Unix s, 0: none
    frame: bytes  # the unsigned command frame
    last_sent: float  # Unix s of the last publish, 0.0: never


class Downlink:
    """The pending commands per device and when each is due again."""

    def __init__(self, resend_s: float = RESEND_S) -> None:
        self.resend_s = resend_s
        self.waiting: dict[str, list[Pending]] = {}  # device -> its commands by cid
        self.online: dict[str, bool] = {}  # of the devices in ``waiting``
        self.nudged: set[str] = set()  # devices heard from again: send what they wait for
        self.changed = False  # the number of pending commands moved since it was read
        self.unsendable: list[tuple[CommandRow, str]] = []  # rows that make no frame: why

    def load(self, rows: Iterable[CommandRow], online: Callable[[str], bool]) -> int:
        """Take the store's pending rows; returns how many are new here.

        A command known already keeps its last send time; ``online`` tells a device's
        presence as the store knows it, for devices not followed yet.
        """
        known = {p.id: p for items in self.waiting.values() for p in items}
        waiting: dict[str, list[Pending]] = {}
        new = 0
        for row in rows:
            p = known.get(row.id)
            if p is None:
                try:
                    frame = encode(row.cid, row.kind, row.exp, row.args)
                except CommandError as exc:  # a row not written by queue_command
                    self.unsendable.append((row, str(exc)))
                    continue
                new += row.state == "queued"
                sent = row.sent_ms / 1000 if row.state == "sent" and row.sent_ms else 0.0
                p = Pending(row.id, row.device_id, row.cid, row.kind, row.exp, frame, sent)
            waiting.setdefault(row.device_id, []).append(p)
        for items in waiting.values():
            items.sort(key=lambda p: p.cid)
        self.online = {d: self.online[d] if d in self.online else online(d) for d in waiting}
        self.waiting = waiting
        self.changed = True
        return new

    def count(self) -> int:
        return sum(len(items) for items in self.waiting.values())

    def heard(self, device: str) -> None:
        """An uplink frame of ``device`` (call it only for devices in ``waiting``)."""
        if not self.online.get(device):
            self.online[device] = True
            self.nudged.add(device)

    def presence(self, device: str, online: bool) -> None:
        if device in self.waiting:
            self.online[device] = online
            if online:
                self.nudged.add(device)

    def settled(self, device: str, cid: int) -> None:
        """The device acknowledged ``cid``: nothing more to send for it."""
        items = self.waiting.get(device)
        if items is None:
            return
        items[:] = [p for p in items if p.cid != cid]
        self.changed = True
        if not items:
            self._forget(device)

    def drop(self, ids: set[int]) -> None:
        """Stop following these commands (expired, cancelled or settled elsewhere)."""
        for device, items in list(self.waiting.items()):
            items[:] = [p for p in items if p.id not in ids]
            if not items:
                self._forget(device)

    def _forget(self, device: str) -> None:
        self.changed = True
        del self.waiting[device]
        self.online.pop(device, None)
        self.nudged.discard(device)

    def due(self, now: float, registry: Mapping[str, Device]
            ) -> tuple[list[Pending], list[Pending]]:
        """(commands to publish now, in cid order per device; those whose expiry passed).

        The expired ones are dropped here; the caller records them and notes each
        publish with ``sent``.
        """
        send: list[Pending] = []
        expired: list[Pending] = []
        for device, items in list(self.waiting.items()):
            live = []
            for p in items:
                if p.exp and now > p.exp:
                    expired.append(p)
                else:
                    live.append(p)
            if len(live) != len(items):
                items[:] = live
                if not live:
                    self._forget(device)
                    continue
            dev = registry.get(device)
            if dev is None or not dev.enabled:
                continue  # a disabled device gets nothing; its commands wait or expire
            nudged = device in self.nudged
            online = self.online.get(device, False)
            for p in live:
                if (not p.last_sent or nudged
                        or (online and now - p.last_sent >= self.resend_s)):
                    send.append(p)
        self.nudged.clear()
        return send, expired

    def sent(self, commands: Iterable[Pending], now: float) -> None:
        for p in commands:
            p.last_sent = now


def publication(p: Pending, registry: Mapping[str, Device]) -> tuple[str, bytes] | None:
    """``(topic, payload)`` of a command: signed with its device's key, as receipts are."""
    device = registry.get(p.device)
    if device is None or not device.enabled:
        return None
    payload = p.frame if device.key is None else fast.sign(p.frame, device.key, p.device)
    return topics.downlink(p.device), payload
