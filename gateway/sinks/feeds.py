"""MQTT feeds: stored positions and events, republished as normalized JSON.

The message builders are pure functions from store rows to ``(topic, payload,
retain)``; ``FeedSink`` is the outbox sink that publishes them with its own MQTT
client, QoS 1, and returns only when the broker has acknowledged every message, so
the outbox cursor never passes a message the broker does not have. Delivery is at
least once: consumers dedupe positions on (device, boot, seq) and events on (device,
key, revision); a derived event that late fixes corrected or retracted comes again with
a higher revision. The feeds are described in FEEDS.md.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from fieldtrack.gateway.config import FeedsConfig, MqttConfig
from fieldtrack.protocol import topics
from fieldtrack.protocol.errors import FrameError

log = logging.getLogger("fieldtrack.feeds")

# A row of Store.positions_after / events_after (sqlite3.Row) or any mapping with
# the same column names; ``grp`` comes from the devices join.
Row = Any
Message = tuple[str, bytes, bool]

FIX_NAMES = {0: "none", 1: "2d", 2: "3d", 3: "dgps"}
UNKNOWN_DEVICE = "_unknown"
OWNTRACKS_TRIGGER = "p"  # OwnTracks booklet, JSON, _type=location: "p" = automatic report
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FeedError(Exception):
    """The feeds could not be delivered; the outbox keeps the rows and retries."""


# --- pure builders -------------------------------------------------------------


def dumps(doc: Any) -> bytes:
    """Compact JSON; non-ASCII is escaped, so the bytes are always valid UTF-8."""
    return json.dumps(doc, separators=(",", ":")).encode("ascii")


def iso_ms(ms: int) -> str:
    """Unix milliseconds as ISO 8601 UTC with milliseconds: ``2025-03-01T08:15:30.250Z``."""
    s, frac = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%03dZ" % frac


def parse_iso_ms(text: str) -> int:
    """The inverse of ``iso_ms`` (any ISO 8601 time with an offset is accepted)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        raise ValueError("%r has no time zone" % text)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def degrees(e7: int) -> float:
    """1e-7 degrees as float degrees, 7 decimals."""
    return round(int(e7) / 10_000_000, 7)


def fix_ms(row: Row) -> int:
    """The fix time of a position row in Unix milliseconds."""
    return int(row["t"]) * 1000 + int(row["ms"] or 0)


def _get(row: Row, name: str, default: Any) -> Any:
    """A column that rows of older tests and stores may lack."""
    try:
        value = row[name]
    except (KeyError, IndexError):
        return default
    return default if value is None else value


def event_key(row: Row) -> str:
    """An event's identity within its device: a derived event's key, else boot/seq."""
    return str(_get(row, "key", "") or "%d/%d" % (row["boot"], row["seq"]))


def _group(row: Row) -> str:
    try:
        grp = row["grp"]
    except (KeyError, IndexError):
        return "default"
    return str(grp) if grp is not None else "default"


def _topic(prefix: str, kind: str, device: str) -> str:
    return "%s/%s/%s" % (prefix.rstrip("/"), kind, device)


def position_doc(row: Row) -> dict[str, Any]:
    flagged = row["flagged"] or ""
    return {
        "device": row["device"],
        "group": _group(row),
        "boot": row["boot"],
        "seq": row["seq"],
        "time": iso_ms(fix_ms(row)),
        "lat": degrees(row["lat"]),
        "lon": degrees(row["lon"]),
        "speed_kmh": row["spd"],
        "heading": row["hdg"],
        "alt_m": row["alt"],
        "accuracy_m": row["acc"] or None,
        "sats": row["sats"],
        "fix": FIX_NAMES.get(row["fix"], "none"),
        "ignition": bool(row["ign"]),
        "buffered": bool(row["buf"]),
        "mock": bool(row["mock"]),
        "flagged": [name for name in flagged.split(",") if name],
        "received": iso_ms(row["received"]),
    }


def position_message(row: Row, prefix: str) -> Message:
    """``{prefix}/pos/{device}``: every stored position, not retained."""
    return _topic(prefix, "pos", row["device"]), dumps(position_doc(row)), False


def last_message(row: Row, prefix: str) -> Message:
    """``{prefix}/last/{device}``: the newest position by fix time, retained."""
    return _topic(prefix, "last", row["device"]), dumps(position_doc(row)), True


def _event_data(text: Any) -> Any:
    if text is None or text == "":
        return {}
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return str(text)  # never block the feed on one bad row: pass the text on


def event_doc(row: Row) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "device": row["device"],
        "group": _group(row),
        "boot": row["boot"],
        "seq": row["seq"],
        "key": event_key(row),
        "revision": int(_get(row, "revision", 0)),
        "retracted": bool(_get(row, "retracted", 0)),
        "time": iso_ms(int(row["t"]) * 1000 + int(_get(row, "ms", 0))),
        "kind": row["kind"],
    }
    if row["lat"] is not None and row["lon"] is not None:
        doc["lat"] = degrees(row["lat"])
        doc["lon"] = degrees(row["lon"])
    if row["acc"] is not None:
        doc["accuracy_m"] = row["acc"] or None
    doc["data"] = _event_data(row["data"])
    doc["received"] = iso_ms(row["received"])
    return doc


def event_message(row: Row, prefix: str) -> Message:
    """``{prefix}/event/{device}``: every stored event, not retained."""
    return _topic(prefix, "event", row["device"]), dumps(event_doc(row)), False


def tracker_id(device: str) -> str:
    """OwnTracks ``tid``: the last two characters, as the apps derive it from the topic."""
    return device[-2:]


def owntracks_doc(row: Row) -> dict[str, Any]:
    """An OwnTracks ``_type=location`` object (OwnTracks booklet, JSON section).

    Like the apps, ``acc``, ``alt``, ``vel`` and ``cog`` are left out when zero; in
    particular an unknown accuracy is left out (Home Assistant ignores such fixes).
    """
    doc: dict[str, Any] = {
        "_type": "location",
        "tid": tracker_id(row["device"]),
        "tst": int(row["t"]),
        "lat": degrees(row["lat"]),
        "lon": degrees(row["lon"]),
    }
    for key, column in (("acc", "acc"), ("alt", "alt"), ("vel", "spd"), ("cog", "hdg")):
        if row[column]:
            doc[key] = int(row[column])
    doc["t"] = OWNTRACKS_TRIGGER
    doc["created_at"] = int(row["received"]) // 1000
    return doc


def owntracks_message(row: Row, owntracks_prefix: str) -> Message:
    """``{owntracks_prefix}/{device}`` (owntracks/<user>/<device>), not retained."""
    topic = "%s/%s" % (owntracks_prefix.rstrip("/"), row["device"])
    return topic, dumps(owntracks_doc(row)), False


def newest_positions(positions: Iterable[Row]) -> dict[str, Row]:
    """The newest position per device by fix time; on a tie the later row wins."""
    newest: dict[str, Row] = {}
    for row in positions:
        best = newest.get(row["device"])
        if best is None or fix_ms(row) >= fix_ms(best):
            newest[row["device"]] = row
    return newest


def batch_messages(
    positions: Sequence[Row],
    events: Sequence[Row],
    feeds: FeedsConfig,
    published: dict[str, int],
) -> tuple[list[Message], dict[str, int]]:
    """Every message for one delivery, and the fix times of the ``last`` messages in it.

    ``published`` maps a device to the fix time (ms) of the newest ``last`` already
    published: a ``last`` goes out only for a position newer than that, so a late
    buffered fix never replaces a newer retained position.
    """
    out = [position_message(row, feeds.prefix) for row in positions]
    updates: dict[str, int] = {}
    for device, row in newest_positions(positions).items():
        ms = fix_ms(row)
        if ms > published.get(device, -1):
            out.append(last_message(row, feeds.prefix))
            updates[device] = ms
    out.extend(event_message(row, feeds.prefix) for row in events)
    if feeds.owntracks:
        ordered = sorted(positions, key=fix_ms)  # stable: store order within one fix time
        out.extend(owntracks_message(row, feeds.owntracks_prefix) for row in ordered)
    return out, updates


def dead_letter_message(
    topic: str,
    device: str | None,
    reason: str,
    detail: str,
    raw_len: int,
    received_ms: int,
    *,
    prefix: str = FeedsConfig.prefix,
) -> tuple[str, bytes]:
    """``{prefix}/dead/{device}`` for a rejected uplink message (not retained).

    A device that is missing or not a valid id (it may come from a malformed topic)
    is published under ``_unknown``; the payload carries it as it was.
    """
    level = UNKNOWN_DEVICE
    if device:
        try:
            level = topics.check_device_id(device)
        except FrameError:
            pass
    payload = {
        "topic": topic,
        "device": device,
        "reason": reason,
        "detail": detail,
        "bytes": raw_len,
        "received": iso_ms(received_ms),
    }
    return _topic(prefix, "dead", level), dumps(payload)


# --- the sink ------------------------------------------------------------------


class FeedSink:
    """Outbox sink publishing the feeds; one MQTT client of its own (``<client id>-feeds``).

    ``deliver`` publishes with QoS 1 and waits for every PUBACK; it raises when the
    client is not connected, when the connection drops, when the broker refuses a
    message (MQTT 5 reason code) or when ``timeout_s`` passes.

    The newest ``last`` fix time per device is kept in memory and also read back
    from the broker's retained ``last`` messages after each connect, so a sink that
    restarts does not overwrite a newer retained position with a late fix.
    """

    name = "feeds"
    batch_size = 1000  # rows per outbox step: up to 3 messages per position

    def __init__(
        self,
        mqtt_config: MqttConfig,
        feeds_config: FeedsConfig,
        *,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.mqtt_config = mqtt_config
        self.feeds = feeds_config
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.client_id = mqtt_config.client_id + "-feeds"
        self._last_filter = _topic(feeds_config.prefix, "last", "+")
        self._published: dict[str, int] = {}  # device -> fix ms of the last `last` we sent
        self._retained: dict[str, int] = {}  # device -> fix ms of the broker's retained last
        self._cond = threading.Condition()
        self._ready = threading.Event()  # connected and retained `last` messages read
        self._generation = 0  # bumped on every disconnect
        self._refused: dict[int, str] = {}  # mid -> reason of a failed PUBACK
        self._barrier_mid: int | None = None
        self._closed = False
        self._props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        self._props.PayloadFormatIndicator = 1
        self._props.ContentType = "application/json"
        self.client = self._make_client()
        self.client.connect_async(mqtt_config.host, mqtt_config.port,
                                  keepalive=mqtt_config.keepalive_s, clean_start=True)
        self.client.loop_start()

    def _make_client(self) -> mqtt.Client:
        cfg = self.mqtt_config
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5)
        if self.feeds.username:  # an account of its own: its own client id on such brokers
            client.username_pw_set(self.feeds.username, self.feeds.password or None)
        elif cfg.username:
            client.username_pw_set(cfg.username, cfg.password or None)
        if cfg.tls:
            client.tls_set(ca_certs=cfg.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(max(1, int(cfg.reconnect_min_s)),
                                   max(1, int(cfg.reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # --- paho callbacks (network thread) ------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("feeds: broker refused the connection: %s", reason)
            return
        # Messages of a failed delivery would be resent now; the outbox redelivers
        # those rows anyway, so drop them instead of publishing them twice.
        dropped = client.drop_out_messages()
        if dropped:
            log.info("feeds: dropped %d unacknowledged messages of a failed delivery",
                     len(dropped))
        # Read the retained `last` messages; the second SUBSCRIBE (same filter, no
        # retained messages) is answered after them and so marks their end.
        client.subscribe(self._last_filter, options=SubscribeOptions(qos=0, noLocal=True))
        _, mid = client.subscribe(
            self._last_filter, options=SubscribeOptions(qos=0, noLocal=True, retainHandling=2)
        )
        self._barrier_mid = mid
        log.info("feeds: connected to %s:%d as %s", self.mqtt_config.host,
                 self.mqtt_config.port, self.client_id)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: Any, properties: Any) -> None:
        if any(rc.is_failure for rc in reason_codes):
            log.warning("feeds: cannot subscribe to %s (%s): a restarted sink may replace a "
                        "newer retained last position with a late one",
                        self._last_filter, ", ".join(str(rc) for rc in reason_codes))
        if mid == self._barrier_mid:
            self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        device = msg.topic.rsplit("/", 1)[-1]
        try:
            ms = parse_iso_ms(json.loads(msg.payload)["time"])
        except (ValueError, KeyError, TypeError):
            return  # a cleared (empty) or foreign retained message
        with self._cond:
            if ms > self._retained.get(device, -1):
                self._retained[device] = ms

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._ready.clear()  # before the generation moves: deliver reads them the other way
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
        if not self._closed:
            log.warning("feeds: disconnected from the broker (%s); reconnecting", reason)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._cond:
            if reason.is_failure:
                self._refused[mid] = str(reason)
            self._cond.notify_all()

    # --- the Sink protocol -----------------------------------------------------------

    def published_last(self) -> dict[str, int]:
        """Per device, the newest fix time (ms) known to be in the retained ``last``."""
        with self._cond:
            merged = dict(self._retained)
        for device, ms in self._published.items():
            merged[device] = max(ms, merged.get(device, -1))
        return merged

    def deliver(self, positions: list[Row], events: list[Row]) -> None:
        """Publish every message for these rows and wait for all PUBACKs, or raise."""
        if self._closed:
            raise FeedError("the feed sink is closed")
        self._ready.wait(self.connect_timeout_s)
        with self._cond:
            generation = self._generation
            self._refused.clear()
        if not self._ready.is_set():  # checked after reading the generation: see _on_disconnect
            raise FeedError("not connected to the broker %s:%d"
                            % (self.mqtt_config.host, self.mqtt_config.port))
        messages, updates = batch_messages(positions, events, self.feeds, self.published_last())
        if not messages:
            return
        self._publish_all(messages, generation)
        self._published.update(updates)

    def _publish_all(self, messages: list[Message], generation: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        infos: list[mqtt.MQTTMessageInfo] = []
        for topic, payload, retain in messages:
            info = self.client.publish(topic, payload, qos=1, retain=retain,
                                       properties=self._props)
            if info.rc == mqtt.MQTT_ERR_NO_CONN or self._generation != generation:
                raise FeedError("lost the connection to the broker while publishing")
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise FeedError("cannot publish to %s: %s" % (topic, mqtt.error_string(info.rc)))
            infos.append(info)
        pending = 0
        with self._cond:
            while True:
                while pending < len(infos) and infos[pending].is_published():
                    pending += 1
                if self._refused:
                    ours = {info.mid for info in infos}
                    refused = [r for mid, r in self._refused.items() if mid in ours]
                    if refused:
                        raise FeedError("the broker refused %d feed messages (%s)"
                                        % (len(refused), refused[0]))
                if pending == len(infos):
                    return
                if self._generation != generation:
                    raise FeedError("lost the connection to the broker; %d of %d messages "
                                    "unacknowledged" % (len(infos) - pending, len(infos)))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise FeedError("%d of %d messages unacknowledged after %.1f s"
                                    % (len(infos) - pending, len(infos), self.timeout_s))
                # paho marks a message published just after on_publish returns: poll too.
                self._cond.wait(min(remaining, 0.05))

    def close(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        if self._closed:
            return
        self._closed = True
        self.client.disconnect()
        self.client.loop_stop()
