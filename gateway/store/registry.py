"""The device registry: which trackers may speak, in which group, with which key.

A typed library over the store's ``devices`` table; ``fieldtrack devices`` is its command
line. Every change runs in one ``BEGIN IMMEDIATE`` transaction that also bumps the store's
registry version, so a running gateway reloads the registry within seconds. Keys are
generated here, returned to the caller once, and never logged or put in a message.

A user mistake raises ``RegistryError``; its message says what was wrong and what to do.
An import (TOML or CSV) checks every row first and reports every problem as
``file:line: field: reason``; it writes all its devices or none.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
import secrets
import sqlite3
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldtrack.gateway.store.sqlite import Device, Store, now_ms
from fieldtrack.protocol import topics
from fieldtrack.protocol.errors import FrameError

KEY_BYTES = 32  # HMAC-SHA256 keys: what ``add`` and ``rotate_key`` generate
MIN_KEY_BYTES = 16  # shorter imported keys are too weak to accept
MAX_KEY_BYTES = 64  # the SHA-256 block: a longer key is hashed down anyway
MAX_NAME = 100
DEFAULT_GROUP = "default"
FIELDS = ("id", "group", "name", "key", "enabled")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


class RegistryError(Exception):
    """A registry change that cannot be made: a bad id, field or file, or a wrong device."""


class ImportFileError(RegistryError):
    """An import file with problems; ``problems`` holds one ``file:line: field: reason`` each."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.problems = problems
        head = "%s: nothing imported: %d problem%s; fix %s and import again" % (
            path, len(problems), "" if len(problems) == 1 else "s",
            "it" if len(problems) == 1 else "them",
        )
        super().__init__("\n".join([head, *("  " + p for p in problems)]))


@dataclass
class ImportResult:
    """What an import wrote. ``keys`` holds only the keys it generated: show them once."""

    added: list[str] = field(default_factory=list)
    keys: dict[str, bytes] = field(default_factory=dict, repr=False)
    keyless: list[str] = field(default_factory=list)


# --- field validators: each returns the clean value or raises ValueError(reason) ------


def check_id(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected text, got %s" % _kind(value))
    try:
        return topics.check_device_id(value.strip())
    except FrameError as exc:
        raise ValueError("%r: a device id is 1..%d letters, digits, '-' and '_'"
                         % (value, topics.MAX_DEVICE_ID)) from exc


def check_group(value: Any) -> str:
    # The group names [working_hours.<group>] tables and geofence groups and is an
    # InfluxDB tag: the device id alphabet keeps it a bare TOML key and a safe tag.
    if not isinstance(value, str):
        raise ValueError("expected text, got %s" % _kind(value))
    text = value.strip() or DEFAULT_GROUP
    try:
        return topics.check_device_id(text)
    except FrameError:
        raise ValueError("%r: a group is 1..%d letters, digits, '-' and '_'"
                         % (value, topics.MAX_DEVICE_ID)) from None


def check_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected text, got %s" % _kind(value))
    text = value.strip()
    if len(text) > MAX_NAME:
        raise ValueError("%d characters: a name has at most %d" % (len(text), MAX_NAME))
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise ValueError("%r: control characters (tabs, line breaks) are not allowed" % text)
    return text


def check_key(value: Any) -> bytes | None:
    """A key given as hex digits (spaces allowed); empty means none."""
    if not isinstance(value, str):
        raise ValueError("expected hex digits as text, got %s" % _kind(value))
    text = value.strip()
    if not text:
        return None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError("expected hex digits (0-9, a-f), two per byte") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError("%d bytes: give %d bytes as %d hex digits (%d..%d bytes accepted)"
                         % (len(key), KEY_BYTES, 2 * KEY_BYTES, MIN_KEY_BYTES, MAX_KEY_BYTES))
    return key


def check_enabled(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if not text or text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError("%r: expected true or false" % (value,))


def _kind(value: Any) -> str:
    return {bool: "true/false", int: "a number", float: "a number", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


def _checked(check: Callable[[Any], Any], value: Any, what: str) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise RegistryError("%s: %s" % (what, exc)) from None


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


# --- operations ----------------------------------------------------------------------


@contextmanager
def _transaction(store: Store) -> Iterator[sqlite3.Connection]:
    """One write transaction on the store's connection: all of it or nothing."""
    db = store.db
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _bump(store: Store) -> None:
    # The store's own bump, inside our transaction: the gateway polls this version.
    store._bump_registry()


def _insert(db: sqlite3.Connection, device: Device) -> None:
    ts = now_ms()
    db.execute(
        "INSERT INTO devices (id, grp, name, key, enabled, created, updated) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (device.id, device.group, device.name, device.key, int(device.enabled), ts, ts),
    )


def _registered(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT id FROM devices")}


def _unknown(db: sqlite3.Connection, device_id: str) -> RegistryError:
    close = difflib.get_close_matches(device_id, sorted(_registered(db)), n=1)
    hint = " (did you mean %s?)" % close[0] if close else ""
    return RegistryError("no device %s is registered%s" % (device_id, hint))


def add(store: Store, device_id: str, group: str = DEFAULT_GROUP, name: str = "",
        with_key: bool = True) -> bytes | None:
    """Register a new device, enabled; returns its new key (``None`` with ``with_key=False``)."""
    key = new_key() if with_key else None
    device = Device(
        _checked(check_id, device_id, "device id"), _checked(check_group, group, "group"),
        key, True, _checked(check_name, name, "name"),
    )
    with _transaction(store) as db:
        if device.id in _registered(db):
            raise RegistryError("%s is already registered: choose another id, or use "
                                "rotate-key for a new key" % device.id)
        _insert(db, device)
        _bump(store)
    return key


def list_devices(store: Store) -> list[Device]:
    """Every registered device, by id."""
    return sorted(store.devices().values(), key=lambda d: d.id)


def set_enabled(store: Store, device_id: str, enabled: bool) -> bool:
    """Enable or disable a device; returns False if it already was in that state."""
    device_id = _checked(check_id, device_id, "device id")
    with _transaction(store) as db:
        cur = db.execute("UPDATE devices SET enabled=?, updated=? WHERE id=? AND enabled<>?",
                         (int(enabled), now_ms(), device_id, int(enabled)))
        if cur.rowcount:
            _bump(store)
            return True
        if db.execute("SELECT 1 FROM devices WHERE id=?", (device_id,)).fetchone() is None:
            raise _unknown(db, device_id)
        return False


def rotate_key(store: Store, device_id: str) -> bytes:
    """Give a device a new key and return it; its old key stops working at once."""
    device_id = _checked(check_id, device_id, "device id")
    key = new_key()
    with _transaction(store) as db:
        cur = db.execute("UPDATE devices SET key=?, updated=? WHERE id=?",
                         (key, now_ms(), device_id))
        if not cur.rowcount:
            raise _unknown(db, device_id)
        _bump(store)
    return key


# --- import --------------------------------------------------------------------------


@dataclass
class _Row:
    id_line: int  # where the id is (or the row starts), for reporting
    id: str | None  # None when missing or invalid
    device: Device | None  # None when any field has a problem


def import_file(store: Store, path: str | Path, *, generate_keys: bool = False) -> ImportResult:
    """Add every device of a TOML (``[[device]]`` tables) or CSV file, all or none.

    Fields: ``id`` (required), ``group``, ``name``, ``key`` (hex; when absent a key is
    generated with ``generate_keys``, else the device has none), ``enabled``. Devices
    already registered are problems too: an import only adds.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise RegistryError("%s: cannot read the file (%s)" % (name, exc.strerror)) from None
    except UnicodeDecodeError:
        raise RegistryError("%s: not UTF-8 text; save it as UTF-8" % name) from None
    suffix = Path(path).suffix.lower()
    if suffix == ".toml":
        rows, problems = _toml_rows(text, name)
    elif suffix == ".csv":
        rows, problems = _csv_rows(text, name)
    else:
        raise RegistryError("%s: expected a .toml or .csv file" % name)
    if not rows and not problems:
        raise RegistryError("%s: no devices in the file" % name)
    result = ImportResult()
    with _transaction(store) as db:
        registered = _registered(db)
        first: dict[str, int] = {}
        for row in rows:
            if row.id is None:
                continue
            where = "%s:%d: id" % (name, row.id_line)
            if row.id in first:
                problems.append((row.id_line, "%s: %s is also at line %d: list each id once"
                                 % (where, row.id, first[row.id])))
            elif row.id in registered:
                problems.append((row.id_line, "%s: %s is already registered: remove the row "
                                 "(use rotate-key or enable/disable to change it)"
                                 % (where, row.id)))
            first.setdefault(row.id, row.id_line)
        if problems:
            raise ImportFileError(name, [msg for _, msg in sorted(problems)])
        for row in rows:
            dev = row.device
            assert dev is not None  # a row without its device added a problem
            if dev.key is None and generate_keys:
                key = result.keys[dev.id] = new_key()
                dev = Device(dev.id, dev.group, key, dev.enabled, dev.name)
            elif dev.key is None:
                result.keyless.append(dev.id)
            _insert(db, dev)
            result.added.append(dev.id)
        _bump(store)
    return result


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "id": check_id, "group": check_group, "name": check_name, "key": check_key,
    "enabled": check_enabled,
}


def _row(values: dict[str, Any], lines: dict[str, int], line: int, name: str,
         problems: list[tuple[int, str]]) -> _Row:
    """Check one device's fields, adding every problem; ``device`` is set when all are good."""
    clean: dict[str, Any] = {"group": DEFAULT_GROUP, "name": "", "key": None, "enabled": True}
    bad = False
    for key, value in values.items():
        where = lines.get(key, line)
        if key not in _CHECKS:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hint = "did you mean %s? " % close[0] if close else ""
            problems.append((where, "%s:%d: %s: unknown field (%sfields: %s)"
                             % (name, where, key, hint, ", ".join(FIELDS))))
            bad = True
            continue
        try:
            clean[key] = _CHECKS[key](value)
        except ValueError as exc:
            problems.append((where, "%s:%d: %s: %s" % (name, where, key, exc)))
            bad = True
    if "id" not in values:
        problems.append((line, "%s:%d: id: missing: every device needs an id" % (name, line)))
        bad = True
    row = _Row(lines.get("id", line), clean.get("id"), None)
    if not bad:
        row.device = Device(clean["id"], clean["group"], clean["key"], clean["enabled"],
                            clean["name"])
    return row


_TOML_TABLE = re.compile(r"\s*\[\[\s*device\s*\]\]")
_TOML_KEY = re.compile(r"\s*([A-Za-z0-9_-]+|\"[^\"]*\")\s*=")


def _toml_rows(text: str, name: str) -> tuple[list[_Row], list[tuple[int, str]]]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError("%s: not valid TOML: %s" % (name, exc)) from None
    problems: list[tuple[int, str]] = []
    for key in doc:
        if key != "device":
            problems.append((1, "%s:1: %s: unknown top-level key: list devices as "
                             "[[device]] tables" % (name, key)))
    tables = doc.get("device", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise RegistryError("%s: device: expected [[device]] tables" % name)
    # tomllib keeps no positions: find each [[device]] header and its keys' lines.
    lines = text.splitlines()
    starts = [i + 1 for i, ln in enumerate(lines) if _TOML_TABLE.match(ln)]
    if len(starts) != len(tables):  # e.g. written as an inline array: number them instead
        starts = [0] * len(tables)
    rows: list[_Row] = []
    for n, table in enumerate(tables):
        start = starts[n]
        end = starts[n + 1] if n + 1 < len(starts) and start else len(lines) + 1
        field_lines: dict[str, int] = {}
        if start:
            for i in range(start, end - 1):
                m = _TOML_KEY.match(lines[i])
                if m:
                    field_lines.setdefault(m.group(1).strip('"'), i + 1)
        rows.append(_row(table, field_lines, start or n + 1, name, problems))
    return rows, problems


def _csv_rows(text: str, name: str) -> tuple[list[_Row], list[tuple[int, str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[tuple[int, str]] = []
    rows: list[_Row] = []
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        if "id" not in header:
            raise RegistryError("%s:1: header: expected the columns %s (id required)"
                                % (name, ",".join(FIELDS)))
        for column in header:
            if column not in FIELDS:
                close = difflib.get_close_matches(column, FIELDS, n=1)
                hint = "did you mean %s? " % close[0] if close else ""
                raise RegistryError("%s:1: %s: unknown column (%scolumns: %s)"
                                    % (name, column, hint, ",".join(FIELDS)))
            if header.count(column) > 1:
                raise RegistryError("%s:1: %s: the column appears twice" % (name, column))
        last = reader.line_num
        for record in reader:
            line, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                problems.append((line, "%s:%d: row: %d fields, the header has %d"
                                 % (name, line, len(record), len(header))))
                continue
            values = dict(zip(header, record, strict=True))
            rows.append(_row(values, {}, line, name, problems))
    except csv.Error as exc:
        raise RegistryError("%s:%d: not valid CSV: %s" % (name, reader.line_num, exc)) from None
    return rows, problems
