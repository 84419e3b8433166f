"""The commit-failure state: backoff, recovery and the operator's wording (pure logic)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fieldtrack.gateway.store.guard import (
    RETRY_MAX_S,
    RETRY_MIN_S,
    CommitGuard,
    LowSpace,
    describe,
    is_fatal,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def locked() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database is locked")
    exc.sqlite_errorname = "SQLITE_BUSY"  # type: ignore[attr-defined]
    return exc


def test_retries_back_off_doubling_up_to_the_maximum() -> None:
    clock = Clock()
    guard = CommitGuard("s.db", 0, clock)
    assert guard.ready()
    delays = []
    for _ in range(8):
        fault = guard.failed(locked())
        delays.append(fault.delay)
        assert not guard.ready()
        clock.now += fault.delay
        assert guard.ready()
    assert delays[0] == RETRY_MIN_S and delays[1] == 2 * RETRY_MIN_S
    assert delays[-1] == RETRY_MAX_S and fault.failures == 8


def test_recovery_ends_the_fault_and_the_next_one_starts_afresh() -> None:
    clock = Clock()
    guard = CommitGuard("s.db", 0, clock)
    guard.failed(locked())
    guard.failed(locked())
    ended = guard.recovered()
    assert ended is not None and ended.failures == 2
    assert guard.fault is None and guard.ready() and guard.recovered() is None
    assert guard.failed(locked()).delay == RETRY_MIN_S


def test_a_free_space_floor_above_what_is_free_raises_low_space(tmp_path: Path) -> None:
    guard = CommitGuard(str(tmp_path / "s.db"), 2**40)  # a floor of a million TiB
    with pytest.raises(LowSpace, match="min_free_mb"):
        guard.check_space()
    CommitGuard(str(tmp_path / "s.db"), 0).check_space()  # 0: no floor


def test_causes_are_worded_for_the_operator() -> None:
    assert "locked by another writer" in describe(locked())
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorname = "SQLITE_FULL"  # type: ignore[attr-defined]
    assert "disk holding the store is full" in describe(full)
    assert describe(OSError(28, "No space left on device")) == "No space left on device"


def test_only_a_damaged_file_is_fatal() -> None:
    corrupt = sqlite3.DatabaseError("database disk image is malformed")
    corrupt.sqlite_errorname = "SQLITE_CORRUPT"  # type: ignore[attr-defined]
    assert is_fatal(corrupt)
    assert not is_fatal(locked())


def test_the_worker_holds_a_refused_batch_and_gives_up_only_past_its_memory_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real store locked by a second connection: nothing reported done, then a stop."""
    from fieldtrack.gateway.config import parse
    from fieldtrack.gateway.ingest import worker as worker_module
    from fieldtrack.gateway.ingest.worker import StoreStuck, Worker

    monkeypatch.setattr(worker_module, "HOLD_MAX", 50)
    path = tmp_path / "s.db"
    w = Worker(parse({"store": {"path": str(path), "busy_timeout_ms": 50, "min_free_mb": 0}}))
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        for i in range(10):
            w.handle("ft/u/ghost", b"\xff %d" % i, i)
        assert w.commit() is None  # refused: no report, so no acknowledgement
        assert w.fault_notice is not None and "locked" in w.fault_notice[1]
        assert w.held() == 10 and len(w.batch.rejects) == 10  # the batch is kept
        other.execute("ROLLBACK")
        w.guard.fault.next_try = 0.0  # type: ignore[union-attr]  (skip the backoff)
        report = w.commit()
        assert report is not None and report.upto == 10 and w.held() == 0
        other.execute("BEGIN IMMEDIATE")
        for i in range(60):
            w.handle("ft/u/ghost", b"\xff %d" % i, i)
        with pytest.raises(StoreStuck, match="none of them was acknowledged"):
            w.commit()  # refused again, and 60 held is past the bound
    finally:
        other.close()
        w.close()
