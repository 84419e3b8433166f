"""``fieldtrack devices``: register trackers, enable and disable them, rotate their keys,
show and repair their boot epochs.

A thin command line over ``fieldtrack.gateway.store.registry``. A new key goes to stdout, once,
as the only output there (so ``KEY=$(fieldtrack devices add van-12)`` works); what was
done and the warning to keep the key go to stderr. ``list`` never shows a key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import time
from pathlib import Path

import click

from fieldtrack.gateway.store import epochs as epochs_table
from fieldtrack.gateway.store import registry
from fieldtrack.gateway.store.registry import RegistryError
from fieldtrack.gateway.store.sqlite import Store, StoreError
from fieldtrack.tools.errors import FieldtrackError

STORE_ENV = "FIELDTRACK_STORE"
_STORE_META = "fieldtrack.devices.store"  # ctx.meta is shared by the group and its commands
KEY_WARNING = ("warning: the key is shown this once and cannot be read back: store it now "
               "(in the tracker's configuration or a password manager)")


class DevicesError(FieldtrackError):
    """A registry command that cannot be done: bad id, file or store."""


def _open(ctx: click.Context, create: bool) -> Store:
    path = str(ctx.meta[_STORE_META])
    if not create and not Path(path).exists():
        raise DevicesError("%s: no such store; pass --store PATH or set %s" % (path, STORE_ENV))
    try:
        store = Store(path)
    except StoreError as exc:
        raise DevicesError(str(exc)) from None
    ctx.call_on_close(store.close)
    return store


def _fail(store: Store, exc: RegistryError) -> DevicesError:
    return DevicesError("%s: %s" % (store.path, exc))


def _show_key(device_id: str, key: bytes) -> None:
    click.echo(key.hex())
    click.echo("%s: %s" % (device_id, KEY_WARNING), err=True)


@click.group("devices")
@click.option("--store", "store_path", default="fieldtrack.db", show_default=True,
              envvar=STORE_ENV, type=click.Path(dir_okay=False),
              help="The gateway's store (also $%s)." % STORE_ENV)
@click.pass_context
def devices(ctx: click.Context, store_path: str) -> None:
    """Register trackers, enable or disable them, rotate their keys.

    A running gateway picks up every change within seconds.
    """
    ctx.meta[_STORE_META] = store_path


@devices.command("add")
@click.argument("device_id")
@click.option("--group", default=registry.DEFAULT_GROUP, show_default=True,
              help="Device group (working hours and geofences apply per group).")
@click.option("--name", default="", help="A name for people, e.g. the van's plate.")
@click.option("--no-key", is_flag=True,
              help="Register without a key: the device may then send unsigned frames.")
@click.pass_context
def add(ctx: click.Context, device_id: str, group: str, name: str, no_key: bool) -> None:
    """Register DEVICE_ID and print its new key (hex) once."""
    store = _open(ctx, create=True)
    try:
        key = registry.add(store, device_id, group=group, name=name, with_key=not no_key)
    except RegistryError as exc:
        raise _fail(store, exc) from None
    click.echo("added %s (group %s) to %s" % (device_id, group, store.path), err=True)
    if key is None:
        click.echo("%s has no key: it may send unsigned frames; `fieldtrack devices "
                   "rotate-key %s` gives it one" % (device_id, device_id), err=True)
    else:
        _show_key(device_id, key)


@devices.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.pass_context
def list_(ctx: click.Context, fmt: str) -> None:
    """List registered devices (keys are never shown, only whether there is one)."""
    found = registry.list_devices(_open(ctx, create=False))
    rows = [{"id": d.id, "group": d.group, "name": d.name, "enabled": d.enabled,
             "has_key": d.key is not None} for d in found]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no devices registered", err=True)
        return
    table = [("ID", "GROUP", "ENABLED", "KEY", "NAME")] + [
        (r["id"], r["group"], "yes" if r["enabled"] else "no", "yes" if r["has_key"] else "no",
         r["name"]) for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(4)]
    for row in table:
        cells = [str(row[i]).ljust(widths[i]) for i in range(4)] + [str(row[4])]
        click.echo("  ".join(cells).rstrip())


def _set_enabled(ctx: click.Context, device_id: str, enabled: bool) -> None:
    store = _open(ctx, create=False)
    word = "enabled" if enabled else "disabled"
    try:
        changed = registry.set_enabled(store, device_id, enabled)
    except RegistryError as exc:
        raise _fail(store, exc) from None
    if changed:
        click.echo("%s %s" % (word, device_id), err=True)
    else:
        click.echo("%s was already %s" % (device_id, word), err=True)


@devices.command("disable")
@click.argument("device_id")
@click.pass_context
def disable(ctx: click.Context, device_id: str) -> None:
    """Reject DEVICE_ID's frames from now on (its key and data are kept)."""
    _set_enabled(ctx, device_id, False)


@devices.command("enable")
@click.argument("device_id")
@click.pass_context
def enable(ctx: click.Context, device_id: str) -> None:
    """Accept DEVICE_ID's frames again."""
    _set_enabled(ctx, device_id, True)


@devices.command("rotate-key")
@click.argument("device_id")
@click.pass_context
def rotate_key(ctx: click.Context, device_id: str) -> None:
    """Give DEVICE_ID a new key, print it once; the old key stops working."""
    store = _open(ctx, create=False)
    try:
        key = registry.rotate_key(store, device_id)
    except RegistryError as exc:
        raise _fail(store, exc) from None
    click.echo("new key for %s: frames signed with the old key are rejected from the "
               "gateway's next registry check" % device_id, err=True)
    _show_key(device_id, key)


@devices.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--generate-keys", is_flag=True,
              help="Generate a key for each device the file gives none (printed once).")
@click.pass_context
def import_(ctx: click.Context, file: str, generate_keys: bool) -> None:
    """Add the devices of a TOML or CSV FILE: all of them, or none if any row is bad.

    \b
    TOML: [[device]] tables; CSV: the header id,group,name,key,enabled.
    id is required; key is hex (optional); enabled is true or false (default true).
    Generated keys are printed as "<id> <key>" lines on stdout, once.
    """
    store = _open(ctx, create=True)
    try:
        result = registry.import_file(store, file, generate_keys=generate_keys)
    except RegistryError as exc:
        raise DevicesError(str(exc)) from None  # it names the file and its lines
    click.echo("imported %d device%s from %s into %s" % (
        len(result.added), "" if len(result.added) == 1 else "s", file, store.path), err=True)
    for device_id, key in result.keys.items():
        click.echo("%s %s" % (device_id, key.hex()))
    if result.keys:
        click.echo(KEY_WARNING, err=True)
    if result.keyless:
        click.echo("no key (unsigned frames accepted): %s; `fieldtrack devices rotate-key ID` "
                   "gives one" % ", ".join(result.keyless), err=True)


# --- boot epochs ------------------------------------------------------------------------


def _epochs_of(store: Store, device_id: str) -> epochs_table.EpochReport:
    found = epochs_table.report(store.db, device_id)
    if not found.known:
        close = difflib.get_close_matches(device_id, sorted(store.devices()), n=1)
        hint = " (did you mean %s?)" % close[0] if close else ""
        raise DevicesError("%s: no device %s is registered or has records%s; `fieldtrack "
                           "devices list` shows the registered ones"
                           % (store.path, device_id, hint))
    return found


def _when(ms: int | None, unit: int = 1000) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms // unit))


@devices.command("epochs")
@click.argument("device_id")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--boots", "max_boots", default=20, show_default=True,
              help="Show at most this many boots, the newest first.")
@click.pass_context
def epochs_(ctx: click.Context, device_id: str, fmt: str, max_boots: int) -> None:
    """Show DEVICE_ID's boots, records per boot, reference boot and sequence rejects.

    \b
    The reference boot is the newest boot of the device's current era: a new boot
    far behind it is rejected (boot_behind) until `reset-epochs`; key_reused rejects
    are frames whose keys were already stored with other content. Both keep the frame.
    """
    found = _epochs_of(_open(ctx, create=False), device_id)
    if fmt == "json":
        click.echo(json.dumps(dataclasses.asdict(found), indent=2))
        return
    if found.reference is None:
        click.echo("%s has sent nothing yet: its first boot will be taken as it comes"
                   % device_id)
        return
    click.echo("%s: reference boot: %d (since %s UTC)" % (device_id, found.reference,
                                                          _when(found.updated)))
    if found.reset_requested:
        click.echo("reset requested %s UTC: the next new boot the gateway sees becomes the "
                   "reference" % _when(found.reset_requested))
    table = [("BOOT", "POSITIONS", "EVENTS", "SEQS", "FIRST (UTC)", "LAST (UTC)")] + [
        (str(b.boot), str(b.positions), str(b.events), "%s..%s" % (b.first_seq, b.last_seq),
         _when(b.first_t, 1), _when(b.last_t, 1)) for b in found.boots[:max_boots]]
    click.echo("boots with records, newest first (%d in all):" % len(found.boots))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                   .rstrip())
    if not found.reject_counts:
        click.echo("sequence rejects: none")
        return
    click.echo("sequence rejects: " + ", ".join("%s: %d" % kv for kv in
                                                 sorted(found.reject_counts.items())))
    for r in found.rejects:
        click.echo("  %s  %s  %s" % (_when(r.received), r.reason, r.detail))


@devices.command("reset-epochs")
@click.argument("device_id")
@click.pass_context
def reset_epochs(ctx: click.Context, device_id: str) -> None:
    """Take DEVICE_ID's next new boot, whatever it is, as its new reference boot.

    For a device whose boot counter went back (its frames are rejected as
    boot_behind): the first frame of a boot without stored records sets the
    reference (late frames of stored boots are taken as always and leave the reset
    pending). Frames rejected before stay in the rejects table; a device that keeps
    unconfirmed records sends them again.
    """
    store = _open(ctx, create=False)
    found = _epochs_of(store, device_id)
    if not epochs_table.request_reset(store.db, device_id, int(time.time() * 1000)):
        click.echo("%s has sent nothing yet: its first boot will be taken anyway; nothing "
                   "to reset" % device_id, err=True)
        return
    behind = found.reject_counts.get("boot_behind", 0)
    click.echo("%s: its next new boot becomes its reference boot (now %s); a running gateway "
               "takes this within seconds" % (device_id, found.reference), err=True)
    if behind:
        click.echo("%d boot_behind reject%s stay in the rejects table; a device that keeps "
                   "unconfirmed records sends them again" % (behind, "" if behind == 1 else "s"),
                   err=True)
