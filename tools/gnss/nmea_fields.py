"""What NMEA 0183 fields say: numbers, UTC times, degrees, and the kind of fix.

Receivers leave fields empty or garble them; every reader here returns None for a field
it cannot read rather than raising, so a bad field costs that value only.
"""

from __future__ import annotations

from enum import Enum

import pynmea2


class FixType(Enum):
    NONE = "no fix"
    FIX_2D = "2D"
    FIX_3D = "3D"
    DGPS = "3D DGPS"
    RTK_FLOAT = "3D RTK float"
    RTK_FIXED = "3D RTK fixed"

    @property
    def is_3d(self) -> bool:
        return self not in (FixType.NONE, FixType.FIX_2D)


GGA_QUALITY = {1: "", 2: "D", 3: "", 4: "R", 5: "F"}      # valid ones -> differential mode
NOT_A_FIX = {6: "dead reckoning", 7: "manual input", 8: "simulated (receiver demo mode)"}
MODE_NOTES = {"E": "dead reckoning", "M": "manual input", "S": "simulated (receiver demo mode)"}
DIFFERENTIAL = {"D": FixType.DGPS, "R": FixType.RTK_FIXED, "F": FixType.RTK_FLOAT}


def number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def integer(value: str, base: int = 10) -> int | None:
    try:
        return int(value, base)
    except ValueError:
        return None


def seconds_of_day(value: str) -> float | None:
    """``hhmmss.ss`` as seconds since midnight; None when empty or not a time."""
    if len(value) < 6 or not value[:6].isdigit():
        return None
    hours, minutes, seconds = int(value[:2]), int(value[2:4]), number(value[4:])
    if hours > 23 or minutes > 59 or seconds is None or seconds >= 61:
        return None
    return hours * 3600 + minutes * 60 + seconds


def degrees(value: str, hemisphere: str) -> float | None:
    """NMEA ``dddmm.mmmm`` and its hemisphere as signed degrees."""
    parsed = number(value)
    if parsed is None or hemisphere not in ("N", "S", "E", "W"):
        return None
    whole = int(parsed // 100)
    result = whole + (parsed - whole * 100) / 60
    return -result if hemisphere in ("S", "W") else result


def field_text(msg: pynmea2.NMEASentence, name: str) -> str:
    """A field by its name in pynmea2's field table, as text; '' when the sentence is short."""
    index = type(msg).name_to_idx[name]
    return str(msg.data[index]).strip() if index < len(msg.data) else ""
