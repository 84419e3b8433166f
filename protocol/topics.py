"""The MQTT topic scheme: short, because every byte is paid for on a cellular link.

``ft/u/<device>`` uplink frames (QoS 1), ``ft/d/<device>`` downlink commands
(QoS 1) and receipts (QoS 0), ``ft/s/<device>`` presence (retained; CBOR ``1``
online, ``0`` offline, the latter also as the device's last will).
"""

from .errors import BAD_FIELD, FrameError

try:
    from typing import Any
except ImportError:  # MicroPython
    pass

PREFIX = "ft"
UPLINK = "u"
DOWNLINK = "d"
PRESENCE = "s"
UPLINK_FILTER = PREFIX + "/" + UPLINK + "/+"
PRESENCE_FILTER = PREFIX + "/" + PRESENCE + "/+"
ONLINE = b"\x01"
OFFLINE = b"\x00"
MAX_DEVICE_ID = 32
_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"


def check_device_id(device: str) -> str:
    """A device id is 1..32 of ``A-Z a-z 0-9 - _``: one whole topic level, ACL-safe."""
    if not isinstance(device, str) or not 1 <= len(device) <= MAX_DEVICE_ID:
        raise FrameError(BAD_FIELD, "a device id is 1..%d characters" % MAX_DEVICE_ID, "device")
    for ch in device:
        if ch not in _ID_CHARS:
            raise FrameError(
                BAD_FIELD, "%r: only A-Z a-z 0-9 - _" % device, "device"
            )
    return device


def uplink(device: str) -> str:
    return PREFIX + "/" + UPLINK + "/" + check_device_id(device)


def downlink(device: str) -> str:
    return PREFIX + "/" + DOWNLINK + "/" + check_device_id(device)


def presence(device: str) -> str:
    return PREFIX + "/" + PRESENCE + "/" + check_device_id(device)


def parse(topic: str) -> tuple[Any, ...]:
    """``"ft/u/van-12"`` -> ``("u", "van-12")``; anything else raises ``FrameError``."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != PREFIX or parts[1] not in (UPLINK, DOWNLINK, PRESENCE):
        raise FrameError(BAD_FIELD, "%r: not a fieldtrack topic" % topic, "topic")
    return parts[1], check_device_id(parts[2])
