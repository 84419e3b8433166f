"""``fieldtrack export positions|events``: stored data as JSON lines, CSV, GeoJSON or GPX.

A thin command line over ``fieldtrack.tools.export.writer``. The data goes to stdout or
``--output``; a file is written under a temporary name and renamed when complete, so a
failed export never leaves half a file. What was exported is told on stderr.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fieldtrack.gateway.store.sqlite import Store, StoreError
from fieldtrack.tools.errors import FieldtrackError
from fieldtrack.tools.export import writer as lib

STORE_ENV = "FIELDTRACK_STORE"


class ExportCommandError(FieldtrackError):
    """An export that cannot be made: bad option, time, device, store or output file."""


def _options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--store", "store_path", default="fieldtrack.db", show_default=True,
                     envvar=STORE_ENV, type=click.Path(dir_okay=False),
                     help="The gateway's store (also $%s)." % STORE_ENV),
        click.option("--device", "devices", multiple=True, metavar="ID",
                     help="Only this device (repeat for several)."),
        click.option("--since", metavar="T",
                     help="From T on (inclusive): ISO 8601 (no zone = UTC) or Unix seconds."),
        click.option("--until", metavar="T", help="Before T (exclusive); as --since."),
        click.option("--format", "fmt", type=click.Choice(lib.FORMATS),
                     help="Default: from the --output suffix (.jsonl .csv .geojson .gpx), "
                          "else jsonl."),
        click.option("-o", "--output", default="-", type=click.Path(dir_okay=False),
                     help="Write to FILE instead of stdout."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group("export")
def export() -> None:
    """Export stored positions or events as JSON lines, CSV, GeoJSON or GPX."""


@export.command("positions")
@_options
def positions(store_path: str, devices: tuple[str, ...], since: str | None,
              until: str | None, fmt: str | None, output: str) -> None:
    """Positions, per device in fix-time order (GPX: a track per device)."""
    _run("positions", store_path, devices, since, until, fmt, output)


@export.command("events")
@_options
def events(store_path: str, devices: tuple[str, ...], since: str | None,
           until: str | None, fmt: str | None, output: str) -> None:
    """Events, per device in time order (GeoJSON, GPX: those with a position)."""
    _run("events", store_path, devices, since, until, fmt, output)


def _run(kind: str, store_path: str, devices: tuple[str, ...], since: str | None,
         until: str | None, fmt: str | None, output: str) -> None:
    if fmt is None:
        fmt = lib.SUFFIXES.get(Path(output).suffix.lower(), "jsonl") if output != "-" else "jsonl"
    try:
        query = lib.Query(
            devices=tuple(dict.fromkeys(devices)),
            since_ms=None if since is None else lib.parse_time(since, "--since"),
            until_ms=None if until is None else lib.parse_time(until, "--until"),
        )
    except lib.ExportError as exc:
        raise ExportCommandError(str(exc)) from None
    if not Path(store_path).exists():
        raise ExportCommandError("%s: no such store; pass --store PATH or set %s"
                                 % (store_path, STORE_ENV))
    try:
        store = Store(store_path)
    except StoreError as exc:
        raise ExportCommandError(str(exc)) from None
    try:
        summary = _write(store, kind, fmt, query, output)
    except lib.ExportError as exc:
        raise ExportCommandError(str(exc)) from None
    finally:
        store.close()
    where = "stdout" if output == "-" else output
    click.echo("exported %s of %s as %s to %s" % (
        _count(summary.written, kind[:-1]), _count(summary.devices, "device"), fmt, where),
        err=True)
    if summary.skipped:
        click.echo("left out %s without a position (%s has no place for them)"
                   % (_count(summary.skipped, "event"), fmt), err=True)


def _count(n: int, noun: str) -> str:
    return "%d %s%s" % (n, noun, "" if n == 1 else "s")


def _write(store: Store, kind: str, fmt: str, query: lib.Query, output: str) -> lib.Summary:
    if output == "-":
        # UTF-8 and the formats' own line ends, whatever the terminal's locale says.
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:
            return lib.export(store, kind, fmt, query, sys.stdout)
        sys.stdout.flush()
        out = io.TextIOWrapper(buffer, encoding="utf-8", newline="")
        try:
            return lib.export(store, kind, fmt, query, out)
        finally:
            out.flush()
            out.detach()  # leave stdout open
    path = Path(output)
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "w", encoding="utf-8", newline="") as f:
            summary = lib.export(store, kind, fmt, query, f)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ExportCommandError("%s: cannot write (%s)" % (output, exc.strerror)) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return summary
