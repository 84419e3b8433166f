"""The simulator's edge: one paho-mqtt client publishing a fleet's frames at QoS 1."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fieldtrack.tools.simulate.clock import SimClock
from fieldtrack.tools.simulate.errors import SimulateError
from fieldtrack.tools.simulate.fleet import Fleet
from fieldtrack.tools.simulate.tracker import Outgoing


@dataclass
class RunStats:
    """MQTT messages (frames and presence) published and acknowledged, and what it cost."""

    published: int = 0
    acked: int = 0
    frames: int = 0  # of the published messages, protocol frames (the rest: presence)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    sim_s: float = 0.0  # simulated seconds covered
    lag_s: float = 0.0  # how far the simulation was behind its clock at the end
    unacked: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, Any]:
        rate = self.acked / self.wall_s if self.wall_s else 0.0  # messages; frames dominate
        return {"published": self.published, "acked": self.acked, "unacked": self.unacked,
                "frames": self.frames,
                "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                "sim_s": round(self.sim_s, 1), "lag_s": round(self.lag_s, 1),
                "messages_per_s": round(rate, 1), "reconnects": self.reconnects}


def parse_broker(text: str) -> tuple[str, int]:
    """``mqtt://host:port``, ``host:port`` or ``host`` (port 1883)."""
    rest = text.strip()
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme not in ("mqtt", "tcp"):
            raise SimulateError("%s: only mqtt://HOST:PORT is supported (no TLS or websockets "
                                "in the simulator)" % text)
    rest = rest.rstrip("/")
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "1883")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SimulateError("%s: expected HOST:PORT, e.g. 127.0.0.1:1883" % text)
    return host, int(port)


class MqttRunner:
    """Runs a fleet against a broker: one paho client, QoS 1, at most ``max_inflight`` unacked.

    paho's own in-flight window is off (it rescans every message on each PUBACK); the
    window is kept here, so the simulation simply waits when the broker falls behind.
    The client's socket is served from this thread (paho's external-loop interface).
    """

    def __init__(self, fleet: Fleet, host: str, port: int, clock: SimClock,
                 max_inflight: int = 1000, client_id: str = "") -> None:
        self.fleet, self.host, self.port, self.clock = fleet, host, port, clock
        self.max_inflight = max_inflight
        self.stats = RunStats()
        self.want_write = False
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or "fieldtrack-sim-%d" % time.time_ns())
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.refused = ""
        self.connected = False
        self.client.on_socket_register_write = self._register_write
        self.client.on_socket_unregister_write = self._unregister_write

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        self.stats.acked += 1

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self.connected = not reason.is_failure
        self.refused = "" if self.connected else str(reason)

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.want_write = True

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.want_write = False

    def connect(self, timeout: float = 10.0) -> None:
        """Connect and wait for the broker's answer, so a refusal is reported here."""
        where = "the broker at %s:%d" % (self.host, self.port)
        try:
            self.client.connect(self.host, self.port, keepalive=60)
        except OSError as exc:
            raise SimulateError("cannot reach %s (%s): start Mosquitto or pass --broker "
                                "HOST:PORT" % (where, exc.strerror or exc)) from None
        deadline = time.monotonic() + timeout
        while not self.connected and not self.refused and time.monotonic() < deadline:
            self._io(0.05, reconnect=False)
        if self.refused:
            raise SimulateError("%s refused the connection: %s (does it need a user name, "
                                "or an ACL for ft/#?)" % (where, self.refused))
        if not self.connected:
            raise SimulateError("%s did not answer within %.0f s" % (where, timeout))

    @property
    def in_flight(self) -> int:
        return self.stats.published - self.stats.acked

    def _publish(self, messages: list[Outgoing]) -> None:
        publish = self.client.publish
        for topic, payload, retain in messages:
            publish(topic, payload, qos=1, retain=retain)
            if not retain:
                self.stats.frames += 1
        self.stats.published += len(messages)

    def _io(self, timeout: float, reconnect: bool = True) -> None:
        client = self.client
        sock = client.socket()
        if sock is None:
            if reconnect:
                self._reconnect()
            return
        client.loop_write()
        try:
            readable, writable, _ = select.select([sock], [sock] if self.want_write else [], [],
                                                  timeout)
        except (OSError, ValueError):
            readable = writable = []
        rc = mqtt.MQTT_ERR_SUCCESS
        if readable:
            rc = client.loop_read()
        if writable and rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_write()
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        if rc != mqtt.MQTT_ERR_SUCCESS and reconnect:
            self._reconnect()

    def _reconnect(self) -> None:
        self.stats.reconnects += 1
        time.sleep(min(2.0, 0.2 * self.stats.reconnects))
        try:
            self.client.reconnect()  # paho sends the unacknowledged messages again
        except OSError:
            pass

    def run(self, stop: threading.Event, duration: float | None = None,
            progress: Callable[[RunStats], None] | None = None,
            progress_s: float = 5.0) -> RunStats:
        """Simulate and publish until ``stop`` is set or ``duration`` wall seconds pass."""
        started, cpu0 = time.monotonic(), time.process_time()
        sim0 = min(self.clock.now(), self.fleet.next_due())
        next_progress = started + progress_s
        fleet = self.fleet
        while not stop.is_set():
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            room = self.max_inflight - self.in_flight
            sim_now = self.clock.now()
            if room > 0:
                self._publish(fleet.advance(sim_now, min(room, 500)))
            if self.in_flight >= self.max_inflight:
                timeout = 0.05  # the window is full: wait for acks
            elif fleet.next_due() <= sim_now:
                timeout = 0.0
            else:
                timeout = min(0.05, self.clock.wall_delay(fleet.next_due()))
            self._io(timeout)
            if progress is not None and now >= next_progress:
                next_progress = now + progress_s
                self._measure(started, cpu0, sim0)
                progress(self.stats)
        self._finish()
        self._measure(started, cpu0, sim0)
        return self.stats

    def _measure(self, started: float, cpu0: float, sim0: float) -> None:
        s = self.stats
        s.wall_s, s.cpu_s = time.monotonic() - started, time.process_time() - cpu0
        now = self.clock.now()
        done = min(now, self.fleet.next_due())  # how far the fleet got
        s.sim_s = done - sim0
        s.lag_s = now - done
        s.unacked = self.in_flight

    def _finish(self, timeout: float = 30.0) -> None:
        """Drain every buffer, say goodbye (presence), wait for the acks, disconnect."""
        pending = self.fleet.drain() + self.fleet.offline()
        deadline = time.monotonic() + timeout
        while (pending or self.in_flight) and time.monotonic() < deadline:
            room = self.max_inflight - self.in_flight
            if pending and room > 0:
                self._publish(pending[:room])
                pending = pending[room:]
            self._io(0.01)
        self.client.disconnect()
        self.client.loop_write()
