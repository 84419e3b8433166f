"""``fieldtrack report``: a day per device, as a terminal table, CSV or an HTML page with a map.

A thin command line over ``fieldtrack.tools.report.reader`` (the rows),
``fieldtrack.tools.report.days`` (the figures) and ``fieldtrack.tools.report.map_svg`` (the map).
The three renderings show the same tables (``tables``): a summary row per device, then
trips, stops, idling, visits, geofence events, overspeed and attendance, one row each,
with a device column.

CSV layout: one file, one section per table, sections separated by an empty line.
Each section starts with its header row, whose first cell is ``table``; every data row
starts with its table's name (``summary``, ``trip``, ``stop``, ``idle``, ``visit``,
``geofence``, ``overspeed``, ``attendance``), so one table is a filter on the first
column. Every section is written, empty ones as a bare header, so the layout never
changes. Times are ISO 8601 with the zone's offset, durations seconds, distances
metres, coordinates degrees (7 decimals), booleans true/false.

A day without data is not an error: the report says so (exit code 0), and stderr says
where the store's data is, in case the day or the zone was not the one meant.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Any

import click

from fieldtrack.gateway.errors import FenceError
from fieldtrack.gateway.fences.loader import load as load_fences
from fieldtrack.gateway.fences.model import Fence
from fieldtrack.gateway.store.sqlite import Store, StoreError
from fieldtrack.tools.errors import FieldtrackError
from fieldtrack.tools.export.command import STORE_ENV
from fieldtrack.tools.report.days import build
from fieldtrack.tools.report.map_svg import device_colours, render_svg
from fieldtrack.tools.report.model import DEFAULT_TZ, Day, Report, ReportError, parse_day
from fieldtrack.tools.report.reader import data_range, read_day

FORMATS = ("table", "csv", "html")
SUFFIXES = {".csv": "csv", ".html": "html", ".htm": "html", ".txt": "table"}


class ReportCommandError(FieldtrackError):
    """A report that cannot be made: bad day, zone, device, fences file, store or output."""


# --- what is shown: the same tables in every format ---------------------------------


@dataclass(frozen=True)
class Column:
    key: str  # the CSV header
    title: str  # the table's and the page's header
    kind: str  # text, int, float, km, time, duration, coord or bool


@dataclass(frozen=True)
class Table:
    name: str  # the first cell of its CSV rows
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]


def _cols(*spec: tuple[str, str, str]) -> tuple[Column, ...]:
    return (Column("device", "device", "text"), *(Column(*s) for s in spec))


def tables(report: Report) -> list[Table]:
    """The report's tables, summary first; detail rows in device, then time order."""
    ds = report.devices
    return [
        Table("summary", "Summary", _cols(
            ("name", "name", "text"), ("distance_m", "km", "km"),
            ("distance_from", "from", "text"), ("driving_s", "driving", "duration"),
            ("trips", "trips", "int"), ("stops", "stops", "int"),
            ("stop_s", "stopped", "duration"), ("idle_s", "idle", "duration"),
            ("visits", "visits", "int"), ("geofence_events", "fence events", "int"),
            ("overspeeds", "overspeed", "int"), ("max_kmh", "max km/h", "int"),
            ("checks_accepted", "checks ok", "int"), ("checks_rejected", "rejected", "int"),
            ("first_fix", "first fix", "time"), ("last_fix", "last fix", "time")),
            tuple((d.device, d.name, d.distance_m, d.distance_from, d.driving_s, len(d.trips),
                   len(d.stops), d.stop_s, d.idle_s, len(d.visits), len(d.fence_events),
                   len(d.overspeeds), d.max_kmh, sum(c.accepted for c in d.checks),
                   sum(not c.accepted for c in d.checks), d.first_fix, d.last_fix)
                  for d in ds)),
        Table("trip", "Trips", _cols(
            ("start", "start", "time"), ("end", "end", "time"),
            ("duration_s", "duration", "duration"), ("distance_m", "km", "km"),
            ("max_kmh", "max km/h", "int"), ("avg_kmh", "avg km/h", "float")),
            tuple((d.device, t.start, t.end, t.duration_s, t.distance_m, t.max_kmh, t.avg_kmh)
                  for d in ds for t in d.trips)),
        Table("stop", "Stops", _cols(
            ("number", "#", "int"), ("since", "since", "time"), ("until", "until", "time"),
            ("duration_s", "duration", "duration"), ("lat", "lat", "coord"),
            ("lon", "lon", "coord")),
            tuple((d.device, n, s.since, s.until, s.seconds, s.lat, s.lon)
                  for d in ds for n, s in enumerate(d.stops, 1))),
        Table("idle", "Idling", _cols(
            ("since", "since", "time"), ("until", "until", "time"),
            ("duration_s", "duration", "duration"), ("lat", "lat", "coord"),
            ("lon", "lon", "coord")),
            tuple((d.device, s.since, s.until, s.seconds, s.lat, s.lon)
                  for d in ds for s in d.idles)),
        Table("visit", "Visits", _cols(
            ("site", "site", "text"), ("name", "name", "text"), ("arrive", "arrive", "time"),
            ("leave", "leave", "time"), ("duration_s", "duration", "duration")),
            tuple((d.device, v.site, v.name, v.arrive, v.leave, v.duration_s)
                  for d in ds for v in d.visits)),
        Table("geofence", "Geofence events", _cols(
            ("time", "time", "time"), ("event", "event", "text"), ("fence", "fence", "text"),
            ("name", "name", "text"), ("kind", "kind", "text")),
            tuple((d.device, e.t, e.event, e.fence, e.name, e.kind)
                  for d in ds for e in d.fence_events)),
        Table("overspeed", "Overspeed", _cols(
            ("time", "time", "time"), ("duration_s", "duration", "duration"),
            ("limit_kmh", "limit km/h", "int"), ("max_kmh", "max km/h", "int"),
            ("lat", "lat", "coord"), ("lon", "lon", "coord")),
            tuple((d.device, o.t, o.seconds, o.limit_kmh, o.max_kmh, o.lat, o.lon)
                  for d in ds for o in d.overspeeds)),
        Table("attendance", "Attendance", _cols(
            ("time", "time", "time"), ("check", "check", "text"), ("site", "site", "text"),
            ("accepted", "accepted", "bool"), ("reason", "reason", "text"),
            ("distance_m", "inside m", "float")),
            tuple((d.device, c.t, c.kind, c.site, c.accepted, c.reason, c.distance_m)
                  for d in ds for c in d.checks)),
    ]


NUMERIC = ("int", "float", "km", "duration", "coord")


def shown(kind: str, value: Any, day: Day) -> str:
    """A value as the table and the page show it: local times, h:mm:ss, km."""
    if value is None or value == "":
        return "-"
    if kind == "time":
        local = day.local(value)
        extra = (local.date() - day.date).days
        return local.strftime("%H:%M:%S") + (" %+dd" % extra if extra else "")
    if kind == "duration":
        return "%d:%02d:%02d" % (value // 3600, value // 60 % 60, value % 60)
    if kind == "km":
        return "%.2f" % (value / 1000)
    if kind == "float":
        return "%.1f" % value
    if kind == "coord":
        return "%.5f" % value
    if kind == "bool":
        return "yes" if value else "no"
    return str(value)


def raw(kind: str, value: Any, day: Day) -> str:
    """A value as CSV holds it: exact, with units in the header."""
    if value is None:
        return ""
    if kind == "time":
        return day.local(value).isoformat()
    if kind == "coord":
        return "%.7f" % value
    if kind == "bool":
        return "true" if value else "false"
    if kind == "float":
        return "%.1f" % value
    return str(value)


def _when(report: Report) -> str:
    day = report.day
    return "%s (%s)" % (day.date.strftime("%A %Y-%m-%d"), day.tz.key)


def _nothing(report: Report, devices: tuple[str, ...]) -> str:
    who = " for %s" % ", ".join(devices) if devices else ""
    return "No activity on %s%s: no positions or events that day." % (_when(report), who)


# --- renderings ---------------------------------------------------------------------


def render_table(report: Report, devices: tuple[str, ...] = ()) -> str:
    """Aligned columns for a terminal: a title line, then each table (or "none")."""
    lines = ["fieldtrack day report: %s" % _when(report), ""]
    if report.empty:
        return "\n".join(lines + [_nothing(report, devices), ""])
    for table in tables(report):
        lines.append(table.title)
        if not table.rows:
            lines += ["  none", ""]
            continue
        cells = [[c.title for c in table.columns]] + [
            [shown(c.kind, v, report.day) for c, v in zip(table.columns, row, strict=True)]
            for row in table.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(table.columns))]
        for n, row in enumerate(cells):
            lines.append("  " + "  ".join(
                cell.rjust(w) if c.kind in NUMERIC else cell.ljust(w)
                for cell, w, c in zip(row, widths, table.columns, strict=True)).rstrip())
            if n == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        lines.append("")
    if any(d.distance_from == "positions" for d in report.devices):
        lines += ["from positions: no trip that day, so distance and driving time are "
                  "summed from the fixes", ""]
    return "\n".join(lines)


def render_csv(report: Report) -> str:
    """Sections as described in this module's docstring."""
    out = io.StringIO()
    writer = csv.writer(out)
    for n, table in enumerate(tables(report)):
        if n:
            out.write("\r\n")  # the csv module's own line end
        writer.writerow(["table", *(c.key for c in table.columns)])
        for row in table.rows:
            writer.writerow([table.name, *(raw(c.kind, v, report.day)
                                           for c, v in zip(table.columns, row, strict=True))])
    return out.getvalue()


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; color: #222; margin: 24px; max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.meta, .none, .note { color: #666; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 4px 0; }
th, td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: left; white-space: nowrap; }
th { background: #f0eee8; font-weight: 600; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.no { color: #b71c1c; font-weight: 600; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
          margin-right: 6px; vertical-align: -1px; }
svg.map { max-width: 100%; height: auto; border: 1px solid #ccc; }
.empty { font-size: 16px; padding: 16px; background: #f6f6f6; border-radius: 4px; }
"""


def render_html(report: Report, devices: tuple[str, ...] = ()) -> str:
    """One self-contained page: inline CSS and SVG, nothing loaded from anywhere."""
    day = report.day
    start, end = day.local(day.start), day.local(day.end)
    head = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            'style-src \'unsafe-inline\'">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            "<title>fieldtrack day report %s</title>\n<style>%s</style></head>\n<body>\n"
            % (day.date.isoformat(), _CSS))
    body = ["<h1>Day report: %s</h1>" % escape(_when(report)),
            '<p class="meta">%s to %s, %d device%s</p>'
            % (_stamp(start), _stamp(end), len(report.devices),
               "" if len(report.devices) == 1 else "s")]
    if report.empty:
        body.append('<p class="empty" id="no-activity">%s</p>' % escape(_nothing(report,
                                                                               devices)))
        return head + "\n".join(body) + "\n</body></html>\n"
    colours = device_colours([d.device for d in report.devices])
    all_tables = tables(report)
    body.append(_html_table(all_tables[0], report.day, colours))
    svg = render_svg(report)
    if svg:
        body.append('<section id="map"><h2>Map</h2>\n%s\n<p class="note">North is up; grid '
                    "squares are as long as the scale bar. Numbered circles are stops, "
                    "triangles overspeed, open circles where a track begins.</p></section>"
                    % svg)
    body += [_html_table(t, report.day, colours) for t in all_tables[1:]]
    if any(d.distance_from == "positions" for d in report.devices):
        body.append('<p class="note">from positions: no trip that day, so distance and '
                    "driving time are summed from the fixes.</p>")
    return head + "\n".join(body) + "\n</body></html>\n"


def _stamp(local: datetime) -> str:
    return local.strftime("%Y-%m-%d %H:%M %Z")


def _html_table(table: Table, day: Day, colours: dict[str, str]) -> str:
    out = ['<section id="%s"><h2>%s</h2>' % (table.name, escape(table.title))]
    if not table.rows:
        out.append('<p class="none">none</p></section>')
        return "\n".join(out)
    out.append('<div class="scroll"><table id="table-%s"><thead><tr>%s</tr></thead><tbody>' % (
        table.name, "".join('<th class="num">%s</th>' % escape(c.title) if c.kind in NUMERIC
                            else "<th>%s</th>" % escape(c.title) for c in table.columns)))
    for row in table.rows:
        cells = []
        for c, v in zip(table.columns, row, strict=True):
            text = escape(shown(c.kind, v, day))
            if c.key == "device":
                text = '<span class="swatch" style="background:%s"></span>%s' % (
                    colours.get(v, "#999"), text)
            cls = "num" if c.kind in NUMERIC else "no" if c.kind == "bool" and not v else ""
            cells.append('<td class="%s">%s</td>' % (cls, text) if cls else "<td>%s</td>" % text)
        out.append("<tr>%s</tr>" % "".join(cells))
    out.append("</tbody></table></div></section>")
    return "\n".join(out)


# --- the command --------------------------------------------------------------------


@click.command("report")
@click.option("--store", "store_path", default="fieldtrack.db", show_default=True,
              envvar=STORE_ENV, type=click.Path(dir_okay=False),
              help="The gateway's store (also $%s)." % STORE_ENV)
@click.option("--day", required=True, metavar="DATE",
              help="The local day: YYYY-MM-DD, today or yesterday.")
@click.option("--device", "devices", multiple=True, metavar="ID",
              help="Only this device (repeat for several; default: all with data that day).")
@click.option("--tz", "tz_name", default=DEFAULT_TZ, show_default=True, metavar="ZONE",
              help="Time zone of the day and of the times shown (IANA, e.g. Europe/Berlin).")
@click.option("--fences", "fences_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="GeoJSON fences file: fence names, and the fences drawn on the map.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Default: from the --output suffix (.csv .html), else table.")
@click.option("-o", "--output", default="-", type=click.Path(dir_okay=False),
              help="Write to FILE instead of stdout.")
def report(store_path: str, day: str, devices: tuple[str, ...], tz_name: str,
           fences_path: str | None, fmt: str | None, output: str) -> None:
    """A day per device: distance, driving, stops, idling, visits, fences, speeding,
    attendance; as a table, CSV, or an HTML page with a map (drawn offline)."""
    if fmt is None:
        fmt = SUFFIXES.get(Path(output).suffix.lower(), "table") if output != "-" else "table"
    devices = tuple(dict.fromkeys(devices))
    try:
        the_day = parse_day(day, tz_name)
    except ReportError as exc:
        raise ReportCommandError(str(exc)) from None
    fences = _fences(fences_path)
    if not Path(store_path).exists():
        raise ReportCommandError("--store: %s: no such store; pass --store PATH or set %s"
                                 % (store_path, STORE_ENV))
    try:
        store = Store(store_path)
    except StoreError as exc:
        raise ReportCommandError(str(exc)) from None
    try:
        rows = read_day(store, the_day, devices)
        span = data_range(store)
    except ReportError as exc:
        raise ReportCommandError(str(exc)) from None
    finally:
        store.close()
    result = build(the_day, rows, fences, now=int(time.time()))
    renderers: dict[str, Callable[[], str]] = {
        "table": lambda: render_table(result, devices),
        "csv": lambda: render_csv(result),
        "html": lambda: render_html(result, devices),
    }
    _write(renderers[fmt](), output)
    where = "stdout" if output == "-" else output
    if result.empty:
        hint = ("the store has no positions" if span is None else
                "the store's positions run from %s to %s" % (
                    _stamp(the_day.local(span[0])), _stamp(the_day.local(span[1]))))
        click.echo("%s (%s)" % (_nothing(result, devices), hint), err=True)
    else:
        n = len(result.devices)
        click.echo("reported %d device%s for %s as %s to %s" % (
            n, "" if n == 1 else "s", _when(result), fmt, where), err=True)


def _fences(path: str | None) -> list[Fence]:
    if path is None:
        return []
    try:
        return load_fences(path).fences
    except FenceError as exc:
        raise ReportCommandError("--fences: %s" % exc) from None


def _write(text: str, output: str) -> None:
    if output == "-":
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:
            sys.stdout.write(text)
        else:  # UTF-8 whatever the terminal's locale says
            sys.stdout.flush()
            buffer.write(text.encode("utf-8"))
            buffer.flush()
        return
    path = Path(output)
    partial = path.with_name(path.name + ".partial")
    try:
        partial.write_text(text, encoding="utf-8", newline="")
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ReportCommandError("--output: %s: cannot write (%s)"
                                 % (output, exc.strerror)) from None
