"""The embedded store: SQLite in WAL mode, the gateway's durable log and its outbox.

Everything the gateway accepts is committed here before the broker hears an
acknowledgement, so a crash at any instant loses nothing: what was committed stays,
what was not is redelivered, and the unique key (device, boot, seq) makes the
redelivery a no-op. Sinks (InfluxDB, ...) read forward from here with their own
persistent cursors. The schema is documented in STORE.md.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from fieldtrack.gateway.epochs import DeviceEpochs
from fieldtrack.gateway.store import commands as commands_table
from fieldtrack.gateway.store import epochs as epochs_table
from fieldtrack.gateway.store.key_reuse import Source, reused

SCHEMA_VERSION = 2
MAX_REJECT_BYTES = 1024
# Rejects whose row may be the only copy of a device record: never trimmed or pruned.
KEPT_REASONS = ("key_reused", "bad_boot")
_KEPT_SQL = "(%s)" % ", ".join("'%s'" % r for r in KEPT_REASONS)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    grp TEXT NOT NULL DEFAULT 'default',
    name TEXT NOT NULL DEFAULT '',
    key BLOB,
    enabled INTEGER NOT NULL DEFAULT 1,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    t INTEGER NOT NULL,
    ms INTEGER NOT NULL DEFAULT 0,
    lat INTEGER NOT NULL,
    lon INTEGER NOT NULL,
    spd INTEGER NOT NULL,
    hdg INTEGER NOT NULL,
    alt INTEGER NOT NULL,
    acc INTEGER NOT NULL,
    sats INTEGER NOT NULL,
    fix INTEGER NOT NULL,
    ign INTEGER NOT NULL,
    buf INTEGER NOT NULL,
    mock INTEGER NOT NULL,
    flagged TEXT NOT NULL DEFAULT '',
    received INTEGER NOT NULL,
    UNIQUE (device, boot, seq)
);
CREATE INDEX IF NOT EXISTS positions_device_time ON positions (device, t);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    t INTEGER NOT NULL,
    kind TEXT NOT NULL,
    lat INTEGER,
    lon INTEGER,
    acc INTEGER,
    data TEXT NOT NULL DEFAULT '{}',
    received INTEGER NOT NULL,
    ms INTEGER NOT NULL DEFAULT 0,
    key TEXT,
    judged INTEGER,
    retracted INTEGER NOT NULL DEFAULT 0,
    revision INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device, boot, seq)
);
CREATE INDEX IF NOT EXISTS events_device_time ON events (device, t);
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY,
    received INTEGER NOT NULL,
    topic TEXT NOT NULL,
    device TEXT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    raw BLOB NOT NULL,
    raw_len INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rejects_topic ON rejects (topic, id);
CREATE TABLE IF NOT EXISTS device_state (
    device TEXT PRIMARY KEY,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    t INTEGER NOT NULL,
    lat INTEGER NOT NULL,
    lon INTEGER NOT NULL,
    spd INTEGER NOT NULL,
    received INTEGER NOT NULL,
    online INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS visits (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    site TEXT NOT NULL,
    arrive INTEGER NOT NULL,
    leave INTEGER NOT NULL,
    duration_s INTEGER NOT NULL,
    lat INTEGER NOT NULL,
    lon INTEGER NOT NULL,
    retracted INTEGER NOT NULL DEFAULT 0,
    UNIQUE (device, site, arrive)
);
CREATE TABLE IF NOT EXISTS attendance (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    boot INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    site TEXT NOT NULL,
    t INTEGER NOT NULL,
    lat INTEGER,
    lon INTEGER,
    acc INTEGER,
    accepted INTEGER NOT NULL,
    reason TEXT NOT NULL,
    distance_m REAL,
    UNIQUE (device, boot, seq)
);
CREATE TABLE IF NOT EXISTS derive_state (
    device TEXT PRIMARY KEY,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS derive_checkpoints (
    device TEXT NOT NULL,
    t INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (device, t)
);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    position_id INTEGER NOT NULL DEFAULT 0,
    event_id INTEGER NOT NULL DEFAULT 0
);
"""

POSITION_COLUMNS = (
    "device", "boot", "seq", "t", "ms", "lat", "lon", "spd", "hdg", "alt", "acc", "sats",
    "fix", "ign", "buf", "mock", "flagged", "received",
)  # fmt: skip
EVENT_COLUMNS = ("device", "boot", "seq", "t", "kind", "lat", "lon", "acc", "data", "received",
                 "ms", "key", "judged")
# Columns added by schema version 2 (late data, stable identities), for older stores.
_ADDED_COLUMNS = (
    ("events", "ms", "INTEGER NOT NULL DEFAULT 0"),
    ("events", "key", "TEXT"),
    ("events", "judged", "INTEGER"),
    ("events", "retracted", "INTEGER NOT NULL DEFAULT 0"),
    ("events", "revision", "INTEGER NOT NULL DEFAULT 0"),
    ("visits", "retracted", "INTEGER NOT NULL DEFAULT 0"),
)
_INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS events_device_key ON events (device, key)",
    "CREATE INDEX IF NOT EXISTS events_device_judged ON events (device, judged) "
    "WHERE judged IS NOT NULL",
)


class StoreError(Exception):
    """The store file cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Device:
    id: str
    group: str
    key: bytes | None
    enabled: bool
    name: str = ""


@dataclass
class DeviceState:
    """What the pipeline remembers per device: the newest fix by fix time."""

    device: str
    boot: int
    seq: int
    t: int
    lat: int
    lon: int
    spd: int
    received: int
    online: bool = False


@dataclass
class Batch:
    """Everything one commit writes: the effects of a batch of MQTT messages."""

    positions: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    rejects: list[tuple[Any, ...]] = field(default_factory=list)
    states: dict[str, DeviceState] = field(default_factory=dict)
    visits: list[tuple[Any, ...]] = field(default_factory=list)
    attendance: list[tuple[Any, ...]] = field(default_factory=list)
    derive_states: dict[str, dict[str, Any]] = field(default_factory=dict)
    epochs: dict[str, DeviceEpochs] = field(default_factory=dict)  # reference moved
    sources: list[Source] = field(default_factory=list)  # the messages behind the rows
    checkpoints: list[tuple[str, int, str]] = field(default_factory=list)  # device, t, JSON
    # command_acks: (device, cid, result, reason, received ms), settling their commands
    acks: list[tuple[str, int, str, str | None, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return (len(self.positions) + len(self.events) + len(self.rejects) + len(self.states)
                + len(self.visits) + len(self.attendance) + len(self.derive_states)
                + len(self.epochs) + len(self.checkpoints) + len(self.acks))


class Committed(NamedTuple):
    """What a commit stored: new rows, and the reject rows of frames that reused keys."""

    positions: int
    events: int
    reused: list[tuple[Any, ...]]  # one reject row per frame
    reused_records: int  # the records in them whose keys were stored with other content
    acked: tuple[tuple[str, int, str], ...] = ()  # (device, cid, result): commands settled


def now_ms() -> int:
    return int(time.time() * 1000)


class Store:
    """One SQLite database file. Not shared between threads: open one per thread.

    A missing file is created (mode 0600: it holds the device keys); an existing file
    must be a fieldtrack store, so a wrong ``[store] path`` fails loudly instead of
    starting an empty store that knows no devices.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "FULL",
                 busy_timeout_ms: int = 30_000, rejects_per_topic: int = 0) -> None:
        self.path = str(path)
        self.rejects_per_topic = rejects_per_topic  # 0: no quota
        if not os.path.exists(self.path):
            _create(self.path)
        else:
            _check_file(self.path)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None,
                                      timeout=busy_timeout_ms / 1000)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=%s" % synchronous)
            self.set_busy_timeout(busy_timeout_ms)
            # 32 MiB of page cache (SQLite's default is 2): the two position indexes of a
            # growing store stay in memory, which halves the cost of an insert.
            self.db.execute("PRAGMA cache_size=-32768")
            self._check_fieldtrack()
            self.db.executescript(_SCHEMA)
            self._check_version()
            self._migrate()
            epochs_table.ensure(self.db)
            commands_table.ensure(self.db)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                "%s: cannot open the store (%s). If it is a damaged fieldtrack store, "
                "restore it from a backup (nothing it refuses to take is acknowledged to "
                "the broker, which keeps it for the gateway); if it is another file, point "
                "[store] path elsewhere" % (self.path, exc)
            ) from None

    def set_busy_timeout(self, ms: int) -> None:
        """How long a write waits for another connection's lock before it fails."""
        self.db.execute("PRAGMA busy_timeout=%d" % ms)

    def _check_fieldtrack(self) -> None:
        row = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
        version = row and self.db.execute(
            "SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if not version:
            raise StoreError(
                "%s: an SQLite database, but not a fieldtrack store (no schema version); "
                "check [store] path, or move the file away to start a new store" % self.path)

    def _check_version(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if int(row[0]) > SCHEMA_VERSION:
            raise StoreError(
                "%s: schema version %s is newer than this fieldtrack (%d): upgrade fieldtrack"
                % (self.path, row[0], SCHEMA_VERSION)
            )

    def _migrate(self) -> None:
        """Add the columns and indexes a version-1 store lacks (derived rows keep NULL keys)."""
        for table, column, decl in _ADDED_COLUMNS:
            have = {r[1] for r in self.db.execute("PRAGMA table_info(%s)" % table)}
            if column not in have:
                self.db.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, column, decl))
        for sql in _INDEXES:
            self.db.execute(sql)
        self.db.execute("UPDATE meta SET value=? WHERE key='schema_version' AND "
                        "CAST(value AS INTEGER) < ?", (str(SCHEMA_VERSION), SCHEMA_VERSION))

    def close(self) -> None:
        self.db.close()

    # --- ingest -------------------------------------------------------------

    def commit(self, batch: Batch,
               first: Callable[[sqlite3.Connection], None] | None = None) -> Committed:
        """Write a batch in one transaction; returns what it newly stored.

        Rows whose (device, boot, seq) is already stored are skipped: that is what makes
        a redelivery after a crash harmless. A skipped row with other content than the
        stored one is no redelivery: its frame becomes a ``key_reused`` reject. ``first``
        runs in the same transaction before the batch is written (the corrections of a
        re-derivation).
        """
        db = self.db
        db.execute("BEGIN IMMEDIATE")  # waits busy_timeout for another writer, then raises
        try:
            if first is not None:
                first(db)
            positions, positions_clashing = _insert(db, "positions", _INSERT_POSITION,
                                                    batch.positions)
            # Derived events (boot -1) are keyed by what they are: one the store has
            # retracted comes back to life, at the end of the log, when derived again.
            derived = [e for e in batch.events if e[1] == -1] if batch.events else []
            events, events_clashing = _insert(
                db, "events", _INSERT_EVENT,
                [e for e in batch.events if e[1] != -1] if derived else batch.events)
            if derived:
                events += _insert(db, "events", _UPSERT_DERIVED, derived)[0]
            clashes: list[tuple[Any, ...]] = []
            clashed = 0
            if positions_clashing or events_clashing:
                clashes, clashed = reused(db, batch.positions, batch.events, batch.sources,
                                          positions_clashing > 0, events_clashing > 0)
                db.executemany(_INSERT_REJECT, clashes)
            if batch.epochs:
                ts = now_ms()
                db.executemany(epochs_table.UPSERT, [epochs_table.row(device, e, ts)
                                                     for device, e in batch.epochs.items()])
            if batch.rejects:
                quota = self.rejects_per_topic
                rejects = newest_per_topic(batch.rejects, quota) if quota else batch.rejects
                db.executemany(_INSERT_REJECT, rejects)
                if quota:
                    self._trim_rejects({row[1] for row in rejects})
            if batch.states:
                db.executemany(_UPSERT_STATE, [_state_row(s) for s in batch.states.values()])
            if batch.visits:
                db.executemany(_INSERT_VISIT, batch.visits)
            if batch.attendance:
                db.executemany(_INSERT_ATTENDANCE, batch.attendance)
            if batch.checkpoints:
                db.executemany("INSERT OR REPLACE INTO derive_checkpoints (device, t, state) "
                               "VALUES (?, ?, ?)", batch.checkpoints)
            acked = commands_table.apply_acks(db, batch.acks) if batch.acks else ()
            if batch.derive_states:
                db.executemany(
                    "INSERT INTO derive_state (device, state) VALUES (?, ?) ON CONFLICT "
                    "(device) DO UPDATE SET state=excluded.state",
                    [(device, _state_json(state)) for device, state in batch.derive_states.items()],
                )
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        return Committed(positions, events, clashes, clashed, acked)

    def seen(self, device: str, boot: int, seqs: Iterable[int]) -> set[int]:
        """Which of these sequence numbers of (device, boot) are already stored."""
        wanted = list(seqs)
        if not wanted:
            return set()
        lo, hi = min(wanted), max(wanted)
        found: set[int] = set()
        for table in ("positions", "events"):
            rows = self.db.execute(
                "SELECT seq FROM %s WHERE device=? AND boot=? AND seq BETWEEN ? AND ?" % table,
                (device, boot, lo, hi),
            )
            found.update(r[0] for r in rows)
        return found & set(wanted)

    def states(self) -> dict[str, DeviceState]:
        rows = self.db.execute(
            "SELECT device, boot, seq, t, lat, lon, spd, received, online FROM device_state"
        )
        return {
            r[0]: DeviceState(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]))
            for r in rows
        }

    def epochs(self) -> dict[str, DeviceEpochs]:
        return epochs_table.load(self.db)

    def boot_stored(self, device: str, boot: int) -> bool:
        return epochs_table.boot_stored(self.db, device, boot)

    def derive_states(self) -> dict[str, dict[str, Any]]:
        rows = self.db.execute("SELECT device, state FROM derive_state")
        states = {r[0]: json.loads(r[1]) for r in rows}
        for state in states.values():
            state.pop("buffer", None)  # saved by earlier versions; now read from positions
        return states

    def held_fixes(self) -> dict[str, list[tuple[int, float, dict[str, Any]]]]:
        """Per device, the stored fixes its derive state has not judged yet, by fix time.

        They are the positions newer than the state's ``released_t``: every stored fix
        that new went into the reorder buffer, in the same commit, so the buffer need
        not be saved twice. Copies with a fix time already held are left out, as the
        buffer leaves them out.
        """
        rows = self.db.execute(
            "SELECT p.device, p.t, p.received, p.lat, p.lon, p.spd, p.hdg, p.alt, p.acc, "
            "p.sats, p.fix, p.ign, p.buf, p.mock, p.ms FROM derive_state d JOIN positions p "
            "ON p.device = d.device AND p.t > COALESCE(json_extract(d.state, '$.released_t'), "
            "-1) ORDER BY p.device, p.t, p.id"
        )
        held: dict[str, list[tuple[int, float, dict[str, Any]]]] = {}
        for dev, t, received, *values in rows:
            items = held.setdefault(dev, [])
            if items and items[-1][0] == t:
                continue
            items.append((t, received / 1000, fix_of(t, *values)))
        return held

    def _trim_rejects(self, topics: set[str]) -> None:
        """Each topic keeps its newest ``rejects_per_topic`` rejects (one device's quota).

        Rows of ``KEPT_REASONS`` are neither deleted nor counted: they may be the only
        copy of a device's record.
        """
        kept = _KEPT_SQL
        self.db.executemany(
            "DELETE FROM rejects WHERE topic = ?1 AND reason NOT IN %s AND id < (SELECT id "
            "FROM rejects WHERE topic = ?1 AND reason NOT IN %s ORDER BY id DESC LIMIT 1 "
            "OFFSET ?2)" % (kept, kept),
            [(topic, self.rejects_per_topic - 1) for topic in topics])

    def prune_rejects(self, keep: int) -> None:
        """Delete all but the newest ``keep`` rejects, except the only copies of records.

        A ``key_reused`` or ``bad_boot`` frame is genuine device data that the device may
        already have deleted: its reject row is kept until someone deletes it.
        """
        self.db.execute(
            "DELETE FROM rejects WHERE id <= (SELECT MAX(id) FROM rejects) - ? AND reason "
            "NOT IN %s" % _KEPT_SQL, (keep,)
        )

    # --- registry -----------------------------------------------------------

    def devices(self) -> dict[str, Device]:
        rows = self.db.execute("SELECT id, grp, key, enabled, name FROM devices")
        return {r[0]: Device(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows}

    def registry_version(self) -> int:
        """Bumped by every registry change, so a running gateway notices edits."""
        row = self.db.execute("SELECT value FROM meta WHERE key='registry_version'").fetchone()
        return int(row[0]) if row else 0

    def put_device(self, device: Device) -> None:
        ts = now_ms()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(
            "INSERT INTO devices (id, grp, name, key, enabled, created, updated) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET grp=excluded.grp, "
            "name=excluded.name, key=excluded.key, enabled=excluded.enabled, "
            "updated=excluded.updated",
            (device.id, device.group, device.name, device.key, int(device.enabled), ts, ts),
        )
        self._bump_registry()
        self.db.execute("COMMIT")

    def _bump_registry(self) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES ('registry_version', '1') ON CONFLICT (key) "
            "DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    # --- outbox -------------------------------------------------------------

    def cursor(self, name: str) -> tuple[int, int]:
        row = self.db.execute(
            "SELECT position_id, event_id FROM cursors WHERE name=?", (name,)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def set_cursor(self, name: str, position_id: int, event_id: int) -> None:
        self.db.execute(
            "INSERT INTO cursors (name, position_id, event_id) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET position_id=excluded.position_id, "
            "event_id=excluded.event_id",
            (name, position_id, event_id),
        )

    def positions_after(self, after_id: int, limit: int) -> list[sqlite3.Row]:
        cur = self.db.execute(
            "SELECT p.*, COALESCE(d.grp, 'default') AS grp FROM positions p "
            "LEFT JOIN devices d ON d.id = p.device WHERE p.id > ? ORDER BY p.id LIMIT ?",
            (after_id, limit),
        )
        cur.row_factory = sqlite3.Row
        return cur.fetchall()

    def events_after(self, after_id: int, limit: int) -> list[sqlite3.Row]:
        cur = self.db.execute(
            "SELECT e.*, COALESCE(d.grp, 'default') AS grp FROM events e "
            "LEFT JOIN devices d ON d.id = e.device WHERE e.id > ? ORDER BY e.id LIMIT ?",
            (after_id, limit),
        )
        cur.row_factory = sqlite3.Row
        return cur.fetchall()

    def max_ids(self) -> tuple[int, int]:
        p = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM positions").fetchone()[0]
        e = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0]
        return int(p), int(e)

    def iter_rows(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[sqlite3.Row]:
        cur = self.db.execute(sql, params)
        cur.row_factory = sqlite3.Row
        yield from cur


# A row whose key is stored is skipped, unless its content differs: then the no-op
# update counts it as a change, so a commit knows without a query whether any key was
# reused (see ``_insert``). The stored row keeps its values.
_INSERT_POSITION = (
    "INSERT OR IGNORE INTO positions (%s) VALUES (%s) ON CONFLICT (device, boot, seq) DO "
    "UPDATE SET t = t WHERE positions.t IS NOT excluded.t OR positions.ms IS NOT excluded.ms "
    "OR positions.lat IS NOT excluded.lat OR positions.lon IS NOT excluded.lon"
    % (", ".join(POSITION_COLUMNS), ", ".join("?" * len(POSITION_COLUMNS)))
)
_INSERT_EVENT = (  # derived events (boot -1): the same key is the same event
    "INSERT OR IGNORE INTO events (%s) VALUES (%s) ON CONFLICT (device, boot, seq) DO "
    "UPDATE SET t = t WHERE excluded.boot >= 0 AND (events.t IS NOT excluded.t OR "
    "events.kind IS NOT excluded.kind OR events.data IS NOT excluded.data)"
    % (", ".join(EVENT_COLUMNS), ", ".join("?" * len(EVENT_COLUMNS)))
)


def _insert(db: sqlite3.Connection, table: str, sql: str, rows: list[tuple[Any, ...]]
            ) -> tuple[int, int]:
    """Insert rows; returns how many were new and how many reused a key (other content).

    New rows get the ids after the highest one, so the id range counts them; the other
    changes are the reused keys' no-op updates.
    """
    if not rows:
        return 0, 0
    top = "SELECT COALESCE(MAX(id), 0) FROM " + table
    first = db.execute(top).fetchone()[0]
    before = db.total_changes
    db.executemany(sql, rows)
    changed = db.total_changes - before
    new = db.execute(top).fetchone()[0] - first
    return new, changed - new


_UPSERT_DERIVED = (
    "INSERT OR IGNORE INTO events (%s) VALUES (%s) ON CONFLICT (device, key) DO UPDATE SET "
    "id = (SELECT MAX(id) FROM events) + 1, t=excluded.t, ms=excluded.ms, lat=excluded.lat, "
    "lon=excluded.lon, data=excluded.data, received=excluded.received, "
    "judged=excluded.judged, retracted=0, revision=revision+1 WHERE retracted = 1"
    % (", ".join(EVENT_COLUMNS), ", ".join("?" * len(EVENT_COLUMNS)))
)
_INSERT_REJECT = (
    "INSERT INTO rejects (received, topic, device, reason, detail, raw, raw_len) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_VISIT = (
    "INSERT INTO visits (device, site, arrive, leave, duration_s, lat, lon) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device, site, arrive) DO UPDATE SET "
    "leave=excluded.leave, duration_s=excluded.duration_s, lat=excluded.lat, "
    "lon=excluded.lon, retracted=0 WHERE retracted = 1"
)
_INSERT_ATTENDANCE = (
    "INSERT OR IGNORE INTO attendance (device, boot, seq, kind, site, t, lat, lon, acc, "
    "accepted, reason, distance_m) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_STATE = (
    "INSERT INTO device_state (device, boot, seq, t, lat, lon, spd, received, online) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device) DO UPDATE SET "
    "boot=excluded.boot, seq=excluded.seq, t=excluded.t, lat=excluded.lat, lon=excluded.lon, "
    "spd=excluded.spd, received=excluded.received, online=excluded.online"
)


FIX_COLUMNS = "lat, lon, spd, hdg, alt, acc, sats, fix, ign, buf, mock, ms"


def fix_of(t: int, lat: int, lon: int, spd: int, hdg: int, alt: int, acc: int, sats: int,
           fix: int, ign: int, buf: int, mock: int, ms: int) -> dict[str, Any]:
    """A stored position (``t``, then ``FIX_COLUMNS``) as the fix the derive stage judges."""
    return {"t": t, "lat": lat, "lon": lon, "spd": spd, "hdg": hdg, "alt": alt, "acc": acc,
            "sats": sats, "fix": fix, "ign": bool(ign), "buf": bool(buf), "mock": bool(mock),
            "ms": ms}


def newest_per_topic(rows: list[tuple[Any, ...]], quota: int) -> list[tuple[Any, ...]]:
    """Reject rows (topic second, reason fourth) without those the quota would delete at
    once anyway; rows of ``KEPT_REASONS`` all stay."""
    seen: dict[str, int] = {}
    keep = []
    for row in reversed(rows):
        if row[3] in KEPT_REASONS:
            keep.append(row)
            continue
        n = seen.get(row[1], 0)
        if n < quota:
            seen[row[1]] = n + 1
            keep.append(row)
    keep.reverse()
    return keep


def _rollback(db: sqlite3.Connection) -> None:
    """Undo an open transaction; SQLite may already have (after a full disk or I/O error)."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is gone either way; the caller's error says why


_SQLITE_HEADER = b"SQLite format 3\x00"


def _check_file(path: str) -> None:
    """An existing store file must at least be an SQLite database."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StoreError("%s: cannot read the store: %s" % (path, exc.strerror)) from None
    if not head:
        raise StoreError(
            "%s: the file is empty (0 bytes), not a fieldtrack store; check [store] path, or "
            "delete the empty file to start a new store" % path)
    if head != _SQLITE_HEADER:
        raise StoreError(
            "%s: not an SQLite database, so not a fieldtrack store; check [store] path"
            % path)


def _create(path: str) -> None:
    """A new, complete store file, private to its owner (mode 0600: it holds device keys).

    The schema is written into a temporary file that is renamed into place, so a crash
    never leaves an empty or half-made store behind. SQLite creates the -wal and -shm
    files with the database file's mode, so they are private too.
    """
    tmp = "%s.new-%d" % (path, os.getpid())
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        os.chmod(tmp, 0o600)  # whatever the umask
        db = sqlite3.connect(tmp, isolation_level=None)
        try:
            db.executescript(_SCHEMA)
            db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))
        finally:
            db.close()
        try:
            os.link(tmp, path)  # never replaces a store another process just created
        except FileExistsError:
            pass
        os.unlink(tmp)
    except (OSError, sqlite3.Error) as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise StoreError("%s: cannot create the store: %s" % (path, reason)) from None


def _state_json(state: dict[str, Any]) -> str:
    """A derive state as compact JSON (a C encoder: one is written per device per commit)."""
    return orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS).decode()


def _state_row(s: DeviceState) -> tuple[Any, ...]:
    return (s.device, s.boot, s.seq, s.t, s.lat, s.lon, s.spd, s.received, int(s.online))


def event_data_json(data: dict[str, Any]) -> str:
    return json.dumps(
        {k: (v.hex() if isinstance(v, bytes) else v) for k, v in data.items()},
        sort_keys=True, separators=(",", ":"),
    )
