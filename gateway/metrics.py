"""Prometheus metrics and the /metrics + /healthz endpoint."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric

FRAMES_IN = Counter("fieldtrack_frames_in", "MQTT messages received on device topics")
POSITIONS_STORED = Counter("fieldtrack_positions_stored", "Positions newly committed")
EVENTS_STORED = Counter("fieldtrack_events_stored", "Events, status and acks newly committed")
DUPLICATES = Counter("fieldtrack_duplicates", "Records already stored (redeliveries)")
BOOT_ERAS = Counter("fieldtrack_boot_eras",
                    "New boot eras: devices that lost their boot counter and started afresh")
REJECTS = Counter("fieldtrack_rejects", "Rejected frames and dropped fixes", ["reason"])
RECEIPTS_SENT = Counter("fieldtrack_receipts_sent",
                        "Receipts published to devices after their records' commit")
REJECTS_UNRECORDED = Counter(
    "fieldtrack_rejects_unrecorded",
    "Rejects over their device's budget per second: counted, no row and no dead letter")
ACKS_SENT = Counter("fieldtrack_acks_sent", "PUBACKs sent, each after its message's commit")
ACKS_PENDING = Gauge("fieldtrack_acks_pending", "Messages received, not yet committed and acked")
COMMIT_FAILURES = Counter("fieldtrack_commit_failures",
                          "Commits the store refused (none of their messages acknowledged)")
COMMIT_FAILING = Gauge("fieldtrack_commit_failing",
                       "1 while the store refuses commits and ingest is paused")
MQTT_CONNECTED = Gauge("fieldtrack_mqtt_connected", "1 while connected to the broker")
SINK_BACKLOG = Gauge("fieldtrack_sink_backlog", "Rows stored but not yet delivered", ["sink"])
SINK_LAG = Gauge("fieldtrack_sink_lag_seconds", "Age of the oldest undelivered row", ["sink"])
LATE_FIXES = Counter("fieldtrack_late_fixes",
                     "Fixes for a time their device was already judged for (re-derived)")
REDERIVATIONS = Counter("fieldtrack_rederivations", "Device spans judged again after late fixes")
REDERIVED_FIXES = Counter("fieldtrack_rederived_fixes", "Fixes judged again by re-derivations")
CORRECTIONS = Counter("fieldtrack_derived_corrections",
                      "Derived events re-derivations added, corrected or retracted", ["action"])
_DERIVE_COUNTERS = {"late_fixes": LATE_FIXES, "rederived": REDERIVATIONS,
                    "fixes": REDERIVED_FIXES, "added": CORRECTIONS.labels("added"),
                    "changed": CORRECTIONS.labels("corrected"),
                    "retracted": CORRECTIONS.labels("retracted")}
COMMANDS_QUEUED = Counter("fieldtrack_commands_queued",
                          "Downlink commands the gateway picked up from the queue")
COMMANDS_SENT = Counter("fieldtrack_commands_sent",
                        "Downlink command publishes, first sends and re-sends (QoS 1)")
COMMANDS_ACKED = Counter("fieldtrack_commands_acked",
                         "Commands settled by the device's command_ack, by its result",
                         ["result"])
COMMANDS_EXPIRED = Counter("fieldtrack_commands_expired",
                           "Commands given up: their expiry passed without an ack")
COMMANDS_PENDING = Gauge("fieldtrack_commands_pending",
                         "Commands queued or sent and not yet acknowledged or expired")
STAGE_BUCKETS = (0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0)


def bucket_of(seconds: float) -> int:
    """The index of the first bucket whose upper bound holds ``seconds``."""
    return bisect.bisect_left(STAGE_BUCKETS, seconds)


class StageTimes:
    """``fieldtrack_stage_seconds``: time per message (pipeline) or per commit (commit).

    The times are measured in the pipeline process, counted there into buckets and
    added here from its reports, so that the MQTT process serves them.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, stage: str, seconds: float) -> None:
        counts = [0] * (len(STAGE_BUCKETS) + 1)
        counts[bucket_of(seconds)] = 1
        self.add(stage, counts, seconds)

    def add(self, stage: str, counts: Sequence[int], total_s: float) -> None:
        with self.lock:
            mine = self.counts.setdefault(stage, [0] * (len(STAGE_BUCKETS) + 1))
            for i, n in enumerate(counts):
                mine[i] += n
            self.sums[stage] = self.sums.get(stage, 0.0) + total_s

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "fieldtrack_stage_seconds",
            "Time spent per message (pipeline) or per commit (commit)",
            labels=["stage"],
        )
        with self.lock:
            for stage, counts in sorted(self.counts.items()):
                running, buckets = 0, []
                for bound, n in zip((*STAGE_BUCKETS, float("inf")), counts, strict=True):
                    running += n
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
                family.add_metric([stage], buckets, self.sums[stage])
        yield family


STAGE_TIMES = StageTimes()
REGISTRY.register(STAGE_TIMES)


def count_derive(counts: dict[str, float]) -> None:
    """Late fixes and re-derivations, as counted by the pipeline process (``Report.derive``)."""
    for name, n in counts.items():
        counter = _DERIVE_COUNTERS.get(name)
        if counter is not None:
            counter.inc(n)
    if counts.get("rederived"):
        STAGE_TIMES.observe("rederive", counts.get("seconds", 0.0) / counts["rederived"])


def count_commands(sent: int, counts: dict[str, int], pending: int) -> None:
    """What the pipeline process did with the command queue (``worker.take_downlink``)."""
    COMMANDS_SENT.inc(sent)
    COMMANDS_QUEUED.inc(counts.get("queued", 0))
    COMMANDS_EXPIRED.inc(counts.get("expired", 0))
    for name, n in counts.items():
        if name.startswith("acked_"):
            COMMANDS_ACKED.labels(name[6:]).inc(n)
    COMMANDS_PENDING.set(pending)


def serve(host: str, port: int, problem: Callable[[], str]) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; ``port`` 0 picks a free port.

    ``problem`` says why the service is unhealthy ("" when it is healthy): /healthz
    answers 503 with that text, so the reason is one request away.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/metrics":
                body, status, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                why = problem()
                body = ("unhealthy: %s\n" % why).encode() if why else b"ok\n"
                status, ctype = (503 if why else 200), "text/plain; charset=utf-8"
            else:
                body, status, ctype = b"not found\n", 404, "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
