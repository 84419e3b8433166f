"""``fieldtrack geofences``: check, install, list and try out a fences file.

A thin command line over ``fieldtrack.gateway.geofence``. The fences file is the one
the gateway reads (``[events] fences_file`` of ``--config``, else ``fences.geojson``);
``import`` checks a file completely before it replaces that one, in one rename, so a
running gateway (which reloads the file when it changes) never sees half a file.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import click

from fieldtrack.gateway.config import ConfigError, EventsConfig
from fieldtrack.gateway.config import load as load_config
from fieldtrack.gateway.errors import FenceError
from fieldtrack.gateway.fences.index import FenceIndex
from fieldtrack.gateway.fences.loader import load as load_fences
from fieldtrack.gateway.fences.model import KINDS, Fence
from fieldtrack.tools.errors import FieldtrackError

DEFAULT_FILE = EventsConfig().fences_file  # the gateway's default: the two agree
_CONFIG_META = "fieldtrack.geofences.config"


class GeofencesError(FieldtrackError):
    """A fences file, point or time that cannot be used."""


def _fences_path(ctx: click.Context, given: str | None) -> Path:
    """FILE if given, else the gateway's configured fences file, else fences.geojson."""
    if given is not None:
        return Path(given)
    config_path = ctx.meta.get(_CONFIG_META)
    if config_path is not None:
        try:
            configured = load_config(config_path).events.fences_file
        except ConfigError as exc:
            raise GeofencesError(str(exc)) from None
        if configured:
            return Path(configured)
    return Path(DEFAULT_FILE)


def _load(path: Path) -> FenceIndex:
    try:
        return load_fences(path)
    except FenceError as exc:
        raise GeofencesError(str(exc)) from None


@click.group("geofences")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="gateway.toml: its [events] fences_file is the fences file "
                   "(default: %s)." % DEFAULT_FILE)
@click.pass_context
def geofences(ctx: click.Context, config_path: str | None) -> None:
    """Geofences: sites, customers, depots, no-go areas, speed zones, work areas.

    A fences file is a GeoJSON FeatureCollection; see gateway/fences.example.geojson.
    """
    ctx.meta[_CONFIG_META] = config_path


@geofences.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--to", "dest", type=click.Path(dir_okay=False),
              help="Where to put it (default: the gateway's fences file).")
@click.pass_context
def import_(ctx: click.Context, file: str, dest: str | None) -> None:
    """Check FILE and make it the gateway's fences file."""
    index = _load(Path(file))
    target = _fences_path(ctx, dest)
    counts = {kind: sum(1 for f in index.fences if f.kind == kind) for kind in KINDS}
    click.echo("%s: %d fences" % (file, len(index)))
    for kind, n in counts.items():
        if n:
            click.echo("  %-11s %d" % (kind, n))
    source = Path(file).resolve()
    if target.exists() and target.resolve() == source:
        click.echo("%s is already the fences file" % target)
        return
    _replace(target, source.read_bytes())
    click.echo("copied to %s (a running gateway reloads it within seconds)" % target)


def _replace(target: Path, data: bytes) -> None:
    """Write beside the target, then rename over it: readers see old or new, never half."""
    folder = target.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=".%s." % target.name, dir=folder)
    except OSError as exc:
        raise GeofencesError("%s: cannot write there: %s" % (target, exc.strerror)) from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        os.unlink(tmp)
        raise GeofencesError("%s: cannot write it: %s" % (target, exc.strerror)) from None


@geofences.command("list")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.pass_context
def list_(ctx: click.Context, file: str | None) -> None:
    """Show every fence of FILE (default: the gateway's fences file)."""
    index = _load(_fences_path(ctx, file))
    rows = [("id", "name", "kind", "speed limit", "groups", "area m²")]
    for f in index.fences:
        limit = "%d km/h" % f.speed_limit_kmh if f.speed_limit_kmh is not None else "-"
        groups = ",".join(sorted(f.groups)) or "all"
        rows.append((f.id, f.name, f.kind, limit, groups, "%.0f" % f.geometry.area))
    _table(rows, right=(5,))


def _table(rows: Sequence[Sequence[str]], right: tuple[int, ...] = ()) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.rjust(w) if i in right else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        click.echo("  ".join(cells).rstrip())


# Negative coordinates (-33.86) must not be taken for options.
@geofences.command("test", context_settings={"ignore_unknown_options": True})
@click.argument("lat", type=float)
@click.argument("lon", type=float)
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--group", help="The device group (default: ignore fences' groups).")
@click.option("--time", "when", metavar="ISO",
              help="When, for active hours, e.g. 2026-01-05T09:00+01:00 (default: now; "
                   "without an offset: UTC).")
@click.option("--within", default=1000.0, show_default=True, metavar="METRES",
              help="Show fences whose boundary is this close.")
@click.pass_context
def test(ctx: click.Context, lat: float, lon: float, file: str | None, group: str | None,
         when: str | None, within: float) -> None:
    """Which fences hold the point LAT LON, and how far it is from each boundary nearby.

    Distances are signed: positive inside the fence, negative outside it.
    """
    if not -90 <= lat <= 90:
        raise GeofencesError("LAT %s is not a latitude (-90..90); did you swap LAT and LON?"
                             % lat)
    if not -180 <= lon <= 180:
        raise GeofencesError("LON %s is not a longitude (-180..180)" % lon)
    moment = _moment(when)
    index = _load(_fences_path(ctx, file))
    t = int(moment.timestamp())
    rows = [("fence", "kind", "distance m", "")]
    holding = []
    nearby = sorted(((f.signed_distance(lat, lon), f) for f in index.fences),
                    key=lambda pair: -pair[0])
    for d, f in nearby:
        if d < -within:
            continue
        why_not = _not_applying(f, group, t)
        if d >= 0 and not why_not:
            holding.append(f.id)
        state = "inside" if d >= 0 else "outside"
        rows.append((f.id, f.kind, "%+.1f" % d, ", ".join([state, *why_not])))
    click.echo("%.7f, %.7f at %s%s" % (lat, lon, moment.isoformat(),
                                        ", group %s" % group if group else ""))
    click.echo("inside: %s" % (", ".join(holding) or "none"))
    if len(rows) > 1:
        _table(rows, right=(2,))
    else:
        click.echo("no fence boundary within %.0f m" % within)


def _moment(when: str | None) -> datetime:
    if when is None:
        return datetime.fromtimestamp(int(time.time()), UTC)
    try:
        moment = datetime.fromisoformat(when)
    except ValueError:
        raise GeofencesError("--time: %r is not an ISO 8601 time like 2026-01-05T09:00+01:00"
                             % when) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _not_applying(f: Fence, group: str | None, t: int) -> list[str]:
    out = []
    if group is not None and f.groups and group not in f.groups:
        out.append("not for group %s (only %s)" % (group, ", ".join(sorted(f.groups))))
    if f.hours is not None and not f.hours.active(t):
        out.append("outside its active hours")
    return out
