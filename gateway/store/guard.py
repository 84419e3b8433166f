"""When the store refuses a commit: why, what to tell the operator, when to try again.

A commit that fails (a full disk, a read-only filesystem, another writer holding the
lock, an immutable file) must never be acknowledged: the pipeline process keeps the
uncommitted batch, stops reporting, and retries with a growing delay until the store
takes it. ``CommitGuard`` holds that state; the worker does the I/O. A free-space
floor pauses ingest the same way before SQLite ever meets a full disk.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

RETRY_MIN_S = 0.25
RETRY_MAX_S = 5.0
# While failing, a retry waits this long for a lock, so that the pipeline process keeps
# reading its input between tries (the configured busy timeout applies to the first try).
RETRY_BUSY_MS = 100

# SQLite result codes (by name) that no retry can cure: the file is not a store any more.
_FATAL = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


class LowSpace(Exception):
    """The store's filesystem has less free space than ``[store] min_free_mb``."""


@dataclass(slots=True)
class CommitFault:
    """The current run of failed commits."""

    reason: str
    since: float
    failures: int
    delay: float
    next_try: float
    logged: float


def describe(exc: BaseException) -> str:
    """A failed commit's cause, in the operator's words, with what to look at."""
    if isinstance(exc, LowSpace):
        return str(exc)
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith("SQLITE_BUSY") or "locked" in str(exc):
            return ("the store is locked by another writer (an export, a backup, a sqlite3 "
                    "shell?) for longer than [store] busy_timeout_ms")
        if name.startswith("SQLITE_READONLY"):
            return ("the store is read-only (%s): check the file, its directory and the "
                    "filesystem's mount" % exc)
        if name == "SQLITE_FULL":
            return "the disk holding the store is full (%s)" % exc
        if name.startswith("SQLITE_IOERR"):
            return ("I/O error writing the store (%s): a read-only, full or failing "
                    "filesystem?" % exc)
        return "%s (%s)" % (exc, name or type(exc).__name__)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def is_fatal(exc: BaseException) -> bool:
    """A store that no longer reads as a database: waiting will not help."""
    return (isinstance(exc, sqlite3.DatabaseError)
            and getattr(exc, "sqlite_errorname", "") in _FATAL)


def free_bytes(path: str) -> int:
    """Bytes free for an unprivileged writer on the filesystem that holds ``path``."""
    st = os.statvfs(os.path.dirname(os.path.abspath(path)))
    return st.f_bavail * st.f_frsize


class CommitGuard:
    """The commit-failure state of one store; ``clock`` is monotonic seconds."""

    def __init__(self, path: str, min_free_mb: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.min_free = min_free_mb * 1024 * 1024
        self.clock = clock
        self.fault: CommitFault | None = None

    def check_space(self) -> None:
        """Raise ``LowSpace`` below the floor (a commit would eat into the last space)."""
        if not self.min_free:
            return
        try:
            free = free_bytes(self.path)
        except OSError:
            return  # the commit itself will say what is wrong
        if free < self.min_free:
            raise LowSpace(
                "only %d MiB free on the store's filesystem (%s), below [store] min_free_mb "
                "= %d: free some space" % (free // 2**20, os.path.dirname(
                    os.path.abspath(self.path)), self.min_free // 2**20))

    def ready(self) -> bool:
        """May a commit be tried now (no fault, or its retry is due)?"""
        return self.fault is None or self.clock() >= self.fault.next_try

    def wait_s(self) -> float:
        """Seconds until the next retry (0 when not failing)."""
        return 0.0 if self.fault is None else max(0.0, self.fault.next_try - self.clock())

    def failed(self, exc: BaseException) -> CommitFault:
        """Count one failed try; the delay doubles up to RETRY_MAX_S."""
        now = self.clock()
        reason = describe(exc)
        fault = self.fault
        if fault is None:
            fault = self.fault = CommitFault(reason, now, 0, RETRY_MIN_S, now, 0.0)
        else:
            fault.delay = min(fault.delay * 2, RETRY_MAX_S)
            fault.reason = reason
        fault.failures += 1
        fault.next_try = now + fault.delay
        return fault

    def recovered(self) -> CommitFault | None:
        """A commit went through: the fault that ended, if there was one."""
        fault, self.fault = self.fault, None
        return fault
