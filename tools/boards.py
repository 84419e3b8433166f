"""Board profiles: which GPIO does what on a tracker, as data (``hardware/boards/*.toml``).

``load_board(name_or_path)`` reads and checks one profile; ``list_boards()`` names the
profiles that ship with fieldtrack. A profile is checked as a whole and every problem is
reported as ``file:line: field: reason``: a pin named twice, a required pin missing, a
pin the chip does not have or cannot use that way (an output on an input-only pin, an
analog input on ADC2, a pull-up where there is none).

``Board.pins()`` and ``Board.net()`` give the ``pins`` and ``net`` sections of the
tracker's ``config.json`` in the shape ``firmware/board_esp32.py`` reads.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BOARDS_DIR = Path(__file__).resolve().parents[1] / "hardware" / "boards"
LINKS = ("wifi", "ppp")
GNSS_SOURCES = ("uart", "modem")


class BoardError(ValueError):
    """A profile that cannot be used; ``problems`` holds one ``file:line: field: reason`` each."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        super().__init__(message)


# --- chips: one entry per chip, registered in one table ---------------------------------


@dataclass(frozen=True)
class Chip:
    """What a chip's pins can do, and where a MicroPython image goes in its flash."""

    name: str  # as esptool's --chip spells it
    title: str
    image_offset: int  # esptool targets' BOOTLOADER_FLASH_OFFSET
    image_chip_id: int  # the chip id in an image header (esptool targets' IMAGE_CHIP_ID)
    gpios: frozenset[int]
    flash_pins: frozenset[int]  # wired to the module's SPI flash (and PSRAM)
    input_only: frozenset[int]  # no output driver and no internal pull resistors
    adc1: frozenset[int]  # ADC2 is shared with Wi-Fi: unusable while it is on
    uarts: tuple[int, ...]  # UART 0 is the REPL


def _span(first: int, last: int) -> frozenset[int]:
    return frozenset(range(first, last + 1))


# Sources: Espressif's ESP32, ESP32-S3 and ESP32-C3 data sheets (pin lists, strapping and
# flash pins) and ESP-IDF's GPIO and ADC pages; offsets from esptool's targets and the
# MicroPython download pages (0x1000 on the ESP32, 0x0 on the S3 and C3).
CHIPS: dict[str, Chip] = {chip.name: chip for chip in (
    Chip("esp32", "ESP32", 0x1000, 0, _span(0, 39) - {20, 24, 28, 29, 30, 31}, _span(6, 11),
         _span(34, 39), _span(32, 39), (1, 2)),
    Chip("esp32s3", "ESP32-S3", 0x0, 9, _span(0, 21) | _span(26, 48), _span(26, 32),
         frozenset(), _span(1, 10), (1, 2)),
    Chip("esp32c3", "ESP32-C3", 0x0, 5, _span(0, 21), _span(12, 17), frozenset(), _span(0, 4),
         (1,)),
)}


# --- the profile, parsed ---------------------------------------------------------------


@dataclass(frozen=True)
class Modem:
    model: str
    uart: int
    baud: int
    tx: int
    rx: int
    pwrkey: int | None
    pwrkey_press_level: int  # the GPIO level that presses the key (1 through a transistor)
    pwrkey_on_ms: int
    pwrkey_off_ms: int


@dataclass(frozen=True)
class Board:
    """A checked profile. ``name`` is the file's stem: what ``--board`` takes."""

    name: str
    title: str
    path: Path
    chip: Chip
    link: str
    gnss_module: str
    gnss_source: str
    gnss_uart: int
    gnss_baud: int
    gnss_tx: int | None
    gnss_rx: int | None
    modem: Modem | None
    ignition: int
    ignition_active_low: bool
    sos: int | None
    supply_adc: int
    supply_divider_x1000: int
    battery_adc: int | None
    battery_divider_x1000: int
    led: int
    led_active_low: bool
    caveats: tuple[str, ...] = ()
    flash_mb: int = 4
    filesystem_kb: int = 2048  # MicroPython's vfs partition: what the tracker's files get

    def pins(self) -> dict[str, Any]:
        """The ``pins`` section of config.json, as ``board_esp32.Esp32Board`` reads it."""
        pins: dict[str, Any] = {
            "gnss_uart": self.gnss_uart, "gnss_baud": self.gnss_baud,
            "gnss_tx": self.gnss_tx, "gnss_rx": self.gnss_rx,
            "ignition": self.ignition, "ignition_active_low": self.ignition_active_low,
            "supply_adc": self.supply_adc, "supply_divider_x1000": self.supply_divider_x1000,
            "led": self.led, "led_active_low": self.led_active_low,
        }
        if self.gnss_source == "modem" and self.modem is not None:
            # Until the firmware reads GNSS through the modem, its NMEA UART is opened on
            # the modem's pins but a UART of its own: it never steals the PPP link's bytes.
            pins.update(gnss_source="modem", gnss_baud=self.modem.baud, gnss_tx=self.modem.tx,
                        gnss_rx=self.modem.rx)
        if self.battery_adc is not None:
            pins["battery_adc"] = self.battery_adc
            pins["battery_divider_x1000"] = self.battery_divider_x1000
        if self.sos is not None:
            pins["sos"] = self.sos
        return pins

    def net(self) -> dict[str, Any]:
        """The board's part of config.json's ``net`` section (no credentials)."""
        net: dict[str, Any] = {"type": self.link}
        m = self.modem
        if m is not None:
            net.update(modem_model=m.model, modem_uart=m.uart, modem_baud=m.baud,
                       modem_tx=m.tx, modem_rx=m.rx)
            if m.pwrkey is not None:
                net.update(modem_pwrkey=m.pwrkey, modem_pwrkey_press_level=m.pwrkey_press_level,
                           modem_pwrkey_on_ms=m.pwrkey_on_ms, modem_pwrkey_off_ms=m.pwrkey_off_ms)
        return net


# --- the schema, as data ---------------------------------------------------------------

# table -> field -> type; "" is the top level. Pins are ints with a role, below.
_SCHEMA: dict[str, dict[str, type]] = {
    "": {"name": str, "chip": str, "link": str, "sources": list, "caveats": list},
    "gnss": {"module": str, "source": str, "uart": int, "baud": int, "tx": int, "rx": int},
    "modem": {"model": str, "uart": int, "baud": int, "tx": int, "rx": int, "pwrkey": int,
              "pwrkey_press_level": int, "pwrkey_on_ms": int, "pwrkey_off_ms": int},
    "inputs": {"ignition": int, "ignition_active_low": bool, "sos": int,
               "sos_external_pullup": bool},
    "power": {"supply_adc": int, "supply_divider_x1000": int, "battery_adc": int,
              "battery_divider_x1000": int},
    "led": {"pin": int, "active_low": bool},
    "flash": {"size_mb": int, "filesystem_kb": int},
    "reserved": {},  # any name -> a pin the board uses for something else
}

# Each pin field and what the firmware does with it.
_OUT, _IN, _PULLUP, _ADC = "output", "input", "input with pull-up", "analog input"
_PINS: dict[str, str] = {
    "gnss.tx": _OUT, "gnss.rx": _IN, "modem.tx": _OUT, "modem.rx": _IN, "modem.pwrkey": _OUT,
    "inputs.ignition": _IN, "inputs.sos": _PULLUP, "power.supply_adc": _ADC,
    "power.battery_adc": _ADC, "led.pin": _OUT,
}

_ALWAYS = {
    "name": "a name for people, e.g. name = \"LilyGO T-Beam v1.x\"",
    "chip": "the chip, one of %s" % ", ".join(CHIPS),
    "link": "how it reaches the broker: \"wifi\" or \"ppp\" (a cellular modem)",
    "inputs.ignition": "the GPIO of the ignition sense input",
    "power.supply_adc": "the ADC1 GPIO that measures the vehicle supply",
    "led.pin": "the GPIO of the status LED",
}
_FOR_UART_GNSS = {
    "gnss.uart": "the UART number the GNSS module is on",
    "gnss.baud": "the GNSS module's baud rate (9600 for u-blox modules as shipped)",
    "gnss.tx": "the ESP32 GPIO that transmits to the GNSS module",
    "gnss.rx": "the ESP32 GPIO that receives from the GNSS module",
}
_FOR_MODEM = {
    "modem.uart": "the UART number the modem is on",
    "modem.baud": "the modem's baud rate, e.g. 115200",
    "modem.tx": "the ESP32 GPIO that transmits to the modem",
    "modem.rx": "the ESP32 GPIO that receives from the modem",
}

_HEADER = re.compile(r"\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
_KEY = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=")


def _lines(text: str) -> dict[str, int]:
    """Where each ``table.field`` is (tomllib keeps no positions)."""
    where: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.match(line)
        if header:
            table = header.group(1)
            where.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            where.setdefault("%s.%s" % (table, key.group(1)) if table else key.group(1), number)
    return where


class _Checker:
    """Collects every problem of one profile before anything is rejected."""

    def __init__(self, path: Path, doc: dict[str, Any], text: str) -> None:
        self.path = path
        self.doc = doc
        self.where = _lines(text)
        self.problems: list[tuple[int, str]] = []

    def problem(self, field: str, reason: str) -> None:
        line = self.where.get(field) or self.where.get(field.split(".")[0]) or 1
        self.problems.append((line, "%s:%d: %s: %s" % (self.path, line, field, reason)))

    def get(self, field: str) -> Any:
        table, _, key = field.rpartition(".")
        section = self.doc.get(table, {}) if table else self.doc
        return section.get(key) if isinstance(section, dict) else None

    def check_shape(self) -> None:
        for table, value in self.doc.items():
            if table in _SCHEMA[""]:
                self.check_type(table, value, _SCHEMA[""][table])
            elif table not in _SCHEMA:
                self.unknown(table, [t for t in _SCHEMA if t] + list(_SCHEMA[""]))
            elif not isinstance(value, dict):
                self.problem(table, "expected a table: [%s] and its fields below it" % table)
            else:
                for key, item in value.items():
                    field = "%s.%s" % (table, key)
                    if table == "reserved":
                        self.check_type(field, item, int)
                    elif key not in _SCHEMA[table]:
                        self.unknown(field, list(_SCHEMA[table]))
                    else:
                        self.check_type(field, item, _SCHEMA[table][key])

    def unknown(self, field: str, known: list[str]) -> None:
        key = field.rpartition(".")[2]
        close = difflib.get_close_matches(key, known, n=1)
        hint = "did you mean %s? " % close[0] if close else ""
        self.problem(field, "unknown field (%sknown here: %s)" % (hint, ", ".join(known)))

    def check_type(self, field: str, value: Any, kind: type) -> None:
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            hint = " (did you forget to remove the quotes?)" if isinstance(value, str) else ""
            self.problem(field, "expected a whole number, got %r%s" % (value, hint))
        elif kind is not int and not isinstance(value, kind):
            self.problem(field, "expected %s, got %r" % (
                {str: "text in quotes", bool: "true or false", list: "a list [...]"}[kind], value))

    def require(self, fields: dict[str, str], why: str = "") -> None:
        for field, what in fields.items():
            if self.get(field) is None:
                self.problem(field, "missing: %s%s" % (what, why))

    def check_pins(self, chip: Chip) -> None:
        seen: dict[int, str] = {}
        reserved = self.doc.get("reserved", {})
        named = [("reserved." + k, v) for k, v in sorted(reserved.items())] \
            if isinstance(reserved, dict) else []
        named += [(field, self.get(field)) for field in _PINS]
        for field, pin in named:
            if not isinstance(pin, int) or isinstance(pin, bool):
                continue
            if pin in seen:
                self.problem(field, "GPIO %d is already %s: give each signal its own pin"
                             % (pin, seen[pin]))
                continue
            seen[pin] = field
            if not field.startswith("reserved."):
                self.check_pin(chip, field, pin, _PINS[field])

    def check_pin(self, chip: Chip, field: str, pin: int, role: str) -> None:
        if pin not in chip.gpios:
            self.problem(field, "the %s has no GPIO %d" % (chip.title, pin))
        elif pin in chip.flash_pins:
            self.problem(field, "GPIO %d is wired to the module's flash on the %s: choose "
                         "another pin" % (pin, chip.title))
        elif role == _OUT and pin in chip.input_only:
            self.problem(field, "GPIO %d is input-only on the %s and cannot be an output"
                         % (pin, chip.title))
        elif role == _ADC and pin not in chip.adc1:
            self.problem(field, "GPIO %d is not on ADC1, and ADC2 cannot be read while Wi-Fi "
                         "is on: use one of GPIO %s" % (pin, _ranges(chip.adc1)))
        elif (role == _PULLUP and pin in chip.input_only
              and self.get("inputs.sos_external_pullup") is not True):
            self.problem(field, "GPIO %d has no internal pull-up on the %s: choose another "
                         "pin, or fit a pull-up resistor and set sos_external_pullup = true"
                         % (pin, chip.title))

    def check_values(self, chip: Chip | None) -> None:
        link = self.get("link")
        if isinstance(link, str) and link not in LINKS:
            self.problem("link", "%r: expected \"wifi\" or \"ppp\"" % link)
        source = self.get("gnss.source")
        if isinstance(source, str) and source not in GNSS_SOURCES:
            self.problem("gnss.source", "%r: expected \"uart\" or \"modem\"" % source)
        for field in ("gnss.baud", "modem.baud"):
            baud = self.get(field)
            if isinstance(baud, int) and not 1200 <= baud <= 921600:
                self.problem(field, "%d: expected a baud rate such as 9600 or 115200" % baud)
        for field in ("power.supply_divider_x1000", "power.battery_divider_x1000"):
            ratio = self.get(field)
            if isinstance(ratio, int) and not 1000 <= ratio <= 100000:
                self.problem(field, "%d: the divider ratio times 1000, e.g. 11000 for "
                             "100k over 10k" % ratio)
        size, fs = self.get("flash.size_mb"), self.get("flash.filesystem_kb")
        if isinstance(size, int) and size not in (2, 4, 8, 16, 32):
            self.problem("flash.size_mb", "%d: expected the module's flash, 2, 4, 8, 16 or 32"
                         % size)
        elif isinstance(fs, int) and not 256 <= fs <= (size or 4) * 1024 - 1024:
            self.problem("flash.filesystem_kb", "%d: the MicroPython image's vfs partition in "
                         "KiB, at least 256 and 1 MiB less than the flash (2048 on 4 MB)" % fs)
        level = self.get("modem.pwrkey_press_level")
        if level is not None and level not in (0, 1):
            self.problem("modem.pwrkey_press_level", "%r: expected 0 or 1" % level)
        uarts = [(f, self.get(f)) for f in ("gnss.uart", "modem.uart")]
        for field, uart in uarts:
            if chip is not None and isinstance(uart, int) and uart not in chip.uarts:
                self.problem(field, "UART %d: the %s has %s free (UART 0 is the REPL)"
                             % (uart, chip.title, " and ".join(map(str, chip.uarts))))
        if (source != "modem" and uarts[0][1] is not None
                and uarts[0][1] == uarts[1][1] and "modem" in self.doc):
            self.problem("modem.uart", "UART %d is also gnss.uart: give the modem the other "
                         "UART" % uarts[1][1])


def _ranges(pins: frozenset[int]) -> str:
    return "%d-%d" % (min(pins), max(pins))


def list_boards() -> list[str]:
    """The names of the profiles that ship with fieldtrack, sorted."""
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


def _find(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml") or "/" in text:
        path = Path(name_or_path)
        if not path.is_file():
            raise BoardError("%s: no such board profile file" % path)
        return path
    path = BOARDS_DIR / (text + ".toml")
    if not path.is_file():
        names = list_boards()
        close = difflib.get_close_matches(text, names, n=1)
        hint = "did you mean %s? " % close[0] if close else ""
        raise BoardError("no board %r: %sknown boards: %s (or give a .toml path)"
                         % (text, hint, ", ".join(names) or "none"))
    return path


def load_board(name_or_path: str | Path) -> Board:
    """Read and check a profile: a shipped board's name or the path of a ``.toml`` file."""
    path = _find(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BoardError("%s: cannot read the profile (%s)" % (path, exc)) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BoardError("%s: not valid TOML: %s" % (path, exc)) from None
    check = _Checker(path, doc, text)
    check.check_shape()
    check.require(_ALWAYS)
    source = check.get("gnss.source") or "uart"
    if source == "uart":
        check.require(_FOR_UART_GNSS)
    else:
        for field in ("gnss.tx", "gnss.rx"):
            if check.get(field) is not None:
                check.problem(field, "the GNSS is read through the modem (source = \"modem\"): "
                              "remove this pin")
    if check.get("link") == "ppp" or source == "modem":
        why = " (needed for link = \"ppp\")" if check.get("link") == "ppp" else \
            " (needed for gnss.source = \"modem\")"
        check.require(_FOR_MODEM, why)
    chip = CHIPS.get(check.get("chip")) if isinstance(check.get("chip"), str) else None
    if chip is None and isinstance(check.get("chip"), str):
        check.problem("chip", "%r: expected one of %s" % (check.get("chip"), ", ".join(CHIPS)))
    if chip is not None:
        check.check_pins(chip)
    check.check_values(chip)
    if check.problems:
        problems = [message for _, message in sorted(check.problems)]
        head = "%s: %d problem%s in the board profile" % (
            path, len(problems), "" if len(problems) == 1 else "s")
        raise BoardError("\n".join([head, *("  " + p for p in problems)]), problems)
    assert chip is not None  # a profile without a valid chip has a problem
    return _build(path, doc, chip)


def _build(path: Path, doc: dict[str, Any], chip: Chip) -> Board:
    gnss, inputs, power = doc.get("gnss", {}), doc["inputs"], doc["power"]
    flash = doc.get("flash", {})
    m = doc.get("modem")
    modem = None if m is None else Modem(
        m.get("model", ""), m["uart"], m["baud"], m["tx"], m["rx"], m.get("pwrkey"),
        m.get("pwrkey_press_level", 0), m.get("pwrkey_on_ms", 1000),
        m.get("pwrkey_off_ms", 2500))
    return Board(
        name=path.stem, title=doc["name"], path=path, chip=chip, link=doc["link"],
        gnss_module=gnss.get("module", ""), gnss_source=gnss.get("source", "uart"),
        gnss_uart=gnss.get("uart", 1), gnss_baud=gnss.get("baud", 9600),
        gnss_tx=gnss.get("tx"), gnss_rx=gnss.get("rx"), modem=modem,
        ignition=inputs["ignition"], ignition_active_low=inputs.get("ignition_active_low", True),
        sos=inputs.get("sos"), supply_adc=power["supply_adc"],
        supply_divider_x1000=power.get("supply_divider_x1000", 11000),
        battery_adc=power.get("battery_adc"),
        battery_divider_x1000=power.get("battery_divider_x1000", 2000),
        led=doc["led"]["pin"], led_active_low=doc["led"].get("active_low", False),
        caveats=tuple(str(c) for c in doc.get("caveats", [])),
        flash_mb=flash.get("size_mb", 4),
        filesystem_kb=flash.get("filesystem_kb", flash.get("size_mb", 4) * 1024 - 2048),
    )
