"""Board profiles: the shipped ones load; broken ones are rejected naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from esptool.targets import CHIP_DEFS

from fieldtrack.tools import boards
from fieldtrack.tools.boards import BoardError, load_board

DEVKIT = "esp32-devkit-neo-m8n-sim7600"
# What firmware/board_esp32.py reads from config.json's "pins" (and nothing else is needed).
FIRMWARE_PINS = {"gnss_uart", "gnss_baud", "gnss_tx", "gnss_rx", "ignition",
                 "ignition_active_low", "battery_adc", "supply_adc", "battery_divider_x1000",
                 "supply_divider_x1000", "led", "sos"}


def variant(tmp_path: Path, board: str, changes: dict[str, str], name: str = "") -> Path:
    """A copy of a shipped profile with text replaced (each ``old`` must be in it)."""
    text = (boards.BOARDS_DIR / (board + ".toml")).read_text()
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / ((name or board) + ".toml")
    path.write_text(text)
    return path


def line_of(path: Path, fragment: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if fragment in line)


@pytest.mark.parametrize("name", boards.list_boards())
def test_shipped_profile_loads_with_the_pins_the_firmware_reads(name: str) -> None:
    board = load_board(name)
    pins = board.pins()
    assert {"gnss_tx", "gnss_rx", "led", "ignition", "supply_adc"} <= set(pins)
    assert set(pins) - {"led_active_low", "gnss_source"} <= FIRMWARE_PINS
    assert all(isinstance(v, int) for k, v in pins.items()
               if not k.endswith("_low") and k != "gnss_source")


def test_the_three_reference_builds_ship() -> None:
    assert {DEVKIT, "lilygo-t-sim7000g", "lilygo-t-beam"} <= set(boards.list_boards())


@pytest.mark.parametrize("name", [DEVKIT, "lilygo-t-sim7000g"])
def test_cellular_boards_put_the_modem_pins_in_net(name: str) -> None:
    board = load_board(name)
    net = board.net()
    assert net["type"] == "ppp"
    assert board.modem is not None
    assert (net["modem_uart"], net["modem_tx"], net["modem_rx"], net["modem_baud"]) == (
        board.modem.uart, board.modem.tx, board.modem.rx, board.modem.baud)
    assert net["modem_pwrkey"] == 4


def test_t_beam_is_a_wifi_board_without_modem() -> None:
    board = load_board("lilygo-t-beam")
    assert board.net() == {"type": "wifi"}
    assert (board.gnss_tx, board.gnss_rx, board.gnss_baud) == (12, 34, 9600)


def test_gnss_through_the_modem_opens_its_own_uart_on_the_modem_pins() -> None:
    board = load_board("lilygo-t-sim7000g")
    pins = board.pins()
    assert pins["gnss_source"] == "modem"
    assert pins["gnss_uart"] != board.net()["modem_uart"]
    assert board.caveats  # the gap in the firmware is told to whoever flashes it


def test_a_profile_can_be_given_as_a_path(tmp_path: Path) -> None:
    path = variant(tmp_path, "lilygo-t-beam", {}, name="my-beam")
    assert load_board(str(path)).name == "my-beam"


def test_duplicate_pin_is_rejected_naming_file_line_and_both_fields(tmp_path: Path) -> None:
    path = variant(tmp_path, DEVKIT, {"sos = 13": "sos = 34"})
    with pytest.raises(BoardError) as caught:
        load_board(path)
    assert caught.value.problems == [
        "%s:%d: inputs.sos: GPIO 34 is already inputs.ignition: give each signal its own pin"
        % (path, line_of(path, "sos = 34"))]


def test_missing_required_pin_is_rejected_naming_file_and_field(tmp_path: Path) -> None:
    path = variant(tmp_path, "lilygo-t-beam", {"ignition = 39": ""})
    with pytest.raises(BoardError) as caught:
        load_board(path)
    assert len(caught.value.problems) == 1
    problem = caught.value.problems[0]
    assert problem.startswith("%s:" % path)
    assert "inputs.ignition: missing" in problem


def test_modem_pins_are_required_for_a_ppp_link(tmp_path: Path) -> None:
    path = variant(tmp_path, DEVKIT, {"rx = 27": ""})
    with pytest.raises(BoardError, match=r"modem\.rx: missing: .*link = \"ppp\""):
        load_board(path)


def test_a_pin_the_board_uses_itself_is_rejected(tmp_path: Path) -> None:
    path = variant(tmp_path, "lilygo-t-beam", {"sos = 25": "sos = 26"})
    with pytest.raises(BoardError, match=r"inputs\.sos: GPIO 26 is already reserved\.radio_dio0"):
        load_board(path)


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("pin = 2 ", "pin = 36 ", "led.pin: GPIO 36 is input-only"),
    ("supply_adc = 35", "supply_adc = 25", "power.supply_adc: GPIO 25 is not on ADC1"),
    ("tx = 26", "tx = 7", "modem.tx: GPIO 7 is wired to the module's flash"),
    ("sos = 13", "sos = 36", "inputs.sos: GPIO 36 has no internal pull-up"),
    ("tx = 19", "tx = 40", "gnss.tx: the ESP32 has no GPIO 40"),
    ("baud = 9600", "baud = \"9600\"", "did you forget to remove the quotes?"),
    ("[led]", "[leds]", "leds: unknown field (did you mean led?"),
    ('link = "ppp"', 'link = "lte"', "link: 'lte': expected \"wifi\" or \"ppp\""),
    ('chip = "esp32"', 'chip = "esp8266"', "chip: 'esp8266': expected one of esp32"),
    ("uart = 2", "uart = 1", "modem.uart: UART 1 is also gnss.uart"),
])
def test_unusable_pin_or_value_is_rejected_with_the_reason(
        tmp_path: Path, old: str, new: str, expected: str) -> None:
    path = variant(tmp_path, DEVKIT, {old: new})
    with pytest.raises(BoardError) as caught:
        load_board(path)
    assert any(expected in p and p.startswith(str(path)) for p in caught.value.problems), \
        caught.value.problems


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = variant(tmp_path, DEVKIT, {"sos = 13": "sos = 34", "pin = 2 ": "pin = 39 "})
    with pytest.raises(BoardError) as caught:
        load_board(path)
    assert len(caught.value.problems) == 2
    assert str(caught.value).startswith("%s: 2 problems in the board profile" % path)


def test_unknown_board_name_suggests_the_close_one() -> None:
    with pytest.raises(BoardError, match="did you mean lilygo-t-beam?"):
        load_board("lilygo-tbeam")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(BoardError, match="broken.toml: not valid TOML"):
        load_board(path)


def test_gnss_through_the_modem_takes_no_pins_of_its_own(tmp_path: Path) -> None:
    path = variant(tmp_path, "lilygo-t-sim7000g", {'source = "modem"': 'source = "modem"\ntx = 5'})
    with pytest.raises(BoardError, match=r"gnss\.tx: the GNSS is read through the modem"):
        load_board(path)


@pytest.mark.parametrize("chip", sorted(boards.CHIPS))
def test_chip_table_agrees_with_esptool(chip: str) -> None:
    ours, theirs = boards.CHIPS[chip], CHIP_DEFS[chip]
    assert ours.image_offset == theirs.BOOTLOADER_FLASH_OFFSET
    assert ours.image_chip_id == theirs.IMAGE_CHIP_ID
    assert ours.title == theirs.CHIP_NAME


def test_the_flash_table_sizes_the_journal_and_is_checked(tmp_path: Path) -> None:
    text = (boards.BOARDS_DIR / "lilygo-t-beam.toml").read_text()
    assert load_board("lilygo-t-beam").filesystem_kb == 2048
    bigger = tmp_path / "big.toml"
    bigger.write_text(text.replace("size_mb = 4", "size_mb = 16").replace(
        "filesystem_kb = 2048", "filesystem_kb = 14336"))
    assert load_board(bigger).filesystem_kb == 14336
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("filesystem_kb = 2048", "filesystem_kb = 4096"))
    with pytest.raises(BoardError, match="flash.filesystem_kb: 4096"):
        load_board(bad)
