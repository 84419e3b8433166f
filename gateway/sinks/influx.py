"""The InfluxDB sink: positions and events as line protocol, one synchronous write per batch.

The outbox hands over rows in store order and moves its cursor only when ``deliver``
returns, so every write here is synchronous and every failure raises: the client's
batching mode would drop data after its own retries and only tell a callback.
A point is keyed by measurement, tags and timestamp, and the timestamp is the fix time,
so writing a row again overwrites the same point instead of adding one. Event points are
written in nanoseconds: below the event's millisecond sit six digits of its ``seq``, so
two events of one kind in one second (or millisecond) stay two points, and a corrected
or retracted event (the same key, hence seq) overwrites its own point.
The schema is documented in INFLUX.md.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import TimeoutError as HttpTimeoutError

from fieldtrack.gateway.config import InfluxConfig

POSITION = "position"
EVENT = "event"
MAX_DETAIL = 200  # characters of a server's error body quoted in an exception

# Backslash first: it escapes the others. Newlines cannot be represented in a tag value;
# they become a literal backslash-n rather than ending the line.
_TAG_ESCAPES = str.maketrans(
    {"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
)
_HINTS = {
    400: "the server refused the data",
    401: "check [influx] token",
    403: "check that [influx] token may write to the bucket",
    404: "check [influx] url, org and bucket",
    413: "lower [influx] batch_size",
}


class Row(Protocol):
    """A store row by column name: an ``sqlite3.Row`` (or a dict, in tests)."""

    def __getitem__(self, key: str, /) -> Any: ...


class InfluxWriteError(Exception):
    """A write did not reach InfluxDB; the outbox keeps the rows and retries.

    The message names the server and the reason, never the token.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# --- line protocol (pure) ------------------------------------------------------


def escape_tag(value: str) -> str:
    """A tag value (or key) as line protocol: commas, equals signs, spaces, backslashes."""
    return value.translate(_TAG_ESCAPES)


def _getter(rows: Sequence[Row], names: tuple[str, ...]) -> Callable[[Row], tuple[Any, ...]]:
    # sqlite3.Row looks a name up by a linear, case-insensitive scan; with 17 columns per
    # row that costs more than formatting the line, so resolve the names to indexes once.
    first = rows[0]
    if isinstance(first, sqlite3.Row):
        keys = first.keys()
        return itemgetter(*[keys.index(n) for n in names])
    return itemgetter(*names)


def _tags(*pairs: tuple[str, str]) -> str:
    # Tags sorted by key (device < group < kind), as InfluxDB prefers; an empty value
    # cannot be written, so that tag is left out.
    return "".join(",%s=%s" % (k, escape_tag(v)) for k, v in pairs if v)


_POSITION_NAMES = (
    "device", "grp", "lat", "lon", "spd", "hdg", "alt", "acc", "sats", "fix", "boot", "seq",
    "ign", "buf", "mock", "t", "ms",
)  # fmt: skip
# Coordinates: lat / 1e7 is the double nearest to the 7-decimal value, far closer than
# half a unit in the 7th decimal, so "%.7f" prints exactly the stored integer's digits.
_POSITION_LINE = (
    "%s lat=%.7f,lon=%.7f,speed_kmh=%di,heading=%di,alt_m=%di,accuracy_m=%di,sats=%di,"
    "fix=%di,boot=%di,seq=%di,ignition=%s,buffered=%s,mock=%s %d"
)


def position_lines(rows: Sequence[Row]) -> list[str]:
    """Positions as ``position`` points, timestamped with the fix time in milliseconds."""
    if not rows:
        return []
    get = _getter(rows, _POSITION_NAMES)
    prefixes: dict[tuple[str, str], str] = {}
    lines = []
    for r in rows:
        (device, group, lat, lon, spd, hdg, alt, acc, sats, fix, boot, seq,
         ign, buf, mock, t, ms) = get(r)  # fmt: skip
        prefix = prefixes.get((device, group))
        if prefix is None:
            prefix = POSITION + _tags(("device", device), ("group", group))
            prefixes[(device, group)] = prefix
        lines.append(_POSITION_LINE % (
            prefix, lat / 1e7, lon / 1e7, spd, hdg, alt, acc, sats, fix, boot, seq,
            "true" if ign else "false", "true" if buf else "false", "true" if mock else "false",
            t * 1000 + ms,
        ))  # fmt: skip
    return lines


_EVENT_NAMES = ("device", "grp", "kind", "lat", "lon", "t", "ms", "seq", "revision",
                "retracted")
EVENT_SPREAD = 1_000_000  # nanoseconds in a millisecond: room for the seq's last digits


def event_time_ns(t: int, ms: int, seq: int) -> int:
    """An event point's timestamp: its time to the millisecond, then its seq's last digits."""
    return (t * 1000 + ms) * EVENT_SPREAD + seq % EVENT_SPREAD


def event_lines(rows: Sequence[Row]) -> list[str]:
    """Events as ``event`` points at the event time, in nanoseconds (``event_time_ns``).

    ``count`` is 1, or 0 for a retracted event (its point is overwritten, so sums stay
    right); ``revision`` and ``retracted`` say which version the point is.
    """
    if not rows:
        return []
    get = _getter(rows, _EVENT_NAMES)
    lines = []
    for r in rows:
        device, group, kind, lat, lon, t, ms, seq, revision, retracted = get(r)
        fields = "count=%di" % (0 if retracted else 1)
        if lat is not None and lon is not None:
            fields += ",lat=%.7f,lon=%.7f" % (lat / 1e7, lon / 1e7)
        fields += ",revision=%di,retracted=%s" % (revision, "true" if retracted else "false")
        tags = _tags(("device", device), ("group", group), ("kind", kind))
        lines.append("%s%s %s %d" % (EVENT, tags, fields, event_time_ns(t, ms, seq)))
    return lines


# --- the sink (I/O) -------------------------------------------------------------


class InfluxSink:
    """Writes rows to InfluxDB's /api/v2/write (InfluxDB 2.x, VictoriaMetrics, ...)."""

    name = "influx"

    def __init__(self, cfg: InfluxConfig) -> None:
        self.batch_size = cfg.batch_size
        self.retry_min_s = cfg.retry_min_s
        self.retry_max_s = cfg.retry_max_s
        self.bucket = cfg.bucket
        self.org = cfg.org
        self.where = _public_url(cfg.url)
        self.timeout_s = cfg.timeout_s
        self._token = cfg.token
        # Constructing the client does not connect: a server that is down shows up as
        # failed deliveries, not as a gateway that cannot start.
        self.client = InfluxDBClient(
            url=cfg.url, token=cfg.token, org=cfg.org, timeout=int(cfg.timeout_s * 1000)
        )
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)

    def __repr__(self) -> str:
        return "InfluxSink(%s, org=%r, bucket=%r)" % (self.where, self.org, self.bucket)

    def deliver(self, positions: Sequence[Row], events: Sequence[Row]) -> None:
        """Write every row or raise ``InfluxWriteError``; nothing is buffered here."""
        # Two requests, as a request has one precision: positions in ms, events in ns.
        # A failure of either raises, and the outbox sends both again (idempotent).
        # The client declares its enum constants as plain strings.
        for lines, precision in ((position_lines(positions), WritePrecision.MS),
                                 (event_lines(events), WritePrecision.NS)):
            if not lines:
                continue
            try:
                self.write_api.write(bucket=self.bucket, org=self.org, record="\n".join(lines),
                                     write_precision=cast(WritePrecision, precision))
            except Exception as exc:
                # Replaced, not chained: the client's exception carries HTTP details that
                # have no business in a log line.
                raise self._error(exc) from None

    def close(self) -> None:
        self.write_api.close()  # type: ignore[no-untyped-call]
        self.client.close()  # type: ignore[no-untyped-call]

    def _error(self, exc: Exception) -> InfluxWriteError:
        if isinstance(exc, ApiException):
            status = int(exc.status) if exc.status else None
            body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else ""
            detail = " ".join(body.split())[:MAX_DETAIL]
            message = "InfluxDB at %s answered HTTP %s %s" % (self.where, status, exc.reason or "")
            if detail:
                message += ": " + detail
            if status in _HINTS:
                message += " (%s)" % _HINTS[status]
            return InfluxWriteError(self._scrub(message), status)
        # NewConnectionError is a subclass of urllib3's TimeoutError: test it first.
        if isinstance(exc, NewConnectionError):
            reason = "cannot connect (%s)" % _root_cause(exc)
        elif isinstance(exc, HttpTimeoutError):
            reason = "no answer within %g s ([influx] timeout_s)" % self.timeout_s
        else:
            reason = "%s: %s" % (type(exc).__name__, exc)
        return InfluxWriteError(self._scrub("InfluxDB at %s: %s" % (self.where, reason)))

    def _scrub(self, message: str) -> str:
        if self._token:
            message = message.replace(self._token, "***")
        return message


def _public_url(url: str) -> str:
    """The URL without user information, for messages."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = "[%s]" % host
    netloc = host if port is None else "%s:%d" % (host, port)
    return "%s://%s%s" % (parts.scheme, netloc, parts.path)


def _root_cause(exc: BaseException) -> str:
    """The operating system's reason, e.g. "Connection refused"."""
    inner: BaseException | None = exc
    while inner is not None:
        if isinstance(inner, OSError) and inner.strerror:
            return inner.strerror
        inner = inner.__cause__ or inner.__context__
    text = str(exc)
    return text.split(": ", 1)[-1] if ": " in text else text
