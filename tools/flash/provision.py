"""Give a tracker its identity: registry entry, config.json, broker credentials.

``provision`` (the command) runs these in an order that leaves nothing half-done where it
can: check the arguments and the destination (the device answers, or the output file is
free), register the device (``registry.add`` generates its key), write ``config.json``
(the board profile's pins merged in) to the device or a file, then print the broker's
password-file line and the ACL entries that confine the device to its own topics.

Secrets (the device key, the MQTT password) go into config.json and, once, to the
caller; they are never put in a log, an error message or a command line: the config
reaches the device as a file copied by mpremote, not as code.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldtrack.gateway.store import registry
from fieldtrack.gateway.store.sqlite import Store
from fieldtrack.protocol import topics
from fieldtrack.tools.boards import Board
from fieldtrack.tools.flash.device_scripts import (
    check_hashes,
    check_probe,
    hash_script,
    probe_script,
    sha256_file,
)
from fieldtrack.tools.flash.plan import connect
from fieldtrack.tools.flash.sizing import buffer_section
from fieldtrack.tools.flash.steps import Operation, Step

MQTT_PORT, MQTT_TLS_PORT = 1883, 8883
KEEPALIVE_S = 60
STATUS_PERIOD_S = 3600
POWER_LOST_MV = 6000
WATCHDOG_MS = 30000
# Service accounts of the broker's ACL (docker/mosquitto/acl): a device with one of these
# ids would get that service's rights, since a device's MQTT username is its id.
RESERVED_IDS = ("fieldtrack-gateway", "platform")
CONFIG_NAME = "config.json"
SAFE_MODE_FILE = "crashes.json"  # firmware/main.py's crash counter: a new config starts afresh
# The tracker's boot counter (firmware/app.py). A new device gets boot 0; a device that
# has one keeps it, and one without (erased, or given a new key with --replace) starts
# an era of its own, so that its keys never repeat ones the gateway stored before.
STATE_FILE = "data/state.json"
INITIAL_STATE = '{"boot": 0, "cid": 0}'


class ProvisionError(ValueError):
    """Arguments, store or destination that do not allow provisioning; says what to do."""


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool


@dataclass(frozen=True)
class Identity:
    device_id: str
    key: bytes = field(repr=False)
    mqtt_password: str = field(repr=False)


def parse_broker(text: str, tls: bool = False) -> Broker:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT``; the port defaults to 1883 (8883 with TLS)."""
    value = text.strip()
    port_text = ""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ProvisionError("--broker %r: expected [IPv6 address]:PORT" % text)
        port_text = rest[1:]
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        host = value  # a host name, or a bare IPv6 address
    if not host or any(ch in host for ch in " /\t"):
        raise ProvisionError("--broker %r: expected HOST or HOST:PORT, e.g. "
                             "mqtt.example.com:8883" % text)
    port = MQTT_TLS_PORT if tls else MQTT_PORT
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ProvisionError("--broker %r: the port must be a number from 1 to 65535"
                                 % text)
        port = int(port_text)
    return Broker(host, port, tls)


def check_device_id(device_id: str) -> str:
    try:
        clean = registry.check_id(device_id)
    except ValueError as exc:
        raise ProvisionError("device id: %s" % exc) from None
    if clean in RESERVED_IDS:
        raise ProvisionError("device id: %s is the broker username of a service account: "
                             "choose another id" % clean)
    return clean


def link_settings(board: Board, wifi: str | None, wifi_password: str | None,
                  apn: str | None) -> dict[str, Any]:
    """The ``net`` section: the board's link (modem pins) plus the credentials given."""
    if wifi is not None and apn is not None:
        raise ProvisionError("--wifi and --apn exclude each other: the tracker uses one link")
    if wifi_password is not None and wifi is None:
        raise ProvisionError("--wifi-password needs --wifi SSID")
    if wifi is None and apn is None:
        if board.link == "ppp" and board.modem is not None:
            raise ProvisionError("%s connects through its %s modem: give --apn APN (from your "
                                 "SIM provider), or --wifi SSID" % (board.name, board.modem.model))
        raise ProvisionError("%s connects over Wi-Fi: give --wifi SSID and --wifi-password"
                             % board.name)
    if apn is not None:
        if board.modem is None:
            raise ProvisionError("%s has no modem: use --wifi SSID instead of --apn" % board.name)
        if not 1 <= len(apn) <= 100 or any(ord(c) < 33 or c in "\"'" for c in apn):
            raise ProvisionError("--apn %r: an APN is 1..100 characters without spaces or "
                                 "quotes, e.g. internet" % apn)
        net = board.net() if board.link == "ppp" else {**board.net(), "type": "ppp"}
        net["apn"] = apn
        return net
    assert wifi is not None
    password = wifi_password or ""
    if not 1 <= len(wifi.encode()) <= 32:
        raise ProvisionError("--wifi %r: an SSID has 1 to 32 bytes" % wifi)
    if password and not 8 <= len(password) <= 63:
        raise ProvisionError("--wifi-password: WPA2 passwords have 8 to 63 characters (give "
                             "none for an open network)")
    return {"type": "wifi", "ssid": wifi, "password": password}


def register(store: Store, device_id: str, group: str, name: str, replace: bool) -> Identity:
    """Add the device to the registry (a new key), or with ``replace`` give it a new key."""
    try:
        if device_id in store.devices():
            if not replace:
                raise ProvisionError(
                    "%s is already registered in %s: pass --replace to give it a new key and "
                    "configuration (its old key stops working at once)" % (device_id, store.path))
            key = registry.rotate_key(store, device_id)
        else:
            added = registry.add(store, device_id, group=group, name=name)
            assert added is not None  # with_key defaults to True
            key = added
    except registry.RegistryError as exc:
        raise ProvisionError("%s: %s" % (store.path, exc)) from None
    return Identity(device_id, key, secrets.token_urlsafe(24))


def build_config(board: Board, identity: Identity, broker: Broker,
                 net: dict[str, Any]) -> dict[str, Any]:
    """config.json as ``firmware/app.py`` and ``board_esp32.py`` read it."""
    return {
        "device_id": identity.device_id,
        "key": identity.key.hex(),
        "mqtt": {"host": broker.host, "port": broker.port, "user": identity.device_id,
                 "password": identity.mqtt_password, "tls": broker.tls,
                 "keepalive_s": KEEPALIVE_S},
        "net": net,
        "pins": board.pins(),
        "board": board.name,
        "buffer": buffer_section(board),
        "status_period_s": STATUS_PERIOD_S,
        "power_lost_mv": POWER_LOST_MV,
        "watchdog_ms": WATCHDOG_MS,
    }


def config_bytes(config: dict[str, Any]) -> bytes:
    return (json.dumps(config, indent=1) + "\n").encode()


def check_output(path: Path, force: bool) -> None:
    if path.is_dir():
        raise ProvisionError("--output %s is a directory: give a file name, e.g. %s/%s"
                             % (path, path, CONFIG_NAME))
    if not path.parent.is_dir():
        raise ProvisionError("--output %s: the directory %s does not exist" % (path, path.parent))
    if path.exists() and not force:
        raise ProvisionError("--output %s exists: it may hold another device's keys; pass "
                             "--force to overwrite it" % path)


def write_file(path: Path, data: bytes) -> None:
    """Written readable by its owner only: it holds the device's secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed


def probe_step(port: str, reset: bool) -> Step:
    """Before anything is registered: does MicroPython answer on the port?"""
    return Step("check the device", [Operation(
        "mpremote", (*connect(port, not reset), "exec", probe_script([CONFIG_NAME])))],
        lambda output: check_probe(output, port, 4096))


def initial_state_script() -> str:
    """Write the boot counter's first state unless the device has one (never replace it:
    a counter that went back would repeat keys)."""
    folder = STATE_FILE.rpartition("/")[0]
    return ("import os\ntry:\n os.mkdir(%r)\nexcept OSError:\n pass\ntry:\n os.stat(%r)\n"
            "except OSError:\n f = open(%r, 'w')\n f.write(%r)\n f.close()\n"
            % (folder, STATE_FILE, STATE_FILE, INITIAL_STATE))


def device_steps(port: str, config_file: Path, reset: bool,
                 new_device: bool = False) -> list[Step]:
    """Copy config.json, leave safe mode (a new device: write its first state), check the
    SHA-256 on the device, restart."""
    digest = sha256_file(config_file)
    script = "import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass\n" % SAFE_MODE_FILE
    if new_device:
        script += initial_state_script()
    steps = [
        Step("write %s" % CONFIG_NAME, [Operation("mpremote", (
            *connect(port, True), "fs", "cp", str(config_file), ":" + CONFIG_NAME, "+", "exec",
            script))]),
        Step("verify SHA-256", [Operation(
            "mpremote", (*connect(port, True), "exec", hash_script([CONFIG_NAME])))],
            lambda output: check_hashes({CONFIG_NAME: digest}, output, port)),
    ]
    if reset:
        steps.append(Step("restart the tracker", [Operation(
            "mpremote", (*connect(port, True), "reset"))]))
    return steps


def password_file_line(user: str, password: str) -> str | None:
    """The broker's password-file line (hashed by ``mosquitto_passwd``), or None without it."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        return None
    with tempfile.TemporaryDirectory(prefix="fieldtrack-passwd-") as directory:
        path = Path(directory) / "passwd"
        try:
            subprocess.run([tool, "-c", "-b", str(path), user, password], check=True,
                           capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        lines = path.read_text().split()
    return lines[0] if lines else None


def acl_lines(device_id: str) -> list[str]:
    """Mosquitto ``acl_file`` entries: publish uplink and presence, receive commands."""
    return ["user %s" % device_id,
            "topic write %s" % topics.uplink(device_id),
            "topic write %s" % topics.presence(device_id),
            "topic read %s" % topics.downlink(device_id)]


def broker_instructions(identity: Identity) -> str:
    """What the broker's operator needs, secrets included: print this once, never log it."""
    device = identity.device_id
    line = password_file_line(device, identity.mqtt_password)
    out = []
    if line is not None:
        out += ["# %s: add to the broker's password_file, then reload it (SIGHUP):" % device,
                line]
    else:
        out += ["# %s: mosquitto_passwd was not found here; on the broker run" % device,
                "#   mosquitto_passwd PASSWORD_FILE %s" % device,
                "# and enter the MQTT password below when it asks, then reload (SIGHUP)."]
    out += ["# %s: acl_file entries (docker/mosquitto/acl's patterns grant the same):" % device,
            *acl_lines(device),
            "# %s: secrets, shown this once (also in its %s):" % (device, CONFIG_NAME),
            "mqtt_password = %s" % identity.mqtt_password,
            "key = %s" % identity.key.hex()]
    return "\n".join(out)

