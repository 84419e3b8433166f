"""Stored positions and events as JSON lines, CSV, GeoJSON or GPX, streamed from the store.

Rows come from one SQL query in device, then fix-time order and are written as they are
read, so an export of any size runs in constant memory. The JSON documents are the
feeds' (``gateway/FEEDS.md``): the same field names and units everywhere. Coordinates are
degrees with 7 decimals, times ISO 8601 UTC.

A time filter is half-open: ``since`` inclusive, ``until`` exclusive, so consecutive
ranges never export a row twice.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, TextIO
from xml.sax.saxutils import escape, quoteattr

from fieldtrack.gateway.sinks.feeds import FIX_NAMES, event_doc, fix_ms, iso_ms, position_doc
from fieldtrack.gateway.store.sqlite import Store

Row = Any  # a sqlite3.Row of the export queries
KINDS = ("positions", "events")
FORMATS = ("jsonl", "csv", "geojson", "gpx")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".geojson": "geojson",
            ".gpx": "gpx"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNIX = re.compile(r"\d+(\.\d+)?")


class ExportError(Exception):
    """An export that cannot be made: a bad time, device or option."""


@dataclass(frozen=True)
class Query:
    """Which rows: all devices when ``devices`` is empty; times in Unix milliseconds."""

    devices: tuple[str, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True)
class Summary:
    written: int
    skipped: int  # events without a position, left out of GeoJSON and GPX
    devices: int


def parse_time(text: str, option: str) -> int:
    """``--since``/``--until`` value -> Unix milliseconds.

    Unix seconds (``1740816930``, ``1740816930.25``) or ISO 8601 (``2025-03-01``,
    ``2025-03-01T08:15:30Z``, ``2025-03-01T09:15:30+01:00``); without a zone it is UTC.
    """
    s = text.strip()
    if _UNIX.fullmatch(s):
        return int((Decimal(s) * 1000).to_integral_value(ROUND_FLOOR))
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ExportError(
            "%s: %r is not a time: give ISO 8601 (2025-03-01T08:00:00Z; without a zone it "
            "is UTC) or Unix seconds" % (option, text)
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def check_query(store: Store, query: Query) -> None:
    """Refuse an empty time range and devices the store has never heard of."""
    if query.since_ms is not None and query.until_ms is not None:
        if query.since_ms >= query.until_ms:
            raise ExportError("--since must be before --until (the range is since <= t < "
                              "until)")
    db = store.db
    for device in query.devices:
        if any(db.execute("SELECT 1 FROM %s WHERE %s=? LIMIT 1" % (table, column),
                          (device,)).fetchone()
               for table, column in (("devices", "id"), ("positions", "device"),
                                     ("events", "device"))):
            continue
        known = [r[0] for r in db.execute("SELECT id FROM devices ORDER BY id")]
        close = difflib.get_close_matches(device, known, n=1)
        hint = "did you mean %s? " % close[0] if close else ""
        raise ExportError("--device: %s: no such device in %s (%s`fieldtrack devices list` "
                          "shows the registered ones)" % (device, store.path, hint))


def _where(query: Query, table: str, fix_ms: str) -> tuple[str, list[Any]]:
    # The coarse whole-second bound on t lets SQLite use the (device, t) index; the
    # exact bound on the fix time in milliseconds decides.
    terms: list[str] = []
    params: list[Any] = []
    if query.devices:
        terms.append("%s.device IN (%s)" % (table, ", ".join("?" * len(query.devices))))
        params.extend(query.devices)
    if query.since_ms is not None:
        terms.append("%s.t >= ? AND %s >= ?" % (table, fix_ms))
        params.extend([query.since_ms // 1000, query.since_ms])
    if query.until_ms is not None:
        terms.append("%s.t <= ? AND %s < ?" % (table, fix_ms))
        params.extend([query.until_ms // 1000, query.until_ms])
    return (" WHERE " + " AND ".join(terms)) if terms else "", params


def positions(store: Store, query: Query) -> Iterator[Row]:
    """Positions by device, then fix time (seconds, then milliseconds), then arrival."""
    where, params = _where(query, "p", "p.t * 1000 + p.ms")
    return store.iter_rows(
        "SELECT p.*, COALESCE(d.grp, 'default') AS grp FROM positions p "
        "LEFT JOIN devices d ON d.id = p.device%s ORDER BY p.device, p.t, p.ms, p.id" % where,
        tuple(params),
    )


def events(store: Store, query: Query) -> Iterator[Row]:
    """Current events by device, then time, then arrival.

    A derived event that late fixes retracted is left out; a corrected one is exported
    as it is now (STORE.md, "Late data").
    """
    where, params = _where(query, "e", "e.t * 1000 + e.ms")
    where = (where + " AND" if where else " WHERE") + " e.retracted = 0"
    return store.iter_rows(
        "SELECT e.*, COALESCE(d.grp, 'default') AS grp FROM events e "
        "LEFT JOIN devices d ON d.id = e.device%s ORDER BY e.device, e.t, e.ms, e.id" % where,
        tuple(params),
    )


# --- writers: (rows, out) -> Summary --------------------------------------------------


def _e7(value: int) -> str:
    # value / 1e7 is the double nearest the 7-decimal number: "%.7f" prints its digits.
    return "%.7f" % (int(value) / 10_000_000)


def _has_position(row: Row) -> bool:
    return row["lat"] is not None and row["lon"] is not None


class _Counter:
    def __init__(self) -> None:
        self.written = self.skipped = 0
        self.devices: set[str] = set()

    def count(self, row: Row) -> None:
        self.written += 1
        self.devices.add(row["device"])

    def summary(self) -> Summary:
        return Summary(self.written, self.skipped, len(self.devices))


def _dumps(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _jsonl(doc_of: Callable[[Row], dict[str, Any]]) -> Callable[[Iterable[Row], TextIO], Summary]:
    def write(rows: Iterable[Row], out: TextIO) -> Summary:
        n = _Counter()
        for row in rows:
            out.write(_dumps(doc_of(row)) + "\n")
            n.count(row)
        return n.summary()

    return write


POSITION_CSV = ("device", "group", "boot", "seq", "time", "lat", "lon", "speed_kmh",
                "heading", "alt_m", "accuracy_m", "sats", "fix", "ignition", "buffered",
                "mock", "flagged", "received")
EVENT_CSV = ("device", "group", "boot", "seq", "key", "revision", "time", "kind", "lat", "lon",
             "accuracy_m", "data", "received")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return _dumps(value)
    return value


def _csv(columns: tuple[str, ...],
         doc_of: Callable[[Row], dict[str, Any]]) -> Callable[[Iterable[Row], TextIO], Summary]:
    def write(rows: Iterable[Row], out: TextIO) -> Summary:
        n = _Counter()
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            doc = doc_of(row)
            if _has_position(row):  # exactly 7 decimals, as stored
                doc["lat"], doc["lon"] = _e7(row["lat"]), _e7(row["lon"])
            writer.writerow([_cell(doc.get(c)) for c in columns])
            n.count(row)
        return n.summary()

    return write


def _geojson(doc_of: Callable[[Row], dict[str, Any]]
             ) -> Callable[[Iterable[Row], TextIO], Summary]:
    def write(rows: Iterable[Row], out: TextIO) -> Summary:
        n = _Counter()
        out.write('{"type":"FeatureCollection","features":[')
        for row in rows:
            if not _has_position(row):
                n.skipped += 1
                continue
            props = doc_of(row)
            lat, lon = props.pop("lat"), props.pop("lon")
            feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                       "properties": props}
            out.write(("\n" if not n.written else ",\n") + _dumps(feature))
            n.count(row)
        out.write("\n]}\n")
        return n.summary()

    return write


_GPX_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<gpx version="1.1" creator="fieldtrack" xmlns="http://www.topografix.com/GPX/1/1" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xsi:schemaLocation="http://www.topografix.com/GPX/1/1 '
    'http://www.topografix.com/GPX/1/1/gpx.xsd">\n'
)


def _gpx_positions(rows: Iterable[Row], out: TextIO) -> Summary:
    """One <trk> per device, its fixes in time order as one <trkseg>."""
    n = _Counter()
    out.write(_GPX_HEAD)
    device = None
    for row in rows:
        if row["device"] != device:
            if device is not None:
                out.write("</trkseg></trk>\n")
            device = row["device"]
            out.write("<trk><name>%s</name><trkseg>\n" % escape(device))
        # Child order is the schema's: ele, time, ..., fix, sat. The feeds' fix names
        # (none, 2d, 3d, dgps) are GPX's own.
        out.write('<trkpt lat="%s" lon="%s"><ele>%d</ele><time>%s</time><fix>%s</fix>'
                  "<sat>%d</sat></trkpt>\n" % (_e7(row["lat"]), _e7(row["lon"]), row["alt"],
                                               iso_ms(fix_ms(row)),
                                               FIX_NAMES.get(row["fix"], "none"), row["sats"]))
        n.count(row)
    if device is not None:
        out.write("</trkseg></trk>\n")
    out.write("</gpx>\n")
    return n.summary()


def _gpx_events(rows: Iterable[Row], out: TextIO) -> Summary:
    """A <wpt> per event that has a position: name the kind, desc the device."""
    n = _Counter()
    out.write(_GPX_HEAD)
    for row in rows:
        if not _has_position(row):
            n.skipped += 1
            continue
        doc = event_doc(row)
        data = doc["data"]
        cmt = "<cmt>%s</cmt>" % escape(_dumps(data)) if data else ""
        out.write("<wpt lat=%s lon=%s><time>%s</time><name>%s</name>%s<desc>%s</desc></wpt>\n"
                  % (quoteattr(_e7(row["lat"])), quoteattr(_e7(row["lon"])), doc["time"],
                     escape(str(row["kind"])), cmt, escape(row["device"])))
        n.count(row)
    out.write("</gpx>\n")
    return n.summary()


Writer = Callable[[Iterable[Row], TextIO], Summary]
WRITERS: dict[tuple[str, str], Writer] = {
    ("positions", "jsonl"): _jsonl(position_doc),
    ("positions", "csv"): _csv(POSITION_CSV, position_doc),
    ("positions", "geojson"): _geojson(position_doc),
    ("positions", "gpx"): _gpx_positions,
    ("events", "jsonl"): _jsonl(event_doc),
    ("events", "csv"): _csv(EVENT_CSV, event_doc),
    ("events", "geojson"): _geojson(event_doc),
    ("events", "gpx"): _gpx_events,
}
QUERIES: dict[str, Callable[[Store, Query], Iterator[Row]]] = {
    "positions": positions, "events": events,
}


def export(store: Store, kind: str, fmt: str, query: Query, out: TextIO) -> Summary:
    """Write the ``kind`` rows that match ``query`` to ``out`` as ``fmt``."""
    if (kind, fmt) not in WRITERS:
        raise ExportError("cannot export %s as %s: formats are %s" % (kind, fmt,
                                                                       ", ".join(FORMATS)))
    check_query(store, query)
    return WRITERS[kind, fmt](QUERIES[kind](store, query), out)
