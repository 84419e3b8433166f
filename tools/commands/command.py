"""``fieldtrack command``: send a command to a device, list commands, cancel one.

A thin command line over ``fieldtrack.gateway.store.commands``: it queues the command in
the gateway's store (its path from ``-c gateway.toml``, else the embedded default) and
the running gateway signs, sends and re-sends it until the device acknowledges it or it
expires. ``send`` prints the command's cid on stdout (``CID=$(fieldtrack command send
...)`` works); with ``--wait`` it then waits for the outcome and prints it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from fieldtrack.gateway.config import ConfigError
from fieldtrack.gateway.config import load as load_config
from fieldtrack.gateway.store import commands as queue
from fieldtrack.gateway.store.commands import CommandError, CommandRow
from fieldtrack.gateway.store.sqlite import Store, StoreError
from fieldtrack.tools.errors import FieldtrackError

_CONFIG_META = "fieldtrack.command.config"
# The words of the command line for the protocol's kinds (SPEC section 11).
ACTIONS = {"locate": "locate", "status": "status", "reboot": "reboot",
           "config": "set_config", "update": "fw_update"}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d)?")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
WAIT_DEFAULT_S = 60.0
DONE = ("acked", "expired", "cancelled")


class CommandsError(FieldtrackError):
    """A command that cannot be queued, found or cancelled."""


class NotDone(CommandsError):
    """``--wait``: the device refused the command, or no answer came in time."""

    exit_code = 1


def parse_ttl(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` -> seconds; ``0`` means no expiry."""
    m = _DURATION.fullmatch(text.strip().lower())
    if m is None:
        raise CommandsError("--ttl %r: give a duration such as 90s, 10m or 2h (at most 24h; "
                            "0: no expiry, for locate and status only)" % text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def _open(ctx: click.Context) -> Store:
    config_path = ctx.meta.get(_CONFIG_META)
    try:
        path = load_config(config_path).store.path
    except ConfigError as exc:
        raise CommandsError(str(exc)) from None
    if not Path(path).exists():
        raise CommandsError("%s: no such store; pass -c gateway.toml (its [store] path) or run "
                            "where the gateway runs" % path)
    try:
        store = Store(path)
    except StoreError as exc:
        raise CommandsError(str(exc)) from None
    ctx.call_on_close(store.close)
    return store


def _when(ms_or_s: int | None, scale: int = 1000) -> str:
    if not ms_or_s:
        return "-"
    return datetime.fromtimestamp(ms_or_s / scale, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group("command")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="gateway.toml: its [store] path is the store (default: the embedded "
                   "defaults' fieldtrack.db).")
@click.pass_context
def command(ctx: click.Context, config_path: str | None) -> None:
    """Commands to devices: locate, status, reboot, config, firmware update.

    Queued in the gateway's store; the gateway signs each with the device's key, sends
    it and re-sends it until the device acknowledges it or it expires.
    """
    ctx.meta[_CONFIG_META] = config_path


@command.command("send")
@click.argument("device_id")
@click.argument("action")
@click.argument("args", nargs=-1)
@click.option("--sha256", help="update: the firmware file's SHA-256 (64 hex digits).")
@click.option("--version", "fw_version", help="update: the firmware's version.")
@click.option("--ttl", default=None, metavar="DURATION",
              help="How long the command stays valid: 90s, 10m, 2h, at most 24h "
                   "(default 1h; 0: no expiry, locate and status only).")
@click.option("--wait", "wait_s", type=float, is_flag=False, flag_value=WAIT_DEFAULT_S,
              default=None, metavar="[SECONDS]",
              help="Wait for the device's answer (default %d s) and print it." % WAIT_DEFAULT_S)
@click.pass_context
def send(ctx: click.Context, device_id: str, action: str, args: tuple[str, ...],
         sha256: str | None, fw_version: str | None, ttl: str | None,
         wait_s: float | None) -> None:
    """Queue ACTION for DEVICE_ID and print its cid.

    \b
    ACTION is one of:
      locate                  report a position now
      status                  send a status report now
      reboot                  restart
      config KEY=VALUE...     change settings, e.g. moving.min_period_s=10
      update URL --sha256 HEX install the firmware at URL
    """
    kind, kind_args = _kind_args(action, args, sha256, fw_version)
    store = _open(ctx)
    try:
        row = queue.queue_command(store.db, device_id, kind, kind_args,
                                  ttl_s=None if ttl is None else parse_ttl(ttl), source="cli")
    except CommandError as exc:
        raise CommandsError(str(exc)) from None
    click.echo(str(row.cid))
    expires = "expires %s" % _when(row.exp, 1) if row.exp else "no expiry"
    click.echo("%s: %s queued as cid %d (%s); a running gateway sends it within a second"
               % (device_id, kind, row.cid, expires), err=True)
    if wait_s is not None:
        _wait(store, row, wait_s)


def _kind_args(action: str, args: tuple[str, ...], sha256: str | None,
               fw_version: str | None) -> tuple[str, dict[str, object]]:
    kind = ACTIONS.get(action, action)
    if kind not in queue.kinds():
        raise CommandsError("%r is not an action; give one of %s" % (action, ", ".join(ACTIONS)))
    if (sha256 or fw_version) and kind != "fw_update":
        raise CommandsError("--sha256 and --version belong to update, not %s" % action)
    try:
        if kind == "set_config":
            return kind, {"config": queue.config_of(args)}
        if kind == "fw_update":
            if len(args) != 1:
                raise CommandsError("update takes one URL, e.g. update https://fw.example/"
                                    "tracker-1.4.bin --sha256 HEX")
            if not sha256:
                raise CommandsError("update needs --sha256 HEX (sha256sum FILE prints it): "
                                    "the device checks the download against it")
            fw: dict[str, object] = {"url": args[0], "sha256": queue.sha256_of(sha256).hex()}
            if fw_version:
                fw["version"] = fw_version
            return kind, fw
    except CommandError as exc:
        raise CommandsError(str(exc)) from None
    if args:
        raise CommandsError("%s takes no arguments (got %s)" % (action, " ".join(args)))
    return kind, {}


def _wait(store: Store, row: CommandRow, wait_s: float) -> None:
    """Print the outcome once there is one; ``NotDone`` unless the device did it."""
    deadline = time.monotonic() + wait_s
    current: CommandRow | None = row
    while True:
        current = queue.get_command(store.db, row.device_id, row.cid)
        if current is None or current.state in DONE or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if current is None or current.state not in DONE:
        state = current.state if current else "gone"
        raise NotDone("%s: no answer to cid %d within %g s (state %s, sent %d times); the "
                      "gateway keeps sending it until it expires: `fieldtrack command list "
                      "%s` shows it later" % (row.device_id, row.cid, wait_s, state,
                                              current.tries if current else 0, row.device_id))
    if current.result != "ok":
        raise NotDone("%s: cid %d %s" % (row.device_id, row.cid, _outcome(current)))
    click.echo(_outcome(current))


def _outcome(row: CommandRow) -> str:
    if row.state == "acked":
        text = str(row.result)
    else:
        text = row.state
    return "%s: %s" % (text, row.reason) if row.reason else text


@command.command("list")
@click.argument("device_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per command.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_context
def list_(ctx: click.Context, device_id: str | None, as_json: bool, limit: int) -> None:
    """The newest commands first, of DEVICE_ID or of every device."""
    store = _open(ctx)
    rows = queue.list_commands(store.db, device_id, limit=limit)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=1))
        return
    if not rows:
        click.echo("no commands" + (" for %s" % device_id if device_id else ""), err=True)
        return
    click.echo("%-16s %6s %-10s %-9s %5s  %-20s  %-20s  %s"
               % ("device", "cid", "kind", "state", "tries", "created", "expires", "result"))
    for r in rows:
        result = _outcome(r) if r.state in DONE else "-"
        click.echo("%-16s %6d %-10s %-9s %5d  %-20s  %-20s  %s"
                   % (r.device_id, r.cid, r.kind, r.state, r.tries, _when(r.created_ms),
                      _when(r.exp, 1), result))


@command.command("cancel")
@click.argument("device_id")
@click.argument("cid", type=int)
@click.pass_context
def cancel(ctx: click.Context, device_id: str, cid: int) -> None:
    """Stop sending command CID to DEVICE_ID (while it is queued or sent)."""
    store = _open(ctx)
    if queue.cancel_command(store.db, device_id, cid):
        click.echo("%s: cid %d cancelled (if it reached the device already, its answer is "
                   "still recorded)" % (device_id, cid), err=True)
        return
    row = queue.get_command(store.db, device_id, cid)
    if row is None:
        raise CommandsError("%s has no command %d; `fieldtrack command list %s` shows its "
                            "commands" % (device_id, cid, device_id))
    raise CommandsError("%s: cid %d is %s already, nothing to cancel" % (device_id, cid,
                                                                        row.state))
