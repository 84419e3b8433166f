"""``fieldtrack console``: a pty plays the device; a pipe (or a fake) plays the keyboard."""

from __future__ import annotations

import errno
import io
import os
import select
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from fieldtrack.tools.cli import cli, main
from fieldtrack.tools.console.command import console
from fieldtrack.tools.console.terminal import Console, PortError, open_port

if "console" not in cli.commands:  # cli.py registers it; until it does, the tests do
    cli.add_command(console)

ROOT = Path(__file__).resolve().parents[1]
# The real entry point in a child process, with the command registered as above.
CHILD = ("import sys\nfrom fieldtrack.tools.cli import cli, main\n"
         "from fieldtrack.tools.console.command import console\n"
         "cli.commands.setdefault('console', console)\nsys.exit(main(sys.argv[1:]))\n")


@pytest.fixture
def device() -> Iterator[tuple[int, int, str]]:
    """A pseudo-terminal: the test is the device on the master side; the console opens
    the slave by its path."""
    master, slave = os.openpty()
    yield master, slave, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def wait_opened(slave: int) -> None:
    """Until the console has opened the port (pyserial puts it in raw mode, then flushes)."""
    deadline = time.monotonic() + 10
    while termios.tcgetattr(slave)[3] & termios.ICANON:
        assert time.monotonic() < deadline, "the console never opened the port"
        time.sleep(0.01)
    time.sleep(0.2)


def read_until(fd: int, wanted: bytes, timeout: float = 5.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while wanted not in got and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            got += os.read(fd, 4096)
    return got


class Screen(io.StringIO):
    """An output whose content other threads may poll."""

    def wait_for(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.getvalue()


def test_console_shows_device_output_and_sends_typed_lines(
        device: tuple[int, int, str]) -> None:
    master, _, path = device
    keys_r, keys_w = os.pipe()
    port = open_port(path, 115200, quiet_control_lines=True)
    screen = Screen()
    loop = Console(port, keys_r, screen, eol=b"\r\n", name=path)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        os.write(master, b"I (312) app: boot ok\r\n>>> ")
        assert "I (312) app: boot ok\r\n>>> " in screen.wait_for(">>> ")
        os.write(keys_w, b"status\r")
        assert read_until(master, b"\r\n") == b"status\r\n"
        os.write(keys_w, b"\x03")                      # Ctrl-C goes to the device
        assert read_until(master, b"\x03") == b"\x03"
        os.write(keys_w, b"\x1d")                      # Ctrl-] ends the loop
        thread.join(5)
        assert not thread.is_alive()
    finally:
        port.close()
        os.close(keys_r)
        os.close(keys_w)


def test_console_erases_and_redraws_the_typed_line_around_device_output() -> None:
    class Port:
        def __init__(self) -> None:
            self.sent = b""

        in_waiting = 0

        def fileno(self) -> int:
            return -1

        def read(self, size: int = 1) -> bytes:
            return b""

        def write(self, data: bytes) -> int:
            self.sent += data
            return len(data)

    port, screen = Port(), io.StringIO()
    loop = Console(port, -1, screen, eol=b"\r", echo=True)
    loop.show(">>> ")
    assert loop.type(b"prinx\x7ft(1)")
    loop.show("W (9) wifi: lost\r\n")
    assert loop.line == "print(1)"
    assert screen.getvalue().endswith("\r\x1b[K>>> W (9) wifi: lost\r\nprint(1)")
    assert loop.type(b"\r")
    assert port.sent == b"print(1)\r"
    assert not loop.type(b"\x1d")


def test_console_command_end_to_end(device: tuple[int, int, str]) -> None:
    master, slave, path = device
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "console", "--port", path,
                             "--eol", "LF"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        wait_opened(slave)
        os.write(master, b"fieldtrack v0.1 ready\r\n")
        assert b"fieldtrack v0.1 ready" in read_until(proc.stdout.fileno(), b"ready\r\n")
        proc.stdin.write(b"gps status\n")
        proc.stdin.flush()
        assert read_until(master, b"\n") == b"gps status\n"
        proc.stdin.write(b"\x1d")
        proc.stdin.flush()
        assert proc.wait(10) == 0
        assert b"Ctrl-] exits" in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err


def test_nonexistent_port_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "console", "--port", "/dev/ttyFIELDTRACK-NONE")
    assert code == 2
    assert err.startswith("error: /dev/ttyFIELDTRACK-NONE: no such serial port")
    assert "Traceback" not in err


def test_port_without_permission_says_how_to_join_dialout(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = tmp_path / "ttyLOCKED"
    port.touch()
    port.chmod(0)
    if os.geteuid() == 0:  # root opens it anyway: have the open fail as it would for a user
        def refuse(self: serial.Serial) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", str(port))
        monkeypatch.setattr(serial.Serial, "open", refuse)
    code, err = run(capsys, "console", "--port", str(port))
    assert code == 2
    assert "error: %s: permission denied" % port in err
    assert "sudo usermod -aG dialout $USER" in err and "log out and in again" in err


def test_busy_port_says_another_program_has_it(capsys: pytest.CaptureFixture[str],
                                               device: tuple[int, int, str]) -> None:
    _, _, path = device
    holder = open_port(path, 115200)  # exclusive, like any other open_port user
    try:
        code, err = run(capsys, "console", "--port", path)
    finally:
        holder.close()
    assert code == 2
    assert "error: %s: busy: another program has the port open" % path in err


def test_a_file_is_not_a_serial_port(tmp_path: Path) -> None:
    path = tmp_path / "capture.log"
    path.write_text("$GPGGA\n")
    if os.geteuid() != 0:
        path.chmod(0o600)
    with pytest.raises(PortError, match="not a serial port"):
        open_port(str(path), 9600)
