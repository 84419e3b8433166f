"""What a re-derivation changes: the events found again, compared with those stored.

When late fixes arrive for a span a device was already judged for, the engine judges
the span again from a checkpoint (``EventEngine.rederive``). This module compares the
events it finds with the derived events the store holds for the same span, by key
(``identity.event_key``): the same key with the same content changes nothing, a new
key is added, a changed one is corrected, a stored one not found again is retracted.
Pure: rows in, changes out; ``ingest.corrections`` reads and writes the store.
"""

from __future__ import annotations

from collections.abc import Iterable

from fieldtrack.gateway.derive.fence_tracker import Derived
from fieldtrack.gateway.derive.identity import event_key
from fieldtrack.gateway.store.derived import Changes, EventRow, StoredEvent
from fieldtrack.gateway.store.sqlite import event_data_json

__all__ = ["Changes", "EventRow", "StoredEvent", "diff", "row_of"]


def row_of(e: Derived) -> EventRow:
    data = dict(e.data, fence=e.fence) if e.fence else e.data
    return EventRow(event_key(e), e.kind, e.t, e.ms, e.lat, e.lon, event_data_json(data),
                    e.judged)


def diff(stored: Iterable[StoredEvent], fresh: Iterable[EventRow]) -> Changes:
    """The changes that make ``stored`` (one device, one span) say what ``fresh`` says."""
    found: dict[str, EventRow] = {}
    for row in fresh:
        found[row.key] = row  # one event per key; the last word wins
    changes = Changes()
    seen: set[str] = set()
    for old in stored:
        key = old.row.key
        seen.add(key)
        new = found.get(key)
        if new is None:
            if not old.retracted:
                changes.retracted.append(old.row)
        elif old.retracted or new.content() != old.row.content():
            changes.changed.append(new)
            changes.replaced.append(old.row)
        elif new.judged != old.row.judged:
            changes.rejudged.append(new)
    changes.added = [row for key, row in found.items() if key not in seen]
    return changes
