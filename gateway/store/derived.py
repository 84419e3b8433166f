"""The store's side of re-derivation: checkpoints, the span's fixes and events, corrections.

A correction never deletes a derived event. It rewrites the row in place and moves it
to the end of the log (a new, highest ``id``) with ``revision`` one higher, so every
sink, reading forward from its cursor, sees it once more: as a correction, or with
``retracted = 1`` as a retraction. The model is described in STORE.md ("Late data").
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from fieldtrack.gateway.store.sqlite import FIX_COLUMNS, Store, fix_of


@dataclass(frozen=True, slots=True)
class EventRow:
    """A derived event in the store's terms (the ``events`` columns that can change)."""

    key: str
    kind: str
    t: int
    ms: int
    lat: int | None
    lon: int | None
    data: str  # JSON, keys sorted (``event_data_json``)
    judged: int | None

    def content(self) -> tuple[object, ...]:
        """What a consumer sees: a change here is a correction."""
        return (self.kind, self.t, self.ms, self.lat, self.lon, self.data)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    row: EventRow
    retracted: bool


@dataclass
class Changes:
    added: list[EventRow] = field(default_factory=list)
    changed: list[EventRow] = field(default_factory=list)  # new content, or back to life
    replaced: list[EventRow] = field(default_factory=list)  # what each changed one was
    retracted: list[EventRow] = field(default_factory=list)  # as stored
    rejudged: list[EventRow] = field(default_factory=list)  # only ``judged`` moved

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.retracted or self.rejudged)


_MOVE = "id = (SELECT MAX(id) FROM events) + 1, revision = revision + 1, received = ?"
_RETRACT = "UPDATE events SET %s, retracted = 1 WHERE device = ? AND key = ?" % _MOVE
_CORRECT = ("UPDATE events SET %s, retracted = 0, kind = ?, t = ?, ms = ?, lat = ?, lon = ?, "
            "data = ?, judged = ? WHERE device = ? AND key = ?" % _MOVE)
_REJUDGE = "UPDATE events SET judged = ? WHERE device = ? AND key = ?"
_RETRACT_VISIT = "UPDATE visits SET retracted = 1 WHERE device = ? AND site = ? AND arrive = ?"
_PUT_VISIT = (
    "INSERT INTO visits (device, site, arrive, leave, duration_s, lat, lon) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, site, arrive) DO UPDATE SET "
    "leave=excluded.leave, duration_s=excluded.duration_s, lat=excluded.lat, "
    "lon=excluded.lon, retracted=0"
)


def checkpoint_before(store: Store, device: str,
                      t: int) -> tuple[int | None, dict[str, Any] | None]:
    """The newest checkpoint taken before fix time ``t``: (its time, the state) or none."""
    row = store.db.execute(
        "SELECT t, state FROM derive_checkpoints WHERE device = ? AND t < ? "
        "ORDER BY t DESC LIMIT 1", (device, t)).fetchone()
    if row is None:
        return None, None
    return int(row[0]), json.loads(row[1])


def replay_fixes(store: Store, device: str, after: int | None, upto: int | None
                 ) -> list[dict[str, Any]]:
    """The device's stored fixes after ``after`` up to ``upto``, in fix-time order.

    The first copy of each fix time only, as the reorder buffer takes it.
    """
    if upto is None:
        return []
    rows = store.db.execute(
        "SELECT t, %s FROM positions WHERE device = ? AND t > ? AND t <= ? ORDER BY t, id"
        % FIX_COLUMNS, (device, -1 if after is None else after, upto))
    fixes: list[dict[str, Any]] = []
    last = None
    for row in rows:
        if row[0] != last:
            last = row[0]
            fixes.append(fix_of(*row))
    return fixes


def derived_after(store: Store, device: str, after: int | None) -> list[StoredEvent]:
    """The derived events that fixes after ``after`` produced, retracted ones included."""
    rows = store.db.execute(
        "SELECT key, kind, t, ms, lat, lon, data, judged, retracted FROM events "
        "WHERE device = ? AND judged > ? AND key IS NOT NULL",
        (device, -1 if after is None else after))
    return [StoredEvent(EventRow(key, kind, t, ms, lat, lon, data, judged), bool(retracted))
            for key, kind, t, ms, lat, lon, data, judged, retracted in rows]


def visit_row(device: str, row: EventRow) -> tuple[Any, ...]:
    """The ``visits`` row of a ``visit`` event."""
    data = orjson.loads(row.data)
    return (device, data["site"], data["arrive"], data["leave"], data["duration_s"],
            row.lat, row.lon)


def corrections(device: str, after: int | None, changes: Changes, received_ms: int
                ) -> Callable[[sqlite3.Connection], None]:
    """The writes that apply ``changes``, for ``Store.commit(batch, first=...)``.

    The batch carries the new state, checkpoints and the added events; this replaces
    the checkpoints the late fixes made stale and corrects the stored events.
    """

    def write(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM derive_checkpoints WHERE device = ? AND t > ?",
                   (device, -1 if after is None else after))
        for row in changes.retracted + changes.replaced:
            if row.kind == "visit":
                data = orjson.loads(row.data)
                db.execute(_RETRACT_VISIT, (device, data["site"], data["arrive"]))
        for row in changes.retracted:
            db.execute(_RETRACT, (received_ms, device, row.key))
        for row in changes.changed:
            db.execute(_CORRECT, (received_ms, row.kind, row.t, row.ms, row.lat, row.lon,
                                  row.data, row.judged, device, row.key))
            if row.kind == "visit":
                db.execute(_PUT_VISIT, visit_row(device, row))
        for row in changes.rejudged:
            db.execute(_REJUDGE, (row.judged, device, row.key))

    return write
