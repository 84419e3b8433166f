"""Scripts the device runs (with ``mpremote exec``), and checks of what they print.

The probe asks the device's MicroPython which .mpy version it loads and how much room
there is; the hash script gives the SHA-256 of each copied file, computed on the device,
to compare with the bundle's.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fieldtrack.tools.flash.bundle import BundleFile
from fieldtrack.tools.flash.steps import FlashError

PROBE_TAG = "fieldtrack-probe"
HASH_TAG = "fieldtrack-sha256"


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
