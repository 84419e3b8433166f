"""Sinks read the store forward with a persistent cursor: the store is their outbox.

A sink is handed rows in store order and either delivers all of them or raises; the
cursor moves only after a delivery returned, so an outage of the sink (or a crash
of the gateway) delays rows but never loses them. A row may be delivered twice
(crash after delivery, before the cursor moved): every sink writes idempotently
(InfluxDB keys points by fix time; feed consumers dedupe positions on device, boot,
seq and events on device, key, revision). A derived event that late fixes corrected or
retracted moves to the end of the log (STORE.md, "Late data"): every sink meets it
again and delivers the new revision.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Protocol

from fieldtrack.gateway.store.sqlite import Store

log = logging.getLogger("fieldtrack.outbox")


class Sink(Protocol):
    name: str

    def deliver(self, positions: list[sqlite3.Row], events: list[sqlite3.Row]) -> None:
        """Deliver every row or raise; called from the outbox thread only."""

    def close(self) -> None: ...


class Outbox:
    """Runs one sink in its own thread with its own store connection."""

    def __init__(
        self,
        store_path: str,
        sink: Sink,
        *,
        batch_size: int = 5000,
        poll_s: float = 0.2,
        retry_min_s: float = 1.0,
        retry_max_s: float = 60.0,
    ) -> None:
        self.store_path = store_path
        self.sink = sink
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.backlog = 0  # rows stored but not yet delivered
        self.lag_s = 0.0  # age of the oldest undelivered row
        self.failures = 0
        self.delivered = 0
        self.healthy = True
        self.thread = threading.Thread(target=self._run, name="outbox-" + sink.name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the delivery in progress; the rest waits in the store for next time."""
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        store = Store(self.store_path, synchronous="NORMAL")
        delay = self.retry_min_s
        try:
            while True:
                try:
                    moved = self.step(store)
                    delay = self.retry_min_s
                    self.healthy = True
                except Exception as exc:  # the sink is down: keep the rows, retry later
                    self.failures += 1
                    self.healthy = False
                    log.warning("sink %s failed (%s); retrying in %.1f s",
                                self.sink.name, exc, delay)
                    if self.stopping.wait(delay):
                        return
                    delay = min(delay * 2, self.retry_max_s)
                    continue
                if self.stopping.is_set():
                    return
                if not moved:
                    self.wake.wait(self.poll_s)
                    self.wake.clear()
        finally:
            store.close()
            self.sink.close()

    def step(self, store: Store) -> bool:
        """Deliver the next rows after the cursor; True when there were any."""
        pos_id, ev_id = store.cursor(self.sink.name)
        positions = store.positions_after(pos_id, self.batch_size)
        events = store.events_after(ev_id, self.batch_size)
        max_p, max_e = store.max_ids()
        self.backlog = (max_p - pos_id) + (max_e - ev_id)
        if not positions and not events:
            self.lag_s = 0.0
            return False
        oldest = min([r["received"] for r in positions[:1] + events[:1]])
        self.lag_s = max(0.0, time.time() - oldest / 1000)
        self.sink.deliver(positions, events)
        new_p = positions[-1]["id"] if positions else pos_id
        new_e = events[-1]["id"] if events else ev_id
        store.set_cursor(self.sink.name, new_p, new_e)
        self.delivered += len(positions) + len(events)
        self.backlog = (max_p - new_p) + (max_e - new_e)
        return True
