"""Frames of protocol v1: their layout on the wire and their checked dict form.

A frame travels as a CBOR array whose first item ``h`` packs the protocol version
and the frame type: ``h = (version - 1) * 8 + type``. In Python a frame is a plain
dict (``{"type": "position", "lat": 525200000, ...}``) so the same code runs on
MicroPython. ``to_wire`` turns a dict into the CBOR data item, ``from_wire`` checks a
decoded data item and returns the dict; ``encode``/``decode`` add the pure CBOR codec.
SPEC.md is the prose form of this module.
"""

from . import cbor
from .errors import BAD_FIELD, BAD_VERSION, NOT_A_FRAME, UNKNOWN_TYPE, FrameError

try:
    from typing import Any
except ImportError:  # MicroPython
    pass

VERSION = 1
MAX_FRAME_BYTES = 16384
MAX_DEPTH = 6
MAX_BATCH = 255

TYPES = ("position", "batch", "event", "status", "command_ack", "command")
TYPE_CODES = {name: code for code, name in enumerate(TYPES)}
UPLINK_TYPES = ("position", "batch", "event", "status", "command_ack")

U32 = 0xFFFFFFFF

# The fix fields in wire order, with their inclusive range. Units: t Unix seconds,
# lat/lon 1e-7 degrees, spd km/h, hdg degrees true, alt metres above mean sea level,
# acc horizontal accuracy in metres (0 = unknown), sats satellites used.
FIX_FIELDS = (
    ("t", 0, U32),
    ("lat", -900000000, 900000000),
    ("lon", -1800000000, 1800000000),
    ("spd", 0, 2000),
    ("hdg", 0, 359),
    ("alt", -10000, 100000),
    ("acc", 0, 65535),
    ("sats", 0, 255),
)
# Fix flags: bits 0-1 fix type, then single-bit flags. Unknown bits are ignored.
FIX_NONE, FIX_2D, FIX_3D, FIX_DIFF = 0, 1, 2, 3
FLAG_BITS = (("ign", 4), ("buf", 8), ("mock", 16))
# Optional position extension map: integer key -> (name, min, max). hdop is x10.
# src: 0 GNSS, 1 network (Wi-Fi/cell), 2 fused (phones).
POSITION_EXT = {
    0: ("ms", (0, 999)),
    1: ("hdop", (0, 9999)),
    2: ("vacc", (0, 65535)),
    3: ("src", (0, 15)),
}

EVENT_KINDS = (
    (1, "ignition_on"),
    (2, "ignition_off"),
    (3, "sos"),
    (4, "power_lost"),
    (5, "power_restored"),
    (6, "low_battery"),
    (7, "tamper"),
    (8, "boot"),
    (9, "check_in"),
    (10, "check_out"),
    (11, "task_step"),
    (12, "photo"),
    (13, "signature"),
    (14, "extension"),
)
# Event data: integer key -> (name, kind of value). "sha256" is a 32-byte string.
EVENT_DATA = {
    0: ("site", "tstr"),
    1: ("task", "tstr"),
    2: ("step", "tstr"),
    3: ("sha256", "sha256"),
    4: ("size", "uint"),
    5: ("signer", "tstr"),
    6: ("pct", "pct"),
    7: ("mv", "uint"),
    8: ("reason", "uint"),
    9: ("fw", "tstr"),
    10: ("note", "tstr"),
    11: ("ext", "uint"),
    12: ("value", "bstr"),
}
EVENT_REQUIRED = {
    "check_in": ("site",),
    "check_out": ("site",),
    "task_step": ("task", "step"),
    "photo": ("sha256",),
    "signature": ("sha256",),
    "extension": ("ext", "value"),
}
STATUS_FIELDS = {
    0: ("batt_pct", "pct"),
    1: ("batt_mv", "uint"),
    2: ("supply_mv", "uint"),
    3: ("rssi", "int"),
    4: ("fw", "tstr"),
    5: ("buffered", "uint"),
    6: ("uptime", "uint"),
    7: ("heap_free", "uint"),
    8: ("dropped", "uint"),
}
COMMAND_KINDS = ((1, "set_config"), (2, "locate"), (3, "reboot"), (4, "fw_update"), (5, "status"))
COMMAND_ARGS = {
    0: ("config", "config"),
    1: ("url", "tstr"),
    2: ("sha256", "sha256"),
    3: ("version", "tstr"),
}
COMMAND_REQUIRED = {"set_config": ("config",), "fw_update": ("url", "sha256")}
ACK_RESULTS = ((0, "ok"), (1, "rejected"), (2, "failed"), (3, "unsupported"), (4, "expired"))
MAX_TEXT = 256

# Batch columns after the first fix: (field, how each fix differs from the one before).
BATCH_COLUMNS = ("t", "lat", "lon", "spd", "hdg", "alt", "acc", "sats", "flags")


def _bad(field: str, reason: str) -> FrameError:
    return FrameError(BAD_FIELD, reason, field)


def _is_int(v: "Any") -> bool:
    return isinstance(v, int) and v is not True and v is not False


def _int(v: "Any", field: str, lo: int, hi: int) -> int:
    if not _is_int(v):
        raise _bad(field, "expected an integer, got %s" % _typename(v))
    if v < lo or v > hi:
        raise _bad(field, "%d is outside %d..%d" % (v, lo, hi))
    return int(v)


def _typename(v: "Any") -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "a boolean"
    return type(v).__name__


def _value(v: "Any", kind: str, field: str) -> "Any":
    """Check one value of a table-declared kind; a (lo, hi) pair is a ranged integer."""
    if isinstance(kind, tuple):
        return _int(v, field, kind[0], kind[1])
    if kind == "uint":
        return _int(v, field, 0, U32)
    if kind == "int":
        return _int(v, field, -U32, U32)
    if kind == "pct":
        return _int(v, field, 0, 100)
    if kind == "tstr":
        if not isinstance(v, str):
            raise _bad(field, "expected text, got %s" % _typename(v))
        if len(v) > MAX_TEXT:
            raise _bad(field, "text longer than %d characters" % MAX_TEXT)
        return v
    if kind == "bstr":
        if not isinstance(v, bytes):
            raise _bad(field, "expected bytes, got %s" % _typename(v))
        if len(v) > 1024:
            raise _bad(field, "more than 1024 bytes")
        return v
    if kind == "sha256":
        if not isinstance(v, bytes) or len(v) != 32:
            raise _bad(field, "expected a 32-byte SHA-256 digest")
        return v
    if kind == "config":
        return _config(v, field)
    raise _bad(field, "unknown value kind %s" % kind)


def _config(v: "Any", field: str) -> "Any":
    if not isinstance(v, dict) or not v:
        raise _bad(field, "expected a non-empty map of setting names to values")
    for k, x in v.items():
        if not isinstance(k, str) or not k or len(k) > 64:
            raise _bad(field, "setting names are text of 1..64 characters")
        if not (_is_int(x) or isinstance(x, str) or x is True or x is False):
            raise _bad(field + "." + k, "a setting is an integer, text or boolean")
        if _is_int(x):
            _int(x, field + "." + k, -U32, U32)
        if isinstance(x, str):
            _value(x, "tstr", field + "." + k)
    return v


def _table_from_wire(m: "Any", table: dict, field: str) -> dict:
    """A map with integer keys -> dict with names; unknown keys are ignored."""
    if not isinstance(m, dict):
        raise _bad(field, "expected a map, got %s" % _typename(m))
    out = {}
    for k, v in m.items():
        spec = table.get(k) if _is_int(k) else None
        if spec is not None:
            out[spec[0]] = _value(v, spec[1], spec[0])
    return out


def _table_to_wire(d: dict, table: dict, skip: tuple) -> dict:
    names = {spec[0]: (k, spec[1]) for k, spec in table.items()}
    out = {}
    for name, v in d.items():
        if name in skip:
            continue
        if name not in names:
            raise _bad(name, "unknown field")
        key, kind = names[name]
        out[key] = _value(v, kind, name)
    return out


def _require(d: dict, names: tuple, what: str) -> None:
    for name in names:
        if name not in d:
            raise _bad(name, "%s needs %s" % (what, name))


def _name(code: "Any", table: tuple, field: str) -> str:
    for c, n in table:
        if c == code and _is_int(code):
            return n
    raise _bad(field, "unknown %s %r" % (field, code))


def _code(name: "Any", table: tuple, field: str) -> int:
    for c, n in table:
        if n == name:
            return c
    raise _bad(field, "unknown %s %r" % (field, name))


# --- fixes ------------------------------------------------------------------


def flags_of(fix: dict) -> int:
    """The wire flags integer of a fix dict."""
    flags = _int(fix.get("fix", FIX_3D), "fix", 0, 3)
    for name, bit in FLAG_BITS:
        v = fix.get(name, False)
        if v is not True and v is not False:
            raise _bad(name, "expected true or false")
        if v:
            flags |= bit
    return flags


def _set_flags(fix: dict, flags: int) -> None:
    fix["fix"] = flags & 3
    for name, bit in FLAG_BITS:
        fix[name] = bool(flags & bit)


def _fix_items(fix: dict) -> list:
    items = []
    for name, lo, hi in FIX_FIELDS:
        if name not in fix:
            raise _bad(name, "a fix needs %s" % name)
        items.append(_int(fix[name], name, lo, hi))
    items.append(flags_of(fix))
    return items


def _fix_from_items(items: "Any", start: int) -> dict:
    fix: dict = {}
    i = start
    for name, lo, hi in FIX_FIELDS:
        fix[name] = _int(items[i], name, lo, hi)
        i += 1
    _set_flags(fix, _int(items[i], "flags", 0, 0xFFFF))
    return fix


# --- batch delta coding -------------------------------------------------------


def _wrap_heading(d: int) -> int:
    return (d + 180) % 360 - 180


def _column(values: list) -> "Any":
    """A delta column: one integer when every delta is the same, else the list."""
    first = values[0]
    for v in values:
        if v != first:
            return values
    return first


def _batch_columns(fixes: list, res: int) -> list:
    rows = [_fix_items(f) for f in fixes]
    cols: list = [[] for _ in BATCH_COLUMNS]
    # Coordinates are coded against the previous *decoded* coordinate, so rounding to
    # ``res`` never accumulates: every decoded fix is within res/2 of the true one.
    rec = [rows[0][1], rows[0][2]]
    for i in range(1, len(rows)):
        prev, row = rows[i - 1], rows[i]
        cols[0].append(row[0] - prev[0])
        for c in (1, 2):
            r = _div_round(row[c] - rec[c - 1], res)
            rec[c - 1] += r * res
            cols[c].append(r)
        cols[3].append(row[3] - prev[3])
        cols[4].append(_wrap_heading(row[4] - prev[4]))
        for c in (5, 6, 7):
            cols[c].append(row[c] - prev[c])
        cols[8].append(row[8] ^ prev[8])
    return [_column(c) for c in cols]


def _div_round(a: int, b: int) -> int:
    """a / b rounded half away from zero, in integers (identical on every port)."""
    if a >= 0:
        return (2 * a + b) // (2 * b)
    return -((-2 * a + b) // (2 * b))


def _batch_fixes(first: dict, n: int, cols: list, res: int) -> list:
    deltas = []
    for c, name in enumerate(BATCH_COLUMNS):
        col = cols[c]
        if _is_int(col):
            deltas.append([col] * (n - 1))
        elif isinstance(col, list) and len(col) == n - 1:
            for v in col:
                if not _is_int(v):
                    raise _bad(name, "batch deltas are integers")
            deltas.append(col)
        else:
            raise _bad(name, "a batch column is an integer or a list of n - 1 integers")
    fixes = [first]
    prev_items = [first[f[0]] for f in FIX_FIELDS] + [flags_of(first)]
    for i in range(n - 1):
        row = [prev_items[0] + deltas[0][i]]
        for c in (1, 2):
            row.append(prev_items[c] + deltas[c][i] * res)
        row.append(prev_items[3] + deltas[3][i])
        row.append((prev_items[4] + deltas[4][i]) % 360)
        for c in (5, 6, 7):
            row.append(prev_items[c] + deltas[c][i])
        row.append(prev_items[8] ^ deltas[8][i])
        fixes.append(_fix_from_items(row, 0))
        prev_items = row
    return fixes


# --- frames -------------------------------------------------------------------


def _header(frame: dict) -> list:
    ftype = frame.get("type")
    if ftype not in TYPE_CODES:
        raise FrameError(UNKNOWN_TYPE, "unknown frame type %r" % (ftype,), "type")
    v = frame.get("v", VERSION)
    if v != VERSION:
        raise FrameError(BAD_VERSION, "this codec speaks version %d, not %r" % (VERSION, v), "v")
    h = (VERSION - 1) * 8 + TYPE_CODES[ftype]
    if ftype == "command":
        return [h]
    return [h, _int(frame.get("boot"), "boot", 0, U32), _int(frame.get("seq"), "seq", 0, U32)]


def to_wire(frame: dict) -> list:
    """Check a frame dict and return the CBOR data item (a list) that carries it."""
    if not isinstance(frame, dict):
        raise FrameError(NOT_A_FRAME, "a frame is a map with a type")
    items = _header(frame)
    ftype = frame["type"]
    if ftype == "position":
        _only(frame, _HEADER_NAMES + _FIX_NAMES + _EXT_NAMES)
        items.extend(_fix_items(frame))
        ext = _table_to_wire(frame, POSITION_EXT, _HEADER_NAMES + _FIX_NAMES)
        if ext:
            items.append(ext)
    elif ftype == "batch":
        _only(frame, _HEADER_NAMES + ("res", "fixes"))
        fixes = frame.get("fixes")
        if not isinstance(fixes, list) or not 1 <= len(fixes) <= MAX_BATCH:
            raise _bad("fixes", "a batch holds 1..%d fixes" % MAX_BATCH)
        if _int(frame["seq"], "seq", 0, U32) + len(fixes) - 1 > U32:
            raise _bad("seq", "the batch's sequence numbers overflow 32 bits")
        res = _int(frame.get("res", 1), "res", 1, 1000)
        for fix in fixes:
            if not isinstance(fix, dict):
                raise _bad("fixes", "each fix is a map")
            _only(dict(fix, type="batch"), ("type",) + _FIX_NAMES)
        items.append(res)
        items.extend(_fix_items(fixes[0]))
        items.append(len(fixes))
        if len(fixes) > 1:
            items.extend(_batch_columns(fixes, res))
    elif ftype == "event":
        _only(frame, _HEADER_NAMES + ("t", "kind", "lat", "lon", "acc", "data"))
        items.append(_int(frame.get("t"), "t", 0, U32))
        kind = frame.get("kind")
        items.append(_code(kind, EVENT_KINDS, "kind"))
        items.append(_event_pos_to_wire(frame))
        data = frame.get("data", {})
        if not isinstance(data, dict):
            raise _bad("data", "event data is a map")
        _require(data, EVENT_REQUIRED.get(str(kind), ()), str(kind))
        wire_data = _table_to_wire(data, EVENT_DATA, ())
        if wire_data:
            items.append(wire_data)
    elif ftype == "status":
        items.append(_int(frame.get("t"), "t", 0, U32))
        items.append(_table_to_wire(frame, STATUS_FIELDS, ("type", "v", "boot", "seq", "t")))
    elif ftype == "command_ack":
        _only(frame, _HEADER_NAMES + ("t", "cid", "result", "reason"))
        items.append(_int(frame.get("t"), "t", 0, U32))
        items.append(_int(frame.get("cid"), "cid", 0, U32))
        items.append(_code(frame.get("result"), ACK_RESULTS, "result"))
        if "reason" in frame:
            items.append(_value(frame["reason"], "tstr", "reason"))
    else:  # command
        _only(frame, ("type", "v", "cid", "kind", "exp", "args"))
        items.append(_int(frame.get("cid"), "cid", 0, U32))
        kind = frame.get("kind")
        items.append(_code(kind, COMMAND_KINDS, "kind"))
        items.append(_int(frame.get("exp", 0), "exp", 0, U32))
        args = frame.get("args", {})
        if not isinstance(args, dict):
            raise _bad("args", "command arguments are a map")
        _require(args, COMMAND_REQUIRED.get(str(kind), ()), str(kind))
        wire_args = _table_to_wire(args, COMMAND_ARGS, ())
        if wire_args:
            items.append(wire_args)
    return items


def _only(frame: dict, allowed: tuple) -> None:
    for name in frame:
        if name not in allowed:
            raise _bad(str(name), "unknown field for a %s frame" % frame["type"])


_HEADER_NAMES = ("type", "v", "boot", "seq")
_FIX_NAMES = tuple(f[0] for f in FIX_FIELDS) + ("fix",) + tuple(f[0] for f in FLAG_BITS)
_EXT_NAMES = tuple(spec[0] for spec in POSITION_EXT.values())


def _event_pos_to_wire(frame: dict) -> "Any":
    if "lat" not in frame and "lon" not in frame:
        return None
    pos = [
        _int(frame.get("lat"), "lat", -900000000, 900000000),
        _int(frame.get("lon"), "lon", -1800000000, 1800000000),
    ]
    if "acc" in frame:
        pos.append(_int(frame["acc"], "acc", 0, 65535))
    return pos


def _need(items: list, n: int, ftype: str) -> None:
    if len(items) < n:
        raise FrameError(NOT_A_FRAME, "a %s frame has at least %d items, not %d" % (ftype, n, len(items)))


def from_wire(items: "Any") -> dict:
    """Check a decoded CBOR data item and return the frame dict it carries.

    Items beyond those this version knows are ignored, as are unknown map keys, so
    that a newer device can talk to an older gateway.
    """
    if not isinstance(items, list) or not items:
        raise FrameError(NOT_A_FRAME, "a frame is a non-empty CBOR array")
    h = items[0]
    if not _is_int(h) or h < 0:
        raise FrameError(NOT_A_FRAME, "the first item of a frame is its type")
    version = h // 8 + 1
    if version != VERSION:
        raise FrameError(BAD_VERSION, "frame version %d; this codec speaks %d" % (version, VERSION), "v")
    code = h % 8
    if code >= len(TYPES):
        raise FrameError(UNKNOWN_TYPE, "unknown frame type %d" % code, "type")
    ftype = TYPES[code]
    frame: dict = {"type": ftype, "v": version}
    if ftype == "command":
        return _command_from_wire(items, frame)
    _need(items, 3, ftype)
    frame["boot"] = _int(items[1], "boot", 0, U32)
    frame["seq"] = _int(items[2], "seq", 0, U32)
    if ftype == "position":
        _need(items, 12, ftype)
        frame.update(_fix_from_items(items, 3))
        if len(items) > 12:
            frame.update(_table_from_wire(items[12], POSITION_EXT, "ext"))
    elif ftype == "batch":
        _batch_from_wire(items, frame)
    elif ftype == "event":
        _event_from_wire(items, frame)
    elif ftype == "status":
        _need(items, 5, ftype)
        frame["t"] = _int(items[3], "t", 0, U32)
        frame.update(_table_from_wire(items[4], STATUS_FIELDS, "status"))
    else:  # command_ack
        _need(items, 6, ftype)
        frame["t"] = _int(items[3], "t", 0, U32)
        frame["cid"] = _int(items[4], "cid", 0, U32)
        frame["result"] = _name(items[5], ACK_RESULTS, "result")
        if len(items) > 6:
            frame["reason"] = _value(items[6], "tstr", "reason")
    return frame


def _batch_from_wire(items: list, frame: dict) -> None:
    _need(items, 14, "batch")
    res = _int(items[3], "res", 1, 1000)
    first = _fix_from_items(items, 4)
    n = _int(items[13], "n", 1, MAX_BATCH)
    if frame["seq"] + n - 1 > U32:
        raise _bad("seq", "the batch's sequence numbers overflow 32 bits")
    if n == 1:
        fixes = [first]
    else:
        _need(items, 14 + len(BATCH_COLUMNS), "batch")
        fixes = _batch_fixes(first, n, items[14 : 14 + len(BATCH_COLUMNS)], res)
    frame["res"] = res
    frame["fixes"] = fixes


def _event_from_wire(items: list, frame: dict) -> None:
    _need(items, 6, "event")
    frame["t"] = _int(items[3], "t", 0, U32)
    kind = _name(items[4], EVENT_KINDS, "kind")
    frame["kind"] = kind
    pos = items[5]
    if pos is not None:
        if not isinstance(pos, list) or len(pos) < 2:
            raise _bad("pos", "an event position is null or [lat, lon, acc?]")
        frame["lat"] = _int(pos[0], "lat", -900000000, 900000000)
        frame["lon"] = _int(pos[1], "lon", -1800000000, 1800000000)
        if len(pos) > 2:
            frame["acc"] = _int(pos[2], "acc", 0, 65535)
    data = _table_from_wire(items[6], EVENT_DATA, "data") if len(items) > 6 else {}
    _require(data, EVENT_REQUIRED.get(kind, ()), kind)
    frame["data"] = data


def _command_from_wire(items: list, frame: dict) -> dict:
    _need(items, 4, "command")
    frame["cid"] = _int(items[1], "cid", 0, U32)
    kind = _name(items[2], COMMAND_KINDS, "kind")
    frame["kind"] = kind
    frame["exp"] = _int(items[3], "exp", 0, U32)
    args = _table_from_wire(items[4], COMMAND_ARGS, "args") if len(items) > 4 else {}
    _require(args, COMMAND_REQUIRED.get(kind, ()), kind)
    frame["args"] = args
    return frame


def encode(frame: dict) -> bytes:
    """A frame dict -> its CBOR bytes (the MQTT payload of an unauthenticated frame)."""
    return cbor.dumps(to_wire(frame))


def decode(data: bytes) -> dict:
    """CBOR bytes -> a checked frame dict; any other input raises ``FrameError``."""
    return from_wire(cbor.loads(data, MAX_FRAME_BYTES, MAX_DEPTH, False, ()))
