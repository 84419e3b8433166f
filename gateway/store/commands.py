"""The downlink command queue: the ``commands`` table and the functions around it.

Any program (the CLI, a console, a task planner) queues a command here; the gateway
picks it up within a second, signs it and sends it on the device's downlink topic until
the device acknowledges it or its expiry passes (``ingest/downlink.py``), and the
command_ack that settles it is applied in the commit that stores the ack
(``apply_acks``). Protocol: SPEC sections 6.6 and 11.

Command ids (``cid``) grow per device and are never reused: a device acts only on a cid
higher than any it acted on, so a reused one would be silently ignored, and a lower one
after a restart would be a replay. The highest cid ever given to a device is kept in
``command_cids``, which nothing deletes, so a cancel, a restart or a device removed and
added again cannot bring one back.

A user mistake raises ``CommandError`` (a ``ValueError``) naming the field and what to
do; nothing is written then.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fieldtrack.protocol import fast, topics
from fieldtrack.protocol.errors import FrameError
from fieldtrack.protocol.schema import COMMAND_KINDS, U32

# Kinds that change the device's state: a device rejects them without an expiry (SPEC 11).
CHANGES_STATE = frozenset(("set_config", "reboot", "fw_update"))
DEFAULT_TTL_S = 3600  # every command carries an expiry unless asked otherwise
MAX_TTL_S = 86400  # a device rejects an expiry more than 24 h ahead of its clock
STATES = ("queued", "sent", "acked", "expired", "cancelled")
PENDING = ("queued", "sent")  # still to be delivered
RESULTS = ("ok", "rejected", "failed", "unsupported", "expired")

_TABLES = """
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    cid INTEGER NOT NULL,
    kind TEXT NOT NULL,
    args TEXT NOT NULL DEFAULT '{}',
    exp INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    tries INTEGER NOT NULL DEFAULT 0,
    sent_ms INTEGER,
    acked_ms INTEGER,
    result TEXT,
    reason TEXT,
    source TEXT NOT NULL DEFAULT 'cli',
    UNIQUE (device, cid)
);
CREATE INDEX IF NOT EXISTS commands_pending ON commands (state) WHERE state IN ('queued', 'sent');
CREATE TABLE IF NOT EXISTS command_cids (
    device TEXT PRIMARY KEY,
    last_cid INTEGER NOT NULL
);
"""
_COLUMNS = ("id, device, cid, kind, args, exp, created_ms, state, tries, sent_ms, acked_ms, "
            "result, reason, source")
# Bumped by every queue and cancel: the gateway reloads its pending commands when it moves.
VERSION_KEY = "commands_version"


class CommandError(ValueError):
    """A command that cannot be queued or changed; ``field`` names what was wrong."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class CommandRow:
    """One queued command and what became of it (times in Unix ms, ``exp`` in Unix s)."""

    id: int
    device_id: str
    cid: int
    kind: str
    args: dict[str, Any]  # as queued; a SHA-256 as 64 hex digits
    exp: int  # 0: no expiry
    created_ms: int
    state: str  # queued | sent | acked | expired | cancelled
    tries: int  # how often it was published
    sent_ms: int | None  # the last time
    acked_ms: int | None
    result: str | None  # the device's answer: ok | rejected | failed | unsupported | expired
    reason: str | None
    source: str


def ensure(db: sqlite3.Connection) -> None:
    """Create the tables in a store that has none yet (the store's schema does this too)."""
    exists = "SELECT 1 FROM sqlite_master WHERE type='table' AND name='command_cids'"
    if not db.execute(exists).fetchone():
        db.executescript(_TABLES)


# --- arguments: pure checks -------------------------------------------------------


def kinds() -> list[str]:
    """The command kinds the protocol knows (SPEC section 11)."""
    return [name for _, name in COMMAND_KINDS]


def parse_setting(text: str) -> tuple[str, int | bool | str]:
    """``KEY=VALUE`` as a setting: a whole number, true/false, or else the text itself."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise CommandError("%r: a setting is KEY=VALUE, e.g. moving.min_period_s=10" % text,
                           "config")
    value: int | bool | str = raw
    low = raw.strip().lower()
    if low in ("true", "false"):
        value = low == "true"
    else:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            value = raw
    return key, value


def config_of(pairs: Iterable[str]) -> dict[str, int | bool | str]:
    """The settings of ``KEY=VALUE`` texts; a key given twice is a mistake."""
    config: dict[str, int | bool | str] = {}
    for text in pairs:
        key, value = parse_setting(text)
        if key in config:
            raise CommandError("%s is given twice: give each setting once" % key, "config")
        config[key] = value
    if not config:
        raise CommandError("set_config needs at least one KEY=VALUE setting", "config")
    return config


def sha256_of(value: Any) -> bytes:
    """A firmware's SHA-256 from 64 hex digits (or its 32 bytes)."""
    if isinstance(value, bytes):
        digest = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            digest = bytes.fromhex(text)
        except ValueError:
            digest = b""
        if len(text) != 64 or len(digest) != 32:
            raise CommandError("%r: a SHA-256 is 64 hex digits (sha256sum FILE prints it)"
                               % value, "sha256")
    else:
        raise CommandError("a SHA-256 is 64 hex digits", "sha256")
    if len(digest) != 32:
        raise CommandError("a SHA-256 is 32 bytes, got %d" % len(digest), "sha256")
    return digest


def expiry(kind: str, ttl_s: float | None, now: float) -> int:
    """``exp`` for a command queued at ``now`` with ``ttl_s`` (None: ``DEFAULT_TTL_S``)."""
    ttl = DEFAULT_TTL_S if ttl_s is None else ttl_s
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or ttl < 0 or 0 < ttl < 1:
        raise CommandError("ttl %r: give the seconds a command stays valid, 1..%d"
                           % (ttl_s, MAX_TTL_S), "ttl")
    if ttl > MAX_TTL_S:
        raise CommandError("ttl %ds is more than 24 h: a device rejects a command valid for "
                           "longer (SPEC section 11); give at most %d s" % (ttl, MAX_TTL_S),
                           "ttl")
    if ttl == 0:
        if kind in CHANGES_STATE:
            raise CommandError("%s changes the device's state and needs an expiry: give a "
                               "ttl of 1..%d s" % (kind, MAX_TTL_S), "ttl")
        return 0
    return int(now + ttl)


def wire_args(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """The arguments as the protocol encodes them (a SHA-256 as bytes)."""
    if kind == "fw_update" and "sha256" in args:
        return dict(args, sha256=sha256_of(args["sha256"]))
    return args


def frame_of(cid: int, kind: str, exp: int, args: dict[str, Any]) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "command", "cid": cid, "kind": kind, "exp": exp}
    wire = wire_args(kind, args)
    if wire:
        frame["args"] = wire
    return frame


def encode(cid: int, kind: str, exp: int, args: dict[str, Any]) -> bytes:
    """The command frame's bytes: the protocol's own checks decide what is valid."""
    try:
        return fast.encode(frame_of(cid, kind, exp, args))
    except FrameError as exc:
        field = exc.field or "args"
        if field == "kind":
            raise CommandError("%r is not a command kind; the kinds are %s"
                               % (kind, ", ".join(kinds())), "kind") from None
        raise CommandError("%s: %s" % (field, exc.reason), field) from None


def _json_args(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    if kind == "fw_update" and isinstance(args.get("sha256"), bytes):
        return dict(args, sha256=args["sha256"].hex())
    return dict(args)


# --- the queue ----------------------------------------------------------------------


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _bump(db: sqlite3.Connection) -> None:
    db.execute("INSERT INTO meta (key, value) VALUES (?, '1') ON CONFLICT (key) DO UPDATE "
               "SET value = CAST(value AS INTEGER) + 1", (VERSION_KEY,))


def version(db: sqlite3.Connection) -> int:
    """Moves with every queued or cancelled command (cheap: one row)."""
    row = db.execute("SELECT value FROM meta WHERE key=?", (VERSION_KEY,)).fetchone()
    return int(row[0]) if row else 0


def _check_device(db: sqlite3.Connection, device_id: str) -> None:
    try:
        topics.check_device_id(device_id)
    except FrameError:
        raise CommandError("%r is not a device id (1..%d of A-Z a-z 0-9 - _)"
                           % (device_id, topics.MAX_DEVICE_ID), "device") from None
    row = db.execute("SELECT enabled FROM devices WHERE id=?", (device_id,)).fetchone()
    if row is None:
        raise CommandError("%s: no such device; `fieldtrack devices list` shows the registered "
                           "ones" % device_id, "device")
    if not row[0]:
        raise CommandError("%s is disabled and gets no commands; `fieldtrack devices enable "
                           "%s` first" % (device_id, device_id), "device")


def _next_cid(db: sqlite3.Connection, device_id: str) -> int:
    """Above every cid this device was given or answered (also from before this table)."""
    given = db.execute("SELECT last_cid FROM command_cids WHERE device=?",
                       (device_id,)).fetchone()
    queued = db.execute("SELECT MAX(cid) FROM commands WHERE device=?", (device_id,)).fetchone()
    answered = db.execute(
        "SELECT MAX(CAST(json_extract(data, '$.cid') AS INTEGER)) FROM events "
        "WHERE device=? AND kind='command_ack' AND boot >= 0", (device_id,)).fetchone()
    top = max(given[0] if given else 0, queued[0] or 0, answered[0] or 0)
    if top >= U32:
        raise CommandError("%s has used every command id (2^32 - 1)" % device_id, "cid")
    return int(top) + 1


def queue_command(conn: sqlite3.Connection, device_id: str, kind: str,
                  args: dict[str, Any] | None = None, *, ttl_s: float | None = None,
                  now: float | None = None, source: str = "cli") -> CommandRow:
    """Queue ``kind`` for ``device_id``; the gateway sends it within a second.

    ``args`` as SPEC section 11 names them (``config``: a map of settings; ``url``,
    ``sha256`` as 64 hex digits, ``version``). Every command expires ``ttl_s`` seconds
    from now (default ``DEFAULT_TTL_S``, at most 24 h); ``ttl_s=0`` means no expiry,
    allowed for the kinds that change nothing (locate, status).

    ``conn`` is any connection to the store file with no transaction open (autocommit,
    ``isolation_level=None``, is simplest): the queueing is one ``BEGIN IMMEDIATE``
    transaction of its own, which waits for the gateway's commit if one is under way.
    """
    ensure(conn)
    now = time.time() if now is None else now
    args = dict(args or {})
    if kind not in kinds():
        raise CommandError("%r is not a command kind; the kinds are %s"
                           % (kind, ", ".join(kinds())), "kind")
    exp = expiry(kind, ttl_s, now)
    encode(1, kind, exp, args)  # the protocol's checks, before anything is written
    stored = json.dumps(_json_args(kind, args), sort_keys=True, separators=(",", ":"))
    created = int(now * 1000)
    with _transaction(conn):
        _check_device(conn, device_id)
        cid = _next_cid(conn, device_id)
        encode(cid, kind, exp, args)
        cur = conn.execute(
            "INSERT INTO commands (device, cid, kind, args, exp, created_ms, source) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", (device_id, cid, kind, stored, exp, created,
                                             source[:50]))
        conn.execute("INSERT INTO command_cids (device, last_cid) VALUES (?, ?) ON CONFLICT "
                     "(device) DO UPDATE SET last_cid = excluded.last_cid", (device_id, cid))
        _bump(conn)
        rowid = cur.lastrowid
    row = _one(conn, "SELECT %s FROM commands WHERE id=?" % _COLUMNS, (rowid,))
    assert row is not None
    return row


def _row(r: Sequence[Any]) -> CommandRow:
    return CommandRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8], r[9],
                      r[10], r[11], r[12], r[13])


def _one(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> CommandRow | None:
    r = db.execute(sql, params).fetchone()
    return _row(r) if r else None


def list_commands(conn: sqlite3.Connection, device_id: str | None = None, *, limit: int = 100,
                  before_id: int | None = None) -> list[CommandRow]:
    """The newest commands first (of one device, or all); page on with ``before_id``."""
    ensure(conn)
    where: list[str] = []
    params: list[Any] = []
    if device_id is not None:
        where.append("device = ?")
        params.append(device_id)
    if before_id is not None:
        where.append("id < ?")
        params.append(before_id)
    sql = "SELECT %s FROM commands%s ORDER BY id DESC LIMIT ?" % (
        _COLUMNS, (" WHERE " + " AND ".join(where)) if where else "")
    return [_row(r) for r in conn.execute(sql, (*params, max(0, min(int(limit), 10_000))))]


def get_command(conn: sqlite3.Connection, device_id: str, cid: int) -> CommandRow | None:
    ensure(conn)
    return _one(conn, "SELECT %s FROM commands WHERE device=? AND cid=?" % _COLUMNS,
                (device_id, cid))


def cancel_command(conn: sqlite3.Connection, device_id: str, cid: int) -> bool:
    """Stop sending it; False when it is no longer queued or sent (or never was).

    A command already sent may have reached the device: its ack is still recorded.
    """
    ensure(conn)
    with _transaction(conn):
        cur = conn.execute("UPDATE commands SET state='cancelled' WHERE device=? AND cid=? "
                           "AND state IN ('queued', 'sent')", (device_id, cid))
        if cur.rowcount:
            _bump(conn)
    return cur.rowcount > 0


# --- the gateway's side ---------------------------------------------------------------


def pending(db: sqlite3.Connection) -> list[CommandRow]:
    """Every command still to deliver, oldest cid first per device."""
    return [_row(r) for r in db.execute(
        "SELECT %s FROM commands WHERE state IN ('queued', 'sent') ORDER BY device, cid"
        % _COLUMNS)]


def mark_sent(db: sqlite3.Connection, ids: Sequence[int], now_ms: int) -> set[int]:
    """Count a publish of each command; returns the ids still pending (a cancel wins)."""
    if not ids:
        return set()
    with _transaction(db):
        db.executemany("UPDATE commands SET state='sent', tries=tries+1, sent_ms=? WHERE id=? "
                       "AND state IN ('queued', 'sent')", [(now_ms, i) for i in ids])
        marks = ",".join("?" * len(ids))
        live = {r[0] for r in db.execute(
            "SELECT id FROM commands WHERE id IN (%s) AND state='sent' AND sent_ms=?" % marks,
            (*ids, now_ms))}
    return live


def mark_expired(db: sqlite3.Connection, expired: Sequence[tuple[int, tuple[Any, ...]]]
                 ) -> int:
    """Give up on commands whose expiry passed without an ack; returns how many.

    ``expired``: (command id, its ``command_expired`` event row) pairs; the event (a
    derived event of the device, for the log and the feeds) is written in the same
    transaction, for each command that was still pending.
    """
    if not expired:
        return 0
    done = 0
    with _transaction(db):
        for command_id, event in expired:
            if db.execute("UPDATE commands SET state='expired', reason='no acknowledgement "
                          "before its expiry' WHERE id=? AND state IN ('queued', 'sent')",
                          (command_id,)).rowcount:
                done += 1
                db.execute(_INSERT_EVENT, event)
    return done


# A derived event (boot -1, a key): the columns of ``sqlite.EVENT_COLUMNS``.
_INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (device, boot, seq, t, kind, lat, lon, acc, data, received, "
    "ms, key, judged) VALUES (?, -1, ?, ?, 'command_expired', NULL, NULL, NULL, ?, ?, 0, ?, "
    "NULL)"
)


def expired_event(device: str, seq: int, key: str, cid: int, kind: str, exp: int,
                  now_ms: int) -> tuple[Any, ...]:
    """The row of a ``command_expired`` event (``seq`` derived from ``key``)."""
    data = json.dumps({"cid": cid, "kind": kind, "exp": exp}, sort_keys=True,
                      separators=(",", ":"))
    return (device, seq, now_ms // 1000, data, now_ms, key)


_APPLY_ACK = (
    "UPDATE commands SET state='acked', result=?, reason=?, acked_ms=? "
    "WHERE device=? AND cid=? AND state != 'acked'"
)


def apply_acks(db: sqlite3.Connection, acks: Sequence[tuple[str, int, str, str | None, int]]
               ) -> tuple[tuple[str, int, str], ...]:
    """Inside the commit that stores the acks: settle their commands, each once.

    ``acks``: (device, cid, result, reason, received ms). An ack for a command already
    settled by an earlier copy changes nothing; one for a command given up as expired
    or cancelled records what the device did all the same. Returns (device, cid,
    result) of each command settled now.
    """
    done = []
    for device, cid, result, reason, received in acks:
        if db.execute(_APPLY_ACK, (result, reason, received, device, cid)).rowcount:
            done.append((device, cid, result))
    return tuple(done)
