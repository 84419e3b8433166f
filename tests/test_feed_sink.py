"""The MQTT feeds: exact payloads of every builder, the `last` rule, and a real Mosquitto."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from harness import free_port, wait_until
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fieldtrack.gateway.config import FeedsConfig, MqttConfig
from fieldtrack.gateway.sinks.feeds import (
    FeedError,
    FeedSink,
    batch_messages,
    dead_letter_message,
    event_message,
    iso_ms,
    last_message,
    owntracks_message,
    parse_iso_ms,
    position_message,
)
from fieldtrack.gateway.sinks.outbox import Outbox
from fieldtrack.gateway.store.sqlite import POSITION_COLUMNS, Batch, Device, Store

T0 = 1740816930  # 2025-03-01T08:15:30Z
FEEDS = FeedsConfig(owntracks=True)


def pos_row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 1, "device": "van-12", "boot": 3, "seq": 41, "t": T0, "ms": 250,
        "lat": 525200123, "lon": 134050456, "spd": 42, "hdg": 270, "alt": 38, "acc": 5,
        "sats": 11, "fix": 2, "ign": 1, "buf": 0, "mock": 0, "flagged": "accuracy,past",
        "received": T0 * 1000 + 1500, "grp": "north",
    }
    row.update(over)
    return row


def event_row(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 1, "device": "van-12", "boot": 3, "seq": 42, "t": T0 + 10, "kind": "geofence",
        "lat": 525200123, "lon": -134050456, "acc": 0, "data": '{"dir":"enter","fence":"depot"}',
        "received": (T0 + 11) * 1000, "grp": "north",
    }
    row.update(over)
    return row


def position_tuple(device: str, boot: int, seq: int, t: int, **over: Any) -> tuple[Any, ...]:
    values: dict[str, Any] = {
        "device": device, "boot": boot, "seq": seq, "t": t, "ms": 0,
        "lat": 525200000 + seq, "lon": 134050000 + seq, "spd": 30, "hdg": 90, "alt": 38,
        "acc": 4, "sats": 10, "fix": 2, "ign": 1, "buf": 0, "mock": 0, "flagged": "",
        "received": (t + 2) * 1000,
    }
    values.update(over)
    return tuple(values[c] for c in POSITION_COLUMNS)


def event_tuple(device: str, boot: int, seq: int, t: int) -> tuple[Any, ...]:
    return (device, boot, seq, t, "ignition_on", None, None, None, '{"v":1}', (t + 1) * 1000,
            0, None, None)


# --- pure builders ------------------------------------------------------------------


def test_iso_times_have_milliseconds_and_round_trip() -> None:
    assert iso_ms(T0 * 1000 + 250) == "2025-03-01T08:15:30.250Z"
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert parse_iso_ms("2025-03-01T08:15:30.250Z") == T0 * 1000 + 250


def test_position_message_exact() -> None:
    topic, payload, retain = position_message(pos_row(), "fieldtrack")
    assert topic == "fieldtrack/pos/van-12"
    assert retain is False
    assert payload == (
        b'{"device":"van-12","group":"north","boot":3,"seq":41,'
        b'"time":"2025-03-01T08:15:30.250Z","lat":52.5200123,"lon":13.4050456,'
        b'"speed_kmh":42,"heading":270,"alt_m":38,"accuracy_m":5,"sats":11,"fix":"3d",'
        b'"ignition":true,"buffered":false,"mock":false,"flagged":["accuracy","past"],'
        b'"received":"2025-03-01T08:15:31.500Z"}'
    )


def test_position_unknowns_and_enums() -> None:
    row = pos_row(acc=0, fix=0, flagged="", buf=1, mock=1, ign=0, lat=-1, lon=-1800000000)
    del row["grp"]
    doc = json.loads(position_message(row, "fieldtrack")[1])
    assert doc["accuracy_m"] is None
    assert doc["fix"] == "none"
    assert doc["flagged"] == []
    assert (doc["buffered"], doc["mock"], doc["ignition"]) == (True, True, False)
    assert doc["group"] == "default"
    assert (doc["lat"], doc["lon"]) == (-0.0000001, -180.0)
    fixes = [json.loads(position_message(pos_row(fix=f), "p")[1])["fix"] for f in range(4)]
    assert fixes == ["none", "2d", "3d", "dgps"]


def test_last_message_is_the_position_retained() -> None:
    topic, payload, retain = last_message(pos_row(), "acme/feeds/")
    assert topic == "acme/feeds/last/van-12"
    assert retain is True
    assert payload == position_message(pos_row(), "acme/feeds")[1]


def test_event_message_exact() -> None:
    topic, payload, retain = event_message(event_row(), "fieldtrack")
    assert (topic, retain) == ("fieldtrack/event/van-12", False)
    assert payload == (
        b'{"device":"van-12","group":"north","boot":3,"seq":42,"key":"3/42","revision":0,'
        b'"retracted":false,"time":"2025-03-01T08:15:40.000Z","kind":"geofence","lat":52.5200123,'
        b'"lon":-13.4050456,"accuracy_m":null,"data":{"dir":"enter","fence":"depot"},'
        b'"received":"2025-03-01T08:15:41.000Z"}'
    )


def test_a_derived_event_has_its_key_millisecond_time_and_revision() -> None:
    row = event_row(boot=-1, seq=77, kind="geofence_enter", ms=250, revision=2, retracted=1,
                    key="geofence_enter/depot/1740816940.250")
    doc = json.loads(event_message(row, "fieldtrack")[1])
    assert (doc["key"], doc["time"], doc["revision"], doc["retracted"]) == (
        "geofence_enter/depot/1740816940.250", "2025-03-01T08:15:40.250Z", 2, True)


def test_event_without_location_and_with_odd_data() -> None:
    row = event_row(lat=None, lon=None, acc=None, kind="status",
                    data='{"batt":87,"name":"\\u00e9"}')
    assert event_message(row, "fieldtrack")[1] == (
        b'{"device":"van-12","group":"north","boot":3,"seq":42,"key":"3/42","revision":0,'
        b'"retracted":false,"time":"2025-03-01T08:15:40.000Z","kind":"status",'
        b'"data":{"batt":87,"name":"\\u00e9"},"received":"2025-03-01T08:15:41.000Z"}'
    )
    located = json.loads(event_message(event_row(acc=12), "f")[1])
    assert located["accuracy_m"] == 12
    broken = json.loads(event_message(event_row(data="not json"), "f")[1])
    assert broken["data"] == "not json"


def test_owntracks_location_exact() -> None:
    topic, payload, retain = owntracks_message(pos_row(), "owntracks/fieldtrack")
    assert (topic, retain) == ("owntracks/fieldtrack/van-12", False)
    assert payload == (
        b'{"_type":"location","tid":"12","tst":1740816930,"lat":52.5200123,'
        b'"lon":13.4050456,"acc":5,"alt":38,"vel":42,"cog":270,"t":"p",'
        b'"created_at":1740816931}'
    )


def test_owntracks_leaves_out_zero_values_like_the_apps() -> None:
    row = pos_row(acc=0, alt=0, spd=0, hdg=0, device="truck-a7")
    assert owntracks_message(row, "owntracks/fleet")[1] == (
        b'{"_type":"location","tid":"a7","tst":1740816930,"lat":52.5200123,'
        b'"lon":13.4050456,"t":"p","created_at":1740816931}'
    )


def test_dead_letter_message() -> None:
    topic, payload = dead_letter_message(
        "ft/u/van-12", "van-12", "bad_mac", "MAC mismatch", 57, T0 * 1000 + 7
    )
    assert topic == "fieldtrack/dead/van-12"
    assert payload == (
        b'{"topic":"ft/u/van-12","device":"van-12","reason":"bad_mac",'
        b'"detail":"MAC mismatch","bytes":57,"received":"2025-03-01T08:15:30.007Z"}'
    )
    assert dead_letter_message("ft/x", None, "bad_field", "", 0, 0)[0] == "fieldtrack/dead/_unknown"
    topic, payload = dead_letter_message("ft/u/a+#", "a+#", "bad_field", "d", 3, 0, prefix="acme")
    assert topic == "acme/dead/_unknown"
    assert json.loads(payload)["device"] == "a+#"


def test_batch_messages_order_and_owntracks_switch() -> None:
    rows = [pos_row(seq=1, t=T0 + 20), pos_row(seq=2, t=T0 + 10, buf=1),
            pos_row(seq=3, device="van-7", t=T0)]
    events = [event_row()]
    messages, updates = batch_messages(rows, events, FEEDS, {})
    kinds = [topic.split("/")[1] if topic.startswith("fieldtrack/") else "ot"
             for topic, _, _ in messages]
    assert kinds == ["pos", "pos", "pos", "last", "last", "event", "ot", "ot", "ot"]
    ot_times = [json.loads(p)["tst"] for t, p, _ in messages if t.startswith("owntracks/")]
    assert ot_times == [T0, T0 + 10, T0 + 20]  # fix-time order
    assert updates == {"van-12": (T0 + 20) * 1000 + 250, "van-7": T0 * 1000 + 250}
    plain, _ = batch_messages(rows, events, FeedsConfig(owntracks=False), {})
    assert not [t for t, _, _ in plain if t.startswith("owntracks/")]


def test_late_fix_does_not_overwrite_last() -> None:
    newest = pos_row(seq=10, t=T0 + 100)
    late = pos_row(seq=11, t=T0 + 50, buf=1)
    published: dict[str, int] = {}

    # Within one batch the newest fix wins, whatever the store order.
    messages, updates = batch_messages([newest, late], [], FEEDS, published)
    lasts = [p for t, p, r in messages if r]
    assert lasts == [last_message(newest, "fieldtrack")[1]]
    published.update(updates)

    # A later batch with only a late fix publishes no `last` at all.
    messages, updates = batch_messages([pos_row(seq=12, t=T0 + 60, buf=1)], [], FEEDS, published)
    assert [t for t, _, r in messages if r] == []
    assert updates == {}
    assert [t for t, _, _ in messages] == ["fieldtrack/pos/van-12", "owntracks/fieldtrack/van-12"]

    # Milliseconds count; the same fix time again is not newer.
    same = pos_row(seq=13, t=T0 + 100)
    assert batch_messages([same], [], FEEDS, published)[1] == {}
    newer = pos_row(seq=14, t=T0 + 100, ms=251)
    assert batch_messages([newer], [], FEEDS, published)[1] == {"van-12": (T0 + 100) * 1000 + 251}


# --- against a real Mosquitto -----------------------------------------------------------


class Subscriber:
    """Collects (topic, payload, retain) of everything under ``topic_filter``."""

    def __init__(self, port: int, topic_filter: str = "#", client_id: str = "",
                 persistent: bool = False) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or "sub-%d" % free_port(),
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)

        def on_connect(client: mqtt.Client, *args: Any) -> None:
            client.subscribe(topic_filter, qos=1)

        def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            with self.lock:
                self.messages.append((msg.topic, msg.payload, bool(msg.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = on_message
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 300
        self.client.connect("127.0.0.1", port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(5), "the test subscriber did not subscribe"

    def received(self, prefix: str = "") -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return [m for m in self.messages if m[0].startswith(prefix)]

    def keys(self, kind: str) -> set[tuple[str, int, int]]:
        docs = [json.loads(p) for _, p, _ in self.received("fieldtrack/%s/" % kind)]
        return {(d["device"], d["boot"], d["seq"]) for d in docs}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def make_sink(port: int, **kwargs: Any) -> FeedSink:
    options: dict[str, Any] = {"timeout_s": 5.0, "connect_timeout_s": 2.0}
    options.update(kwargs)
    mqtt_config = MqttConfig(host="127.0.0.1", port=port, client_id="gw-%d" % port,
                             reconnect_min_s=0.2, reconnect_max_s=1.0)
    return FeedSink(mqtt_config, FEEDS, **options)


@pytest.fixture
def sink(mosquitto_broker: Any) -> Iterator[FeedSink]:
    s = make_sink(mosquitto_broker.port)
    yield s
    s.close()


def store_with(path: Path, positions: list[tuple[Any, ...]],
               events: Sequence[tuple[Any, ...]] = ()) -> Store:
    store = Store(path)
    store.put_device(Device("van-1", "north", None, True))
    store.commit(Batch(positions=positions, events=list(events)))
    return store


def test_subscriber_receives_every_position_as_built(
    mosquitto_broker: Any, sink: FeedSink, tmp_path: Path
) -> None:
    positions = [position_tuple(dev, 1, seq, T0 + seq) for dev in ("van-1", "van-2")
                 for seq in range(60)]
    events = [event_tuple("van-1", 1, 1000 + i, T0 + i) for i in range(5)]
    store = store_with(tmp_path / "ft.db", positions, events)
    rows, ev_rows = store.positions_after(0, 1000), store.events_after(0, 1000)
    sub = Subscriber(mosquitto_broker.port, "fieldtrack/#")
    try:
        sink.deliver(rows, ev_rows)
        wait_until(lambda: len(sub.received("fieldtrack/pos/")) >= len(rows)
                   and len(sub.received("fieldtrack/event/")) >= len(ev_rows), 5, "the feeds")
        got = Counter((t, p) for t, p, _ in sub.received("fieldtrack/pos/"))
        assert got == Counter(position_message(r, "fieldtrack")[:2] for r in rows)
        assert json.loads(position_message(rows[0], "fieldtrack")[1])["group"] == "north"
        got_events = Counter((t, p) for t, p, _ in sub.received("fieldtrack/event/"))
        assert got_events == Counter(event_message(r, "fieldtrack")[:2] for r in ev_rows)
        wait_until(lambda: len(sub.received("fieldtrack/last/")) >= 2, 5, "the last positions")
        lasts = {t: json.loads(p)["seq"] for t, p, _ in sub.received("fieldtrack/last/")}
        assert lasts == {"fieldtrack/last/van-1": 59, "fieldtrack/last/van-2": 59}
    finally:
        sub.close()
        store.close()


def test_owntracks_feed_on_the_broker(mosquitto_broker: Any, sink: FeedSink,
                                      tmp_path: Path) -> None:
    positions = [position_tuple("van-1", 1, 1, T0 + 30), position_tuple("van-1", 1, 2, T0 + 10)]
    store = store_with(tmp_path / "ft.db", positions)
    sub = Subscriber(mosquitto_broker.port, "owntracks/#")
    try:
        sink.deliver(store.positions_after(0, 10), [])
        wait_until(lambda: len(sub.received()) >= 2, 5, "the OwnTracks messages")
        docs = [json.loads(p) for _, p, _ in sub.received()]
        assert [d["tst"] for d in docs] == [T0 + 10, T0 + 30]
        assert {t for t, _, r in sub.received()} == {"owntracks/fieldtrack/van-1"}
        assert not any(r for _, _, r in sub.received())
    finally:
        sub.close()
        store.close()


def retained_last(port: int, device: str) -> dict[str, Any]:
    sub = Subscriber(port, "fieldtrack/last/" + device)
    try:
        wait_until(lambda: bool(sub.received()), 5, "the retained last position")
        topic, payload, retain = sub.received()[0]
        assert retain
        return dict(json.loads(payload))
    finally:
        sub.close()


def test_retained_last_keeps_the_newest_fix_after_a_late_one(
    mosquitto_broker: Any, sink: FeedSink, tmp_path: Path
) -> None:
    store = store_with(tmp_path / "ft.db", [position_tuple("van-1", 1, 1, T0 + 100)])
    sink.deliver(store.positions_after(0, 10), [])
    store.commit(Batch(positions=[position_tuple("van-1", 1, 2, T0 + 40, buf=1)]))
    sink.deliver(store.positions_after(1, 10), [])
    assert retained_last(mosquitto_broker.port, "van-1")["seq"] == 1

    # A restarted sink knows nothing in memory: it reads the retained `last` back.
    sink.close()
    fresh = make_sink(mosquitto_broker.port)
    try:
        store.commit(Batch(positions=[position_tuple("van-1", 1, 3, T0 + 50, buf=1)]))
        fresh.deliver(store.positions_after(2, 10), [])
        assert retained_last(mosquitto_broker.port, "van-1")["seq"] == 1
        store.commit(Batch(positions=[position_tuple("van-1", 1, 4, T0 + 200)]))
        fresh.deliver(store.positions_after(3, 10), [])
        assert retained_last(mosquitto_broker.port, "van-1")["seq"] == 4
    finally:
        fresh.close()
        store.close()


def test_deliver_raises_when_the_broker_is_down(mosquitto_broker: Any, tmp_path: Path) -> None:
    store = store_with(tmp_path / "ft.db", [position_tuple("van-1", 1, 1, T0)])
    rows = store.positions_after(0, 10)
    sink = make_sink(mosquitto_broker.port, timeout_s=1.0, connect_timeout_s=0.5)
    try:
        sink.deliver(rows, [])
        mosquitto_broker.stop()
        started = time.monotonic()
        with pytest.raises(FeedError, match="not connected"):
            sink.deliver(rows, [])
        assert time.monotonic() - started < 2.0
    finally:
        sink.close()
        store.close()


def test_deliver_raises_on_timeout_when_the_broker_hangs(
    mosquitto_broker: Any, tmp_path: Path
) -> None:
    store = store_with(tmp_path / "ft.db", [position_tuple("van-1", 1, 1, T0)])
    rows = store.positions_after(0, 10)
    sink = make_sink(mosquitto_broker.port, timeout_s=1.0)
    try:
        sink.deliver(rows, [])
        mosquitto_broker.proc.send_signal(signal.SIGSTOP)  # connected, but never acks
        started = time.monotonic()
        try:
            with pytest.raises(FeedError, match="unacknowledged"):
                sink.deliver(rows, [])
        finally:
            mosquitto_broker.proc.send_signal(signal.SIGCONT)
        assert 0.9 < time.monotonic() - started < 2.5
    finally:
        sink.close()
        store.close()


def test_deliver_raises_when_the_connection_drops_mid_delivery(
    mosquitto_broker: Any, tmp_path: Path
) -> None:
    store = store_with(tmp_path / "ft.db", [position_tuple("van-1", 1, s, T0 + s)
                                            for s in range(500)])
    rows = store.positions_after(0, 1000)
    sink = make_sink(mosquitto_broker.port, timeout_s=10.0)
    try:
        sink.deliver(rows[:1], [])
        mosquitto_broker.proc.send_signal(signal.SIGSTOP)
        threading.Timer(0.3, mosquitto_broker.kill).start()
        started = time.monotonic()
        with pytest.raises(FeedError, match="lost the connection"):
            sink.deliver(rows, [])
        assert time.monotonic() - started < 3.0  # the disconnect, not the 10 s timeout
        mosquitto_broker.start()
        sub = Subscriber(mosquitto_broker.port, "fieldtrack/pos/#")
        try:
            wait_until(lambda: sink._ready.is_set(), 5, "the sink to reconnect")
            sink.deliver(rows[-3:], [])
            wait_until(lambda: len(sub.received()) >= 3, 5, "the redelivered positions")
            time.sleep(0.2)
            # The failed delivery's leftovers were dropped, not resent on reconnect.
            assert sorted(json.loads(p)["seq"] for _, p, _ in sub.received()) == [497, 498, 499]
        finally:
            sub.close()
    finally:
        sink.close()
        store.close()


def test_deliver_raises_when_the_broker_refuses(mosquitto_factory: Any, tmp_path: Path) -> None:
    acl = tmp_path / "acl"  # anonymous clients may write `last` and events, not positions
    acl.write_text("topic readwrite fieldtrack/last/#\ntopic readwrite fieldtrack/event/#\n")
    broker = mosquitto_factory(acl_file=str(acl))
    store = store_with(tmp_path / "ft.db", [position_tuple("van-1", 1, 1, T0)])
    sink = make_sink(broker.port)
    try:
        with pytest.raises(FeedError, match="refused .*Not authorized"):
            sink.deliver(store.positions_after(0, 10), [])
    finally:
        sink.close()
        store.close()


def test_outbox_resumes_after_a_broker_restart_without_loss(
    mosquitto_broker: Any, tmp_path: Path
) -> None:
    path = tmp_path / "ft.db"
    store = store_with(path, [position_tuple("van-%d" % d, 1, s, T0 + s)
                              for d in range(3) for s in range(100)],
                       [event_tuple("van-0", 1, 1000 + i, T0 + i) for i in range(20)])
    sub = Subscriber(mosquitto_broker.port, "fieldtrack/#", client_id="outbox-sub",
                     persistent=True)
    sink = make_sink(mosquitto_broker.port, connect_timeout_s=0.3)
    outbox = Outbox(str(path), sink, batch_size=40, poll_s=0.05, retry_min_s=0.1,
                    retry_max_s=0.3)

    def caught_up() -> bool:
        return store.cursor("feeds") == store.max_ids()

    try:
        outbox.start()
        wait_until(caught_up, 10, "the first rows to be delivered")
        mosquitto_broker.stop()
        store.commit(Batch(positions=[position_tuple("van-1", 2, s, T0 + 500 + s)
                                      for s in range(50)],
                           events=[event_tuple("van-1", 2, 1000 + i, T0 + i) for i in range(5)]))
        wait_until(lambda: outbox.failures > 0, 5, "a failed delivery")
        assert not caught_up()
        mosquitto_broker.start()
        store.commit(Batch(positions=[position_tuple("van-2", 2, s, T0 + 600 + s)
                                      for s in range(50)]))
        wait_until(caught_up, 15, "the outbox to catch up after the restart")
        want_pos = {tuple(r) for r in store.iter_rows("SELECT device, boot, seq FROM positions")}
        want_ev = {tuple(r) for r in store.iter_rows("SELECT device, boot, seq FROM events")}
        assert len(want_pos) == 400 and len(want_ev) == 25
        wait_until(lambda: sub.keys("pos") >= want_pos and sub.keys("event") >= want_ev, 10,
                   "every position and event at the subscriber")
    finally:
        outbox.stop()
        sub.close()
        store.close()
