"""The InfluxDB sink: line protocol, errors that keep the token out, and delivery through
the outbox to a real VictoriaMetrics (its /api/v2/write is InfluxDB's write API)."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from harness import free_port, wait_until

from fieldtrack.gateway.config import InfluxConfig
from fieldtrack.gateway.sinks.influx import (
    InfluxSink,
    InfluxWriteError,
    escape_tag,
    event_lines,
    position_lines,
)
from fieldtrack.gateway.sinks.outbox import Outbox
from fieldtrack.gateway.store.sqlite import Batch, Device, Store

TOKEN = "tok-3f9a1c77e2b54d0c-SECRET"
BASE_T = int(time.time()) - 3600  # fix times an hour ago: inside retention, not in the future
POSITION_FIELDS = ("lat", "lon", "speed_kmh", "heading", "alt_m", "accuracy_m", "sats", "fix",
                   "boot", "seq", "ignition", "buffered", "mock")  # fmt: skip


# --- rows -----------------------------------------------------------------------


def position(device: str, seq: int, **values: Any) -> dict[str, Any]:
    """A position row by column name, as the store returns it (with ``grp``)."""
    row = {"device": device, "grp": "default", "boot": 1, "seq": seq, "t": BASE_T + seq,
           "ms": (seq * 37) % 1000, "lat": 521234567 + seq, "lon": -1234567 - seq,
           "spd": seq % 130, "hdg": (seq * 7) % 360, "alt": 30 + seq, "acc": 4, "sats": 9,
           "fix": 2, "ign": seq % 2, "buf": 0, "mock": 0, "flagged": "", "received": 0}  # fmt: skip
    row.update(values)
    return row


def position_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in ("device", "boot", "seq", "t", "ms", "lat", "lon", "spd", "hdg",
                                  "alt", "acc", "sats", "fix", "ign", "buf", "mock", "flagged",
                                  "received"))  # fmt: skip


def event(device: str, seq: int, kind: str, lat: int | None, lon: int | None) -> dict[str, Any]:
    return {"device": device, "grp": "default", "boot": 1, "seq": seq, "t": BASE_T + seq,
            "kind": kind, "lat": lat, "lon": lon, "acc": None, "data": "{}", "received": 0,
            "ms": 0, "key": None, "judged": None, "revision": 0, "retracted": 0}


def event_tuple(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[c] for c in ("device", "boot", "seq", "t", "kind", "lat", "lon", "acc",
                                  "data", "received", "ms", "key", "judged"))  # fmt: skip


def fix_ms(row: dict[str, Any]) -> int:
    return int(row["t"]) * 1000 + int(row["ms"])


# --- line protocol (no server) --------------------------------------------------


def test_position_line_has_every_field_and_the_fix_time_in_ms() -> None:
    row = position("van-7", 12, t=1700000000, ms=123, lat=-338688000, lon=1512093000, spd=42,
                   hdg=270, alt=-3, acc=5, sats=9, fix=3, ign=1, buf=0, mock=1, boot=4)  # fmt: skip
    assert position_lines([row]) == [
        "position,device=van-7,group=default lat=-33.8688000,lon=151.2093000,speed_kmh=42i,"
        "heading=270i,alt_m=-3i,accuracy_m=5i,sats=9i,fix=3i,boot=4i,seq=12i,ignition=true,"
        "buffered=false,mock=true 1700000000123"
    ]


def test_timestamp_is_fix_time_not_arrival_time() -> None:
    early = position("a", 1, t=1700000000, ms=0, received=1800000000000)
    late = position("a", 1, t=1700000000, ms=999, received=1)
    assert position_lines([early])[0].endswith(" 1700000000000")
    assert position_lines([late])[0].endswith(" 1700000000999")


@pytest.mark.parametrize(
    "e7, text",
    [(0, "0.0000000"), (1, "0.0000001"), (-1, "-0.0000001"), (-5000000, "-0.5000000"),
     (900000000, "90.0000000"), (-900000000, "-90.0000000"), (1800000000, "180.0000000"),
     (-1799999999, "-179.9999999"), (521234567, "52.1234567"), (123456789, "12.3456789")],
)  # fmt: skip
def test_coordinates_are_the_exact_decimal_degrees(e7: int, text: str) -> None:
    line = position_lines([position("a", 1, lat=e7, lon=e7)])[0]
    assert " lat=%s,lon=%s," % (text, text) in line


@pytest.mark.parametrize(
    "value, escaped",
    [("plain", "plain"), ("van 7", "van\\ 7"), ("a,b", "a\\,b"), ("k=v", "k\\=v"),
     ("back\\slash", "back\\\\slash"), ("ends\\", "ends\\\\"), ("a, b=c", "a\\,\\ b\\=c"),
     ("two\nlines", "two\\nlines")],
)  # fmt: skip
def test_tag_values_escape_commas_spaces_equals_and_backslashes(value: str, escaped: str) -> None:
    assert escape_tag(value) == escaped
    line = position_lines([position(value, 1, grp=value)])[0]
    assert line.startswith("position,device=%s,group=%s lat=" % (escaped, escaped))
    assert "\n" not in line


def test_an_empty_group_is_left_out() -> None:
    assert position_lines([position("a", 1, grp="")])[0].startswith("position,device=a lat=")


def test_event_line_counts_one_and_has_the_place_when_known() -> None:
    rows = [event("van 7", 3, "sos", 521234567, -1234567), event("van 7", 4, "boot", None, None)]
    # Nanoseconds: the event's millisecond, then the last six digits of its seq.
    t3, t4 = (BASE_T + 3) * 10**9 + 3, (BASE_T + 4) * 10**9 + 4
    assert event_lines(rows) == [
        "event,device=van\\ 7,group=default,kind=sos count=1i,lat=52.1234567,lon=-0.1234567,"
        "revision=0i,retracted=false %d" % t3,
        "event,device=van\\ 7,group=default,kind=boot count=1i,revision=0i,retracted=false %d"
        % t4,
    ]


def test_two_events_of_one_kind_in_one_millisecond_are_two_points() -> None:
    rows = [event("v", 7, "sos", None, None), event("v", 8, "sos", None, None)]
    rows[1]["t"] = rows[0]["t"]
    stamps = [line.rsplit(" ", 1)[1] for line in event_lines(rows)]
    assert len(set(stamps)) == 2 and {int(s) // 10**6 for s in stamps} == {rows[0]["t"] * 1000}


def test_a_retracted_event_overwrites_its_point_with_count_zero() -> None:
    row = event("v", 9, "geofence_enter", 1, 2)
    gone = dict(row, revision=1, retracted=1)
    live, retraction = event_lines([row]) + event_lines([gone])
    assert live.rsplit(" ", 1)[1] == retraction.rsplit(" ", 1)[1]  # the same point
    assert " count=0i," in retraction and "revision=1i,retracted=true " in retraction


def test_store_rows_format_like_rows_by_name(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.put_device(Device("van 7", "north side", None, True))
    rows = [position("van 7", 1, grp="north side"), position("other", 2)]
    events = [event("van 7", 5, "check_in", 1, 2)]
    events[0]["grp"] = "north side"
    store.commit(Batch(positions=[position_tuple(r) for r in rows],
                       events=[event_tuple(e) for e in events]))  # fmt: skip
    assert position_lines(store.positions_after(0, 10)) == position_lines(rows)
    assert event_lines(store.events_after(0, 10)) == event_lines(events)
    store.close()


def test_nothing_to_deliver_sends_nothing() -> None:
    sink = InfluxSink(InfluxConfig(url="http://127.0.0.1:%d" % free_port(), token=TOKEN))
    sink.deliver([], [])  # would raise if it tried to connect
    sink.close()


# --- failures (no server, or a server that misbehaves) -----------------------------


class FakeInflux:
    """An HTTP server that answers every write with ``status`` after ``delay_s``."""

    def __init__(self) -> None:
        self.status = 204
        self.delay_s = 0.0
        self.release = threading.Event()
        self.requests: list[dict[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append(dict(self.headers))
                if fake.delay_s:
                    fake.release.wait(fake.delay_s)
                # A careless server that echoes the credentials it was sent.
                body = json.dumps({"code": "unauthorized", "message": "bad credentials: %s"
                                   % self.headers.get("Authorization")}).encode()  # fmt: skip
                try:
                    self.send_response(fake.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)  # fmt: skip
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_influx() -> Iterator[FakeInflux]:
    fake = FakeInflux()
    yield fake
    fake.close()


def sink_for(url: str, **options: Any) -> InfluxSink:
    settings: dict[str, Any] = {"url": url, "token": TOKEN, "retry_min_s": 0.1,
                                "retry_max_s": 0.4, "timeout_s": 5.0}  # fmt: skip
    settings.update(options)
    return InfluxSink(InfluxConfig(**settings))


def test_connection_refused_raises_without_the_token() -> None:
    sink = sink_for("http://127.0.0.1:%d" % free_port())
    with pytest.raises(InfluxWriteError) as info:
        sink.deliver([position("a", 1)], [])
    assert "cannot connect" in str(info.value)
    assert TOKEN not in str(info.value)
    sink.close()


def test_http_error_raises_with_status_and_without_the_token(fake_influx: FakeInflux) -> None:
    fake_influx.status = 401
    sink = sink_for(fake_influx.url)
    with pytest.raises(InfluxWriteError) as info:
        sink.deliver([position("a", 1)], [event("a", 2, "sos", None, None)])
    assert info.value.status == 401
    assert "HTTP 401" in str(info.value) and "[influx] token" in str(info.value)
    assert TOKEN not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert fake_influx.requests[0]["Authorization"] == "Token " + TOKEN
    sink.close()


def test_server_error_raises(fake_influx: FakeInflux) -> None:
    fake_influx.status = 503
    sink = sink_for(fake_influx.url)
    with pytest.raises(InfluxWriteError, match="HTTP 503"):
        sink.deliver([position("a", 1)], [])
    sink.close()


def test_a_server_that_does_not_answer_times_out(fake_influx: FakeInflux) -> None:
    fake_influx.delay_s = 10.0
    sink = sink_for(fake_influx.url, timeout_s=0.3)
    started = time.monotonic()
    with pytest.raises(InfluxWriteError, match="no answer within 0.3 s"):
        sink.deliver([position("a", 1)], [])
    assert time.monotonic() - started < 3.0
    sink.close()


def test_outbox_logs_the_failure_without_the_token_and_keeps_its_cursor(
    tmp_path: Path, fake_influx: FakeInflux, caplog: pytest.LogCaptureFixture
) -> None:
    fake_influx.status = 401
    store = Store(tmp_path / "s.db")
    store.commit(Batch(positions=[position_tuple(position("a", i)) for i in range(5)]))
    sink = sink_for(fake_influx.url)
    outbox = Outbox(store.path, sink, retry_min_s=sink.retry_min_s, retry_max_s=sink.retry_max_s)
    with caplog.at_level(logging.DEBUG):
        outbox.start()
        try:
            wait_until(lambda: outbox.failures >= 2, 5, "two failed deliveries")
        finally:
            outbox.stop()
    assert "HTTP 401" in caplog.text
    assert TOKEN not in caplog.text
    assert store.cursor("influx") == (0, 0)
    store.close()


# --- delivery to a real VictoriaMetrics -------------------------------------------


Series = dict[tuple[str, str, str], list[tuple[int, float]]]


def export(url: str, measurement: str) -> tuple[Series, dict[tuple[str, str, str], dict[str, str]]]:
    """Every raw sample of ``measurement_*``: (name, device, kind) -> [(ms, value)], labels."""
    query = urllib.parse.urlencode({"match[]": '{__name__=~"%s_.*"}' % measurement})
    with urllib.request.urlopen(url + "/api/v1/export?" + query, timeout=10) as response:
        text = response.read().decode()
    series: Series = {}
    labels = {}
    for line in text.splitlines():
        item = json.loads(line)
        metric = item["metric"]
        key = (metric["__name__"], metric.get("device", ""), metric.get("kind", ""))
        series[key] = sorted(zip(item["timestamps"], item["values"], strict=True))
        labels[key] = metric
    return series, labels


def force_flush(url: str) -> None:
    """Make what was written visible to queries now rather than in a second or so."""
    urllib.request.urlopen(url + "/internal/force_flush", timeout=10).close()


def exported(url: str, measurement: str, samples: int, timeout: float = 10.0) -> Series:
    """The export once it holds at least ``samples`` samples (writes become visible late)."""
    deadline = time.monotonic() + timeout
    while True:
        force_flush(url)
        series, _ = export(url, measurement)
        if sum(map(len, series.values())) >= samples or time.monotonic() > deadline:
            return series
        time.sleep(0.05)


def run_outbox(store: Store, sink: InfluxSink) -> Outbox:
    outbox = Outbox(store.path, sink, batch_size=sink.batch_size, poll_s=0.05,
                    retry_min_s=sink.retry_min_s, retry_max_s=sink.retry_max_s)  # fmt: skip
    outbox.start()
    return outbox


def delivered_all(store: Store, outbox: Outbox) -> bool:
    return store.cursor(outbox.sink.name) == store.max_ids()


def test_outbox_delivers_exact_positions_and_events(tmp_path: Path, victoria_metrics: Any) -> None:
    store = Store(tmp_path / "s.db")
    store.put_device(Device("van 7,a=b", "north side", None, True))
    n = 40
    rows = {d: [position(d, i, grp=g, ign=i % 2, buf=int(i % 5 == 0), mock=int(i == 3))
                for i in range(n)]
            for d, g in (("van 7,a=b", "north side"), ("plain", "default"))}  # fmt: skip
    events = [event("plain", 1000, "sos", -338688000, 1512093000),
              event("plain", 1001, "boot", None, None)]  # fmt: skip
    store.commit(Batch(positions=[position_tuple(r) for rs in rows.values() for r in rs],
                       events=[event_tuple(e) for e in events]))  # fmt: skip
    sink = sink_for(victoria_metrics.url, batch_size=16)
    outbox = run_outbox(store, sink)
    try:
        wait_until(lambda: delivered_all(store, outbox), 10, "the cursor at the end")
    finally:
        outbox.stop()

    series = exported(victoria_metrics.url, "position", 2 * n * len(POSITION_FIELDS))
    _, labels = export(victoria_metrics.url, "position")
    columns = {"lat": "lat", "lon": "lon", "speed_kmh": "spd", "heading": "hdg", "alt_m": "alt",
               "accuracy_m": "acc", "sats": "sats", "fix": "fix", "boot": "boot", "seq": "seq",
               "ignition": "ign", "buffered": "buf", "mock": "mock"}  # fmt: skip
    assert len(series) == 2 * len(POSITION_FIELDS)
    for device, device_rows in rows.items():
        for field, column in columns.items():
            key = ("position_" + field, device, "")
            scale = 1e7 if field in ("lat", "lon") else 1
            # Booleans are stored as 1 and 0; coordinates to the last of 7 decimals.
            expected = [(fix_ms(r), r[column] / scale) for r in device_rows]
            assert series[key] == expected, key
            assert labels[key] == {"__name__": key[0], "device": device,
                                   "group": device_rows[0]["grp"]}  # fmt: skip

    event_series = exported(victoria_metrics.url, "event", 8)
    sos_ms, boot_ms = (BASE_T + 1000) * 1000, (BASE_T + 1001) * 1000
    assert event_series == {
        ("event_count", "plain", "sos"): [(sos_ms, 1)],
        ("event_count", "plain", "boot"): [(boot_ms, 1)],
        ("event_lat", "plain", "sos"): [(sos_ms, -33.8688)],
        ("event_lon", "plain", "sos"): [(sos_ms, 151.2093)],
        ("event_revision", "plain", "sos"): [(sos_ms, 0)],
        ("event_revision", "plain", "boot"): [(boot_ms, 0)],
        ("event_retracted", "plain", "sos"): [(sos_ms, 0)],
        ("event_retracted", "plain", "boot"): [(boot_ms, 0)],
    }
    store.close()


def test_outage_delays_rows_and_loses_or_duplicates_none(
    tmp_path: Path, victoria_metrics: Any
) -> None:
    store = Store(tmp_path / "s.db")
    devices = ("van-1", "van-2")
    first = [position(d, i) for d in devices for i in range(60)]
    store.commit(Batch(positions=[position_tuple(r) for r in first]))
    sink = sink_for(victoria_metrics.url, batch_size=25)
    outbox = run_outbox(store, sink)
    try:
        wait_until(lambda: delivered_all(store, outbox), 10, "the first rows delivered")
        delivered = store.cursor("influx")

        victoria_metrics.stop()
        started = time.monotonic()
        second = [position(d, i) for d in devices for i in range(60, 150)]
        for i in range(0, len(second), 30):  # ingest goes on in several commits
            store.commit(Batch(positions=[position_tuple(r) for r in second[i:i + 30]]))
        assert time.monotonic() - started < 2.0
        failures = outbox.failures
        wait_until(lambda: outbox.failures >= failures + 2, 10, "failed deliveries")
        assert not outbox.healthy
        assert store.cursor("influx") == delivered
        assert outbox.backlog == len(second)

        victoria_metrics.start()
        wait_until(lambda: delivered_all(store, outbox), 15, "the backlog delivered")
        assert outbox.healthy and outbox.backlog == 0
    finally:
        outbox.stop()

    total = len(first) + len(second)
    series = exported(victoria_metrics.url, "position", total * len(POSITION_FIELDS))
    assert len(series) == len(devices) * len(POSITION_FIELDS)
    for device in devices:
        expected = [fix_ms(position(device, i)) for i in range(150)]
        for field in POSITION_FIELDS:
            timestamps = [ms for ms, _ in series[("position_" + field, device, "")]]
            assert timestamps == expected, (field, device)  # every point, once, no gaps
    store.close()


# VictoriaMetrics keeps every sample it is sent, even one with the timestamp of a sample it
# already has, unless told to keep one per interval. InfluxDB overwrites such a point.
class DedupVictoriaMetrics:
    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.url = "http://127.0.0.1:%d" % free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-httpListenAddr=" + self.url[len("http://"):],
             "-storageDataPath=%s" % self.directory, "-retentionPeriod=100y",
             "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=ERROR",
             "-dedup.minScrapeInterval=1ms"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self.healthy, 20, "victoria-metrics healthy")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=0.5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def rows_inserted(self) -> int:
        """Samples (one per field of a line) received over the InfluxDB protocol so far."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith('vm_rows_inserted_total{type="influx"}'):
                    return int(line.split()[-1])
        raise AssertionError("victoria-metrics does not report rows inserted over influx")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def deduplicating_victoria_metrics(tmp_path: Path) -> Iterator[DedupVictoriaMetrics]:
    binary = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"
    if not Path(binary).exists():
        pytest.skip("victoria-metrics is not installed (make setup installs it)")
    vm = DedupVictoriaMetrics(binary, tmp_path / "vm-dedup")
    try:
        vm.start()
        yield vm
    finally:
        vm.stop()


def test_redelivery_leaves_the_stored_series_unchanged(
    tmp_path: Path, deduplicating_victoria_metrics: DedupVictoriaMetrics
) -> None:
    vm = deduplicating_victoria_metrics
    store = Store(tmp_path / "s.db")
    rows = [position(d, i) for d in ("van-1", "van-2") for i in range(50)]
    events = [event("van-1", 100 + i, "check_in", 1000 * i, -1000 * i) for i in range(5)]
    store.commit(Batch(positions=[position_tuple(r) for r in rows],
                       events=[event_tuple(e) for e in events]))  # fmt: skip
    sink = sink_for(vm.url, batch_size=30)
    outbox = Outbox(store.path, sink, batch_size=sink.batch_size)
    # count, lat, lon, revision, retracted
    samples = len(rows) * len(POSITION_FIELDS) + len(events) * 5

    while outbox.step(store):
        pass
    wait_until(lambda: vm.rows_inserted() >= samples, 10, "the samples counted")
    assert vm.rows_inserted() == samples
    positions_before = exported(vm.url, "position", len(rows) * len(POSITION_FIELDS))
    events_before = exported(vm.url, "event", len(events) * 3)
    assert sum(map(len, positions_before.values())) == len(rows) * len(POSITION_FIELDS)

    store.set_cursor("influx", 0, 0)  # as after a crash between delivery and cursor update
    while outbox.step(store):
        pass
    assert store.cursor("influx") == store.max_ids()
    # Every row really was written twice (the counter lags the writes by a second or so).
    wait_until(lambda: vm.rows_inserted() >= 2 * samples, 10, "the samples counted again")
    assert vm.rows_inserted() == 2 * samples
    force_flush(vm.url)
    assert export(vm.url, "position")[0] == positions_before
    assert export(vm.url, "event")[0] == events_before
    sink.close()
    store.close()
