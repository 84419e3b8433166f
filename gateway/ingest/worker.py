"""The pipeline process: everything between an MQTT message and a commit.

The gateway runs as two processes so that it uses two cores: the MQTT side
(``service.Gateway``) reads the broker and sends the acknowledgements; this side
authenticates, decodes, filters, derives events and commits. Messages arrive in
chunks, numbered in the order the broker delivered them, and are processed in that
order into a ``Batch``. The batch is committed when it is full, when it is older
than ``commit_interval_ms`` or when no more input waits; each commit is reported
with the number of messages it covers, and only then are their PUBACKs sent.
Either process may die at any instant: nothing acknowledged is uncommitted, and
what was committed but not acknowledged comes again and is ignored by the store's
unique keys.

Reports go out through their own thread, so this process never stops reading its
input while the other side is busy: neither can wait for the other forever.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from fieldtrack.gateway import epochs, logs, metrics
from fieldtrack.gateway.config import GatewayConfig
from fieldtrack.gateway.derive.engine import DeriveConfig, EventEngine
from fieldtrack.gateway.errors import FenceError
from fieldtrack.gateway.fences.index import FenceIndex
from fieldtrack.gateway.fences.loader import load as load_fences
from fieldtrack.gateway.ingest import corrections, receipts
from fieldtrack.gateway.ingest.pipeline import Outcome, Pipeline, PipelineConfig
from fieldtrack.gateway.sinks.feeds import dead_letter_message
from fieldtrack.gateway.store import epochs as epochs_table
from fieldtrack.gateway.store.sqlite import Batch, Store, StoreError
from fieldtrack.protocol import topics

log = logging.getLogger("fieldtrack.gateway")

REGISTRY_POLL_S = 2.0
REJECT_LOG_S = 10.0
SUMMARY_S = 5.0
# Rejects that put a device's data at risk until someone acts: logged as warnings.
WARN_REASONS = frozenset(("boot_behind", "bad_boot", "key_reused"))
HOUSEKEEPING_S = 0.05

_PRESENCE_PREFIX = topics.PREFIX + "/" + topics.PRESENCE + "/"
_NO_BUCKETS = len(metrics.STAGE_BUCKETS) + 1


@dataclass
class Report:
    """What one commit did: the MQTT side acknowledges and counts from this."""

    upto: int  # messages committed so far, counted from the first one sent
    positions: int = 0
    events: int = 0
    duplicates: int = 0
    eras: int = 0  # devices that started a new boot era
    rejects: dict[str, int] = field(default_factory=dict)
    dead_letters: list[tuple[str, bytes]] = field(default_factory=list)
    pipeline_buckets: list[int] = field(default_factory=lambda: [0] * _NO_BUCKETS)
    pipeline_s: float = 0.0
    commit_s: float = 0.0
    settled: list[receipts.Run] = field(default_factory=list)  # records judged for good
    receipts: list[tuple[str, bytes]] = field(default_factory=list)  # (topic, payload)
    derive: dict[str, float] = field(default_factory=dict)  # late fixes, re-derivations


class Worker:
    """The store, the pipeline and the derived-events engine of one gateway."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.store = Store(config.store.path)
        self.fences_mtime = 0.0
        self.engine = self._engine() if config.events.enabled else None
        self.pipeline = Pipeline(
            PipelineConfig(filters=config.filters, max_boot_lag=config.pipeline.max_boot_lag,
                           attendance=config.attendance),
            self.store.devices(),
            self.store.states(),
            self.engine,
            device_epochs=self.store.epochs(),
            boot_stored=self.store.boot_stored,
        )
        self.registry_version = self.store.registry_version()
        self.epochs_version = epochs_table.version(self.store.db)
        self.batch = Batch()
        self.report = Report(0)
        self.received = 0  # messages handled so far
        self.batch_started = 0.0
        self.checked = {"registry": time.monotonic(), "tick": 0.0, "pruned": 0.0,
                        "summary": time.monotonic()}
        self.reject_log: dict[tuple[str, str], tuple[float, int]] = {}
        self.window = {"positions": 0, "events": 0, "rejects": 0, "duplicates": 0, "late": 0}

    # --- derived events -----------------------------------------------------

    def _fence_index(self) -> FenceIndex:
        path = self.config.events.fences_file
        if not path:
            return FenceIndex([])
        index = load_fences(path)
        self.fences_mtime = os.path.getmtime(path)
        log.info("loaded %d geofences from %s", len(index), path)
        return index

    def _engine(self) -> EventEngine:
        ev = self.config.events
        cfg = DeriveConfig(fences=self.config.fences, motion=self.config.motion,
                           reorder_window_s=ev.reorder_window_s,
                           reorder_hold_s=ev.reorder_hold_s,
                           heartbeat_timeout_s=ev.heartbeat_timeout_s,
                           checkpoint_every_s=ev.checkpoint_every_s,
                           rederive_delay_s=ev.rederive_delay_s,
                           working_hours=self.config.working_hours)
        return EventEngine(cfg, self._fence_index(), self.store.derive_states(), time.time,
                           self.store.held_fixes())

    def reload_fences(self, requested: bool) -> None:
        """On SIGHUP (``requested``) or when the fences file changed."""
        path = self.config.events.fences_file
        if self.engine is None or not path:
            return
        try:
            changed = os.path.getmtime(path) != self.fences_mtime
        except OSError:
            changed = False
        if not (changed or requested):
            return
        try:
            self.engine.index = self._fence_index()
        except FenceError as exc:  # keep the fences we have: a typo must not blind us
            self.fences_mtime = os.path.getmtime(path)
            log.error("geofences not reloaded, keeping the previous ones: %s", exc)

    # --- messages -----------------------------------------------------------

    def handle(self, topic: str, payload: bytes, received: int) -> None:
        """One MQTT message into the batch (or the rejects)."""
        self.received += 1
        if not self.batch_started:
            self.batch_started = time.monotonic()
        if topic.startswith(_PRESENCE_PREFIX):
            self._presence(topic, payload)
            return
        started = time.perf_counter()
        outcome = self.pipeline.process(topic, payload, received, self.batch)
        spent = time.perf_counter() - started
        report = self.report
        report.pipeline_buckets[metrics.bucket_of(spent)] += 1
        report.pipeline_s += spent
        if self.config.pipeline.receipts:
            run = receipts.settled(outcome)
            if run is not None:
                report.settled.append(run)
        if outcome.reject is not None:
            reason = outcome.reject.reason
            report.rejects[reason] = report.rejects.get(reason, 0) + 1
            self._log_reject(topic, reason, outcome.reject.detail)
            self._dead_letter(topic, outcome.device, reason, outcome.reject.detail,
                              len(payload), received)
        elif outcome.epoch is not None:
            self._epoch_moved(outcome)
        for name, _ in outcome.dropped:
            reason = "filter_" + name
            report.rejects[reason] = report.rejects.get(reason, 0) + 1

    def _epoch_moved(self, outcome: Outcome) -> None:
        device, boot = outcome.device, outcome.boot
        if outcome.epoch == epochs.ERA:
            self.report.eras += 1
            log.warning("%s started a new boot era at boot %d: it lost its boot counter; its "
                        "records are stored under the new boots (`fieldtrack devices epochs "
                        "%s` shows its history)", device, boot, device)
        elif outcome.epoch == epochs.RESET:
            log.warning("%s: boot %d taken as its reference boot, as `fieldtrack devices "
                        "reset-epochs` asked", device, boot)

    def _presence(self, topic: str, payload: bytes) -> None:
        try:
            _, device = topics.parse(topic)
        except Exception:
            return
        online = payload == topics.ONLINE
        state = self.pipeline.states.get(device)
        if state is not None:
            state.online = online
            self.batch.states[device] = state
        self.pipeline.presence(device, online, self.batch)

    def _dead_letter(self, topic: str, device: str | None, reason: str, detail: str,
                     size: int, received: int) -> None:
        feeds = self.config.feeds
        if feeds.enabled and feeds.dead_letter:
            self.report.dead_letters.append(dead_letter_message(
                topic, device, reason, detail, size, received, prefix=feeds.prefix))

    def _log_reject(self, topic: str, reason: str, detail: str) -> None:
        """One line per topic and reason every REJECT_LOG_S: a bad device can't flood logs."""
        key = (topic[:80], reason)
        now = time.monotonic()
        last, suppressed = self.reject_log.get(key, (0.0, 0))
        if now - last < REJECT_LOG_S:
            self.reject_log[key] = (last, suppressed + 1)
            return
        if len(self.reject_log) > 10_000:
            self.reject_log.clear()
        self.reject_log[key] = (now, 0)
        more = " (+%d more since the last report)" % suppressed if suppressed else ""
        level = logging.WARNING if reason in WARN_REASONS else logging.INFO
        log.log(level, "rejected a frame on %s: %s (%s)%s", key[0], reason, detail, more)

    # --- commit -------------------------------------------------------------

    def due(self) -> bool:
        """Full or old enough: commit now, even while more input waits."""
        if not self.batch_started:
            return False
        if self.received - self.report.upto >= self.config.store.commit_max_messages:
            return True
        return (time.monotonic() - self.batch_started) * 1000 >= \
            self.config.store.commit_interval_ms

    def pending(self) -> bool:
        return self.received > self.report.upto or len(self.batch) > 0 or bool(self.report.derive)

    def count_late(self) -> None:
        """Late fixes seen since the last report, for /metrics and the summary."""
        engine = self.engine
        if engine is not None and engine.late_fixes:
            counts = self.report.derive
            counts["late_fixes"] = counts.get("late_fixes", 0) + engine.late_fixes
            self.window["late"] += engine.late_fixes
            engine.late_fixes = 0

    def correct(self) -> None:
        """Re-derive the devices whose late fixes stopped coming; count it for /metrics."""
        engine = self.engine
        if engine is None or not engine.redo:
            return
        counts = self.report.derive
        done = corrections.run(engine, self.store, self.pipeline.registry, time.time())
        for name in ("rederived", "fixes", "added", "changed", "retracted", "seconds"):
            value = getattr(done, name)
            if value:
                counts[name] = counts.get(name, 0) + value

    def commit(self) -> Report:
        """Commit the batch; the report covers every message handled so far."""
        started = time.perf_counter()
        batch, self.batch = self.batch, Batch()
        positions, events, reused, reused_records = self.store.commit(batch)
        self.count_late()
        report, self.report = self.report, Report(self.received)
        report.upto = self.received
        report.commit_s = time.perf_counter() - started
        # Late fixes of devices now quiet: re-derived in a commit of their own (counted
        # in the next report); the acknowledgements wait for one at most.
        self.correct()
        report.positions, report.events = positions, events
        report.duplicates = (len(batch.positions) - positions + len(batch.events) - events
                             - reused_records)
        for received, topic, device, reason, detail, _, size in reused:
            report.rejects[reason] = report.rejects.get(reason, 0) + 1
            self._log_reject(topic, reason, detail)
            self._dead_letter(topic, device, reason, detail, size, received)
        self.window["positions"] += positions
        self.window["events"] += events
        self.window["rejects"] += len(batch.rejects) + len(reused)
        self.window["duplicates"] += report.duplicates
        self.batch_started = 0.0
        # Durable now: the receipts may go out, with the report, after the commit.
        report.receipts = receipts.build(report.settled, self.pipeline.registry)
        report.settled = []
        return report

    # --- time ---------------------------------------------------------------

    def housekeeping(self, reload_requested: bool = False) -> None:
        """Timers, registry edits, fence file edits, the rejects' bound, the summary."""
        now = time.monotonic()
        checked = self.checked
        if now - checked["registry"] >= REGISTRY_POLL_S:
            checked["registry"] = now
            version = self.store.registry_version()
            if version != self.registry_version:
                self.registry_version = version
                self.pipeline.registry = self.store.devices()
                log.info("device registry reloaded (%d devices)", len(self.pipeline.registry))
            version = epochs_table.version(self.store.db)
            if version != self.epochs_version:
                self.epochs_version = version
                for device, requested in epochs_table.pending_resets(self.store.db).items():
                    self.pipeline.request_reset(device, requested)
                    log.info("reset-epochs for %s: its next new boot becomes its reference", device)
        if now - checked["tick"] >= 1.0 or reload_requested:
            checked["tick"] = now
            if now - checked["pruned"] > 60:  # keep the rejects table bounded
                checked["pruned"] = now
                self.store.prune_rejects(self.config.store.rejects_keep)
            self.pipeline.tick(self.batch)
            if not len(self.batch) and self.received == self.report.upto:
                self.correct()  # else after the commit that comes soon
            if len(self.batch) and not self.batch_started:
                self.batch_started = now
            self.reload_fences(reload_requested)
        if now - checked["summary"] >= SUMMARY_S:
            checked["summary"] = now
            if any(self.window.values()):
                log.info("stored %(positions)d positions and %(events)d events, rejected "
                         "%(rejects)d, ignored %(duplicates)d redelivered copies; %(late)d "
                         "late fixes (for times already judged)" % self.window)
            self.window = dict.fromkeys(self.window, 0)

    def close(self) -> None:
        self.store.close()


# --- the process --------------------------------------------------------------


def serve(inbox: Connection, outbox: Connection, config: GatewayConfig) -> None:
    """The pipeline process's main loop (``multiprocessing`` target).

    Input: ``("msgs", [(topic, payload, received_ms), ...])``, ``("reload",)`` and
    ``("stop",)``; the end of the input (the MQTT process died)
    is a stop too. Output: ``("ready",)`` or ``("error", "store" | "fences", text)``
once, then ``("report", Report)`` after every commit.
    """
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the MQTT process decides when this one ends
    logs.setup(config.log_level)
    try:
        worker = Worker(config)
    except StoreError as exc:
        outbox.send(("error", "store", str(exc)))
        return
    except FenceError as exc:
        outbox.send(("error", "fences", str(exc)))
        return
    reports: queue.SimpleQueue[Any] = queue.SimpleQueue()
    sender = threading.Thread(target=_send_reports, args=(reports, outbox), daemon=True)
    sender.start()
    reports.put(("ready",))
    try:
        _loop(inbox, worker, reports)
    finally:
        if worker.pending():
            reports.put(("report", worker.commit()))
        worker.close()
        reports.put(None)
        sender.join(10)


def _loop(inbox: Connection, worker: Worker, reports: queue.SimpleQueue[Any]) -> None:
    while True:
        waited = inbox.poll(HOUSEKEEPING_S if not worker.pending() else 0.005)
        if waited:
            try:
                message = inbox.recv()
            except (EOFError, OSError):
                return  # the MQTT process is gone: commit what we have and end
            kind = message[0]
            if kind == "msgs":
                for topic, payload, received in message[1]:
                    worker.handle(topic, payload, received)
                    if worker.due():
                        reports.put(("report", worker.commit()))
            elif kind == "reload":
                worker.housekeeping(reload_requested=True)
            elif kind == "stop":
                return
        if worker.pending() and (worker.due() or not inbox.poll()):  # quiet input: commit
            reports.put(("report", worker.commit()))
        worker.housekeeping()


def _send_reports(reports: queue.SimpleQueue[Any], outbox: Connection) -> None:
    while True:
        item = reports.get()
        if item is None:
            return
        try:
            outbox.send(item)
        except OSError:
            return  # the MQTT process is gone
