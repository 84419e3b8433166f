"""The firmware bundle: which files go on the device, and compiling them with mpy-cross.

Every firmware module is compiled except the simulation's; the protocol codec modules
the firmware imports come along, as ``make firmware`` compiles them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fieldtrack.tools.flash.steps import FlashError, Operation

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE_DIR = ROOT / "firmware"
PROTOCOL_DIR = ROOT / "protocol"
# The protocol modules the firmware imports: the Makefile's FIRMWARE_CODEC.
FIRMWARE_CODEC = ("__init__", "errors", "cbor_values", "cbor", "cbor_extra", "schema", "fixes",
                  "frames", "cose", "topics")


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
