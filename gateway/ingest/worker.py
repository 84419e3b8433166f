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

A commit the store refuses (full disk, read-only filesystem, another writer's lock)
is reported as a fault, never as done: the batch stays here and grows with what
arrives (the broker's in-flight window bounds it, since nothing is acknowledged),
and is retried with backoff until the store takes it. Only if the held messages
pass ``HOLD_MAX`` or the file is no database any more does this process give up,
saying that nothing it held was acknowledged.

Reports go out through their own thread, so this process never stops reading its
input while the other side is busy: neither can wait for the other forever.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from fieldtrack.gateway import epochs, logs, metrics
from fieldtrack.gateway.config import GatewayConfig
from fieldtrack.gateway.derive.engine import DeriveConfig, EventEngine
from fieldtrack.gateway.derive.identity import key_seq
from fieldtrack.gateway.errors import FenceError
from fieldtrack.gateway.fences.index import FenceIndex
from fieldtrack.gateway.fences.loader import load as load_fences
from fieldtrack.gateway.ingest import corrections, downlink, receipts
from fieldtrack.gateway.ingest.pipeline import Outcome, Pipeline, PipelineConfig
from fieldtrack.gateway.sinks.feeds import dead_letter_message
from fieldtrack.gateway.store import commands as commands_table
from fieldtrack.gateway.store import epochs as epochs_table
from fieldtrack.gateway.store.guard import RETRY_BUSY_MS, CommitGuard, is_fatal
from fieldtrack.gateway.store.sqlite import KEPT_REASONS, Batch, Store, StoreError
from fieldtrack.protocol import topics

log = logging.getLogger("fieldtrack.gateway")

REGISTRY_POLL_S = 2.0
COMMANDS_POLL_S = 0.25  # a queued command goes out within this (plus a publish)
REJECT_LOG_S = 10.0
SUMMARY_S = 5.0
# Rejects that put a device's data at risk until someone acts: logged as warnings.
WARN_REASONS = frozenset(("boot_behind", "bad_boot", "key_reused"))
HOUSEKEEPING_S = 0.05
FAULT_LOG_S = 10.0
HOLD_MAX = 200_000  # messages held uncommitted at most (memory), then give up
# Rejects per topic and second that get a reject row and a dead letter; beyond that
# they are only counted. A flood of garbage then costs little more than reading it,
# so the valid frames queued behind it in the broker are not held up (see FAULTS.md).
REJECT_DETAILS_PER_S = 20

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
    unrecorded: int = 0  # rejects over their topic's budget: counted only
    pipeline_buckets: list[int] = field(default_factory=lambda: [0] * _NO_BUCKETS)
    pipeline_s: float = 0.0
    commit_s: float = 0.0
    settled: list[receipts.Run] = field(default_factory=list)  # records judged for good
    receipts: list[tuple[str, bytes]] = field(default_factory=list)  # (topic, payload)
    derive: dict[str, float] = field(default_factory=dict)  # late fixes, re-derivations


class StoreStuck(Exception):
    """The store cannot take commits and waiting longer cannot help; the text says why."""


class Worker:
    """The store, the pipeline and the derived-events engine of one gateway."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.store = Store(config.store.path, busy_timeout_ms=config.store.busy_timeout_ms,
                           rejects_per_topic=config.store.rejects_per_device)
        self.guard = CommitGuard(self.store.path, config.store.min_free_mb)
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
        self.holdback = receipts.Holdback(config.pipeline.receipt_delay_ms / 1000)
        self.received = 0  # messages handled so far
        self.batch_started = 0.0
        self.checked = {"registry": time.monotonic(), "tick": 0.0, "pruned": 0.0,
                        "summary": time.monotonic(), "commands": 0.0}
        self.reject_log: dict[tuple[str, str], tuple[float, int]] = {}
        self.reject_budget: dict[str, tuple[float, int]] = {}  # topic -> (second, rejects)
        self.window = {"positions": 0, "events": 0, "rejects": 0, "duplicates": 0, "late": 0}
        self.fault_notice: tuple[str, str, int] | None = None
        self.downlink = downlink.Downlink(config.pipeline.command_resend_s)
        self.commands_version = -1  # the first housekeeping loads the pending commands
        # For the MQTT process: commands to publish, and counts for /metrics.
        self.outgoing: list[tuple[str, bytes]] = []
        self.command_counts: dict[str, int] = {}

    # --- derived events -----------------------------------------------------

    def _fence_index(self) -> FenceIndex:
        """The fences file's fences; none (said loudly) when there is no such file yet."""
        path = self.config.events.fences_file
        if not path:
            log.warning("NO GEOFENCES: [events] fences_file is empty, so no geofence, dwell, "
                        "visit or no-go event will be derived; set it to the file "
                        "`fieldtrack geofences import FILE` writes")
            return FenceIndex([])
        if not os.path.exists(path):
            log.warning("NO GEOFENCES: %s does not exist, so no geofence, dwell, visit or "
                        "no-go event will be derived until it does; create it with "
                        "`fieldtrack geofences import FILE` (run where the gateway runs, or "
                        "with -c and its config): it is loaded as soon as it appears",
                        os.path.abspath(path))
            return FenceIndex([])
        index = load_fences(path)
        self.fences_mtime = os.path.getmtime(path)
        if len(index):
            log.info("loaded %d geofences from %s", len(index), path)
        else:
            log.warning("NO GEOFENCES: %s holds no fences, so no geofence event will be "
                        "derived", path)
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
        rows = len(self.batch.rejects)
        outcome = self.pipeline.process(topic, payload, received, self.batch)
        spent = time.perf_counter() - started
        if outcome.device in self.downlink.waiting and outcome.keys is not None:
            self.downlink.heard(outcome.device)  # authenticated: the device is there
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
            if reason in KEPT_REASONS or self._within_budget(topic):
                self._dead_letter(topic, outcome.device, reason, outcome.reject.detail,
                                  len(payload), received)
            else:
                del self.batch.rejects[rows:]
                report.unrecorded += 1
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

    def _within_budget(self, topic: str) -> bool:
        """May this topic's reject get a row and a dead letter (REJECT_DETAILS_PER_S)?"""
        now = time.monotonic()
        start, n = self.reject_budget.get(topic, (0.0, 0))
        if now - start >= 1.0:
            if len(self.reject_budget) > 10_000:
                self.reject_budget.clear()
            start, n = now, 0
        self.reject_budget[topic] = (start, n + 1)
        return n < REJECT_DETAILS_PER_S

    def _presence(self, topic: str, payload: bytes) -> None:
        try:
            _, device = topics.parse(topic)
        except Exception:
            return
        online = payload == topics.ONLINE
        self.downlink.presence(device, online)
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
        return (self.received > self.report.upto or len(self.batch) > 0
                or bool(self.report.derive) or self.holdback.next_due <= time.monotonic())

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
        try:
            done = corrections.run(engine, self.store, self.pipeline.registry, time.time())
        except sqlite3.Error as exc:  # tried again after a later commit; the guard reports
            log.warning("re-derivation deferred: the store refused it: %s", exc)
            return
        for name in ("rederived", "fixes", "added", "changed", "retracted", "seconds"):
            value = getattr(done, name)
            if value:
                counts[name] = counts.get(name, 0) + value

    def commit(self) -> Report | None:
        """Commit the batch; the report covers every message handled so far.

        None when the store refused it (the batch is kept for the next try) or a retry
        is not due yet; ``fault_notice`` then says why, for the MQTT process.
        """
        if not self.guard.ready():
            return None
        started = time.perf_counter()
        batch = self.batch
        try:
            self.guard.check_space()
            positions, events, reused, reused_records, acked = self.store.commit(batch)
        except Exception as exc:  # whatever the store raised, the batch is not committed
            self._commit_failed(exc)
            return None
        self._commit_succeeded()
        if batch.acks:
            self._settled(batch, acked)
        self.batch = Batch()
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
        # Durable now: the receipts may go out, with the report, after the commit (a
        # device's own held back briefly, to cover several of its frames).
        now = time.monotonic()
        self.holdback.add(report.settled, now)
        report.receipts = receipts.build(self.holdback.due(now), self.pipeline.registry)
        report.settled = []
        return report

    # --- downlink commands -------------------------------------------------------

    def _settled(self, batch: Batch, acked: tuple[tuple[str, int, str], ...]) -> None:
        """After the commit that applied them: the acked commands need no more sends."""
        for device, cid, *_ in batch.acks:
            self.downlink.settled(device, cid)
        counts = self.command_counts
        for _, _, result in acked:
            counts["acked_" + result] = counts.get("acked_" + result, 0) + 1

    def poll_commands(self, now: float) -> None:
        """Load newly queued or cancelled commands; publish and expire what is due."""
        db = self.store.db
        try:
            version = commands_table.version(db)
            if version != self.commands_version:
                states = self.pipeline.states
                new = self.downlink.load(
                    commands_table.pending(db),
                    lambda d: bool(d in states and states[d].online))
                self.commands_version = version
                if new:
                    self._count("queued", new)
                for row, why in self.downlink.unsendable:
                    log.error("command %d of %s (cid %d) is not sent: %s; cancel it with "
                              "`fieldtrack command cancel %s %d`", row.id, row.device_id,
                              row.cid, why, row.device_id, row.cid)
                self.downlink.unsendable.clear()
            if not self.downlink.waiting:
                return
            send, expired = self.downlink.due(now, self.pipeline.registry)
            if expired:
                now_ms = int(now * 1000)
                self._count("expired", commands_table.mark_expired(db, [
                    (p.id, commands_table.expired_event(
                        p.device, key_seq(key), key, p.cid, p.kind, p.exp, now_ms))
                    for p in expired for key in ("command/%d/expired" % p.cid,)]))
            if not send:
                return
            live = commands_table.mark_sent(db, [p.id for p in send], int(now * 1000))
        except sqlite3.Error as exc:  # tried again at the next turn; commits report faults
            log.warning("downlink commands deferred: the store refused it: %s", exc)
            return
        self.downlink.drop({p.id for p in send if p.id not in live})  # cancelled meanwhile
        self.downlink.sent([p for p in send if p.id in live], now)
        registry = self.pipeline.registry
        for p in send:
            if p.id in live:
                message = downlink.publication(p, registry)
                if message is not None:
                    self.outgoing.append(message)

    def _count(self, name: str, n: int) -> None:
        if n:
            self.command_counts[name] = self.command_counts.get(name, 0) + n

    def take_downlink(self) -> tuple[list[tuple[str, bytes]], dict[str, int], int] | None:
        """What the MQTT process is to publish and count, if anything; then cleared."""
        if not self.outgoing and not self.command_counts and not self.downlink.changed:
            return None
        out, counts = self.outgoing, self.command_counts
        self.outgoing, self.command_counts = [], {}
        self.downlink.changed = False
        return out, counts, self.downlink.count()

    def held(self) -> int:
        """Messages handled but not committed (none of them acknowledged)."""
        return self.received - self.report.upto

    def _commit_failed(self, exc: Exception) -> None:
        if is_fatal(exc):
            raise StoreStuck("%s: the store is damaged (%s); %d messages were not committed "
                             "and not acknowledged: the broker delivers them again once a "
                             "good store is in place" % (self.store.path, exc, self.held()))
        first = self.guard.fault is None
        fault = self.guard.failed(exc)
        self.fault_notice = ("fault", fault.reason, fault.failures)
        now = time.monotonic()
        if first:
            self.store.set_busy_timeout(RETRY_BUSY_MS)
            log.error("cannot commit to the store %s: %s; holding %d messages, none "
                      "acknowledged (the broker keeps them); ingest paused, retrying",
                      self.store.path, fault.reason, self.held())
            fault.logged = now
        elif now - fault.logged >= FAULT_LOG_S:
            fault.logged = now
            log.warning("still cannot commit after %.0f s (%d tries): %s; holding %d "
                        "messages, none acknowledged", now - fault.since, fault.failures,
                        fault.reason, self.held())
        if self.held() > HOLD_MAX:
            raise StoreStuck("the store has refused commits for %.0f s (%s); %d messages "
                             "held, more than this process may keep in memory: none of them "
                             "was acknowledged, the broker delivers them again after a "
                             "restart" % (now - fault.since, fault.reason, self.held()))

    def _commit_succeeded(self) -> None:
        fault = self.guard.recovered()
        if fault is None:
            return
        self.store.set_busy_timeout(self.config.store.busy_timeout_ms)
        log.warning("the store takes commits again after %.1f s and %d failed tries "
                    "(%s); committed the %d messages held", time.monotonic() - fault.since,
                    fault.failures, fault.reason, self.held())

    # --- time ---------------------------------------------------------------

    def housekeeping(self, reload_requested: bool = False) -> None:
        """Timers, registry edits, fence file edits, the rejects' bound, the summary."""
        now = time.monotonic()
        checked = self.checked
        if now - checked["registry"] >= REGISTRY_POLL_S:
            checked["registry"] = now
            try:
                version = self.store.registry_version()
            except sqlite3.Error:
                version = self.registry_version  # a failing store: commits report it
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
        if now - checked["commands"] >= COMMANDS_POLL_S:
            checked["commands"] = now
            self.poll_commands(time.time())
        if now - checked["tick"] >= 1.0 or reload_requested:
            checked["tick"] = now
            if now - checked["pruned"] > 60 and self.guard.fault is None:
                checked["pruned"] = now  # keep the rejects table bounded
                try:
                    self.store.prune_rejects(self.config.store.rejects_keep)
                except sqlite3.Error as exc:  # a failing store: the next commit says so
                    log.warning("rejects not pruned: %s", exc)
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
    ``("stop",)``; the end of the input (the MQTT process died) is a stop too.
    Output: ``("ready",)`` or ``("error", "store" | "fences", text)`` once, then
    ``("report", Report)`` after every commit, ``("fault", reason, failures)`` after
    every refused one and ``("stuck", text)`` before giving up (exit code 3).
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
    except StoreStuck as exc:
        log.error("stopping: %s", exc)
        worker.close()
        reports.put(("stuck", str(exc)))
        reports.put(None)
        sender.join(10)
        os._exit(3)  # the MQTT process sees the exit and stops too
    _finish(worker, reports)
    reports.put(None)
    sender.join(10)


def _finish(worker: Worker, reports: queue.SimpleQueue[Any]) -> None:
    """A last commit of what is held; if the store still refuses it, say what that means."""
    if worker.pending():
        if worker.guard.fault is not None:
            worker.guard.fault.next_try = 0.0  # one last try, whatever the backoff
        held = worker.held()
        try:
            report = worker.commit()
        except StoreStuck:
            report = None
        if report is not None:
            reports.put(("report", report))
        else:
            log.error("stopping with %d messages not committed: none of them was "
                      "acknowledged, the broker delivers them again after a restart", held)
    worker.close()


def _loop(inbox: Connection, worker: Worker, reports: queue.SimpleQueue[Any]) -> None:
    while True:
        if worker.pending():
            wait = min(HOUSEKEEPING_S, worker.guard.wait_s()) if worker.guard.fault else 0.005
        else:
            wait = HOUSEKEEPING_S
        if inbox.poll(wait):
            try:
                message = inbox.recv()
            except (EOFError, OSError):
                return  # the MQTT process is gone: commit what we have and end
            kind = message[0]
            if kind == "msgs":
                for topic, payload, received in message[1]:
                    worker.handle(topic, payload, received)
                    if worker.due():
                        _commit(worker, reports)
            elif kind == "reload":
                worker.housekeeping(reload_requested=True)
            elif kind == "stop":
                return
        if worker.pending() and (worker.due() or not inbox.poll()):  # quiet input: commit
            _commit(worker, reports)
        worker.housekeeping()
        out = worker.take_downlink()
        if out is not None:
            reports.put(("downlink", *out))


def _commit(worker: Worker, reports: queue.SimpleQueue[Any]) -> None:
    report = worker.commit()
    if report is not None:
        reports.put(("report", report))
    elif worker.fault_notice is not None:
        reports.put(worker.fault_notice)
        worker.fault_notice = None


def _send_reports(reports: queue.SimpleQueue[Any], outbox: Connection) -> None:
    while True:
        item = reports.get()
        if item is None:
            return
        try:
            outbox.send(item)
        except OSError:
            return  # the MQTT process is gone
