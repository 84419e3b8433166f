"""The production broker settings, proven against a real Mosquitto.

A broker is started from docker/mosquitto/mosquitto.conf itself, with only what a test
must change: its plain listener on a free loopback port, the TLS listener left out (no
certificate here), and data, password and ACL files in a temporary directory (the ACL
is a copy of docker/mosquitto/acl). Devices, the gateway and the platform then connect
as paho-mqtt MQTT v5 clients and the ACL is checked by what the broker answers: PUBACK,
SUBACK and CONNACK reason codes, and what is (not) delivered. The gateway's example and
container configs are checked against the settings dataclasses here too.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from harness import GatewayProcess, count, frame_bytes, free_port, position, wait_until
from harness import write_config as write_gateway_config
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fieldtrack.gateway import config as gateway_config
from fieldtrack.gateway.config import GatewayConfig, MqttConfig, StoreConfig
from fieldtrack.gateway.store.sqlite import Device, Store
from fieldtrack.protocol import frames

ROOT = Path(__file__).resolve().parents[1]
BROKER_CONF = ROOT / "docker" / "mosquitto" / "mosquitto.conf"
BROKER_ACL = ROOT / "docker" / "mosquitto" / "acl"
EXAMPLE_TOML = ROOT / "gateway" / "gateway.example.toml"
CONTAINER_TOML = ROOT / "docker" / "gateway" / "gateway.toml"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"

# MQTT v5 reason codes (MQTT 5.0, section 2.4).
SUCCESS = 0
GRANTED_QOS_1 = 1
NO_MATCHING_SUBSCRIBERS = 16  # PUBACK: accepted, nobody subscribed
NOT_AUTHORIZED = 135
ACCEPTED = (SUCCESS, NO_MATCHING_SUBSCRIBERS)
CONNACK_V311_NOT_AUTHORISED = 5  # MQTT 3.1.1, section 3.2.2.3

# Options that configure the TLS of the listener above them (mosquitto.conf(5)).
TLS_OPTIONS = {
    "cafile", "capath", "certfile", "keyfile", "ciphers", "ciphers_tls1.3", "crlfile",
    "dhparamfile", "require_certificate", "tls_engine", "tls_engine_kpass_sha1",
    "tls_keyform", "tls_version", "use_identity_as_username", "use_subject_as_username",
    "psk_hint",
}  # fmt: skip
USERS = {
    "fieldtrack-gateway": "gateway-secret",
    "fieldtrack-feeds": "feeds-secret",
    "platform": "platform-secret",
    "van-1": "van-1-secret",
    "van-2": "van-2-secret",
}
WAIT_S = 5.0
SIGNED_FRAME_MAX = frames.MAX_FRAME_BYTES + 64  # COSE_Mac0 around the largest frame


# --- the production file, read as Mosquitto reads it ---------------------------------


def options(text: str) -> list[tuple[str, str]]:
    """(option, value) pairs in file order; comment and blank lines are skipped."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, value = line.strip().partition(" ")
        out.append((key, value.strip()))
    return out


def split_listeners(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The global options and, per listener, its options (its own line as "listener")."""
    globals_: dict[str, str] = {}
    listeners: list[dict[str, str]] = []
    for key, value in options(text):
        if key == "listener":
            listeners.append({"listener": value})
        elif listeners:
            listeners[-1][key] = value
        else:
            globals_[key] = value
    return globals_, listeners


def is_tls(listener: dict[str, str]) -> bool:
    return bool(TLS_OPTIONS & listener.keys())


def test_conf_global_options_precede_the_listeners() -> None:
    """The derived test config relies on it: options after a listener are that listener's."""
    _, listeners = split_listeners(BROKER_CONF.read_text())
    listener_scoped = {"protocol", "use_username_as_clientid", "max_connections", "bind_interface",
                       "mount_point", "max_qos", "max_topic_alias", "socket_domain",
                       "http_dir"} | TLS_OPTIONS  # fmt: skip
    for listener in listeners:
        stray = set(listener) - listener_scoped - {"listener"}
        assert not stray, "global options below listener %s: %s" % (listener["listener"], stray)


def derive_config(directory: Path, port: int) -> Path:
    """The production config with a test listener, test paths and no TLS listener."""
    globals_, listeners = split_listeners(BROKER_CONF.read_text())
    plain = [lst for lst in listeners if not is_tls(lst)]
    assert len(plain) == 1, "expected exactly one plain listener, found %d" % len(plain)
    replace = {
        "persistence_location": str(directory / "data") + "/",
        "password_file": str(directory / "passwd"),
        "acl_file": str(directory / "acl"),
    }
    lines = []
    for key, value in globals_.items():
        if key == "log_dest":
            value = "file " + str(directory / "mosquitto.log")
        lines.append("%s %s" % (key, replace.get(key, value)))
    if os.geteuid() == 0:
        lines.append("user root")  # else Mosquitto drops to "mosquitto": no access to tmp
    lines.append("listener %d 127.0.0.1" % port)
    lines += ["%s %s" % kv for kv in plain[0].items() if kv[0] != "listener"]
    path = directory / "mosquitto.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- the broker and its clients ----------------------------------------------------


class Broker:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Write the test files once, then run Mosquitto."""
        (self.directory / "data").mkdir()
        shutil.copy(BROKER_ACL, self.directory / "acl")
        passwd = self.directory / "passwd"
        for i, (user, password) in enumerate(USERS.items()):
            create = ["-c"] if i == 0 else []
            subprocess.run([MOSQUITTO_PASSWD, *create, "-b", str(passwd), user, password],
                           check=True, capture_output=True, timeout=30)
        self.run()

    def run(self) -> None:
        conf = derive_config(self.directory, self.port)
        with open(self.directory / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)],
                                         stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto rejected the production config:\n"
                                   + (self.directory / "stderr.log").read_text() + self.log())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not listen within 10 s:\n" + self.log())

    def log(self) -> str:
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """Mosquitto running the production config and ACL, users from ``USERS``."""
    if not Path(MOSQUITTO).exists() or not Path(MOSQUITTO_PASSWD).exists():
        pytest.skip("mosquitto and mosquitto_passwd are not installed (make setup installs them)")
    b = Broker(tmp_path_factory.mktemp("broker"))
    try:
        b.start()
        yield b
    finally:
        b.stop()


class Peer:
    """One MQTT v5 client with blocking helpers; every wait is bounded by ``WAIT_S``."""

    def __init__(self, broker: Broker, username: str | None, password: str | None = None,
                 client_id: str = "") -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.broker = broker
        self.connack: queue.Queue[tuple[int, Any]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.acks: dict[int, list[int]] = {}
        self.cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda c, u, msg: self.messages.put(msg)
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self.connack.put((reason.value, properties))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self.cond:
            self.acks[mid] = [reason.value]
            self.cond.notify_all()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        with self.cond:
            self.acks[mid] = [r.value for r in reasons]
            self.cond.notify_all()

    def connect(self, clean_start: bool = True, session_expiry_s: int = 0) -> tuple[int, Any]:
        """Connect and return the CONNACK's reason code and properties.

        The gateway connects with ``clean_start=False`` and a session expiry, so that the
        broker keeps its subscriptions and queues frames for it while it is away.
        """
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
        self.client.connect("127.0.0.1", self.broker.port, keepalive=10,
                            clean_start=clean_start, properties=props)
        self.client.loop_start()
        try:
            return self.connack.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError("no CONNACK within %.0f s" % WAIT_S) from None

    def _ack(self, mid: int) -> list[int]:
        with self.cond:
            if not self.cond.wait_for(lambda: mid in self.acks, WAIT_S):
                raise AssertionError("no acknowledgement for mid %d" % mid)
            return self.acks.pop(mid)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        """Publish; for QoS 1 return the PUBACK reason code."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        return self._ack(info.mid)[0] if qos else None

    def subscribe(self, topic: str, qos: int = 1) -> int:
        """Subscribe and return the SUBACK reason code."""
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS and mid is not None
        return self._ack(mid)[0]

    def receive(self) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=WAIT_S)
        except queue.Empty:
            raise AssertionError("nothing received within %.0f s" % WAIT_S) from None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect_v311(port: int, username: str, password: str) -> int:
    """CONNECT as MQTT 3.1.1 on a raw socket; the CONNACK return code."""

    def string(text: str) -> bytes:
        return len(text).to_bytes(2, "big") + text.encode()

    flags = 0x80 | 0x40 | 0x02  # username, password, clean session
    body = string("MQTT") + bytes([4, flags]) + (10).to_bytes(2, "big")
    body += string(username + "-raw") + string(username) + string(password)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            if not chunk:
                break
            connack += chunk
    assert connack[:2] == b"\x20\x02", connack
    return connack[3]


def drain(peer: Peer, count: int) -> list[mqtt.MQTTMessage]:
    """The next ``count`` messages, and proof that nothing else came before the last."""
    got = [peer.receive() for _ in range(count)]
    assert peer.messages.empty(), [m.topic for m in list(peer.messages.queue)]
    return got


@pytest.fixture
def connect(broker: Broker) -> Iterator[Any]:
    """``connect(user)`` -> a connected ``Peer`` logged in with that user's password."""
    peers: list[Peer] = []

    def make(username: str) -> Peer:
        peer = Peer(broker, username, USERS[username], client_id="%s-%d" % (username, len(peers)))
        peers.append(peer)
        reason, _ = peer.connect()
        assert reason == SUCCESS, "%s was refused: reason code %d" % (username, reason)
        return peer

    yield make
    for peer in peers:
        peer.close()


# --- the production config starts and says what it means ---------------------------


def test_production_conf_starts_and_advertises_its_limits(broker: Broker) -> None:
    peer = Peer(broker, "fieldtrack-gateway", USERS["fieldtrack-gateway"], "gw-limits")
    try:
        reason, props = peer.connect()
    finally:
        peer.close()
    globals_, _ = split_listeners(BROKER_CONF.read_text())
    assert reason == SUCCESS
    assert props.ReceiveMaximum == int(globals_["max_inflight_messages"])
    assert props.MaximumPacketSize == int(globals_["max_packet_size"])
    assert "Error" not in broker.log()


def test_stopped_gateways_queue_survives_a_broker_restart(broker: Broker, connect: Any) -> None:
    gateway = Peer(broker, "fieldtrack-gateway", USERS["fieldtrack-gateway"], "gw-durable")
    assert gateway.connect(clean_start=False, session_expiry_s=3600)[0] == SUCCESS
    assert gateway.subscribe("ft/u/+") == GRANTED_QOS_1
    gateway.close()
    van = connect("van-1")
    for seq in range(3):
        assert van.publish("ft/u/van-1", b"queued-%d" % seq) == SUCCESS
    broker.stop()  # SIGTERM: Mosquitto writes its persistence file
    broker.run()
    gateway = Peer(broker, "fieldtrack-gateway", USERS["fieldtrack-gateway"], "gw-durable")
    try:
        reason, _ = gateway.connect(clean_start=False)  # resume; the session ends with it
        assert reason == SUCCESS
        assert [m.payload for m in drain(gateway, 3)] == [b"queued-0", b"queued-1", b"queued-2"]
    finally:
        gateway.close()


def test_queue_holds_an_hour_of_a_5000_device_fleet() -> None:
    globals_, _ = split_listeners(BROKER_CONF.read_text())
    frames_per_hour = 5000 * 3600 // 10  # one frame per device per 10 s
    assert globals_["persistence"] == "true"
    assert int(globals_["max_queued_messages"]) >= frames_per_hour
    typical_signed_position = 64
    assert int(globals_["max_queued_bytes"]) >= frames_per_hour * typical_signed_position
    assert globals_["queue_qos0_messages"] == "false"


def test_inflight_window_covers_a_gateway_commit_batch() -> None:
    globals_, _ = split_listeners(BROKER_CONF.read_text())
    assert int(globals_["max_inflight_messages"]) > StoreConfig().commit_max_messages


def test_sessions_outlive_the_gateways_session_expiry() -> None:
    globals_, _ = split_listeners(BROKER_CONF.read_text())
    value = globals_["persistent_client_expiration"]
    unit = {"h": 3600, "d": 86400, "w": 7 * 86400, "m": 30 * 86400, "y": 365 * 86400}[value[-1]]
    assert int(value[:-1]) * unit >= MqttConfig().session_expiry_s


def test_largest_signed_frame_fits_in_a_packet() -> None:
    globals_, _ = split_listeners(BROKER_CONF.read_text())
    topic = "ft/u/" + "x" * 32
    # fixed header (<= 5), topic length + topic, packet id, v5 properties length
    packet = 5 + 2 + len(topic) + 2 + 1 + SIGNED_FRAME_MAX
    assert packet <= int(globals_["max_packet_size"]) <= 64 * 1024


def test_devices_connect_over_tls_with_their_username_as_client_id() -> None:
    _, listeners = split_listeners(BROKER_CONF.read_text())
    tls = [lst for lst in listeners if is_tls(lst)]
    assert [lst["listener"] for lst in tls] == ["8883"]
    assert tls[0]["use_username_as_clientid"] == "true"
    assert {"certfile", "keyfile"} <= tls[0].keys()


def test_every_listener_makes_the_username_the_client_id() -> None:
    """The plain listener too: else any account there could take the gateway's session."""
    _, listeners = split_listeners(BROKER_CONF.read_text())
    for listener in listeners:
        assert listener.get("use_username_as_clientid") == "true", listener["listener"]


# --- authentication ------------------------------------------------------------------


def test_wrong_password_is_refused_at_connect(broker: Broker) -> None:
    """Mosquitto 2.0 answers "not authorized" (v5) / 5 (v3.1.1), not "bad password"."""
    peer = Peer(broker, "van-1", "not-the-password", "van-1-wrong")
    try:
        reason, _ = peer.connect()
    finally:
        peer.close()
    assert reason == NOT_AUTHORIZED
    # Trackers speak MQTT 3.1.1: the raw CONNACK return code is what their firmware sees.
    assert connect_v311(broker.port, "van-1", "not-the-password") == CONNACK_V311_NOT_AUTHORISED
    assert connect_v311(broker.port, "van-1", USERS["van-1"]) == 0


def test_anonymous_client_is_refused_at_connect(broker: Broker) -> None:
    peer = Peer(broker, None, client_id="anonymous")
    try:
        reason, _ = peer.connect()
    finally:
        peer.close()
    assert reason == NOT_AUTHORIZED


# --- the ACL ---------------------------------------------------------------------------
# Mosquitto's acl_file checks a PUBLISH when it arrives (a v5 QoS 1 publisher is told
# "not authorized" in its PUBACK) but grants every SUBSCRIBE: read access is checked for
# each message as it is delivered. A subscription outside a client's rights therefore
# gets a SUBACK with the QoS granted and then stays silent; the tests prove the silence.


def test_device_uplink_reaches_the_gateway(connect: Any) -> None:
    gateway = connect("fieldtrack-gateway")
    assert gateway.subscribe("ft/u/+") == GRANTED_QOS_1
    van = connect("van-1")
    assert van.publish("ft/u/van-1", b"frame-1") == SUCCESS
    msg = gateway.receive()
    assert (msg.topic, msg.payload, msg.qos) == ("ft/u/van-1", b"frame-1", 1)


def test_device_publishing_as_another_device_is_refused_and_not_delivered(
    connect: Any,
) -> None:
    gateway = connect("fieldtrack-gateway")
    assert gateway.subscribe("ft/u/+") == GRANTED_QOS_1
    van = connect("van-1")
    assert van.publish("ft/u/van-2", b"forged-qos1", qos=1) == NOT_AUTHORIZED
    van.publish("ft/u/van-2", b"forged-qos0", qos=0)  # QoS 0 has no answer: dropped silently
    # One connection's messages are handled in order: once this one has arrived, the
    # forged ones would have arrived before it.
    assert van.publish("ft/u/van-1", b"genuine") == SUCCESS
    assert gateway.receive().payload == b"genuine"
    assert gateway.messages.empty()


def test_device_presence_is_retained_for_the_gateway(connect: Any) -> None:
    van = connect("van-2")
    assert van.publish("ft/s/van-2", b"\x01", retain=True) in ACCEPTED
    gateway = connect("fieldtrack-gateway")
    assert gateway.subscribe("ft/s/+") == GRANTED_QOS_1
    msg = gateway.receive()
    assert (msg.topic, msg.payload, msg.retain) == ("ft/s/van-2", b"\x01", True)


def test_device_cannot_publish_commands_or_feeds(connect: Any) -> None:
    van = connect("van-1")
    for topic in ("ft/d/van-1", "ft/s/van-2", "fieldtrack/pos/van-1", "owntracks/x/van-1"):
        assert van.publish(topic, b"x") == NOT_AUTHORIZED, topic


def test_device_receives_its_own_commands_only(connect: Any) -> None:
    van = connect("van-1")
    assert van.subscribe("ft/d/van-2") == GRANTED_QOS_1  # granted, yet never delivered
    assert van.subscribe("ft/d/van-1") == GRANTED_QOS_1
    gateway = connect("fieldtrack-gateway")
    assert gateway.publish("ft/d/van-2", b"for-van-2") in ACCEPTED
    assert gateway.publish("ft/d/van-1", b"for-van-1") in ACCEPTED
    msg = van.receive()
    assert (msg.topic, msg.payload) == ("ft/d/van-1", b"for-van-1")
    assert van.messages.empty()


def test_device_receives_its_own_receipts_only(connect: Any) -> None:
    """Receipts are QoS 0 on the command topic: the same rights, no PUBACK to check."""
    van = connect("van-1")
    assert van.subscribe("ft/d/van-2") == GRANTED_QOS_1  # granted, yet never delivered
    assert van.subscribe("ft/d/van-1") == GRANTED_QOS_1
    gateway = connect("fieldtrack-gateway")
    gateway.publish("ft/d/van-2", b"receipt-for-van-2", qos=0)
    gateway.publish("ft/d/van-1", b"receipt-for-van-1", qos=0)
    msg = van.receive()
    assert (msg.topic, msg.payload, msg.qos) == ("ft/d/van-1", b"receipt-for-van-1", 0)
    assert van.messages.empty()


def test_device_wildcard_subscriptions_stay_silent(connect: Any) -> None:
    van = connect("van-1")
    # Filters that overlap on no topic: a message matching two of them would come twice.
    for topic in ("ft/u/+", "ft/d/+", "ft/s/+", "fieldtrack/#", "owntracks/#"):
        assert van.subscribe(topic) == GRANTED_QOS_1, topic
    other = connect("van-2")
    assert other.publish("ft/u/van-2", b"uplink") in ACCEPTED
    gateway = connect("fieldtrack-gateway")
    assert gateway.publish("fieldtrack/pos/van-2", b"{}") in ACCEPTED
    assert gateway.publish("owntracks/fieldtrack/van-2", b"{}") in ACCEPTED
    assert gateway.publish("ft/d/van-1", b"barrier") in ACCEPTED  # its own: delivered
    assert [m.payload for m in drain(van, 1)] == [b"barrier"]


def test_feed_publisher_reads_back_its_retained_last_positions(connect: Any) -> None:
    feeds = connect("fieldtrack-feeds")
    assert feeds.publish("fieldtrack/last/van-1", b'{"time":"x"}', retain=True) in ACCEPTED
    assert feeds.publish("owntracks/fieldtrack/van-1", b"{}") in ACCEPTED
    feeds.close()
    restarted = connect("fieldtrack-feeds")
    try:
        assert restarted.subscribe("fieldtrack/last/+") == GRANTED_QOS_1
        msg = restarted.receive()
        assert (msg.topic, msg.retain) == ("fieldtrack/last/van-1", True)
    finally:  # the broker is shared by this module's tests: clear the retained message
        restarted.publish("fieldtrack/last/van-1", b"", retain=True)


def test_feed_publisher_cannot_read_device_frames_or_command_devices(connect: Any) -> None:
    feeds = connect("fieldtrack-feeds")
    assert feeds.subscribe("ft/u/+") == GRANTED_QOS_1  # granted, yet never delivered
    assert feeds.publish("ft/d/van-1", b"reboot") == NOT_AUTHORIZED
    van = connect("van-1")
    assert van.publish("ft/u/van-1", b"frame") in ACCEPTED
    assert feeds.subscribe("fieldtrack/last/+") == GRANTED_QOS_1
    assert feeds.publish("fieldtrack/last/van-9", b"barrier", retain=False) in ACCEPTED
    assert [m.payload for m in drain(feeds, 1)] == [b"barrier"]


# --- sessions: nobody takes over the gateway's ---------------------------------------
# Mosquitto hands a client id's persistent session (subscriptions and queued frames) to
# whoever connects with that id, and disconnects the holder. With the username as the
# client id on every listener, only the gateway's account reaches the gateway's session.


def gateway_session(broker: Broker) -> Peer:
    gateway = Peer(broker, "fieldtrack-gateway", USERS["fieldtrack-gateway"],
                   MqttConfig().client_id)
    assert gateway.connect(clean_start=False, session_expiry_s=3600)[0] == SUCCESS
    assert gateway.subscribe("ft/u/+") == GRANTED_QOS_1
    return gateway


def end_session(broker: Broker) -> None:
    """Resume the gateway's session with expiry 0, so that it ends with this test."""
    gateway = Peer(broker, "fieldtrack-gateway", USERS["fieldtrack-gateway"],
                   MqttConfig().client_id)
    gateway.connect(clean_start=True)
    gateway.close()


@pytest.mark.parametrize("intruder", ["platform", "van-2", "fieldtrack-feeds"])
def test_no_other_account_can_take_over_the_connected_gateways_session(
    broker: Broker, connect: Any, intruder: str
) -> None:
    gateway = gateway_session(broker)
    thief = Peer(broker, intruder, USERS[intruder], MqttConfig().client_id)
    try:
        assert thief.connect(clean_start=False, session_expiry_s=3600)[0] == SUCCESS
        van = connect("van-1")
        assert van.publish("ft/u/van-1", b"after-the-attempt") == SUCCESS
        msg = gateway.receive()  # still connected, still subscribed
        assert msg.payload == b"after-the-attempt"
        assert thief.messages.empty()
    finally:
        thief.close()
        gateway.close()
        end_session(broker)


def test_no_other_account_can_take_the_stopped_gateways_queue(
    broker: Broker, connect: Any
) -> None:
    gateway = gateway_session(broker)
    gateway.close()  # stopped: the broker queues for it
    van = connect("van-1")
    for seq in range(3):
        assert van.publish("ft/u/van-1", b"queued-%d" % seq) == SUCCESS
    thief = Peer(broker, "platform", USERS["platform"], MqttConfig().client_id)
    try:
        assert thief.connect(clean_start=False, session_expiry_s=3600)[0] == SUCCESS
        assert van.publish("ft/u/van-1", b"barrier") == SUCCESS
        time.sleep(0.5)
        assert thief.messages.empty()  # neither the queue nor the subscription
    finally:
        thief.close()
    gateway = Peer(broker, "fieldtrack-gateway", USERS["fieldtrack-gateway"],
                   MqttConfig().client_id)
    try:
        assert gateway.connect(clean_start=False)[0] == SUCCESS
        assert [m.payload for m in drain(gateway, 4)] == [
            b"queued-0", b"queued-1", b"queued-2", b"barrier"]
    finally:
        gateway.close()


def test_platform_reads_the_feeds_but_not_the_devices(connect: Any) -> None:
    platform = connect("platform")
    for topic in ("ft/u/+", "fieldtrack/#", "owntracks/#"):
        assert platform.subscribe(topic) == GRANTED_QOS_1
    van = connect("van-1")
    assert van.publish("ft/u/van-1", b"raw frame") in ACCEPTED
    gateway = connect("fieldtrack-gateway")
    assert gateway.publish("fieldtrack/pos/van-1", b"{}") == SUCCESS
    assert gateway.publish("owntracks/fieldtrack/van-1", b"{}") == SUCCESS
    assert [m.topic for m in drain(platform, 2)] == [
        "fieldtrack/pos/van-1", "owntracks/fieldtrack/van-1"]
    assert platform.publish("fieldtrack/pos/van-1", b"{}") == NOT_AUTHORIZED


def test_acl_patterns_fill_whole_topic_levels() -> None:
    """mosquitto.conf(5): a %u or %c must be the only text of its level."""
    for key, value in options(BROKER_ACL.read_text()):
        if key == "pattern":
            topic = value.split(" ")[-1]
            for level in topic.split("/"):
                assert level in ("%u", "%c") or ("%u" not in level and "%c" not in level), topic


def test_the_gateway_and_its_feed_publisher_keep_their_sessions(
    broker: Broker, connect: Any, tmp_path: Path
) -> None:
    """The real gateway on the production config, with the container's two accounts."""
    config = write_gateway_config(
        tmp_path, broker.port,
        mqtt={"username": "fieldtrack-gateway", "password": USERS["fieldtrack-gateway"],
              "client_id": MqttConfig().client_id},
        feeds={"enabled": True, "username": "fieldtrack-feeds",
               "password": USERS["fieldtrack-feeds"]})
    store = Store(tmp_path / "fieldtrack.db")
    store.put_device(Device("van-2", "vans", None, True))
    store.close()
    platform = connect("platform")
    assert platform.subscribe("fieldtrack/pos/van-2") == GRANTED_QOS_1
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    gw.start()
    try:
        gw.wait_subscribed()
        van = connect("van-2")
        for seq in range(20):
            assert van.publish("ft/u/van-2", frame_bytes(position(seq), "van-2", None)) \
                in ACCEPTED
        wait_until(lambda: count(tmp_path / "fieldtrack.db") == 20, what="20 positions")
        assert len(drain(platform, 20)) == 20  # the feed publisher delivered them
        assert gw.terminate() == 0
    finally:
        gw.stop_quietly()
        end_session(broker)
    log = (tmp_path / "gateway.log").read_text()
    assert log.count("connected to") == 2 and "disconnected" not in log  # no flapping


# --- the gateway's TOML files ----------------------------------------------------------


@pytest.fixture
def no_secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in gateway_config.SECRETS_FROM_ENV.values():
        monkeypatch.delenv(env, raising=False)


def test_example_toml_loads_to_the_defaults(no_secret_env: None) -> None:
    assert gateway_config.load(EXAMPLE_TOML) == GatewayConfig()


def test_example_toml_names_every_setting() -> None:
    text = EXAMPLE_TOML.read_text()
    data = tomllib.loads(text)
    for section in dataclasses.fields(GatewayConfig):
        if section.name == "log_level":
            assert "log_level" in data
            continue
        if section.name == "working_hours":  # empty by default: shown as a commented example
            assert "# [working_hours." in text
            continue
        keys = {f.name for f in dataclasses.fields(getattr(GatewayConfig(), section.name))}
        assert set(data[section.name]) == keys, section.name


def test_container_toml_loads_and_fits_the_compose_stack(no_secret_env: None) -> None:
    cfg = gateway_config.load(CONTAINER_TOML)
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("mosquitto", 1883)
    assert cfg.mqtt.username == "fieldtrack-gateway" and cfg.mqtt.password == ""
    # The broker makes usernames client ids: the feed publisher needs an account of its own.
    assert cfg.feeds.username == "fieldtrack-feeds" and cfg.feeds.password == ""
    assert (cfg.http.host, cfg.http.port) == ("0.0.0.0", 9108)
    assert cfg.store.path.startswith("/var/lib/fieldtrack/")
    assert cfg.influx.url == "http://victoria-metrics:8428"
