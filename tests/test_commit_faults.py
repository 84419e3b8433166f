"""A store that refuses commits: nothing is acknowledged, ingest pauses, then resumes.

Each test runs the gateway as a process against a real Mosquitto and breaks its real
SQLite store in a real way: another connection holding the write lock, the WAL file
made immutable (the kernel refuses every write), a filesystem filled up. While the
fault lasts the gateway's PUBACK counter must not pass what is committed, /healthz
must say why, and once the fault clears every frame sent is stored exactly once,
without a restart.
The tmpfs mounts and chattr need root; without that those tests are skipped.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Broker
from harness import (
    GatewayProcess,
    Publisher,
    count,
    frame_bytes,
    free_port,
    http_get,
    position,
    wait_until,
    write_config,
)

from fieldtrack.gateway.store.sqlite import Device, Store

KEY = bytes(range(40, 72))
BEFORE, DURING = 100, 300  # frames sent before the fault, and while it lasts


@dataclass
class Running:
    gw: GatewayProcess
    db: Path
    base: str
    pub: Publisher

    def metric(self, name: str) -> float:
        _, text = http_get(self.base + "/metrics")
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return -1.0

    def acked(self) -> int:
        return int(self.metric("fieldtrack_acks_sent_total"))

    def send(self, first: int, n: int) -> None:
        self.pub.publish_many("van-1", [frame_bytes(position(i), "van-1", KEY)
                                        for i in range(first, first + n)])


def start(tmp_path: Path, store_dir: Path, broker: Broker, **store: object) -> Running:
    http_port = free_port()
    db = store_dir / "fieldtrack.db"
    config = write_config(tmp_path, broker.port, http={"enabled": True, "port": http_port},
                          store={"path": str(db), "min_free_mb": 0, **store})
    s = Store(db)
    s.put_device(Device("van-1", "vans", KEY, True))
    s.close()
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    gw.start()
    gw.wait_subscribed()
    return Running(gw, db, "http://127.0.0.1:%d" % http_port, Publisher(broker.port))


def assert_paused(run: Running, stored: int, words: str) -> None:
    """The fault is visible and nothing beyond the committed frames is acknowledged."""
    wait_until(lambda: run.metric("fieldtrack_commit_failing") == 1, what="the failing gauge")
    status, body = http_get(run.base + "/healthz")
    assert status == 503 and words in body, body
    assert run.metric("fieldtrack_commit_failures_total") >= 1
    assert count(run.db) == stored
    assert run.acked() == stored


def assert_resumed(run: Running, n: int) -> None:
    wait_until(lambda: count(run.db) == n, timeout=30, what="every frame after the fault")
    wait_until(lambda: run.acked() == n, what="every frame acknowledged")
    wait_until(lambda: http_get(run.base + "/healthz")[0] == 200, what="healthy again")
    assert run.metric("fieldtrack_commit_failing") == 0
    assert count(run.db, "SELECT COUNT(DISTINCT seq) FROM positions") == n
    assert count(run.db, "SELECT MAX(seq) FROM positions") == n - 1
    log = run.gw.log.read_text()
    assert "cannot commit to the store" in log and "takes commits again" in log
    assert "Traceback" not in log


def stop(run: Running) -> None:
    run.pub.close()
    run.gw.stop_quietly()


def test_store_locked_by_another_writer_pauses_acks_until_it_lets_go(
    tmp_path: Path, mosquitto_broker: Broker
) -> None:
    run = start(tmp_path, tmp_path, mosquitto_broker, busy_timeout_ms=300)
    try:
        run.send(0, BEFORE)
        wait_until(lambda: run.acked() == BEFORE, what="the first frames acknowledged")
        other = sqlite3.connect(run.db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # a writer that holds its lock far too long
        try:
            run.send(BEFORE, DURING)
            assert_paused(run, BEFORE, "locked by another writer")
            time.sleep(1.5)  # retried with backoff meanwhile, still nothing acknowledged
            assert run.metric("fieldtrack_commit_failures_total") >= 3
            assert run.acked() == BEFORE
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert_resumed(run, BEFORE + DURING)
    finally:
        stop(run)


def test_kill_during_a_commit_fault_loses_nothing(tmp_path: Path,
                                                  mosquitto_broker: Broker) -> None:
    """What was held and never acknowledged comes again from the broker after a restart."""
    run = start(tmp_path, tmp_path, mosquitto_broker, busy_timeout_ms=300)
    try:
        run.send(0, BEFORE)
        wait_until(lambda: run.acked() == BEFORE, what="the first frames acknowledged")
        other = sqlite3.connect(run.db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            run.send(BEFORE, DURING)
            assert_paused(run, BEFORE, "locked")
            run.gw.kill()
        finally:
            other.execute("ROLLBACK")
            other.close()
        run.gw.start()
        wait_until(lambda: count(run.db) == BEFORE + DURING, timeout=30, what="redelivery")
        assert count(run.db, "SELECT COUNT(DISTINCT seq) FROM positions") == BEFORE + DURING
    finally:
        stop(run)


# --- real filesystems -------------------------------------------------------------------


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs: a filesystem the test can fill."""
    path = tmp_path / "small"
    path.mkdir()
    try:
        mount("-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(path))
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip("cannot mount here (needs root with CAP_SYS_ADMIN): %s" % exc)
    yield path
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def fill(directory: Path, leave_bytes: int) -> Path:
    """A ballast file that leaves about ``leave_bytes`` free on the filesystem."""
    import os

    st = os.statvfs(directory)
    size = st.f_bavail * st.f_frsize - leave_bytes
    ballast = directory / "ballast"
    with open(ballast, "wb") as f:
        chunk = bytes(1 << 20)
        while size > 0:
            try:
                f.write(chunk[:size])
                f.flush()
            except OSError:
                break
            size -= len(chunk)
    return ballast


def chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True, timeout=20)


def test_immutable_store_file_pauses_acks_until_it_is_writable(
    tmp_path: Path, mosquitto_broker: Broker
) -> None:
    """The kernel refuses every write to the WAL (EPERM), as a failing disk would.

    A read-only remount cannot stand in for this: while the gateway holds the store open
    for writing, the kernel refuses to remount its filesystem read-only (EBUSY).
    """
    run = start(tmp_path, tmp_path, mosquitto_broker)
    wal = Path(str(run.db) + "-wal")
    try:
        run.send(0, BEFORE)
        wait_until(lambda: run.acked() == BEFORE, what="the first frames acknowledged")
        try:
            chattr("+i", wal)
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            pytest.skip("chattr +i is not possible here: %s" % exc)
        try:
            run.send(BEFORE, DURING)
            assert_paused(run, BEFORE, "I/O error")
        finally:
            chattr("-i", wal)
        assert_resumed(run, BEFORE + DURING)
    finally:
        stop(run)


def test_free_space_below_the_floor_pauses_acks_until_space_is_freed(
    tmp_path: Path, mosquitto_broker: Broker, small_fs: Path
) -> None:
    run = start(tmp_path, small_fs, mosquitto_broker, min_free_mb=8)
    try:
        run.send(0, BEFORE)
        wait_until(lambda: run.acked() == BEFORE, what="the first frames acknowledged")
        ballast = fill(small_fs, 4 << 20)  # 4 MiB left: below the 8 MiB floor
        run.send(BEFORE, DURING)
        assert_paused(run, BEFORE, "min_free_mb")
        ballast.unlink()
        assert_resumed(run, BEFORE + DURING)
    finally:
        stop(run)


def test_full_disk_pauses_acks_until_space_is_freed(
    tmp_path: Path, mosquitto_broker: Broker, small_fs: Path
) -> None:
    """No floor (min_free_mb = 0): SQLite itself meets the full disk."""
    run = start(tmp_path, small_fs, mosquitto_broker)
    try:
        run.send(0, BEFORE)
        wait_until(lambda: run.acked() == BEFORE, what="the first frames acknowledged")
        ballast = fill(small_fs, 0)
        run.send(BEFORE, DURING)
        assert_paused(run, BEFORE, "full")
        ballast.unlink()
        assert_resumed(run, BEFORE + DURING)
        check = sqlite3.connect(run.db)
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        check.close()
    finally:
        stop(run)
