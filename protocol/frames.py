"""Frames of protocol v1: their layout on the wire and their checked dict form.

A frame travels as a CBOR array whose first item ``h`` packs the protocol version
and the frame type: ``h = (version - 1) * 8 + type``. In Python a frame is a plain
dict (``{"type": "position", "lat": 525200000, ...}``) so the same code runs on
MicroPython. ``to_wire`` turns a dict into the CBOR data item, ``from_wire`` checks a
decoded data item and returns the dict; ``encode``/``decode`` add the pure CBOR codec.
The field tables are in ``schema``, fix and batch coding in ``fixes``. The frames a
tracker codes are here (and the receipts it decodes); the others in ``frames_other``,
loaded on first use, so that the firmware does not hold their code in its heap.
"""

from . import cbor
from .errors import BAD_VERSION, NOT_A_FRAME, UNKNOWN_TYPE, FrameError
from .fixes import batch_tail, check_row
from .schema import (  # noqa: F401 (re-exported: the frame vocabulary)
    ACK_RESULTS,
    BATCH_COLUMNS,
    COMMAND_ARGS,
    COMMAND_KINDS,
    COMMAND_REQUIRED,
    EVENT_DATA,
    EVENT_KINDS,
    EVENT_REQUIRED,
    FIX_FIELDS,
    FLAG_BITS,
    HEADER_NAMES,
    MAX_BATCH,
    MAX_DEPTH,
    MAX_FRAME_BYTES,
    MAX_RECEIPT,
    POSITION_EXT,
    STATUS_FIELDS,
    TYPE_CODES,
    TYPES,
    U32,
    UPLINK_TYPES,
    VERSION,
    bad,
    check_int,
    check_value,
    code_of,
    is_int,
    name_of,
    need,
    only,
    require,
    table_from_wire,
    table_to_wire,
)

__all__ = [
    "ACK_RESULTS",
    "BATCH_COLUMNS",
    "COMMAND_ARGS",
    "COMMAND_KINDS",
    "COMMAND_REQUIRED",
    "EVENT_DATA",
    "EVENT_KINDS",
    "EVENT_REQUIRED",
    "FIX_FIELDS",
    "FLAG_BITS",
    "MAX_BATCH",
    "MAX_DEPTH",
    "MAX_FRAME_BYTES",
    "MAX_RECEIPT",
    "POSITION_EXT",
    "STATUS_FIELDS",
    "TYPE_CODES",
    "TYPES",
    "U32",
    "UPLINK_TYPES",
    "VERSION",
    "decode",
    "decode_command",
    "decode_downlink",
    "encode",
    "encode_batch",
    "from_wire",
    "to_wire",
]

try:
    from typing import Any
except ImportError:  # MicroPython
    pass


# --- frames -------------------------------------------------------------------

_others: "Any" = None


def _other() -> "Any":
    """The ``frames_other`` module, imported on first use (see its docstring)."""
    global _others
    if _others is None:
        from . import frames_other

        _others = frames_other
    return _others


def _header(frame: dict[Any, Any]) -> list[Any]:
    ftype = frame.get("type")
    if ftype not in TYPE_CODES:
        raise FrameError(UNKNOWN_TYPE, "unknown frame type %r" % (ftype,), "type")
    v = frame.get("v", VERSION)
    if v != VERSION:
        raise FrameError(BAD_VERSION, "only version %d, not %r" % (VERSION, v), "v")
    h = (VERSION - 1) * 8 + TYPE_CODES[ftype]
    if ftype == "command":
        return [h]
    return [
        h,
        check_int(frame.get("boot"), "boot", 0, U32),
        check_int(frame.get("seq"), "seq", 0, U32),
    ]


def to_wire(frame: dict[Any, Any]) -> list[Any]:
    """Check a frame dict and return the CBOR data item (a list) that carries it."""
    if not isinstance(frame, dict):
        raise FrameError(NOT_A_FRAME, "a frame is a map with a type")
    items = _header(frame)
    ftype = frame["type"]
    if ftype == "event":
        only(frame, HEADER_NAMES + ("t", "kind", "lat", "lon", "acc", "data"))
        items.append(check_int(frame.get("t"), "t", 0, U32))
        kind = frame.get("kind")
        items.append(code_of(kind, EVENT_KINDS, "kind"))
        items.append(_event_pos_to_wire(frame))
        data = frame.get("data", {})
        if not isinstance(data, dict):
            raise bad("data", "event data is a map")
        require(data, EVENT_REQUIRED.get(str(kind), ()), str(kind))
        wire_data = table_to_wire(data, EVENT_DATA, ())
        if wire_data:
            items.append(wire_data)
    elif ftype == "status":
        items.append(check_int(frame.get("t"), "t", 0, U32))
        items.append(table_to_wire(frame, STATUS_FIELDS, ("type", "v", "boot", "seq", "t")))
    elif ftype == "command_ack":
        only(frame, HEADER_NAMES + ("t", "cid", "result", "reason"))
        items.append(check_int(frame.get("t"), "t", 0, U32))
        items.append(check_int(frame.get("cid"), "cid", 0, U32))
        items.append(code_of(frame.get("result"), ACK_RESULTS, "result"))
        if "reason" in frame:
            items.append(check_value(frame["reason"], "tstr", "reason"))
    else:  # position, batch, command: frames a tracker does not send
        _other().to_wire(frame, items)
    return items


def encode_batch(boot: int, seq: int, rows: list[Any], res: int = 1) -> bytes:
    """A batch frame's CBOR bytes from fix rows (``fix_items`` order), checked here.

    The same bytes as ``encode`` of the batch dict, without a dict per fix: a device
    batches the rows it stored.
    """
    items = _header({"type": "batch", "boot": boot, "seq": seq})
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_BATCH:
        raise bad("fixes", "a batch holds 1..%d fixes" % MAX_BATCH)
    if seq + len(rows) - 1 > U32:
        raise bad("seq", "the batch's seq overflows 32 bits")
    res = check_int(res, "res", 1, 1000)
    for row in rows:
        check_row(row)
    items.extend(batch_tail(rows, res))
    return cbor.dumps(items)


_COMMAND_H = (VERSION - 1) * 8 + TYPE_CODES["command"]
_RECEIPT_H = (VERSION - 1) * 8 + TYPE_CODES["receipt"]


def _event_pos_to_wire(frame: dict[Any, Any]) -> "Any":
    if "lat" not in frame and "lon" not in frame:
        if "acc" in frame:
            raise bad("acc", "acc without lat, lon")
        return None
    pos = [
        check_int(frame.get("lat"), "lat", -900000000, 900000000),
        check_int(frame.get("lon"), "lon", -1800000000, 1800000000),
    ]
    if "acc" in frame:
        pos.append(check_int(frame["acc"], "acc", 0, 65535))
    return pos


def from_wire(items: "Any") -> dict[Any, Any]:
    """Check a decoded CBOR data item and return the frame dict it carries.

    Items beyond those this version knows are ignored, as are unknown map keys, so
    that a newer device can talk to an older gateway.
    """
    if not isinstance(items, list) or not items:
        raise FrameError(NOT_A_FRAME, "a frame is a non-empty array")
    h = items[0]
    if not is_int(h) or h < 0:
        raise FrameError(NOT_A_FRAME, "a frame starts with its type")
    version = h // 8 + 1
    if version != VERSION:
        raise FrameError(
            BAD_VERSION, "version %d; only %d is known" % (version, VERSION), "v"
        )
    code = h % 8
    if code >= len(TYPES):
        raise FrameError(UNKNOWN_TYPE, "unknown frame type %d" % code, "type")
    ftype = TYPES[code]
    frame: dict[Any, Any] = {"type": ftype, "v": version}
    if ftype == "command":
        return _command_from_wire(items, frame)
    need(items, 3, ftype)
    frame["boot"] = check_int(items[1], "boot", 0, U32)
    frame["seq"] = check_int(items[2], "seq", 0, U32)
    if ftype == "receipt":  # the one keyed frame a tracker receives: decoded here
        need(items, 4, ftype)
        n = frame["n"] = check_int(items[3], "n", 1, MAX_RECEIPT)
        if frame["seq"] + n - 1 > U32:
            raise bad("n", "the receipt's seq overflows 32 bits")
        return frame
    _other().from_wire(items, frame)  # frames a tracker does not receive
    return frame


def _command_from_wire(items: list[Any], frame: dict[Any, Any]) -> dict[Any, Any]:
    need(items, 4, "command")
    frame["cid"] = check_int(items[1], "cid", 0, U32)
    kind = name_of(items[2], COMMAND_KINDS, "kind")
    frame["kind"] = kind
    frame["exp"] = check_int(items[3], "exp", 0, U32)
    args = table_from_wire(items[4], COMMAND_ARGS, "args") if len(items) > 4 else {}
    require(args, COMMAND_REQUIRED.get(kind, ()), kind)
    frame["args"] = args
    return frame


def encode(frame: dict[Any, Any]) -> bytes:
    """A frame dict -> its CBOR bytes (the MQTT payload of an unauthenticated frame)."""
    return cbor.dumps(to_wire(frame))


def decode(data: bytes) -> dict[Any, Any]:
    """CBOR bytes -> a checked frame dict; any other input raises ``FrameError``."""
    return from_wire(cbor.loads(data, MAX_FRAME_BYTES, MAX_DEPTH, False, ()))


def decode_command(data: bytes) -> dict[Any, Any]:
    """As ``decode_downlink``, for commands only: a receipt raises ``FrameError`` too."""
    frame = decode_downlink(data)
    if frame["type"] != "command":
        raise FrameError(UNKNOWN_TYPE, "not a command frame", "type")
    return frame


def decode_downlink(data: bytes) -> dict[Any, Any]:
    """As ``decode``, for a tracker's downlink topic: a command or a receipt, else
    ``FrameError`` (``unknown_frame_type`` for any other type, which a tracker ignores).

    One entry point for everything a tracker receives; uplink frame types are never
    decoded, so their code is never loaded.
    """
    items = cbor.loads(data, MAX_FRAME_BYTES, MAX_DEPTH, False, ())
    if not isinstance(items, list) or not items or items[0] not in (_COMMAND_H, _RECEIPT_H):
        raise FrameError(UNKNOWN_TYPE, "not a command or receipt", "type")
    return from_wire(items)
