"""Gateway throughput, latency and memory, side by side with a raw paho subscriber.

Run from the repository root (full: about 3 to 5 minutes; --quick: under a minute on
an idle machine):

    .venv/bin/python benchmarks/gateway_throughput.py [--quick] [--profile]

Everything runs against a Mosquitto that this script starts on a free port of
127.0.0.1, with persistence OFF (the broker is not what is measured) and the
in-flight and queue limits raised so that nothing waits on them or is dropped; the
config is printed. A fresh broker, store and set of processes is used for every
measurement. Publishers, the raw subscriber and the gateway each run in their own
process (multiprocessing, spawn), and all of them are ended on exit, also on errors.

1. Raw baseline: a paho-mqtt 2.x subscriber (MQTT v5, CallbackAPIVersion.VERSION2,
   QoS 1, automatic acks) that only counts messages, while publisher processes send
   N signed single-position frames at full speed with QoS 1 (pre-encoded, no network
   thread, 1000 in flight). Tried with 1 and with 2 publisher processes; the fastest
   round is the baseline and its publisher count is used for the gateway too. Which
   side limits is told by when the publishers had all their PUBACKs compared with
   when the subscriber had every message, and by each process's CPU use.
2. The gateway (``Gateway(config).run()`` in its own process with the default
   settings, SQLite store in a temp dir on local disk, WAL, synchronous=FULL; the
   devices in its registry; its pipeline process beside it, whose CPU time and memory
   are counted with the gateway's) receiving the same N frames, signed with per-device keys
   (COSE_Mac0, as devices send them), then unsigned, then signed with the receipts off
   ([pipeline] receipts = false; by default the gateway publishes one signed receipt per
   device and run of records after each commit; nobody subscribes to them here, so the
   broker drops them); and once more signed with the derived events stage off, to show
   what that stage costs. Rate = N / (first
   publish -> the commit that makes the N-th frame durable); the rows in SQLite must
   number exactly N (checked, as are rejects: none).
3. Positions/s with signed 60-fix ``batch`` frames (seq of frame k = k * 60).
4. Latency publish -> commit at about half the signed single-frame rate, paced.
5. Peak RSS (VmHWM from /proc/<pid>/status) of the gateway's two processes, summed,
   with 10,000 registered devices, each sending a few signed frames; the same with the
   receipts off, where a commit covers so many devices that it costs about one receipt
   per frame (their worst case).

In full mode 1 and 2 are run twice and the best round is reported (the machine may
be shared). The CPU time per message of the raw subscriber and of the gateway is
printed as well: it depends much less than the rates on what else the machine does.

Frames are the city track (benchmarks/city_track.py), moved in time to end a minute
ago, so that the gateway's position filters accept every fix.

How commit times are known without touching gateway code: the gateway is built with
its public ``on_commit`` hook, which it calls after every store commit with the
number of messages acknowledged; the benchmark's gateway process records the wall
clock and the running total at each call. Rows get consecutive ids in commit order
and every frame here makes exactly one position row (checked), so the row with id i
was made durable by the first commit whose running total reaches i. The publisher
records the wall-clock time just before handing each frame to paho; both clocks are
the same machine's CLOCK_REALTIME. The store's ``received`` column (when the gateway
started on the frame) splits each latency into broker/socket and gateway parts.

Where the gateway's time goes is read from its own Prometheus histograms (time in
the pipeline per message, time in the SQLite commit per batch) and from the CPU time
of both processes; ``--profile`` adds cProfile runs of the MQTT process through the
broker and of the pipeline's work on the same frames in this process (slower, so
only the profile is printed from those runs, never a rate).

Exit status 0 when every target passes, 1 when one fails, 2 on an error.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import multiprocessing as mp
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
BROKER_OPTIONS: dict[str, object] = {
    "allow_anonymous": "true",
    "persistence": "false",
    "max_inflight_messages": 10_000,
    "max_queued_messages": 1_000_000,
    "max_queued_bytes": 0,
}
PUBLISHER_INFLIGHT = 1000  # paho's client-side window of unacknowledged QoS 1 messages
BATCH_FIXES = 60
PROFILE_LINES = 15
TARGET_RATIO = 0.6
TARGET_POSITIONS = 100_000
TARGET_P99_MS = 100.0

FULL = {
    "n": 30_000,
    "devices": 100,
    "batch_frames": 3_000,
    "latency_s": 10.0,
    "mem_devices": 10_000,
    "mem_frames": 3,
    "rounds": 2,
}
QUICK = {
    "n": 6_000,
    "devices": 100,
    "batch_frames": 200,
    "latency_s": 2.0,
    "mem_devices": 10_000,
    "mem_frames": 1,
    "rounds": 1,
}

CTX = mp.get_context("spawn")  # children start clean: the gateway's RSS is its own


# --- small helpers ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def device_key(device: str) -> bytes:
    return hashlib.sha256(b"benchmark key " + device.encode()).digest()[:16]


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def proc_status(field: str, pid: int | str = "self") -> int:
    """A kB field of /proc/<pid>/status (VmHWM, VmRSS), in kB; 0 when unreadable."""
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process, from /proc/<pid>/stat."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


CLK_TCK = os.sysconf("SC_CLK_TCK")


def die_with_parent() -> None:
    """Linux: get SIGTERM when the process that started us dies, even by SIGKILL."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def fs_type(path: str) -> str:
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mount = parts[1]
                if path.startswith(mount) and len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


# --- the broker -------------------------------------------------------------------


class Broker:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None
        self.watcher: subprocess.Popen[bytes] | None = None

    @staticmethod
    def config_lines() -> list[str]:
        lines = ["%s %s" % kv for kv in BROKER_OPTIONS.items()]
        if os.geteuid() == 0:
            # As root Mosquitto switches to user "mosquitto", which cannot write its log here.
            lines.append("user %s" % pwd.getpwuid(os.geteuid()).pw_name)
        return lines

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "mosquitto.conf"
        lines = [
            "listener %d 127.0.0.1" % self.port,
            *self.config_lines(),
            "log_dest file %s" % (self.directory / "mosquitto.log"),
        ]
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        CHILDREN.append(self.proc)
        # Mosquitto changes its user at start, which clears the parent-death signal: a
        # small watcher that does keep it ends the broker if this script is killed.
        self.watcher = subprocess.Popen(
            [sys.executable, "-c", WATCHER, str(self.proc.pid)], preexec_fn=die_with_parent
        )
        CHILDREN.append(self.watcher)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    "mosquitto exited with code %d; see %s" % (self.proc.returncode, self.directory)
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto does not listen on port %d" % self.port)

    def stop(self) -> None:
        end_process(self.proc)
        end_process(self.watcher)


WATCHER = """
import os, signal, sys, time
pid = int(sys.argv[1])
def end(*_):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"mosquitto" in f.read():
                os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    sys.exit(0)
signal.signal(signal.SIGTERM, end)
while True:
    time.sleep(3600)
"""


CHILDREN: list[Any] = []  # every process started, for the cleanup


def end_process(proc: Any) -> None:
    """Terminate one child (a Popen or a multiprocessing Process), then kill it."""
    if proc is None:
        return
    try:
        alive = proc.poll() is None if isinstance(proc, subprocess.Popen) else proc.is_alive()
        if alive:
            proc.terminate()
            if isinstance(proc, subprocess.Popen):
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            else:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
    except (OSError, ValueError, AssertionError):
        pass


def cleanup() -> None:
    while CHILDREN:
        end_process(CHILDREN.pop())


# --- frames -----------------------------------------------------------------------


def make_track(n_fixes: int) -> list[dict[str, Any]]:
    """The city track, moved in time so that its last fix is a minute old."""
    from benchmarks.city_track import city_track

    fixes = city_track(n_fixes)
    shift = int(time.time()) - 60 - fixes[-1]["t"]
    return [dict(f, t=f["t"] + shift) for f in fixes]


def make_messages(plan: dict[str, Any]) -> list[tuple[str, bytes, str, int]]:
    """(topic, payload, device, seq) for every frame of ``plan``, devices interleaved."""
    from fieldtrack.protocol import cose, fast, topics

    devices: list[str] = plan["devices"]
    frames_each: int = plan["frames_each"]
    per_frame = BATCH_FIXES if plan["kind"] == "batch" else 1
    track = make_track(frames_each * per_frame)
    keys = {d: device_key(d) for d in devices} if plan["signed"] else {}
    out = []
    for k in range(frames_each):
        if per_frame == 1:
            frame = dict(track[k], type="position", boot=1, seq=k)
        else:
            frame = {
                "type": "batch",
                "boot": 1,
                "seq": k * BATCH_FIXES,
                "res": 1,
                "fixes": track[k * BATCH_FIXES : (k + 1) * BATCH_FIXES],
            }
        payload = fast.encode(frame)
        for d in devices:
            data = cose.sign(payload, keys[d], d) if plan["signed"] else payload
            out.append((topics.uplink(d), data, d, frame["seq"]))
    return out


# --- child processes ----------------------------------------------------------------


def publisher_main(
    port: int, name: str, plan: dict[str, Any], rate: float, ready: Any, start: Any, results: Any
) -> None:
    """Publish the frames of ``plan`` with QoS 1: at full speed, or ``rate`` per second."""
    die_with_parent()
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    messages = make_messages(plan)
    acked = 0

    def on_publish(client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        nonlocal acked
        acked += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(PUBLISHER_INFLIGHT)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while not client.is_connected() and time.monotonic() < deadline:
        client.loop(0.05)
    ready.set()
    # Children never block in Event.wait(): a process that dies while waiting there
    # leaves the event's condition in a state where set() hangs. They poll instead.
    while not start.is_set():
        time.sleep(0.0005)
    sent: list[float] = []
    cpu0 = cpu_seconds()
    first = time.time()
    if rate <= 0:
        # No network thread: publish() writes to the socket itself; PUBACKs are read
        # every 64 messages so the in-flight window keeps moving.
        for i, (topic, payload, _, _) in enumerate(messages):
            client.publish(topic, payload, qos=1)
            if i & 63 == 63:
                client.loop(0)
    else:
        interval = 1.0 / rate
        for i, (topic, payload, _, _) in enumerate(messages):
            due = first + i * interval
            while True:
                wait = due - time.time()
                if wait <= 0:
                    break
                if wait > 0.001:
                    client.loop(wait - 0.0005)  # read PUBACKs while waiting
                else:
                    time.sleep(wait)
            sent.append(time.time())
            client.publish(topic, payload, qos=1)
            if i & 7 == 7:
                client.loop(0)  # PUBACKs, whatever the pace: the in-flight window must move
    handed = time.time()
    deadline = time.monotonic() + 120
    while acked < len(messages) and time.monotonic() < deadline:
        client.loop(0.05)
    done = time.time()
    cpu = cpu_seconds() - cpu0
    client.disconnect()
    keys = [(d, s) for _, _, d, s in messages] if rate > 0 else []
    results.put(
        {
            "role": "publisher",
            "name": name,
            "n": len(messages),
            "acked": acked,
            "first": first,
            "handed": handed,
            "done": done,
            "cpu": cpu,
            "sent": list(zip(keys, sent, strict=True)) if rate > 0 else [],
        }
    )


def raw_subscriber_main(
    port: int, expected: int, drain: bool, go: Any, ready: Any, stop: Any, results: Any
) -> None:
    """Count QoS 1 messages on the uplink topics; nothing else.

    With ``drain``, subscribe in a persistent session and disconnect, so that the
    broker queues what is published; reconnect when ``go`` is set and drain the queue.
    """
    die_with_parent()
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from fieldtrack.protocol import topics

    state = {"count": 0, "first": 0.0, "last": 0.0, "cpu0": 0.0}

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(topics.UPLINK_FILTER, qos=1)

    def on_subscribe(client: Any, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        state["cpu0"] = cpu_seconds()
        if drain and not go.is_set():
            client.disconnect()
        ready.set()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        state["count"] += 1
        if state["count"] == 1:
            state["first"] = time.time()
        if state["count"] >= expected:
            state["last"] = time.time()
            client.disconnect()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="raw-subscriber", protocol=mqtt.MQTTv5
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600 if drain else 0
    client.connect("127.0.0.1", port, clean_start=not drain, properties=props)

    def watch() -> None:
        while not stop.is_set():
            time.sleep(0.05)
        client.disconnect()

    threading.Thread(target=watch, daemon=True).start()
    if drain:
        client.loop_forever()  # until subscribed and disconnected
        while not go.is_set() and not stop.is_set():
            time.sleep(0.01)
        client.connect("127.0.0.1", port, clean_start=False, properties=props)
        state["cpu0"] = cpu_seconds()
    client.loop_forever()
    results.put(
        {
            "role": "subscriber",
            "count": state["count"],
            "first": state["first"],
            "last": state["last"],
            "cpu": cpu_seconds() - state["cpu0"],
        }
    )


def gateway_main(
    config: dict[str, Any], expected: int, profile: bool, ready: Any, stop: Any, results: Any
) -> None:
    """``Gateway(config).run()``, with the commit times recorded through ``on_commit``."""
    die_with_parent()
    import cProfile

    from fieldtrack.gateway import metrics
    from fieldtrack.gateway.config import parse
    from fieldtrack.gateway.service import Gateway

    commits: list[tuple[float, int]] = []
    total = 0
    done = threading.Event()
    marks: dict[str, float] = {"cpu0": 0.0, "hwm0": 0}

    def on_commit(n: int) -> None:
        nonlocal total
        total += n
        commits.append((time.time(), total))
        if total >= expected:
            done.set()

    gw = Gateway(parse(config), on_commit=on_commit)
    pipeline_pid = gw.process.pid  # the gateway's second process: counted with it
    subscribed = gw.client.on_subscribe

    def on_subscribe(*args: Any) -> None:
        subscribed(*args)
        marks["cpu0"] = cpu_seconds()
        marks["pcpu0"] = proc_cpu_s(pipeline_pid)
        marks["hwm0"] = proc_status("VmHWM") + proc_status("VmHWM", pipeline_pid)
        ready.set()

    gw.client.on_subscribe = on_subscribe

    def watch() -> None:
        while not done.wait(0.05) and not stop.is_set():
            pass
        # Before the stop: the pipeline process ends with it, taking its figures along.
        marks["cpu1"] = cpu_seconds()
        marks["pcpu1"] = proc_cpu_s(pipeline_pid)
        marks["hwm1"] = proc_status("VmHWM") + proc_status("VmHWM", pipeline_pid)
        gw.stop()

    threading.Thread(target=watch, daemon=True).start()
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    gw.run()
    if profiler is not None:
        profiler.disable()
    cpu_mqtt = marks.get("cpu1", cpu_seconds()) - marks["cpu0"]
    cpu_pipeline = marks.get("pcpu1", marks.get("pcpu0", 0.0)) - marks.get("pcpu0", 0.0)
    stage = dict(metrics.STAGE_TIMES.sums)
    text = ""
    if profiler is not None:
        text = profile_text(profiler, MQTT_PARTS, expected)
    results.put(
        {
            "role": "gateway",
            "commits": commits,
            "total": total,
            "cpu": cpu_mqtt + cpu_pipeline,
            "cpu_mqtt": cpu_mqtt,
            "cpu_pipeline": cpu_pipeline,
            "hwm_kb": marks.get("hwm1", 0),
            "hwm_start_kb": marks["hwm0"],
            "pipeline_s": stage.get("pipeline", 0.0),
            "commit_s": stage.get("commit", 0.0),
            "profile": text,
        }
    )


def profile_text(profiler: Any, parts: tuple[tuple[str, str, str], ...], messages: int) -> str:
    import io
    import pstats

    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    text = profile_parts(stats.stats, parts, messages)  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(PROFILE_LINES)
    text += "\n" + buf.getvalue()
    # Paths relative to the repository, the site-packages or the standard library.
    text = re.sub(r"[^\s(]*/site-packages/", "", text)
    text = re.sub(r"[^\s(]*/lib/python3\.\d+/", "", text)
    return text.replace(ROOT + os.sep, "")


def profile_pipeline(plan: dict[str, Any], workdir: Path) -> str:
    """The pipeline process's work on ``plan``, in this process under cProfile."""
    import cProfile

    from fieldtrack.gateway.config import parse
    from fieldtrack.gateway.ingest.worker import Worker
    from fieldtrack.gateway.store.sqlite import now_ms

    db = workdir / ("profile-%s.db" % plan["kind"])
    register(db, plan["devices"], plan["signed"])
    worker = Worker(parse(gateway_config(1, db)))
    messages = make_messages(plan)
    profiler = cProfile.Profile()
    profiler.enable()
    for topic, payload, _, _ in messages:
        worker.handle(topic, payload, now_ms())
        if worker.due():
            worker.commit()
    worker.commit()
    profiler.disable()
    worker.close()
    return profile_text(profiler, PIPELINE_PARTS, len(messages))


# Where a gateway's time goes: (label, file name ending, function), inclusive times.
MQTT_PARTS = (
    ("Gateway.run, all of it", "gateway/service.py", "run"),
    ("  select(): waiting for the socket or a report", "", "<built-in method select.select>"),
    ("  paho reading packets (incl. on_message)", "paho/mqtt/client.py", "_packet_read"),
    ("    Gateway._on_message", "gateway/service.py", "_on_message"),
    ("  handing chunks to the pipeline process", "gateway/service.py", "_hand_over"),
    ("  reports: PUBACKs, metrics", "gateway/service.py", "_read_reports"),
    ("    paho ack() (PUBACK)", "paho/mqtt/client.py", "ack"),
)
PIPELINE_PARTS = (
    ("Worker.handle, all messages", "gateway/ingest/worker.py", "handle"),
    ("  Pipeline.process", "gateway/ingest/pipeline.py", "process"),
    ("    authenticate (COSE_Mac0 + HMAC)", "gateway/ingest/authenticate.py", "authenticate"),
    ("    decode the frame (cbor2 + checks)", "gateway/ingest/pipeline.py", "_decode"),
    ("    records + position filters", "gateway/ingest/pipeline.py", "_records"),
    ("    rows for the store", "gateway/ingest/pipeline.py", "_position_rows"),
    ("    derived events (fences, motion)", "gateway/ingest/pipeline.py", "_derive"),
    ("Worker.commit (SQLite, fsync)", "gateway/ingest/worker.py", "commit"),
)


def profile_parts(stats: dict[Any, Any], parts: tuple[tuple[str, str, str], ...],
                  messages: int) -> str:
    """Inclusive time of the gateway's main parts, from cProfile's raw table."""
    lines = ["%-52s %9s %12s" % ("part (inclusive wall time)", "seconds", "us/message")]
    for label, path, func in parts:
        total = sum(
            v[3]
            for (filename, _, name), v in stats.items()
            if name == func and filename.replace(os.sep, "/").endswith(path)
        )
        lines.append("%-52s %9.2f %12.1f" % (label, total, total / max(1, messages) * 1e6))
    return "\n".join(lines) + "\n"


# --- one measurement ----------------------------------------------------------------


class Run:
    """A broker plus child processes for one measurement; ends them all on exit."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self.broker = Broker(self.dir / "broker")
        self.results = CTX.Queue()
        self.stop = CTX.Event()
        self.start_event = CTX.Event()
        self.procs: list[Any] = []

    def __enter__(self) -> Run:
        self.broker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for p in self.procs:
            end_process(p)
        self.broker.stop()

    def go(self) -> None:
        """Let the publishers start; remember the machine's and the broker's CPU time."""
        assert self.broker.proc is not None
        self.busy0 = machine_busy_s()
        self.broker0 = proc_cpu_s(self.broker.proc.pid)
        self.start_event.set()

    def cpu_used(self) -> tuple[float, float]:
        """(machine busy, broker) CPU seconds since ``go``; call before the broker stops."""
        assert self.broker.proc is not None
        return (machine_busy_s() - self.busy0, proc_cpu_s(self.broker.proc.pid) - self.broker0)

    def spawn(self, target: Any, *args: Any) -> Any:
        ready = CTX.Event()
        # The gateway starts a process of its own, which a daemonic process may not.
        proc = CTX.Process(target=target, args=(*args, ready, *self._extra(target)),
                           daemon=target is not gateway_main)
        proc.start()
        CHILDREN.append(proc)
        self.procs.append(proc)
        proc.ready = ready  # type: ignore[attr-defined]
        return proc

    def _extra(self, target: Any) -> tuple[Any, ...]:
        if target is publisher_main:
            return (self.start_event, self.results)
        return (self.stop, self.results)

    def wait_ready(self, procs: list[Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for p in procs:
            while not p.ready.wait(0.1):
                if not p.is_alive():
                    raise RuntimeError("a %s process exited before it was ready" % p.name)
                if time.monotonic() > deadline:
                    raise RuntimeError("a %s process was not ready in %.0f s" % (p.name, timeout))

    def collect(self, count: int, timeout: float) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    "timed out after %.0f s waiting for results (%d of %d)"
                    % (timeout, len(out), count)
                )
            try:
                out.append(self.results.get(timeout=min(left, 1.0)))
            except Exception:  # queue.Empty
                if not any(p.is_alive() for p in self.procs) and self.results.empty():
                    raise RuntimeError("the child processes ended without results") from None
        return out


def split_plan(plan: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    return [
        dict(plan, devices=plan["devices"][i::parts])
        for i in range(parts)
        if plan["devices"][i::parts]
    ]


def register(db: Path, devices: list[str], signed: bool) -> None:
    from fieldtrack.gateway.store.sqlite import Device, Store

    store = Store(db, synchronous="OFF")  # setup only; the gateway opens it with FULL
    for d in devices:
        store.put_device(Device(d, "bench", device_key(d) if signed else None, True))
    store.close()


def gateway_config(port: int, db: Path, events: bool = True,
                   receipts: bool = True) -> dict[str, Any]:
    """The defaults, except: this broker, this store, no HTTP endpoint, no sinks."""
    config: dict[str, Any] = {
        "log_level": "warning",  # the pipeline process's summary lines would clutter the report
        "mqtt": {"host": "127.0.0.1", "port": port, "client_id": "bench-gateway"},
        "store": {"path": str(db)},
        "http": {"enabled": False},
        "feeds": {"enabled": False},
        "influx": {"enabled": False},
    }
    if not events:
        config["events"] = {"enabled": False}
    if not receipts:
        config["pipeline"] = {"receipts": False}
    return config


def measure_raw(workdir: Path, name: str, plan: dict[str, Any], publishers: int) -> dict[str, Any]:
    n = len(plan["devices"]) * plan["frames_each"]
    with Run(workdir, name) as run:
        sub = run.spawn(raw_subscriber_main, run.broker.port, n, False, None)
        run.wait_ready([sub], 30)
        pubs = [
            run.spawn(publisher_main, run.broker.port, "pub-%d" % i, part, 0.0)
            for i, part in enumerate(split_plan(plan, publishers))
        ]
        run.wait_ready(pubs, 120)
        run.go()
        res = run.collect(len(pubs) + 1, 120 + n / 2000)
        busy, broker = run.cpu_used()
    pubs_r = [r for r in res if r["role"] == "publisher"]
    sub_r = next(r for r in res if r["role"] == "subscriber")
    if sub_r["count"] != n:
        raise RuntimeError("the raw subscriber received %d of %d messages" % (sub_r["count"], n))
    first = min(r["first"] for r in pubs_r)
    window = sub_r["last"] - first
    mine = broker + sub_r["cpu"] + sum(r["cpu"] for r in pubs_r)
    return {
        "n": n,
        "others": max(0.0, busy - mine) / window,
        "mine": mine / window,
        "broker_cpu": broker / window,
        "sub_us": sub_r["cpu"] / n * 1e6,
        "publishers": len(pubs_r),
        "rate": n / (sub_r["last"] - first),
        "recv_rate": n / (sub_r["last"] - sub_r["first"]),
        "pub_rate": n / (max(r["done"] - first for r in pubs_r)),
        "pub_done_s": max(r["done"] for r in pubs_r) - first,
        "sub_done_s": sub_r["last"] - first,
        "sub_cpu": sub_r["cpu"] / (sub_r["last"] - first),
        "pub_cpu": [r["cpu"] / (r["done"] - r["first"]) for r in pubs_r],
    }


def measure_drain(workdir: Path, name: str, plan: dict[str, Any]) -> dict[str, Any]:
    """The raw subscriber alone: it drains a backlog queued while it was offline."""
    n = len(plan["devices"]) * plan["frames_each"]
    with Run(workdir, name) as run:
        go = CTX.Event()
        sub = run.spawn(raw_subscriber_main, run.broker.port, n, True, go)
        run.wait_ready([sub], 30)
        pub = run.spawn(publisher_main, run.broker.port, "pub-0", plan, 0.0)
        run.wait_ready([pub], 120)
        run.go()
        run.collect(1, 120 + n / 2000)
        go.set()
        sub_r = run.collect(1, 120 + n / 2000)[0]
    if sub_r["count"] != n:
        raise RuntimeError("the raw subscriber drained %d of %d messages" % (sub_r["count"], n))
    return {
        "rate": n / (sub_r["last"] - sub_r["first"]),
        "sub_us": sub_r["cpu"] / n * 1e6,
    }


def measure_gateway(
    workdir: Path,
    name: str,
    plan: dict[str, Any],
    publishers: int,
    *,
    rate: float = 0.0,
    profile: bool = False,
    events: bool = True,
    receipts: bool = True,
) -> dict[str, Any]:
    """Publish ``plan`` to a gateway; frames/s to durable commit, rows checked."""
    frames = len(plan["devices"]) * plan["frames_each"]
    rows_expected = frames * (BATCH_FIXES if plan["kind"] == "batch" else 1)
    with Run(workdir, name) as run:
        db = run.dir / "fieldtrack.db"
        register(db, plan["devices"], plan["signed"])
        config = gateway_config(run.broker.port, db, events, receipts)
        gw = run.spawn(gateway_main, config, frames, profile)
        run.wait_ready([gw], 60)
        pubs = [
            run.spawn(publisher_main, run.broker.port, "pub-%d" % i, part, rate / publishers)
            for i, part in enumerate(split_plan(plan, publishers))
        ]
        run.wait_ready(pubs, 300)
        run.go()
        res = run.collect(len(pubs) + 1, 120 + frames / 500)
        busy, broker = run.cpu_used()
        gw.join(30)
    pubs_r = [r for r in res if r["role"] == "publisher"]
    gw_r = next(r for r in res if r["role"] == "gateway")
    con = sqlite3.connect(db)
    try:
        rows, lo, hi = con.execute("SELECT COUNT(*), MIN(id), MAX(id) FROM positions").fetchone()
        rejects = con.execute("SELECT COUNT(*) FROM rejects").fetchone()[0]
        reasons = con.execute("SELECT reason, COUNT(*) FROM rejects GROUP BY reason").fetchall()
        flagged = con.execute("SELECT COUNT(*) FROM positions WHERE flagged != ''").fetchone()[0]
        ids = {}
        if rate > 0:
            ids = {
                (d, s): (i, received)
                for i, d, s, received in con.execute(
                    "SELECT id, device, seq, received FROM positions"
                )
            }
    finally:
        con.close()
    if rows != rows_expected or gw_r["total"] != frames or rejects:
        raise RuntimeError(
            "%s: %d rows stored for %d expected, %d messages committed of %d, "
            "rejects %r" % (name, rows, rows_expected, gw_r["total"], frames, reasons)
        )
    first = min(r["first"] for r in pubs_r)
    commit_times = [t for t, _ in gw_r["commits"]]
    last = commit_times[-1]
    elapsed = last - first
    out = {
        "frames": frames,
        "rows": rows,
        "flagged": flagged,
        "elapsed": elapsed,
        "rate": frames / elapsed,
        "positions_rate": rows / elapsed,
        "commits": len(commit_times),
        "pub_done_s": max(r["done"] for r in pubs_r) - first,
        "gw_cpu": gw_r["cpu"] / elapsed,
        "gw_us": gw_r["cpu"] / frames * 1e6,
        "mqtt_us": gw_r["cpu_mqtt"] / frames * 1e6,
        "pipeline_us": gw_r["cpu_pipeline"] / frames * 1e6,
        "broker_cpu": broker / elapsed,
        "others": max(0.0, busy - broker - gw_r["cpu"] - sum(r["cpu"] for r in pubs_r)) / elapsed,
        "pipeline_s": gw_r["pipeline_s"],
        "commit_s": gw_r["commit_s"],
        "hwm_mib": gw_r["hwm_kb"] / 1024,
        "hwm_start_mib": gw_r["hwm_start_kb"] / 1024,
        "profile": gw_r["profile"],
    }
    if rate > 0:
        assert lo == 1 and hi == rows, "row ids are not 1..N"
        cumulative = [c for _, c in gw_r["commits"]]
        lat, to_gw, in_gw = [], [], []
        for r in pubs_r:
            for key, sent in r["sent"]:
                row_id, received_ms = ids[tuple(key)]
                committed = commit_times[bisect.bisect_left(cumulative, row_id)]
                lat.append((committed - sent) * 1000)
                # The store's "received" (ms) splits it: broker and socket, then gateway.
                to_gw.append(received_ms - sent * 1000)
                in_gw.append(committed * 1000 - received_ms)
        out.update(
            rate_sent=frames / (max(r["handed"] for r in pubs_r) - first),
            p50=pct(lat, 50),
            p99=pct(lat, 99),
            max_ms=max(lat),
            to_gw=(pct(to_gw, 50), pct(to_gw, 99)),
            in_gw=(pct(in_gw, 50), pct(in_gw, 99)),
        )
    return out


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * q / 100 + 0.5) - 1))]


# --- the report -------------------------------------------------------------------


def code_version() -> str:
    """The commit measured, and whether the gateway or protocol code differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "gateway", "protocol"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if not head:
        return "unknown (not a git checkout)"
    files = [line[3:] for line in changed.splitlines()]
    return "commit %s%s" % (
        head,
        ", with uncommitted changes to " + ", ".join(files)
        if files
        else ", gateway and protocol as committed",
    )


def fmt(x: float) -> str:
    return f"{x:,.0f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def raw_text(r: dict[str, Any]) -> str:
    return (
        "%s msg/s (first publish -> last receipt; %s msg/s between first and last receipt); "
        "publishers had all PUBACKs after %.2f s, the subscriber every message after %.2f s; "
        "CPU: subscriber %.0f%% of a core (%.0f us/msg), publishers %s, broker %.0f%%; "
        "other programs on the machine %.0f%% of a core"
        % (
            fmt(r["rate"]),
            fmt(r["recv_rate"]),
            r["pub_done_s"],
            r["sub_done_s"],
            r["sub_cpu"] * 100,
            r["sub_us"],
            "/".join("%.0f%%" % (c * 100) for c in r["pub_cpu"]),
            r["broker_cpu"] * 100,
            r["others"] * 100,
        )
    )


def split_text(r: dict[str, Any]) -> str:
    e = r["elapsed"]
    other = max(0.0, e - r["pipeline_s"] - r["commit_s"])
    return (
        "gateway CPU %.0f%% of a core, %.0f us per frame (MQTT process %.0f, pipeline process "
        "%.0f); of the pipeline process's wall time %.1f s: pipeline %.0f%%, SQLite commit "
        "%.0f%% (%d commits), waiting for input %.0f%%; "
        "broker CPU %.0f%%; other programs on the machine %.0f%% of a core"
        % (
            r["gw_cpu"] * 100,
            r["gw_us"],
            r["mqtt_us"],
            r["pipeline_us"],
            e,
            r["pipeline_s"] / e * 100,
            r["commit_s"] / e * 100,
            r["commits"],
            other / e * 100,
            r["broker_cpu"] * 100,
            r["others"] * 100,
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs, well under a minute")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also run the gateway under cProfile and print where its time goes",
    )
    args = ap.parse_args()
    p = QUICK if args.quick else FULL
    if not Path(MOSQUITTO).exists():
        print("mosquitto is not installed (%s)" % MOSQUITTO, file=sys.stderr)
        return 2

    def on_signal(signum: int, frame: object) -> None:
        raise SystemExit(130)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="fieldtrack-gwbench-"))
    started = time.monotonic()
    try:
        return run_all(workdir, p, args)
    except (RuntimeError, AssertionError, OSError, sqlite3.Error):
        traceback.print_exc()
        print("the benchmark failed: see above", file=sys.stderr)
        return 2
    finally:
        cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
        print("\n(total run time %.0f s)" % (time.monotonic() - started))


def run_all(workdir: Path, p: dict[str, Any], args: argparse.Namespace) -> int:
    import paho.mqtt

    n_dev = p["devices"]
    each = p["n"] // n_dev
    signed_devs = ["s-%05d" % i for i in range(n_dev)]
    unsigned_devs = ["u-%05d" % i for i in range(n_dev)]
    single = {"kind": "single", "devices": signed_devs, "frames_each": each, "signed": True}
    n = n_dev * each
    log = print

    log("fieldtrack gateway benchmark (%s mode)" % ("quick" if args.quick else "full"))
    log(
        "machine: %d CPUs (nproc), Python %s, %s, paho-mqtt %s, SQLite %s"
        % (
            os.cpu_count() or 0,
            platform.python_version(),
            platform.machine(),
            paho.mqtt.__version__,
            sqlite3.sqlite_version,
        )
    )
    version = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True).stdout
    log(
        "broker: %s, listener on 127.0.0.1, config: %s"
        % (version.splitlines()[0] if version else "mosquitto", "; ".join(Broker.config_lines()))
    )
    log(
        "store: SQLite WAL, synchronous=FULL (Store default), temp dir on %s; gateway "
        "defaults: commit_max_messages 2000, commit_interval_ms 50" % fs_type(str(workdir))
    )
    log("code: %s" % code_version())
    log("load average before the run: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    log("")

    rounds = p["rounds"]
    log(
        "1. raw subscriber, %s signed single-position frames from %d devices, 1 and 2 "
        "publisher processes, best of %d round(s)..." % (fmt(n), n_dev, rounds)
    )
    raws: list[dict[str, Any]] = []
    for rnd in range(rounds):
        for k in (1, 2):
            r = measure_raw(workdir, "raw%d-%d" % (k, rnd), single, k)
            raws.append(r)
            log("   %d publisher(s): %s" % (k, raw_text(r)))
    drained = measure_drain(workdir, "raw-drain", single)
    log(
        "   the subscriber alone, draining %s messages queued while it was offline: %s msg/s, "
        "%.0f us CPU per message" % (fmt(n), fmt(drained["rate"]), drained["sub_us"])
    )
    raw = max(raws, key=lambda r: r["rate"])
    pubs = raw["publishers"]
    if raw["sub_done_s"] - raw["pub_done_s"] > 0.1 * raw["sub_done_s"]:
        limit = (
            "the subscriber side: the publishers had all their PUBACKs %.1f s before the "
            "subscriber had every message" % (raw["sub_done_s"] - raw["pub_done_s"])
        )
    else:
        limit = "the publishers: the subscriber kept up with them"
    log(
        "   baseline: the best round, %d publisher process(es); limited by %s; this benchmark's "
        "processes (publishers, broker, subscriber) used %.0f%% of a core in all, of %d cores"
        % (pubs, limit, raw["mine"] * 100, os.cpu_count() or 0)
    )

    unsigned = dict(single, devices=unsigned_devs, signed=False)
    log("2. gateway, the same frames, signed, unsigned and signed with the receipts off, "
        "best of %d round(s)..." % rounds)
    signed_runs, unsigned_runs, quiet_runs = [], [], []
    for rnd in range(rounds):
        r = measure_gateway(workdir, "gw-signed-%d" % rnd, single, pubs)
        signed_runs.append(r)
        log("   signed: %s frames/s committed; %s" % (fmt(r["rate"]), split_text(r)))
        log(
            "     publishers had all PUBACKs after %.2f s, last commit after %.2f s"
            % (r["pub_done_s"], r["elapsed"])
        )
        r = measure_gateway(workdir, "gw-unsigned-%d" % rnd, unsigned, pubs)
        unsigned_runs.append(r)
        log("   unsigned: %s frames/s committed; %s" % (fmt(r["rate"]), split_text(r)))
        r = measure_gateway(workdir, "gw-noreceipts-%d" % rnd, single, pubs, receipts=False)
        quiet_runs.append(r)
        log("   signed, receipts off: %s frames/s committed; %s"
            % (fmt(r["rate"]), split_text(r)))
    gs = max(signed_runs, key=lambda r: r["rate"])
    gu = max(unsigned_runs, key=lambda r: r["rate"])
    gq = max(quiet_runs, key=lambda r: r["rate"])
    log("   signed, derived events off ([events] enabled = false), for comparison...")
    ge = measure_gateway(workdir, "gw-noevents", single, pubs, events=False)
    log("   events off: %s frames/s committed; %s" % (fmt(ge["rate"]), split_text(ge)))

    bframes_each = max(1, p["batch_frames"] // n_dev)
    batch = {"kind": "batch", "devices": signed_devs, "frames_each": bframes_each, "signed": True}
    log("3. gateway, %s signed 60-fix batch frames..." % fmt(bframes_each * n_dev))
    gb = measure_gateway(workdir, "gw-batch", batch, pubs)
    log(
        "   %s positions/s (%s frames/s); %s"
        % (fmt(gb["positions_rate"]), fmt(gb["rate"]), split_text(gb))
    )

    rate = gs["rate"] / 2
    lat_each = max(1, int(rate * p["latency_s"] / n_dev))
    lat_plan = dict(single, frames_each=lat_each)
    log(
        "4. latency at %s frames/s (half of the signed rate), %s frames..."
        % (fmt(rate), fmt(lat_each * n_dev))
    )
    gl = measure_gateway(workdir, "gw-latency", lat_plan, pubs, rate=rate)
    log(
        "   sent at %s frames/s; publish -> commit p50 %.1f ms, p99 %.1f ms, max %.1f ms, of "
        "which publish -> gateway starts on the frame p50 %.1f / p99 %.1f ms and that -> "
        "commit p50 %.1f / p99 %.1f ms; %s"
        % (
            fmt(gl["rate_sent"]),
            gl["p50"],
            gl["p99"],
            gl["max_ms"],
            *gl["to_gw"],
            *gl["in_gw"],
            split_text(gl),
        )
    )

    mem_devs = ["m-%05d" % i for i in range(p["mem_devices"])]
    mem_plan = {
        "kind": "single",
        "devices": mem_devs,
        "frames_each": p["mem_frames"],
        "signed": True,
    }
    log("5. memory: %s devices x %d signed frames..." % (fmt(len(mem_devs)), p["mem_frames"]))
    gm = measure_gateway(workdir, "gw-memory", mem_plan, pubs)
    log(
        "   gateway VmHWM %.1f MiB (%.1f MiB once subscribed, registry loaded); "
        "for comparison %d devices: %.1f MiB; %s frames/s; %s"
        % (gm["hwm_mib"], gm["hwm_start_mib"], n_dev, gs["hwm_mib"], fmt(gm["rate"]),
           split_text(gm))
    )
    gmq = measure_gateway(workdir, "gw-memory-noreceipts", mem_plan, pubs, receipts=False)
    log("   the same with the receipts off: %s frames/s; %s" % (fmt(gmq["rate"]), split_text(gmq)))

    ratio_s = gs["rate"] / raw["rate"]
    ratio_u = gu["rate"] / raw["rate"]
    ratio_e = ge["rate"] / raw["rate"]
    t_ratio = ">= %.1f" % TARGET_RATIO
    rows = [
        (
            "Raw paho QoS 1 subscriber, %s single-position frames, %d publisher process(es)"
            % (fmt(n), pubs),
            "%s msg/s" % fmt(raw["rate"]),
            "baseline",
            "-",
        ),
        (
            "Raw subscriber alone, draining a queued backlog (its own ceiling)",
            "%s msg/s" % fmt(drained["rate"]),
            "-",
            "-",
        ),
        (
            "Gateway, signed frames, committed (defaults, synchronous=FULL)",
            "%s frames/s" % fmt(gs["rate"]),
            "-",
            "-",
        ),
        ("Gateway / raw, signed", "%.2f" % ratio_s, t_ratio, verdict(ratio_s >= TARGET_RATIO)),
        ("Gateway, unsigned frames", "%s frames/s" % fmt(gu["rate"]), "-", "-"),
        ("Gateway / raw, unsigned", "%.2f" % ratio_u, t_ratio, verdict(ratio_u >= TARGET_RATIO)),
        (
            "Gateway, signed, receipts off (diagnostic); receipts on / off",
            "%s frames/s; %.2f" % (fmt(gq["rate"]), gs["rate"] / gq["rate"]),
            "-",
            "-",
        ),
        (
            "%s devices x %d frames, receipts on / off (about one receipt per frame)"
            % (fmt(len(mem_devs)), p["mem_frames"]),
            "%s / %s frames/s; %.2f" % (fmt(gm["rate"]), fmt(gmq["rate"]),
                                         gm["rate"] / gmq["rate"]),
            "-",
            "-",
        ),
        (
            "Gateway, signed, derived events off (diagnostic)",
            "%s frames/s (ratio %.2f)" % (fmt(ge["rate"]), ratio_e),
            "-",
            "-",
        ),
        (
            "CPU per message: raw subscriber / gateway signed / unsigned / receipts off / "
            "events off",
            "%.0f / %.0f / %.0f / %.0f / %.0f us" % (raw["sub_us"], gs["gw_us"], gu["gw_us"],
                                                    gq["gw_us"], ge["gw_us"]),
            "-",
            "-",
        ),
        (
            "Positions/s, signed 60-fix batch frames",
            fmt(gb["positions_rate"]),
            ">= " + fmt(TARGET_POSITIONS),
            verdict(gb["positions_rate"] >= TARGET_POSITIONS),
        ),
        (
            "Latency publish -> commit at %s frames/s, p50" % fmt(gl["rate_sent"]),
            "%.1f ms" % gl["p50"],
            "-",
            "-",
        ),
        (
            "Latency publish -> commit, p99",
            "%.1f ms" % gl["p99"],
            "<= %.0f ms" % TARGET_P99_MS,
            verdict(gl["p99"] <= TARGET_P99_MS),
        ),
        (
            "Gateway peak RSS (VmHWM), %s registered devices x %d frames"
            % (fmt(len(mem_devs)), p["mem_frames"]),
            "%.1f MiB" % gm["hwm_mib"],
            "none set",
            "-",
        ),
    ]
    log("")
    log("| Measure | Result | Target | Verdict |")
    log("|---|---|---|---|")
    for row in rows:
        log("| %s |" % " | ".join(row))
    log("")
    log(
        "Machine: nproc %d, Python %s (%s), %s; load average at the end: %s. Every "
        "measurement's rows were counted in SQLite: count == frames sent (x60 for batches)."
        % (
            os.cpu_count() or 0,
            platform.python_version(),
            platform.python_implementation(),
            platform.platform(terse=True),
            " ".join(open("/proc/loadavg").read().split()[:3]),
        )
    )

    others = max(r["others"] for r in (raw, gs, gu, gq, ge, gb, gl, gm, gmq))
    if others > 0.25:
        log("")
        log(
            "WARNING: other programs used up to %.0f%% of a core (of %d) during these "
            "measurements: the rates and latencies above are lower than this machine gives "
            "when it is otherwise idle." % (others * 100, os.cpu_count() or 0)
        )

    if args.profile:
        log("")
        log("Profiles (cProfile; rates under the profiler are not comparable): the MQTT "
            "process through the broker, and the pipeline process's work run in this "
            "process on the same frames")
        for name, plan in (("signed single frames", single), ("60-fix batches", batch)):
            r = measure_gateway(workdir, "profile-" + name[:6], plan, pubs, profile=True)
            log("")
            log("--- %s: MQTT process ---" % name)
            log(r["profile"].strip())
            log("")
            log("--- %s: pipeline process ---" % name)
            log(profile_pipeline(plan, workdir).strip())
    failed = [r for r in rows if r[3] == "FAIL"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
