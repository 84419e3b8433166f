"""The gateway: the MQTT side, with the pipeline in a process of its own beside it.

This process owns the MQTT client: it reads messages, numbers them in the order the
broker delivered them and hands them in chunks to the pipeline process
(``ingest/worker.py``), which validates, derives events and commits. Each commit comes back
as a report naming how many messages it covers; only then are their PUBACKs sent.
A kill of either process at any instant therefore loses nothing: uncommitted
messages were never acknowledged and the broker's persistent session redelivers
them; the store ignores the copies of what was committed. Two processes because
paho's reading and the pipeline each fill a core of their own at full rate.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import select
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fieldtrack.gateway import dependencies, metrics
from fieldtrack.gateway.config import GatewayConfig
from fieldtrack.gateway.errors import FenceError
from fieldtrack.gateway.sinks.outbox import Outbox
from fieldtrack.gateway.store.sqlite import StoreError, now_ms
from fieldtrack.protocol import topics

if TYPE_CHECKING:
    from fieldtrack.gateway.ingest.worker import Report

log = logging.getLogger("fieldtrack.gateway")

HOUSEKEEPING_S = 0.05  # gauges and checks run at most this often, not per message
CHUNK_MAX = 256  # messages handed over at once under load
CHUNK_AGE_S = 0.002
READ_BURST = 64  # MQTT messages read from the socket per select
START_TIMEOUT_S = 60.0


class PipelineError(Exception):
    """The pipeline process failed to start or died; the message says which."""


class Gateway:
    """The gateway service: ``Gateway(config).run()`` until ``stop()``.

    Its pipeline process is started with multiprocessing's "spawn", which imports the
    main module again: a script that builds a Gateway needs the usual
    ``if __name__ == "__main__":`` guard (``fieldtrack gateway run`` has it).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        sinks: Sequence[Any] = (),
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        dependencies.check()  # before anything starts: an old cbor2 rejects every frame
        self.config = config
        self.on_commit = on_commit
        self.reload_requested = threading.Event()
        self.stopping = threading.Event()
        self.connected = False
        self.epoch = 0  # message ids belong to one connection
        self.sent = 0  # messages handed to the pipeline process
        self.chunk: list[tuple[str, bytes, int]] = []
        self.chunk_started = 0.0
        self.unacked: deque[tuple[int, int, int, int]] = deque()  # (number, mid, qos, epoch)
        self.pipeline_ended = False
        self.commit_fault = ""  # why the store refuses commits, while it does
        self.stuck = ""  # why the pipeline process gave up, if it did
        self.outboxes = [
            Outbox(config.store.path, sink, batch_size=getattr(sink, "batch_size", 5000),
                   retry_min_s=getattr(sink, "retry_min_s", 1.0),
                   retry_max_s=getattr(sink, "retry_max_s", 60.0))
            for sink in sinks
        ]
        self.process, self.to_pipeline, self.from_pipeline = self._start_pipeline()
        atexit.register(self.close)
        self.client = self._client()

    def _start_pipeline(self) -> tuple[Any, Any, Any]:
        """Start the pipeline process and wait until its store and fences are loaded."""
        ctx = multiprocessing.get_context("spawn")  # no inherited threads, locks or sockets
        inbox_r, inbox_w = ctx.Pipe(duplex=False)
        reports_r, reports_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_serve_pipeline, args=(inbox_r, reports_w, self.config),
                           name="fieldtrack-pipeline")
        proc.start()
        inbox_r.close()
        reports_w.close()
        if not reports_r.poll(START_TIMEOUT_S):
            proc.kill()
            raise PipelineError("the pipeline process did not start within %.0f s"
                                % START_TIMEOUT_S)
        try:
            first = reports_r.recv()
        except EOFError:
            proc.join(5)
            raise PipelineError("the pipeline process ended at start (exit code %s); its log "
                                "says why" % proc.exitcode) from None
        if first[0] == "error":
            proc.join(5)
            raise (StoreError if first[1] == "store" else FenceError)(first[2])
        return proc, inbox_w, reports_r

    def reload_fences(self) -> None:
        """Called on SIGHUP (any thread): the main loop passes it on at its next turn."""
        self.reload_requested.set()

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
        # Message ids belong to the lost connection: those messages are still committed,
        # but their acks cannot be sent any more; the broker redelivers, the store dedupes.
        self.epoch += 1
        if not self.stopping.is_set():
            log.warning("disconnected from the broker (%s); reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if not self.chunk:
            self.chunk_started = time.monotonic()
        self.chunk.append((msg.topic, bytes(msg.payload), now_ms()))
        self.sent += 1
        if msg.qos > 0:
            self.unacked.append((self.sent, msg.mid, msg.qos, self.epoch))

    # --- hand-over and acknowledgement ----------------------------------------

    def _hand_over(self, idle: bool) -> None:
        """Send the chunk when it is full, a little old, or the socket went quiet."""
        chunk = self.chunk
        if chunk and (idle or len(chunk) >= CHUNK_MAX
                      or time.monotonic() - self.chunk_started >= CHUNK_AGE_S):
            self.chunk = []
            metrics.FRAMES_IN.inc(len(chunk))
            self._send(("msgs", chunk))

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self.to_pipeline.send(message)
        except OSError:  # the pipeline process is gone: say so, not "broken pipe"
            self.process.join(5)
            self._check_pipeline()
            raise

    def _read_reports(self) -> None:
        """Acknowledge what the pipeline process committed; count what it did."""
        while not self.pipeline_ended and self.from_pipeline.poll():
            try:
                kind, *rest = self.from_pipeline.recv()
            except (EOFError, OSError):
                self.pipeline_ended = True  # _check_pipeline says why
                return
            if kind == "report":
                if self.commit_fault:
                    self.commit_fault = ""
                    metrics.COMMIT_FAILING.set(0)
                self._apply(rest[0])
            elif kind == "fault":  # nothing is acknowledged until a report comes
                self.commit_fault = "%s (%d failed commits)" % (rest[0], rest[1])
                metrics.COMMIT_FAILURES.inc()
                metrics.COMMIT_FAILING.set(1)
            elif kind == "downlink":
                self._send_commands(*rest)
            elif kind == "stuck":
                self.stuck = rest[0]

    def _apply(self, report: Report) -> None:
        acked = 0
        while self.unacked and self.unacked[0][0] <= report.upto:
            _, mid, qos, epoch = self.unacked.popleft()
            if epoch == self.epoch and self.connected:
                self.client.ack(mid, qos)
                acked += 1
        metrics.ACKS_SENT.inc(acked)
        metrics.POSITIONS_STORED.inc(report.positions)
        metrics.EVENTS_STORED.inc(report.events)
        metrics.DUPLICATES.inc(report.duplicates)
        metrics.BOOT_ERAS.inc(report.eras)
        for reason, n in report.rejects.items():
            metrics.REJECTS.labels(reason).inc(n)
        metrics.REJECTS_UNRECORDED.inc(report.unrecorded)
        metrics.STAGE_TIMES.add("pipeline", report.pipeline_buckets, report.pipeline_s)
        metrics.STAGE_TIMES.observe("commit", report.commit_s)
        metrics.count_derive(report.derive)
        if self.connected:  # dead letters are best effort (QoS 0), like the log
            for topic, payload in report.dead_letters:
                self.client.publish(topic, payload, qos=0)
        self._send_receipts(report.receipts)
        for outbox in self.outboxes:
            outbox.wake.set()
        if self.on_commit is not None:
            self.on_commit(acked)

    def _send_receipts(self, receipts: list[tuple[str, bytes]]) -> None:
        """After their commit, never before: QoS 0, as a lost one only costs a resend."""
        if not self.connected:
            return  # the devices send again and get receipts for the copies
        sent = 0
        for topic, payload in receipts:
            if self.client.publish(topic, payload, qos=0).rc == mqtt.MQTT_ERR_SUCCESS:
                sent += 1
        metrics.RECEIPTS_SENT.inc(sent)

    def _send_commands(self, messages: list[tuple[str, bytes]], counts: dict[str, int],
                       pending: int) -> None:
        """Commands the pipeline process marked as sent: QoS 1, not retained. While the
        broker is away paho keeps them for the reconnect; the pipeline process sends
        again what no ack settles (``ingest/downlink.py``)."""
        sent = 0
        for topic, payload in messages:
            if self.client.publish(topic, payload, qos=1).rc in (mqtt.MQTT_ERR_SUCCESS,
                                                                  mqtt.MQTT_ERR_NO_CONN):
                sent += 1
        metrics.count_commands(sent, counts, pending)

    def _check_pipeline(self) -> None:
        if not self.process.is_alive():
            self._read_reports()
            if self.stuck:
                raise PipelineError("the store cannot take commits: %s" % self.stuck)
            raise PipelineError(
                "the pipeline process died (exit code %s); stopping so that a restart "
                "resumes from the store (nothing acknowledged is lost)" % self.process.exitcode)

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
        try:
            while not self.stopping.is_set():
                before = self.sent
                rc = self._turn(0.0 if self.chunk else HOUSEKEEPING_S)
                self._hand_over(idle=self.sent - before < READ_BURST)  # the socket ran dry
                now = time.monotonic()
                if now - housekeeping >= HOUSEKEEPING_S or rc != mqtt.MQTT_ERR_SUCCESS:
                    housekeeping = now
                    self._check_pipeline()
                    if self.reload_requested.is_set():
                        self.reload_requested.clear()
                        self._send(("reload",))
                    self._update_gauges()
                if rc != mqtt.MQTT_ERR_SUCCESS and not self.stopping.is_set():
                    self._reconnect(delay)
                    delay = min(delay * 2, self.config.mqtt.reconnect_max_s)
                elif self.connected:
                    delay = self.config.mqtt.reconnect_min_s
        finally:
            self._shutdown()

    def _turn(self, timeout: float) -> int:
        """One turn of the event loop: the broker's socket and the reports in one select.

        paho's own ``loop()`` selects once per MQTT packet; here a readable socket is
        read until it has no more whole messages (at most READ_BURST), through paho's
        documented ``loop_read``/``loop_write``/``loop_misc``.
        """
        client = self.client
        sock = client.socket()
        if sock is None:
            return int(mqtt.MQTT_ERR_NO_CONN)
        pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted
        buffered = bool(pending and pending())
        try:
            readable, writable, _ = select.select(
                [sock, self.from_pipeline], [sock] if client.want_write() else [], [],
                0.0 if buffered else timeout)
        except (OSError, ValueError):
            return int(mqtt.MQTT_ERR_CONN_LOST)
        rc = int(mqtt.MQTT_ERR_SUCCESS)
        if sock in readable or buffered:
            for _ in range(READ_BURST):
                before = self.sent
                rc = client.loop_read()
                if rc or self.sent == before:
                    break
        if self.from_pipeline in readable:
            self._read_reports()
        if not rc and (sock in writable or client.want_write()):
            rc = client.loop_write()
        if not rc:
            rc = client.loop_misc()
        return rc

    def _reconnect(self, delay: float) -> None:
        self.stopping.wait(delay)
        try:
            self.client.reconnect()
        except OSError as exc:
            log.warning("reconnect failed: %s", exc)

    def _update_gauges(self) -> None:
        metrics.ACKS_PENDING.set(len(self.unacked))
        for outbox in self.outboxes:
            metrics.SINK_BACKLOG.labels(outbox.sink.name).set(outbox.backlog)
            metrics.SINK_LAG.labels(outbox.sink.name).set(outbox.lag_s)

    def _shutdown(self) -> None:
        # Drain: read what the socket already holds, hand it over, wait for its commit,
        # send the acks.
        if self.connected and self.process.is_alive():
            for _ in range(100):
                before = self.sent
                self.client.loop(0.01)
                if self.sent == before:
                    break
        if self.process.is_alive():
            try:
                self._hand_over(idle=True)
                self._send(("stop",))
            except (OSError, PipelineError):
                self.pipeline_ended = True
            deadline = time.monotonic() + 30
            while not self.pipeline_ended and time.monotonic() < deadline:
                if self.from_pipeline.poll(0.05):
                    self._read_reports()
        self.close()
        if self.connected:
            self.client.loop(0.05)  # flush the PUBACKs
            self.client.disconnect()
            self.client.loop(0.05)
        for outbox in self.outboxes:
            outbox.stop()
        log.info("stopped cleanly")

    def close(self) -> None:
        """End the pipeline process (it ends on its own once its input is closed).

        ``run`` does this at its end; call it when ``run`` is never reached. It also
        runs at interpreter exit, so an abandoned gateway never keeps the exit waiting.
        """
        self.to_pipeline.close()
        self.process.join(10)
        if self.process.is_alive():
            log.error("the pipeline process did not stop; killed (the store stays consistent)")
            self.process.kill()
            self.process.join(5)

    def stop(self) -> None:
        self.stopping.set()

    def healthy(self) -> bool:
        return not self.problem()

    def problem(self) -> str:
        """Why the gateway is not doing its job right now; empty when it is."""
        if not self.process.is_alive():
            return "the pipeline process is not running"
        if self.commit_fault:
            return "commits are failing, nothing is acknowledged: " + self.commit_fault
        if not self.connected:
            return "not connected to the broker"
        return ""


def _serve_pipeline(inbox: Any, reports: Any, config: GatewayConfig) -> None:
    """The pipeline process's entry point: the pipeline (and shapely) load there only."""
    from fieldtrack.gateway.ingest.worker import serve

    serve(inbox, reports, config)
