"""Who is speaking: the topic names a device, the registry knows it, the MAC proves it.

Pure logic over the registry snapshot; the reasons are the reject codes.
"""

from __future__ import annotations

from dataclasses import dataclass

from fieldtrack.gateway.store.sqlite import Device
from fieldtrack.protocol import fast, frames, topics
from fieldtrack.protocol.errors import FrameError


class Rejected(Exception):
    """A message the gateway will not accept; ``reason`` is its reject code."""

    def __init__(self, reason: str, detail: str, device: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.device = device


@dataclass(slots=True)
class Speaker:
    device: Device
    payload: bytes
    signed: bool


_UPLINK_PREFIX = topics.uplink("x")[:-1]


def authenticate(topic: str, data: bytes, registry: dict[str, Device]) -> Speaker:
    """Return the device that sent ``data`` on ``topic`` and the frame bytes inside."""
    # The registry holds checked device ids only, so an uplink topic that names one is
    # well formed: the usual case needs one look-up, the rest is worded below.
    device = (registry.get(topic[len(_UPLINK_PREFIX):])
              if topic.startswith(_UPLINK_PREFIX) else None)
    if device is None:
        device = _device_of(topic, registry)
    device_id = device.id
    if not device.enabled:
        raise Rejected("disabled_device", "%s is disabled" % device_id, device_id)
    try:
        mac, payload = fast.unwrap(data, frames.MAX_FRAME_BYTES)
    except FrameError as exc:
        raise Rejected(exc.code, exc.reason, device_id) from None
    if mac is None:
        if device.key is not None:
            raise Rejected("mac_required", "%s has a key: its frames must be signed" % device_id,
                           device_id)
        return Speaker(device, payload, False)
    if mac.kid != device_id:
        raise Rejected("device_mismatch",
                       "frame signed as %r arrived on the topic of %s" % (mac.kid[:40], device_id),
                       device_id)
    if device.key is None:
        raise Rejected("no_key", "%s has no key to check the signature with" % device_id,
                       device_id)
    if not fast.verify(mac, device.key):
        raise Rejected("bad_mac", "the MAC does not match %s's key" % device_id, device_id)
    return Speaker(device, payload, True)


def _device_of(topic: str, registry: dict[str, Device]) -> Device:
    """The registered device a topic names, or the reason it names none."""
    try:
        kind, device_id = topics.parse(topic)
    except FrameError as exc:
        raise Rejected("bad_topic", exc.reason) from None
    if kind != topics.UPLINK:
        raise Rejected("bad_topic", "frames are accepted on uplink topics only", device_id)
    device = registry.get(device_id)
    if device is None:
        raise Rejected("unknown_device", "%s is not in the device registry" % device_id, device_id)
    return device
