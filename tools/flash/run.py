"""Running the flashing steps: the serial port checked first, each tool run with progress.

A tool's failure becomes a ``FlashError`` that says what to do: port missing or busy, no
permission, wrong chip, not in the bootloader, no MicroPython on the port.
"""

from __future__ import annotations

import grp
import os
import re
import select
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import serial
import serial.tools.list_ports

from fieldtrack.tools.flash.steps import FlashError, Operation, PortError, Step

TOOL_TIMEOUT_S = 600


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
