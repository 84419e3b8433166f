"""Helpers for end-to-end gateway tests: a gateway process, a publisher, waiting."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fieldtrack.protocol import cose, fast, topics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + (what or "a condition"))


def write_config(directory: Path, broker_port: int, **sections: dict[str, Any]) -> Path:
    """A gateway.toml for a test: its own store, broker port, client id and http port."""
    base: dict[str, dict[str, Any]] = {
        "mqtt": {"host": "127.0.0.1", "port": broker_port,
                 "client_id": "gw-%d" % broker_port, "reconnect_min_s": 0.2,
                 "reconnect_max_s": 1.0},
        "store": {"path": str(directory / "fieldtrack.db")},
        "http": {"enabled": False},
        "feeds": {"enabled": False},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append("[%s]" % name)
        for key, value in values.items():
            if isinstance(value, bool):
                lines.append("%s = %s" % (key, "true" if value else "false"))
            elif isinstance(value, str):
                lines.append('%s = "%s"' % (key, value))
            else:
                lines.append("%s = %r" % (key, value))
    path = directory / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class GatewayProcess:
    """``fieldtrack gateway run`` as a child process (so it can be killed with -9)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        code = "import sys; from fieldtrack.tools.cli import main; sys.exit(main())"
        logf = open(self.log, "ab")  # noqa: SIM115 (kept open by the child)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "gateway", "run", "-c", str(self.config)],
            stdout=logf, stderr=subprocess.STDOUT, env=dict(os.environ),
        )

    def wait_subscribed(self, times: int = 1, timeout: float = 20.0) -> None:
        """Until the gateway's subscriptions are in place (first start: nothing is queued)."""
        wait_until(lambda: self.log.exists() and self.log.read_text().count("subscribed to")
                   >= times, timeout, "the gateway to subscribe")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)

    def pipeline_pid(self) -> int | None:
        """The gateway's second process (the pipeline), found among its children."""
        assert self.proc is not None
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (stat.parent / "cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.proc.pid and b"spawn_main" in cmdline:
                return int(stat.parent.name)
        return None

    def stop_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def http_get(url: str) -> tuple[int, str]:
    """Status and body of a GET; (0, "") when nothing answers (the gateway is down)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def count(db: Path, sql: str = "SELECT COUNT(*) FROM positions") -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=30)
    try:
        return int(con.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def position(seq: int, boot: int = 1, t0: int | None = None) -> dict[str, Any]:
    t = (t0 if t0 is not None else int(time.time()) - 20000) + seq
    return {"type": "position", "boot": boot, "seq": seq, "t": t,
            "lat": 525200000 + seq * 10, "lon": 134050000 + seq * 10, "spd": 30, "hdg": 90,
            "alt": 38, "acc": 3, "sats": 11, "fix": 2, "ign": True}


def frame_bytes(frame: dict[str, Any], device: str, key: bytes | None) -> bytes:
    payload = fast.encode(frame)
    return cose.sign(payload, key, device) if key is not None else payload


class Publisher:
    """A device-side publisher that waits for every PUBACK and retries on failure."""

    def __init__(self, port: int, client_id: str = "test-publisher") -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, device: str, payload: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            info = self.client.publish(topics.uplink(device), payload, qos=1)
            try:
                info.wait_for_publish(timeout=2.0)
                if info.is_published():
                    return
            except (RuntimeError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("could not publish within %.0f s" % timeout)
            time.sleep(0.1)

    def publish_many(self, device: str, payloads: list[bytes]) -> None:
        infos = [self.client.publish(topics.uplink(device), p, qos=1) for p in payloads]
        for info, payload in zip(infos, payloads, strict=True):
            try:
                info.wait_for_publish(timeout=10.0)
            except (RuntimeError, ValueError):
                pass
            if not info.is_published():
                self.publish(device, payload)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()



class UplinkWatch:
    """Counts the uplink frames of a device passing through the broker (a clean session
    beside the gateway's), e.g. to act once a tracker has published."""

    def __init__(self, port: int, device: str) -> None:
        self.seen = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watch-%d" % port)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topics.uplink(device), 1)
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: Any) -> None:
        self.seen += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
