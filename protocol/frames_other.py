"""The frames a tracker never codes: positions, batches of fix dicts, commands and
receipts out, positions, batches, events, status and acks in.

``frames.to_wire`` and ``frames.from_wire`` hand these types to this module, imported on
first use: the firmware, which sends events, status, acks and batches of stored rows and
receives commands and receipts, never loads it. The decoding half of the fix and batch
coding of ``fixes`` is here too.
"""

from .fixes import batch_tail, fix_items, flags_of
from .schema import (
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
    MAX_RECEIPT,
    POSITION_EXT,
    STATUS_FIELDS,
    U32,
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

try:
    from typing import Any
except ImportError:  # MicroPython
    pass

_FIX_NAMES = tuple(f[0] for f in FIX_FIELDS) + ("fix",) + tuple(f[0] for f in FLAG_BITS)
_EXT_NAMES = tuple(spec[0] for spec in POSITION_EXT.values())


def to_wire(frame: dict[Any, Any], items: list[Any]) -> None:
    """``frames.to_wire`` of a position, a batch of fix dicts, a command or a receipt."""
    ftype = frame["type"]
    if ftype == "position":
        only(frame, HEADER_NAMES + _FIX_NAMES + _EXT_NAMES)
        items.extend(fix_items(frame))
        ext = table_to_wire(frame, POSITION_EXT, HEADER_NAMES + _FIX_NAMES)
        if ext:
            items.append(ext)
    elif ftype == "batch":
        only(frame, HEADER_NAMES + ("res", "fixes"))
        fixes = frame.get("fixes")
        if not isinstance(fixes, list) or not 1 <= len(fixes) <= MAX_BATCH:
            raise bad("fixes", "a batch holds 1..%d fixes" % MAX_BATCH)
        if check_int(frame["seq"], "seq", 0, U32) + len(fixes) - 1 > U32:
            raise bad("seq", "the batch's seq overflows 32 bits")
        res = check_int(frame.get("res", 1), "res", 1, 1000)
        for fix in fixes:
            if not isinstance(fix, dict):
                raise bad("fixes", "each fix is a map")
            only(dict(fix, type="batch"), ("type",) + _FIX_NAMES)
        items.extend(batch_tail([fix_items(f) for f in fixes], res))
    elif ftype == "receipt":
        only(frame, HEADER_NAMES + ("n",))
        n = check_int(frame.get("n"), "n", 1, MAX_RECEIPT)
        if items[2] + n - 1 > U32:
            raise bad("n", "the receipt's seq overflows 32 bits")
        items.append(n)
    else:  # command
        only(frame, ("type", "v", "cid", "kind", "exp", "args"))
        items.append(check_int(frame.get("cid"), "cid", 0, U32))
        kind = frame.get("kind")
        items.append(code_of(kind, COMMAND_KINDS, "kind"))
        items.append(check_int(frame.get("exp", 0), "exp", 0, U32))
        args = frame.get("args", {})
        if not isinstance(args, dict):
            raise bad("args", "command arguments are a map")
        require(args, COMMAND_REQUIRED.get(str(kind), ()), str(kind))
        wire_args = table_to_wire(args, COMMAND_ARGS, ())
        if wire_args:
            items.append(wire_args)


def from_wire(items: list[Any], frame: dict[Any, Any]) -> None:
    """The rest of ``frames.from_wire`` for a position, batch, event, status or ack."""
    ftype = frame["type"]
    if ftype == "position":
        need(items, 12, ftype)
        frame.update(fix_from_items(items, 3))
        if len(items) > 12:
            frame.update(table_from_wire(items[12], POSITION_EXT, "ext"))
    elif ftype == "batch":
        _batch_from_wire(items, frame)
    elif ftype == "event":
        _event_from_wire(items, frame)
    elif ftype == "status":
        need(items, 5, ftype)
        frame["t"] = check_int(items[3], "t", 0, U32)
        frame.update(table_from_wire(items[4], STATUS_FIELDS, "status"))
    else:  # command_ack
        need(items, 6, ftype)
        frame["t"] = check_int(items[3], "t", 0, U32)
        frame["cid"] = check_int(items[4], "cid", 0, U32)
        frame["result"] = name_of(items[5], ACK_RESULTS, "result")
        if len(items) > 6:
            frame["reason"] = check_value(items[6], "tstr", "reason")


def _batch_from_wire(items: list[Any], frame: dict[Any, Any]) -> None:
    need(items, 14, "batch")
    res = check_int(items[3], "res", 1, 1000)
    first = fix_from_items(items, 4)
    n = check_int(items[13], "n", 1, MAX_BATCH)
    if frame["seq"] + n - 1 > U32:
        raise bad("seq", "the batch's seq overflows 32 bits")
    if n == 1:
        fixes = [first]
    else:
        need(items, 14 + len(BATCH_COLUMNS), "batch")
        fixes = batch_fixes(first, n, items[14 : 14 + len(BATCH_COLUMNS)], res)
    frame["res"] = res
    frame["fixes"] = fixes


def _event_from_wire(items: list[Any], frame: dict[Any, Any]) -> None:
    need(items, 6, "event")
    frame["t"] = check_int(items[3], "t", 0, U32)
    kind = name_of(items[4], EVENT_KINDS, "kind")
    frame["kind"] = kind
    pos = items[5]
    if pos is not None:
        if not isinstance(pos, list) or len(pos) < 2:
            raise bad("pos", "an event position is null or [lat, lon, acc?]")
        frame["lat"] = check_int(pos[0], "lat", -900000000, 900000000)
        frame["lon"] = check_int(pos[1], "lon", -1800000000, 1800000000)
        if len(pos) > 2:
            frame["acc"] = check_int(pos[2], "acc", 0, 65535)
    data = table_from_wire(items[6], EVENT_DATA, "data") if len(items) > 6 else {}
    require(data, EVENT_REQUIRED.get(kind, ()), kind)
    frame["data"] = data


# --- fixes, decoding ------------------------------------------------------------


def fix_from_items(items: "Any", start: int) -> dict[Any, Any]:
    fix: dict[Any, Any] = {}
    i = start
    for name, lo, hi in FIX_FIELDS:
        fix[name] = check_int(items[i], name, lo, hi)
        i += 1
    set_flags(fix, check_int(items[i], "flags", 0, 0xFFFF))
    return fix


def set_flags(fix: dict[Any, Any], flags: int) -> None:
    fix["fix"] = flags & 3
    for name, bit in FLAG_BITS:
        fix[name] = bool(flags & bit)


def batch_fixes(first: dict[Any, Any], n: int, cols: list[Any], res: int) -> list[Any]:
    deltas = []
    for c, name in enumerate(BATCH_COLUMNS):
        col = cols[c]
        if is_int(col):
            deltas.append([col] * (n - 1))
        elif isinstance(col, list) and len(col) == n - 1:
            for v in col:
                if not is_int(v):
                    raise bad(name, "batch deltas are integers")
            deltas.append(col)
        else:
            raise bad(name, "a batch column is an integer or a list of n - 1 integers")
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
        fixes.append(fix_from_items(row, 0))
        prev_items = row
    return fixes

