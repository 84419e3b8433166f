"""The daily report's edge with the store: the rows of one day, and where the data is.

Only reads, and only what is current: derived events and visits that late fixes
retracted are left out. ``report.build`` turns what ``read_day`` returns into a report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fieldtrack.gateway.store.sqlite import Store
from fieldtrack.tools.export.writer import ExportError, Query, check_query
from fieldtrack.tools.report.model import (
    DERIVED_KINDS,
    CheckRow,
    Day,
    DeviceRows,
    Event,
    Fix,
    ReportError,
    VisitRow,
)

LOOKAHEAD_S = 86400  # a trip that starts today may end tomorrow: its trip_end is read too


def read_day(store: Store, day: Day, devices: Sequence[str] = ()) -> list[DeviceRows]:
    """The rows of ``day`` for these devices (all with data then, when none are given).

    A ``--device`` the store has never heard of is refused, naming the option.
    """
    try:
        check_query(store, Query(devices=tuple(devices)))
    except ExportError as exc:
        raise ReportError(str(exc)) from None
    db = store.db
    wanted = list(dict.fromkeys(devices)) or sorted(
        set().union(*(_distinct_devices(store, table)
                      for table in ("positions", "events", "visits", "attendance"))))
    names = {d.id: d.name for d in store.devices().values()}
    window = (day.start, day.end)
    out = []
    for device in wanted:
        rows = DeviceRows(device, names.get(device, ""))
        for t, lat, lon, spd, acc, ign, flagged in db.execute(
                "SELECT t, lat, lon, spd, acc, ign, flagged FROM positions WHERE device=? "
                "AND t >= ? AND t < ? ORDER BY t, ms, id", (device, *window)):
            if not flagged:  # a fix that failed a filter is not drawn or measured
                rows.fixes.append(Fix(t, lat, lon, spd, acc, bool(ign)))
        for t, kind, lat, lon, data in db.execute(
                "SELECT t, kind, lat, lon, data FROM events WHERE device=? AND boot=-1 "
                "AND retracted=0 AND t >= ? AND t < ? AND kind IN (%s) ORDER BY t, ms, id"
                % ", ".join("?" * len(DERIVED_KINDS)),
                (device, day.start, day.end + LOOKAHEAD_S, *DERIVED_KINDS)):
            rows.events.append(Event(t, kind, lat, lon, _json(data)))
        rows.visits.extend(VisitRow(*r) for r in db.execute(
            "SELECT site, arrive, leave, duration_s, lat, lon FROM visits WHERE device=? "
            "AND retracted=0 AND arrive >= ? AND arrive < ? ORDER BY arrive, id",
            (device, *window)))
        rows.checks.extend(
            CheckRow(t, kind, site, bool(accepted), reason, distance, lat, lon)
            for t, kind, site, accepted, reason, distance, lat, lon in db.execute(
                "SELECT t, kind, site, accepted, reason, distance_m, lat, lon FROM attendance "
                "WHERE device=? AND t >= ? AND t < ? ORDER BY t, id", (device, *window)))
        out.append(rows)
    return out


def _distinct_devices(store: Store, table: str) -> set[str]:
    # Every table has an index that starts with the device: walking it device by device
    # costs a lookup per device, where DISTINCT would read every row.
    rows = store.db.execute(
        "WITH RECURSIVE d(x) AS (SELECT MIN(device) FROM %s UNION ALL "
        "SELECT (SELECT MIN(device) FROM %s WHERE device > x) FROM d WHERE x IS NOT NULL) "
        "SELECT x FROM d WHERE x IS NOT NULL" % (table, table))
    return {r[0] for r in rows}


def _json(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def data_range(store: Store) -> tuple[int, int] | None:
    """The first and last fix time in the store, to tell a user where the data is."""
    row = store.db.execute("SELECT MIN(t), MAX(t) FROM positions").fetchone()
    return None if row is None or row[0] is None else (int(row[0]), int(row[1]))
