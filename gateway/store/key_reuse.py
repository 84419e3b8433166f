"""Keys stored again with other content: a boot counter that went back, not a redelivery.

The store skips a record whose (device, boot, seq) is already stored. That is right
for a redelivery, whose content is the same, and wrong for a device whose boot counter
went back and reuses the keys for new records: those would vanish. The insert itself
tells whether a skipped row differed from the stored one (positions: fix time and
coordinates; device events: time, kind and data), so a commit without such a row, the
usual case and a plain redelivery alike, pays nothing more. Only when one differed
are the rows looked up here, to make a ``key_reused`` reject of each frame concerned,
keeping the whole frame.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Sequence
from typing import Any

from fieldtrack.protocol import topics

_POSITION = "SELECT t, ms, lat, lon FROM positions WHERE device=? AND boot=? AND seq=?"
_EVENT = "SELECT t, kind, data FROM events WHERE device=? AND boot=? AND seq=?"

# A message that made rows of a batch: (first position row, first event row, topic,
# frame bytes, received ms). The rows of one message are consecutive.
Source = tuple[int, int, str, bytes, int]


def reused(db: sqlite3.Connection, positions: Sequence[tuple[Any, ...]],
           events: Sequence[tuple[Any, ...]], sources: Sequence[Source],
           check_positions: bool, check_events: bool) -> tuple[list[tuple[Any, ...]], int]:
    """Reject rows (``rejects`` columns) of the messages that reused keys, and the records."""
    # A message makes either positions or events, so one index names its rows of both.
    clashes: dict[tuple[int, str, int], list[int]] = {}  # (message, device, boot) -> seqs
    if check_positions:
        starts = [s[0] for s in sources]
        for i, row in enumerate(positions):
            if db.execute(_POSITION, row[:3]).fetchone() != (row[3], row[4], row[5], row[6]):
                clashes.setdefault((_source_of(starts, i), row[0], row[1]), []).append(row[2])
    if check_events:
        starts = [s[1] for s in sources]
        for i, row in enumerate(events):
            if row[1] < 0:  # a derived event: the same key means the same event
                continue
            if db.execute(_EVENT, row[:3]).fetchone() != (row[3], row[4], row[8]):
                clashes.setdefault((_source_of(starts, i), row[0], row[1]), []).append(row[2])
    rows = [_reject(sources, key, seqs) for key, seqs in sorted(clashes.items())]
    return rows, sum(len(seqs) for seqs in clashes.values())


def _source_of(starts: list[int], row: int) -> int:
    """The index of the message that made ``row``, or -1 when none is known."""
    return bisect.bisect_right(starts, row) - 1


def _reject(sources: Sequence[Source], key: tuple[int, str, int], seqs: list[int]
            ) -> tuple[Any, ...]:
    index, device, boot = key
    if index >= 0:
        _, _, topic, data, received = sources[index]
    else:  # a batch built without its messages (tools, tests): the keys still tell
        topic, data, received = topics.uplink(device), b"", 0
    seqs.sort()
    span = "seq %d" % seqs[0] if len(seqs) == 1 else "seqs %d..%d (%d records)" % (
        seqs[0], seqs[-1], len(seqs))
    detail = ("%s boot %d %s: the key is already stored with other content, so the device's "
              "boot counter went back; the frame is kept here. See `fieldtrack devices epochs "
              "%s`" % (device, boot, span, device))
    return (received, topic[:200], device, "key_reused", detail[:500], bytes(data), len(data))
