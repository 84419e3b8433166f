"""How many records a tracker's flash journal may hold: the ``buffer`` section of config.json.

The tracker keeps every record on flash until the gateway's receipt covers it, so its
journal must hold the longest outage it should ride out without thinning: a week of
10-hour working days at the default reporting policy. The capacity is set from the
board profile's filesystem size, leaving room for the code, the config, the state and
the free blocks littlefs needs to write copy-on-write.
"""

from __future__ import annotations

from typing import Any

from fieldtrack.tools.boards import Board

RECORD_FLASH_BYTES = 48  # one fix in the journal: 6 bytes of length and CRC + ~38-44 of CBOR
RESERVE_KB = 256  # .mpy bundle (~40 KB), config, state, littlefs metadata and spare blocks
RING_SHARE_PERCENT = 75  # of the rest: littlefs needs free blocks to rewrite and wear-level
SEGMENT_RECORDS = 128  # records per journal file: ~6 KB, two littlefs blocks
RECEIPT_TIMEOUT_S = 30

# The outage to ride out: the default policy's fastest rate (moving: one fix per
# min_period_s = 10 s) for 10-hour days, seven of them, plus an hourly status and
# ignition events.
WEEK_FIXES = 7 * 10 * 3600 // 10
WEEK_OTHER = 7 * 24 + 7 * 20  # status frames, ignition on/off
WEEK_RECORDS = WEEK_FIXES + WEEK_OTHER


def capacity_records(filesystem_kb: int) -> int:
    """Records the journal may hold on a filesystem of ``filesystem_kb``."""
    usable = max(0, filesystem_kb - RESERVE_KB) * 1024 * RING_SHARE_PERCENT // 100
    return max(2 * SEGMENT_RECORDS, usable // RECORD_FLASH_BYTES)


def buffer_section(board: Board) -> dict[str, Any]:
    """config.json's ``buffer``, as ``firmware/app.py`` reads it."""
    return {"capacity_records": capacity_records(board.filesystem_kb),
            "segment_records": SEGMENT_RECORDS, "receipt_timeout_s": RECEIPT_TIMEOUT_S}


def days_of_outage(capacity: int) -> float:
    """Working days (10 h at the default policy's fastest rate) that fit."""
    return capacity / (WEEK_RECORDS / 7)
