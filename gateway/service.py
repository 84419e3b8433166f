"""The gateway process: MQTT in, pipeline, commit, then acknowledge; sinks behind.

One thread owns the MQTT client, the pipeline and the store connection: messages
are processed inside paho's ``on_message`` (no hand-off between threads, which
would halve throughput) and their effects are buffered in a ``Batch``. The batch
is committed when it is full, when it is older than ``commit_interval_ms`` or when
the socket goes quiet; only then are the PUBACKs sent. A kill at any instant
therefore loses nothing: uncommitted messages were never acknowledged and the
broker's persistent session redelivers them.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fieldtrack.protocol import topics

from . import metrics
from .config import GatewayConfig
from .derive import DeriveConfig, EventEngine
from .feed_sink import dead_letter_message
from .geofence import FenceError, FenceIndex
from .geofence import load as load_fences
from .outbox import Outbox
from .pipeline import Pipeline, PipelineConfig
from .store import Batch, Store, now_ms

log = logging.getLogger("fieldtrack.gateway")

REGISTRY_POLL_S = 2.0
REJECT_LOG_S = 10.0
SUMMARY_S = 5.0
HOUSEKEEPING_S = 0.05  # timers, gauges and polls run at most this often, not per message

_PRESENCE_PREFIX = topics.PREFIX + "/" + topics.PRESENCE + "/"
_FRAMES_IN = metrics.FRAMES_IN
_PIPELINE_LATENCY = metrics.STAGE_LATENCY.labels("pipeline")


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        sinks: Sequence[Any] = (),
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
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
        )
        self.ticked = time.monotonic()
        self.pruned = 0.0
        self.reload_requested = threading.Event()
        self.registry_version = self.store.registry_version()
        self.registry_checked = time.monotonic()
        self.batch = Batch()
        self.pending_acks: list[tuple[int, int]] = []
        self.batch_started = 0.0
        self.received_in_loop = 0
        self.stopping = threading.Event()
        self.connected = False
        self.on_commit = on_commit
        self.reject_log: dict[tuple[str, str], tuple[float, int]] = {}
        self.window = {"positions": 0, "events": 0, "rejects": 0, "duplicates": 0}
        self.window_started = time.monotonic()
        self.outboxes = [
            Outbox(config.store.path, sink, batch_size=getattr(sink, "batch_size", 5000),
                   retry_min_s=getattr(sink, "retry_min_s", 1.0),
                   retry_max_s=getattr(sink, "retry_max_s", 60.0))
            for sink in sinks
        ]
        self.client = self._client()

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
                           working_hours=self.config.working_hours)
        return EventEngine(cfg, self._fence_index(), self.store.derive_states(), time.time,
                           self.store.held_fixes())

    def reload_fences(self) -> None:
        """Called on SIGHUP (any thread): the main loop reloads at its next turn."""
        self.reload_requested.set()

    def _maybe_reload_fences(self) -> None:
        path = self.config.events.fences_file
        if self.engine is None or not path:
            return
        try:
            changed = os.path.getmtime(path) != self.fences_mtime
        except OSError:
            changed = False
        if not (changed or self.reload_requested.is_set()):
            return
        self.reload_requested.clear()
        try:
            self.engine.index = self._fence_index()
        except FenceError as exc:  # keep the fences we have: a typo must not blind us
            self.fences_mtime = os.path.getmtime(path)
            log.error("geofences not reloaded, keeping the previous ones: %s", exc)

    def _tick(self) -> None:
        if time.monotonic() - self.ticked < 1.0:
            return
        self.ticked = time.monotonic()
        if self.ticked - self.pruned > 60:  # keep the rejects table bounded
            self.pruned = self.ticked
            self.store.prune_rejects(self.config.store.rejects_keep)
        self.pipeline.tick(self.batch)
        self._maybe_reload_fences()

    # --- MQTT ---------------------------------------------------------------

    def _client(self) -> mqtt.Client:
        cfg = self.config.mqtt
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        if cfg.tls:
            client.tls_set(ca_certs=cfg.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(max(1, int(cfg.reconnect_min_s)), int(cfg.reconnect_max_s))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _connect(self) -> None:
        cfg = self.config.mqtt
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = cfg.session_expiry_s
        self.client.connect(
            cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=False, properties=props
        )

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        self.connected = True
        metrics.MQTT_CONNECTED.set(1)
        log.info("connected to %s:%d (session present: %s)", self.config.mqtt.host,
                 self.config.mqtt.port, flags.session_present)
        client.subscribe([(topics.UPLINK_FILTER, 1), (topics.PRESENCE_FILTER, 1)])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("the broker refused the subscriptions: %s (check the gateway's ACL)",
                      ", ".join(failed))
        else:
            log.info("subscribed to %s and %s", topics.UPLINK_FILTER, topics.PRESENCE_FILTER)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected = False
        metrics.MQTT_CONNECTED.set(0)
        # Message ids belong to the lost connection: commit what we have, but the acks
        # cannot be sent any more; the broker will redeliver and the store dedupes.
        self._commit()
        self.pending_acks.clear()
        if not self.stopping.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self.received_in_loop += 1
        if not self.batch_started:
            self.batch_started = time.monotonic()
        _FRAMES_IN.inc()
        received = now_ms()
        topic = msg.topic
        if topic.startswith(_PRESENCE_PREFIX):
            self._presence(msg)
        else:
            started = time.perf_counter()
            outcome = self.pipeline.process(topic, bytes(msg.payload), received, self.batch)
            _PIPELINE_LATENCY.observe(time.perf_counter() - started)
            if outcome.reject is not None:
                metrics.REJECTS.labels(outcome.reject.reason).inc()
                self._log_reject(msg.topic, outcome.reject.reason, outcome.reject.detail)
                self._dead_letter(msg.topic, outcome.device, outcome.reject.reason,
                                  outcome.reject.detail, len(msg.payload), received)
            for name, _ in outcome.dropped:
                metrics.REJECTS.labels("filter_" + name).inc()
        if msg.qos > 0:
            self.pending_acks.append((msg.mid, msg.qos))
        if len(self.pending_acks) >= self.config.store.commit_max_messages:
            self._commit()

    def _dead_letter(self, topic: str, device: str | None, reason: str, detail: str,
                     size: int, received: int) -> None:
        feeds = self.config.feeds
        if not (feeds.enabled and feeds.dead_letter):
            return
        dl_topic, payload = dead_letter_message(topic, device, reason, detail, size, received,
                                                prefix=feeds.prefix)
        self.client.publish(dl_topic, payload, qos=0)

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
        log.info("rejected a frame on %s: %s (%s)%s", key[0], reason, detail, more)

    def _presence(self, msg: mqtt.MQTTMessage) -> None:
        try:
            _, device = topics.parse(msg.topic)
        except Exception:
            return
        online = msg.payload == topics.ONLINE
        state = self.pipeline.states.get(device)
        if state is not None:
            state.online = online
            self.batch.states[device] = state
        self.pipeline.presence(device, online, self.batch)

    # --- commit -------------------------------------------------------------

    def _commit(self) -> None:
        if not self.pending_acks and not len(self.batch):
            self.batch_started = 0.0
            return
        started = time.perf_counter()
        batch, self.batch = self.batch, Batch()
        positions, events = self.store.commit(batch)
        metrics.STAGE_LATENCY.labels("commit").observe(time.perf_counter() - started)
        metrics.POSITIONS_STORED.inc(positions)
        metrics.EVENTS_STORED.inc(events)
        duplicates = len(batch.positions) - positions + len(batch.events) - events
        metrics.DUPLICATES.inc(duplicates)
        self.window["positions"] += positions
        self.window["events"] += events
        self.window["rejects"] += len(batch.rejects)
        self.window["duplicates"] += duplicates
        acks, self.pending_acks = self.pending_acks, []
        for mid, qos in acks:
            self.client.ack(mid, qos)
        self.batch_started = 0.0
        for outbox in self.outboxes:
            outbox.wake.set()
        if self.on_commit is not None:
            self.on_commit(len(acks))

    def _commit_due(self, idle: bool) -> bool:
        if not self.pending_acks and not len(self.batch):
            return False
        age_ms = (time.monotonic() - self.batch_started) * 1000 if self.batch_started else 0
        return idle or age_ms >= self.config.store.commit_interval_ms

    def _maybe_reload_registry(self) -> None:
        if time.monotonic() - self.registry_checked < REGISTRY_POLL_S:
            return
        self.registry_checked = time.monotonic()
        version = self.store.registry_version()
        if version != self.registry_version:
            self.registry_version = version
            self.pipeline.registry = self.store.devices()
            log.info("device registry reloaded (%d devices)", len(self.pipeline.registry))

    # --- run ----------------------------------------------------------------

    def run(self) -> None:
        """Serve until ``stop()``; then commit, acknowledge and disconnect cleanly."""
        for outbox in self.outboxes:
            outbox.start()
        delay = self.config.mqtt.reconnect_min_s
        while not self.stopping.is_set():
            try:
                self._connect()
                break
            except OSError as exc:
                log.warning("cannot reach the broker at %s:%d (%s); retrying in %.1f s",
                            self.config.mqtt.host, self.config.mqtt.port, exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, self.config.mqtt.reconnect_max_s)
        housekeeping = 0.0
        while not self.stopping.is_set():
            self.received_in_loop = 0
            timeout = 0.005 if self.pending_acks else 0.1
            rc = self.client.loop(timeout)
            if self._commit_due(idle=self.received_in_loop == 0):
                self._commit()
            now = time.monotonic()
            if now - housekeeping >= HOUSEKEEPING_S or rc != mqtt.MQTT_ERR_SUCCESS:
                housekeeping = now
                self._maybe_reload_registry()
                self._tick()
                self._update_gauges()
                self._maybe_log_summary()
            if rc != mqtt.MQTT_ERR_SUCCESS and not self.stopping.is_set():
                self._reconnect(delay)
                delay = min(delay * 2, self.config.mqtt.reconnect_max_s)
            elif self.connected:
                delay = self.config.mqtt.reconnect_min_s
        self._shutdown()

    def _reconnect(self, delay: float) -> None:
        self._commit()
        self.pending_acks.clear()
        self.stopping.wait(delay)
        try:
            self.client.reconnect()
        except OSError as exc:
            log.warning("reconnect failed: %s", exc)

    def _maybe_log_summary(self) -> None:
        """Every few seconds, one line of what was stored: a quiet log that shows life."""
        if time.monotonic() - self.window_started < SUMMARY_S:
            return
        if any(self.window.values()):
            log.info("stored %(positions)d positions and %(events)d events, rejected "
                     "%(rejects)d, ignored %(duplicates)d redelivered copies" % self.window)
        self.window = dict.fromkeys(self.window, 0)
        self.window_started = time.monotonic()

    def _update_gauges(self) -> None:
        metrics.ACKS_PENDING.set(len(self.pending_acks))
        for outbox in self.outboxes:
            metrics.SINK_BACKLOG.labels(outbox.sink.name).set(outbox.backlog)
            metrics.SINK_LAG.labels(outbox.sink.name).set(outbox.lag_s)

    def _shutdown(self) -> None:
        # Drain: read what the socket already holds, commit it, send the acks.
        if self.connected:
            for _ in range(100):
                self.received_in_loop = 0
                self.client.loop(0.01)
                if self.received_in_loop == 0:
                    break
        self._commit()
        if self.connected:
            self.client.loop(0.05)  # flush the PUBACKs
            self.client.disconnect()
            self.client.loop(0.05)
        for outbox in self.outboxes:
            outbox.stop()
        self.store.close()
        log.info("stopped cleanly")

    def stop(self) -> None:
        self.stopping.set()

    def healthy(self) -> bool:
        return self.connected
