"""The store's side of boot epochs: the ``device_epochs`` table and what it reports.

One row per device: its reference boot and the operator's reset requests. The boots a
device went through need no table of their own: they are the boots of its stored
positions and events, found through their unique keys. Stores made before this table
existed get it, filled from their records, the first time they are opened.
``fieldtrack devices epochs`` and ``reset-epochs`` read and write through here.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from fieldtrack.gateway.epochs import BOOT_LIMIT, DeviceEpochs

# Reject reasons about sequence numbers and boots, shown by ``devices epochs``.
SEQUENCE_REASONS = ("boot_behind", "bad_boot", "key_reused", "stale_sequence")

_TABLE = """
CREATE TABLE device_epochs (
    device TEXT PRIMARY KEY,
    reference INTEGER NOT NULL,
    reset_requested INTEGER NOT NULL DEFAULT 0,
    reset_taken INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL
)
"""
# The newest valid boot of every device with records: the reference of an old store.
_BACKFILL = """
INSERT INTO device_epochs (device, reference, updated)
SELECT device, MAX(boot), ?1 FROM (
    SELECT device, boot FROM positions WHERE boot < ?2
    UNION ALL SELECT device, boot FROM events WHERE boot >= 0 AND boot < ?2
) GROUP BY device
"""
UPSERT = (
    "INSERT INTO device_epochs (device, reference, reset_taken, updated) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (device) DO UPDATE SET reference=excluded.reference, "
    "reset_taken=excluded.reset_taken, updated=excluded.updated"
)  # never writes reset_requested: an operator's request made meanwhile stays pending


def ensure(db: sqlite3.Connection) -> None:
    """Create the table if the store has none yet, filled from the stored records."""
    exists = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='device_epochs'"
    if db.execute(exists).fetchone():
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        if not db.execute(exists).fetchone():  # another process may have been first
            db.execute(_TABLE)
            db.execute(_BACKFILL, (int(time.time() * 1000), BOOT_LIMIT))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def load(db: sqlite3.Connection) -> dict[str, DeviceEpochs]:
    """Every device's epochs, with the resets requested and not yet honoured."""
    rows = db.execute(
        "SELECT device, reference, reset_requested, reset_taken FROM device_epochs")
    return {
        device: DeviceEpochs(reference, {reference},
                             requested if requested > taken else 0, taken)
        for device, reference, requested, taken in rows
    }


def row(device: str, epochs: DeviceEpochs, now_ms: int) -> tuple[Any, ...]:
    return (device, epochs.reference, epochs.reset_taken, now_ms)


def boot_stored(db: sqlite3.Connection, device: str, boot: int) -> bool:
    """Whether the store holds a position or an event of this boot of the device."""
    found = db.execute(
        "SELECT EXISTS (SELECT 1 FROM positions WHERE device=?1 AND boot=?2) "
        "OR EXISTS (SELECT 1 FROM events WHERE device=?1 AND boot=?2)", (device, boot)
    ).fetchone()
    return bool(found[0])


def version(db: sqlite3.Connection) -> int:
    """Bumped by every reset request, so a running gateway notices it."""
    found = db.execute("SELECT value FROM meta WHERE key='epochs_version'").fetchone()
    return int(found[0]) if found else 0


def pending_resets(db: sqlite3.Connection) -> dict[str, int]:
    """Devices with a reset requested and not yet honoured: device -> request time."""
    rows = db.execute("SELECT device, reset_requested FROM device_epochs "
                      "WHERE reset_requested > reset_taken")
    return {device: requested for device, requested in rows}


def request_reset(db: sqlite3.Connection, device: str, now_ms: int) -> bool:
    """Ask the gateway to take the device's next new boot; False: it has no epochs yet."""
    db.execute("BEGIN IMMEDIATE")
    try:
        # A request is a time strictly after the last one, so that it is always pending.
        changed = db.execute(
            "UPDATE device_epochs SET reset_requested = MAX(?, reset_taken + 1, "
            "reset_requested + 1) WHERE device=?", (now_ms, device)).rowcount
        if changed:
            db.execute("INSERT INTO meta (key, value) VALUES ('epochs_version', '1') "
                       "ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return bool(changed)


# --- the report of ``fieldtrack devices epochs`` ------------------------------------


@dataclass
class BootRecords:
    """The records one boot of a device left in the store."""

    boot: int
    positions: int = 0
    events: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_t: int | None = None  # fix or event time, Unix s
    last_t: int | None = None


@dataclass
class SequenceReject:
    received: int  # Unix ms
    reason: str
    detail: str


@dataclass
class EpochReport:
    device: str
    registered: bool
    reference: int | None = None
    reset_requested: int = 0  # Unix ms of a pending reset, 0 = none pending
    updated: int = 0  # Unix ms the reference last moved
    boots: list[BootRecords] = field(default_factory=list)  # newest boot first
    reject_counts: dict[str, int] = field(default_factory=dict)  # by reason
    rejects: list[SequenceReject] = field(default_factory=list)  # newest first

    @property
    def known(self) -> bool:
        return self.registered or self.reference is not None or bool(self.boots)


def report(db: sqlite3.Connection, device: str, rejects: int = 10) -> EpochReport:
    """What the store knows of a device's boots, its reference and its sequence rejects."""
    registered = db.execute("SELECT 1 FROM devices WHERE id=?", (device,)).fetchone()
    out = EpochReport(device, registered is not None)
    found = db.execute("SELECT reference, reset_requested, reset_taken, updated "
                       "FROM device_epochs WHERE device=?", (device,)).fetchone()
    if found:
        out.reference, requested, taken, out.updated = found
        out.reset_requested = requested if requested > taken else 0
    boots: dict[int, BootRecords] = {}
    for table in ("positions", "events"):
        for boot, n, seq0, seq1, t0, t1 in db.execute(
                "SELECT boot, COUNT(*), MIN(seq), MAX(seq), MIN(t), MAX(t) FROM %s "
                "WHERE device=? AND boot >= 0 GROUP BY boot" % table, (device,)):
            b = boots.setdefault(boot, BootRecords(boot))
            if table == "positions":
                b.positions = n
            else:
                b.events = n
            b.first_seq = seq0 if b.first_seq is None else min(b.first_seq, seq0)
            b.last_seq = seq1 if b.last_seq is None else max(b.last_seq, seq1)
            b.first_t = t0 if b.first_t is None else min(b.first_t, t0)
            b.last_t = t1 if b.last_t is None else max(b.last_t, t1)
    out.boots = [boots[b] for b in sorted(boots, reverse=True)]
    marks = ", ".join("?" * len(SEQUENCE_REASONS))
    out.reject_counts = dict(db.execute(
        "SELECT reason, COUNT(*) FROM rejects WHERE device=? AND reason IN (%s) "
        "GROUP BY reason" % marks, (device, *SEQUENCE_REASONS)).fetchall())
    out.rejects = [SequenceReject(*r) for r in db.execute(
        "SELECT received, reason, detail FROM rejects WHERE device=? AND reason IN (%s) "
        "ORDER BY id DESC LIMIT ?" % marks, (device, *SEQUENCE_REASONS, rejects))]
    return out
