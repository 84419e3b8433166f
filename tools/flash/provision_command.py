"""``fieldtrack provision``: register a tracker and write its config.json.

A thin command over ``fieldtrack.tools.flash.provision``. stdout carries only what the broker's
operator needs (password-file line, ACL entries, the secrets once); progress and
warnings go to stderr. Every user mistake is a ``ProvisionCommandError`` (exit code 2).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click
from click.core import ParameterSource

from fieldtrack.gateway.store import registry
from fieldtrack.gateway.store.sqlite import Store, StoreError
from fieldtrack.tools.boards import BoardError, list_boards, load_board
from fieldtrack.tools.errors import FieldtrackError
from fieldtrack.tools.flash import provision as prov
from fieldtrack.tools.flash.run import check_port, run_step
from fieldtrack.tools.flash.steps import FlashError, Step

STORE_ENV = "FIELDTRACK_STORE"


class ProvisionCommandError(FieldtrackError):
    """Bad arguments, board, store or destination; or a device that did not take the config."""


def _run(step: Step) -> None:
    with click.progressbar(length=step.units, label=step.label,
                           file=sys.stderr) as bar:
        run_step(step, bar.update)


@click.command("provision")
@click.argument("device_id")
@click.option("--board", "board_name", required=True,
              help="Board profile: one of %s, or a .toml file." % ", ".join(list_boards()))
@click.option("--port", help="Write config.json to the device on this serial port.")
@click.option("--output", type=click.Path(path_type=Path),
              help="Write config.json to this file instead (mode 0600).")
@click.option("--store", "store_path", default="fieldtrack.db", show_default=True,
              envvar=STORE_ENV, type=click.Path(dir_okay=False),
              help="The gateway's store, where the device is registered (also $%s)." % STORE_ENV)
@click.option("--broker", required=True, envvar="FIELDTRACK_BROKER",
              help="The broker the tracker connects to: HOST[:PORT] (also $FIELDTRACK_BROKER).")
@click.option("--tls", is_flag=True, help="Connect with TLS (default port 8883).")
@click.option("--wifi", help="Wi-Fi network name (SSID).")
@click.option("--wifi-password", envvar="FIELDTRACK_WIFI_PASSWORD",
              help="Wi-Fi password (also $FIELDTRACK_WIFI_PASSWORD, kept out of shell history).")
@click.option("--apn", help="The SIM provider's APN, for boards with a cellular modem.")
@click.option("--group", default=registry.DEFAULT_GROUP, show_default=True,
              help="Device group (working hours and geofences apply per group).")
@click.option("--name", default="", help="A name for people, e.g. the van's plate.")
@click.option("--replace", is_flag=True,
              help="The device is registered already: give it a new key and configuration.")
@click.option("--force", is_flag=True, help="Overwrite an existing --output file.")
@click.option("--no-reset", is_flag=True,
              help="Attach without a soft reset and do not restart the device afterwards "
                   "(for the MicroPython unix port over a pseudo-terminal).")
@click.pass_context
def provision(ctx: click.Context, device_id: str, board_name: str, port: str | None,
              output: Path | None, store_path: str, broker: str, tls: bool, wifi: str | None,
              wifi_password: str | None, apn: str | None, group: str, name: str,
              replace: bool, force: bool, no_reset: bool) -> None:
    """Register DEVICE_ID, write its config.json, print the broker's entries for it.

    The config (identity, broker, link, the board's pins) goes to the device on --port
    or to the file --output. The per-device key and the random MQTT password appear only
    there and once on stdout, with the broker's password-file line and ACL entries.
    """
    if wifi is None and ctx.get_parameter_source("wifi_password") == ParameterSource.ENVIRONMENT:
        wifi_password = None  # a Wi-Fi password in the environment is no reason to fail
    if (port is None) == (output is None):
        raise ProvisionCommandError("give --port PORT (write to the device) or --output FILE, "
                                    "one of them")
    try:
        board = load_board(board_name)
        device_id = prov.check_device_id(device_id)
        registry.check_group(group)
        registry.check_name(name)
        target = prov.parse_broker(broker, tls)
        net = prov.link_settings(board, wifi, wifi_password, apn)
    except (BoardError, prov.ProvisionError) as exc:
        raise ProvisionCommandError(str(exc)) from None
    except ValueError as exc:  # registry's field checks
        raise ProvisionCommandError("--group/--name: %s" % exc) from None
    for caveat in board.caveats:
        click.echo("note: %s: %s" % (board.name, caveat), err=True)
    try:
        if port is not None:
            check_port(port)
            _run(prov.probe_step(port, not no_reset))
        else:
            assert output is not None
            prov.check_output(output, force)
    except (FlashError, prov.ProvisionError) as exc:
        raise ProvisionCommandError(str(exc)) from None

    try:
        store = Store(store_path)
    except StoreError as exc:
        raise ProvisionCommandError(str(exc)) from None
    try:
        identity = prov.register(store, device_id, group, name, replace)
    except prov.ProvisionError as exc:
        raise ProvisionCommandError(str(exc)) from None
    finally:
        store.close()
    click.echo("registered %s (group %s) in %s" % (device_id, group, store_path), err=True)

    data = prov.config_bytes(prov.build_config(board, identity, target, net))
    try:
        if output is not None:
            prov.write_file(output, data)
            where = str(output)
        else:
            assert port is not None
            with tempfile.TemporaryDirectory(prefix="fieldtrack-provision-") as directory:
                config_file = Path(directory) / prov.CONFIG_NAME
                prov.write_file(config_file, data)
                for step in prov.device_steps(port, config_file, not no_reset,
                                              new_device=not replace):
                    _run(step)
            where = "%s on %s" % (prov.CONFIG_NAME, port)
    except (OSError, FlashError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ProvisionCommandError(
            "%s\n%s is registered but its config was not written: fix this and run again "
            "with --replace (a new key; the one just made is never used)" % (text, device_id)
        ) from None
    click.echo("wrote %s" % where, err=True)
    click.echo(prov.broker_instructions(identity))
    click.echo("%s: the key and MQTT password are shown this once: keep them only where they "
               "are needed (the config file, a password manager)" % device_id, err=True)
