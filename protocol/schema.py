"""What each frame field may hold: codes, units, ranges, and the checks that enforce them.

Declared as tables (a field's name, wire key and kind of value) so that adding a field
is a line of data, not code. SPEC.md is the prose form.
"""

from .errors import BAD_FIELD, NOT_A_FRAME, FrameError

try:
    from typing import Any
except ImportError:  # MicroPython
    pass

VERSION = 1
MAX_FRAME_BYTES = 16384
MAX_DEPTH = 6
MAX_BATCH = 255

TYPES = ("position", "batch", "event", "status", "command_ack", "command", "receipt")
TYPE_CODES = {name: code for code, name in enumerate(TYPES)}
UPLINK_TYPES = ("position", "batch", "event", "status", "command_ack")
# A receipt confirms 1..MAX_RECEIPT records of one boot epoch: seq .. seq + n - 1.
MAX_RECEIPT = 65536

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
    13: ("mock", "bool"),  # the phone reported a mock (simulated) location
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
    9: ("thinned", "uint"),
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


def bad(field: str, reason: str) -> FrameError:
    return FrameError(BAD_FIELD, reason, field)


def is_int(v: "Any") -> bool:
    return isinstance(v, int) and v is not True and v is not False


def check_int(v: "Any", field: str, lo: int, hi: int) -> int:
    if not is_int(v):
        raise bad(field, "expected an integer, got %s" % typename(v))
    if v < lo or v > hi:
        raise bad(field, "%d is outside %d..%d" % (v, lo, hi))
    return int(v)


def typename(v: "Any") -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "a boolean"
    return type(v).__name__


def check_value(v: "Any", kind: str, field: str) -> "Any":
    """Check one value of a table-declared kind; a (lo, hi) pair is a ranged integer."""
    if isinstance(kind, tuple):
        return check_int(v, field, kind[0], kind[1])
    if kind == "uint":
        return check_int(v, field, 0, U32)
    if kind == "int":
        return check_int(v, field, -U32, U32)
    if kind == "pct":
        return check_int(v, field, 0, 100)
    if kind == "bool":
        if v is not True and v is not False:
            raise bad(field, "expected true or false, got %s" % typename(v))
        return v
    if kind == "tstr":
        if not isinstance(v, str):
            raise bad(field, "expected text, got %s" % typename(v))
        if len(v) > MAX_TEXT:
            raise bad(field, "text longer than %d characters" % MAX_TEXT)
        return v
    if kind == "bstr":
        if not isinstance(v, bytes):
            raise bad(field, "expected bytes, got %s" % typename(v))
        if len(v) > 1024:
            raise bad(field, "more than 1024 bytes")
        return v
    if kind == "sha256":
        if not isinstance(v, bytes) or len(v) != 32:
            raise bad(field, "expected 32 bytes (SHA-256)")
        return v
    if kind == "config":
        return check_config(v, field)
    raise bad(field, "unknown value kind %s" % kind)


def check_config(v: "Any", field: str) -> "Any":
    if not isinstance(v, dict) or not v:
        raise bad(field, "expected a non-empty map")
    for k, x in v.items():
        if not isinstance(k, str) or not k or len(k) > 64:
            raise bad(field, "setting names: 1..64 characters")
        if not (is_int(x) or isinstance(x, str) or x is True or x is False):
            raise bad(field + "." + k, "not an integer, text or boolean")
        if is_int(x):
            check_int(x, field + "." + k, -U32, U32)
        if isinstance(x, str):
            check_value(x, "tstr", field + "." + k)
    return v


def table_from_wire(m: "Any", table: dict[Any, Any], field: str) -> dict[Any, Any]:
    """A map with integer keys -> dict[Any, Any] with names; unknown keys are ignored."""
    if not isinstance(m, dict):
        raise bad(field, "expected a map, got %s" % typename(m))
    out = {}
    for k, v in m.items():
        spec = table.get(k) if is_int(k) else None
        if spec is not None:
            out[spec[0]] = check_value(v, spec[1], spec[0])
    return out


def table_to_wire(
    d: dict[Any, Any], table: dict[Any, Any], skip: tuple[Any, ...]
) -> dict[Any, Any]:
    names = {spec[0]: (k, spec[1]) for k, spec in table.items()}
    out = {}
    for name, v in d.items():
        if name in skip:
            continue
        if name not in names:
            raise bad(name, "unknown field")
        key, kind = names[name]
        out[key] = check_value(v, kind, name)
    return out


def require(d: dict[Any, Any], names: tuple[Any, ...], what: str) -> None:
    for name in names:
        if name not in d:
            raise bad(name, "%s needs %s" % (what, name))


def name_of(code: "Any", table: tuple[Any, ...], field: str) -> str:
    for c, n in table:
        if c == code and is_int(code):
            return str(n)
    raise bad(field, "unknown %s %r" % (field, code))


def code_of(name: "Any", table: tuple[Any, ...], field: str) -> int:
    for c, n in table:
        if n == name:
            return int(c)
    raise bad(field, "unknown %s %r" % (field, name))


HEADER_NAMES = ("type", "v", "boot", "seq")  # the fields of every uplink frame and receipt


def only(frame: dict[Any, Any], allowed: tuple[Any, ...]) -> None:
    for name in frame:
        if name not in allowed:
            raise bad(str(name), "unknown field for a %s frame" % frame["type"])


def need(items: list[Any], n: int, ftype: str) -> None:
    if len(items) < n:
        raise FrameError(
            NOT_A_FRAME, "a %s frame has %d+ items, not %d" % (ftype, n, len(items))
        )
