"""Prometheus metrics and the /metrics + /healthz endpoint."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

FRAMES_IN = Counter("fieldtrack_frames_in", "MQTT messages received on device topics")
POSITIONS_STORED = Counter("fieldtrack_positions_stored", "Positions newly committed")
EVENTS_STORED = Counter("fieldtrack_events_stored", "Events, status and acks newly committed")
DUPLICATES = Counter("fieldtrack_duplicates", "Records already stored (redeliveries)")
REJECTS = Counter("fieldtrack_rejects", "Rejected frames and dropped fixes", ["reason"])
ACKS_PENDING = Gauge("fieldtrack_acks_pending", "Messages received, not yet committed and acked")
MQTT_CONNECTED = Gauge("fieldtrack_mqtt_connected", "1 while connected to the broker")
SINK_BACKLOG = Gauge("fieldtrack_sink_backlog", "Rows stored but not yet delivered", ["sink"])
SINK_LAG = Gauge("fieldtrack_sink_lag_seconds", "Age of the oldest undelivered row", ["sink"])
STAGE_LATENCY = Histogram(
    "fieldtrack_stage_seconds",
    "Time spent per message (pipeline) or per batch (commit)",
    ["stage"],
    buckets=(0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
)


def serve(host: str, port: int, healthy: Callable[[], bool]) -> ThreadingHTTPServer:
    """Start the endpoint in a daemon thread; ``port`` 0 picks a free port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/metrics":
                body, status, ctype = generate_latest(), 200, CONTENT_TYPE_LATEST
            elif self.path == "/healthz":
                ok = healthy()
                body = b"ok\n" if ok else b"unhealthy\n"
                status, ctype = (200 if ok else 503), "text/plain"
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
