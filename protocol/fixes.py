"""Fixes on the wire: the flat items of one fix, and the delta coding of a batch.

The encoding side, which a tracker uses; decoding is in ``frames_other``.
"""

from .errors import FrameError  # noqa: F401 (raised through schema checks)
from .schema import (
    BATCH_COLUMNS,
    FIX_3D,
    FIX_FIELDS,
    FLAG_BITS,
    bad,
    check_int,
)

try:
    from typing import Any
except ImportError:  # MicroPython
    pass


def flags_of(fix: dict[Any, Any]) -> int:
    """The wire flags integer of a fix dict."""
    flags = check_int(fix.get("fix", FIX_3D), "fix", 0, 3)
    for name, bit in FLAG_BITS:
        v = fix.get(name, False)
        if v is not True and v is not False:
            raise bad(name, "expected true or false")
        if v:
            flags |= bit
    return flags


def fix_items(fix: dict[Any, Any]) -> list[Any]:
    items = []
    for name, lo, hi in FIX_FIELDS:
        if name not in fix:
            raise bad(name, "a fix needs %s" % name)
        items.append(check_int(fix[name], name, lo, hi))
    items.append(flags_of(fix))
    return items


# --- batch delta coding -------------------------------------------------------


def _wrap_heading(d: int) -> int:
    return (d + 180) % 360 - 180


def _column(values: list[Any]) -> "Any":
    """A delta column: one integer when every delta is the same, else the list."""
    first = values[0]
    for v in values:
        if v != first:
            return values
    return first


def check_row(row: "Any") -> list[Any]:
    """Check a fix row (the items of ``fix_items``: FIX_FIELDS, then flags); return it.

    Rows let a device batch what it stored without building a dict per fix.
    """
    if not isinstance(row, list) or len(row) != len(FIX_FIELDS) + 1:
        raise bad("fixes", "a fix row holds %d integers" % (len(FIX_FIELDS) + 1))
    i = 0
    for name, lo, hi in FIX_FIELDS:
        check_int(row[i], name, lo, hi)
        i += 1
    check_int(row[i], "flags", 0, 0xFFFF)
    return row


def batch_columns(rows: list[Any], res: int) -> list[Any]:
    """The delta columns of a batch from its checked fix rows (``fix_items`` order)."""
    n = len(rows) - 1
    # Each column allocated once at its final size: a device builds batches in a small heap.
    cols: list[Any] = [[0] * n for _ in BATCH_COLUMNS]
    # Coordinates are coded against the previous *decoded* coordinate, so rounding to
    # ``res`` never accumulates: every decoded fix is within res/2 of the true one.
    rec = [rows[0][1], rows[0][2]]
    for i in range(n):
        prev, row = rows[i], rows[i + 1]
        cols[0][i] = row[0] - prev[0]
        for c in (1, 2):
            r = _div_round(row[c] - rec[c - 1], res)
            rec[c - 1] += r * res
            cols[c][i] = r
        cols[3][i] = row[3] - prev[3]
        cols[4][i] = _wrap_heading(row[4] - prev[4])
        for c in (5, 6, 7):
            cols[c][i] = row[c] - prev[c]
        cols[8][i] = row[8] ^ prev[8]
    return [_column(c) for c in cols]


def _div_round(a: int, b: int) -> int:
    """a / b rounded half away from zero, in integers (identical on every port)."""
    if a >= 0:
        return (2 * a + b) // (2 * b)
    return -((-2 * a + b) // (2 * b))


def batch_tail(rows: list[Any], res: int) -> list[Any]:
    """A batch's items after its header, from checked fix rows."""
    items = [res]
    items.extend(rows[0])
    items.append(len(rows))
    if len(rows) > 1:
        items.extend(batch_columns(rows, res))
    return items
