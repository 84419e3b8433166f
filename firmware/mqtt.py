# A small MQTT 3.1.1 client for the tracker: QoS 0 and 1, keepalive, last will,
# subscriptions, non-blocking polling. It reports what it could not do (no silent
# failures): publish raises when the link is down, and acknowledgements arrive via
# ``on_ack(packet_id)`` so that store-and-forward deletes only what the broker has.

import time

import socket

_ticks_ms = time.ticks_ms
_ticks_diff = time.ticks_diff


def _ignore(*args):
    pass

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0


class MQTTError(OSError):
    """The link or the broker failed; ``args[0]`` says how."""


def _str(s):
    b = s.encode() if isinstance(s, str) else bytes(s)
    return len(b).to_bytes(2, "big") + b


def _packet(first, body):
    n = len(body)
    head = bytearray([first])
    while True:
        byte = n & 0x7F
        n >>= 7
        head.append(byte | 0x80 if n else byte)
        if not n:
            break
    return bytes(head) + body


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None, keepalive=60,
                 will=None, ssl=False, ssl_params=None):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.will = will  # (topic, payload, qos, retain)
        self.ssl = ssl
        self.ssl_params = ssl_params or {}
        self.sock = None
        self.inbuf = bytearray()
        self.pid = 0
        self.inflight = {}  # packet id -> (topic, payload, retain) of unacknowledged QoS 1
        # Keep QoS 1 payloads to resend them on a resumed session; False when the caller
        # resends from its own store after a reconnect (the tracker's ring): less heap.
        self.keep = True
        self.last_tx = _ticks_ms()
        self.last_rx = _ticks_ms()
        self.ping_out = False
        self.on_message = _ignore  # (topic: bytes, payload: bytes) -> None
        self.on_ack = _ignore  # (packet id) -> None

    # --- link -------------------------------------------------------------------

    def connect(self, clean_session=True, timeout_ms=10000):
        """Open the link; returns True when the broker still had our session."""
        self.close()
        addr = socket.getaddrinfo(self.host, self.port)[0][-1]
        raw = socket.socket()
        raw.settimeout(timeout_ms / 1000)
        sock = raw
        try:
            raw.connect(addr)
            if self.ssl:
                import ssl as _ssl
                sock = _ssl.wrap_socket(raw, **self.ssl_params)  # type: ignore[assignment]
            flags = 0x02 if clean_session else 0
            payload = _str(self.client_id)
            if self.will:
                topic, message, qos, retain = self.will
                flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
                payload += _str(topic) + _str(message)
            if self.user:
                flags |= 0x80
                payload += _str(self.user)
                if self.password:
                    flags |= 0x40
                    payload += _str(self.password)
            body = _str("MQTT") + bytes([4, flags]) + self.keepalive.to_bytes(2, "big")
            sock.write(_packet(CONNECT, body + payload))
            resp = self._read_exact(sock, 4)
            if resp[0] != CONNACK or resp[1] != 2:
                raise MQTTError("not an MQTT broker")
            if resp[3] != 0:
                raise MQTTError("connection refused (code %d)" % resp[3])
        except Exception:
            sock.close()
            raise
        sock.setblocking(False)
        self.sock = sock
        self.inbuf = bytearray()
        self.last_tx = self.last_rx = _ticks_ms()
        self.ping_out = False
        session_present = bool(resp[2] & 1)
        if session_present and self.keep:  # resend what the broker has not acknowledged
            for pid, (topic, payload, retain) in list(self.inflight.items()):
                self._send_publish(topic, payload, 1, retain, pid, dup=True)
        else:
            self.inflight = {}
        return session_present

    def _read_exact(self, sock, n):
        out = b""
        while len(out) < n:
            chunk = sock.read(n - len(out))
            if not chunk:
                raise MQTTError("connection closed")
            out += chunk
        return out

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def connected(self):
        return self.sock is not None

    def disconnect(self):
        if self.sock is not None:
            try:
                self.sock.write(bytes([DISCONNECT, 0]))
            except OSError:
                pass
        self.close()

    def _send(self, data):
        if self.sock is None:
            raise MQTTError("not connected")
        view = memoryview(data)
        sent = 0
        deadline = time.ticks_add(_ticks_ms(), 10000)
        while sent < len(data):
            try:
                n = self.sock.write(view[sent:])
            except OSError as e:
                if e.args and e.args[0] == 11:  # EAGAIN: the socket buffer is full
                    n = 0
                else:
                    self.close()
                    raise MQTTError("link lost while sending") from None
            sent += n or 0
            if _ticks_diff(deadline, _ticks_ms()) < 0:
                self.close()
                raise MQTTError("send timed out")
        self.last_tx = _ticks_ms()

    # --- messages ---------------------------------------------------------------

    def publish(self, topic, payload, qos=0, retain=False):
        """Send; for QoS 1 returns the packet id that ``on_ack`` will report."""
        if isinstance(payload, str):
            payload = payload.encode()
        pid = 0
        if qos:
            self.pid = self.pid % 65535 + 1
            pid = self.pid
            self.inflight[pid] = (topic, bytes(payload), retain) if self.keep else None
        self._send_publish(topic, payload, qos, retain, pid)
        return pid

    def _send_publish(self, topic, payload, qos, retain, pid, dup=False):
        first = PUBLISH | (qos << 1) | (1 if retain else 0) | (0x08 if dup else 0)
        body = _str(topic) + (pid.to_bytes(2, "big") if qos else b"") + bytes(payload)
        self._send(_packet(first, body))

    def subscribe(self, topic, qos=1):
        self.pid = self.pid % 65535 + 1
        self._send(_packet(SUBSCRIBE, self.pid.to_bytes(2, "big") + _str(topic) + bytes([qos])))
        return self.pid

    def poll(self):
        """Read what arrived, answer it, keep the link alive. Raises when the link died."""
        if self.sock is None:
            raise MQTTError("not connected")
        while True:
            try:
                chunk = self.sock.read(512)
            except OSError as e:
                if e.args and e.args[0] in (11, 110):  # EAGAIN / ETIMEDOUT: nothing now
                    break
                self.close()
                raise MQTTError("link lost") from None
            if chunk is None:
                break
            if not chunk:
                self.close()
                raise MQTTError("the broker closed the link")
            self.inbuf.extend(chunk)
            self.last_rx = _ticks_ms()
        while self._one_packet():
            pass
        now = _ticks_ms()
        if self.keepalive:
            if _ticks_diff(now, self.last_tx) > self.keepalive * 500:
                self._send(bytes([PINGREQ, 0]))
                self.ping_out = True
            if _ticks_diff(now, self.last_rx) > self.keepalive * 1500:
                self.close()
                raise MQTTError("the broker stopped answering")

    def _one_packet(self):
        buf = self.inbuf
        if len(buf) < 2:
            return False
        n, shift, i = 0, 0, 1
        while True:
            if i >= len(buf):
                return False
            b = buf[i]
            n |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                self.close()
                raise MQTTError("bad packet from the broker")
        if len(buf) < i + n:
            return False
        first = buf[0]
        body = bytes(buf[i:i + n])
        self.inbuf = buf[i + n:]
        kind = first & 0xF0
        if kind == PUBACK:
            pid = int.from_bytes(body[:2], "big")
            if pid in self.inflight:
                del self.inflight[pid]
                self.on_ack(pid)
        elif kind == PUBLISH:
            tlen = int.from_bytes(body[:2], "big")
            topic = body[2:2 + tlen]
            pos = 2 + tlen
            qos = (first >> 1) & 3
            if qos:
                self._send(bytes([PUBACK, 2]) + body[pos:pos + 2])
                pos += 2
            self.on_message(topic, body[pos:])
        elif kind == PINGRESP:
            self.ping_out = False
        return True
