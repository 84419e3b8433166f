"""The demo: a broker, the gateway, five simulated vans visiting customers, a live view.

Everything runs in this process except Mosquitto: the gateway (embedded defaults, a
store and a fences file in the demo directory) in one thread, the fleet simulator in
another, and the view, which reads the store once a second, in the caller's. If
nothing listens on 127.0.0.1:1883 the demo starts a Mosquitto there and stops it at
the end. ``Demo.stop`` stops everything in order: vans, gateway, broker.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import zlib
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldtrack.gateway import config as gateway_config
from fieldtrack.gateway import logs
from fieldtrack.gateway.config import ConfigError
from fieldtrack.gateway.errors import FenceError
from fieldtrack.gateway.service import Gateway
from fieldtrack.gateway.store.sqlite import StoreError
from fieldtrack.tools.simulate.background import BackgroundFleet
from fieldtrack.tools.simulate.clock import SimClock
from fieldtrack.tools.simulate.config import FleetConfig, device_ids
from fieldtrack.tools.simulate.fleet import Fleet
from fieldtrack.tools.simulate.grid import GridCity, Site
from fieldtrack.tools.simulate.mqtt import MqttRunner
from fieldtrack.tools.simulate.register import register_devices

log = logging.getLogger("fieldtrack.demo")

DEFAULT_BROKER = ("127.0.0.1", 1883)
CITY = GridCity()
DEPOT = Site("depot", "Depot Mitte", (0, 0))
CUSTOMERS = (
    Site("acme", "ACME GmbH", (3, 2)),
    Site("baeckerei-koch", "Baeckerei Koch", (-4, 3)),
    Site("charite", "Charite, building 4", (5, -3)),
    Site("hotel-adlon", "Hotel am Park", (-2, -4)),
    Site("schule-nord", "Grundschule Nord", (1, 5)),
)
SITE_RADIUS_M = 70
DEPOT_RADIUS_M = 100
EVENT_ROWS = 10


class DemoError(Exception):
    """A demo that cannot start: no broker, no mosquitto, a port or directory in use."""


# --- the pieces --------------------------------------------------------------------


def fences_document(city: GridCity = CITY) -> dict[str, Any]:
    """The demo sites as GeoJSON circles: customers and the depot."""
    features = []
    for site, kind, radius in [(DEPOT, "depot", DEPOT_RADIUS_M)] + [
            (c, "customer", SITE_RADIUS_M) for c in CUSTOMERS]:
        lat, lon = city.lat_lon(site.node)
        features.append({"type": "Feature",
                         "properties": {"id": site.id, "name": site.name, "kind": kind,
                                        "radius_m": radius},
                         "geometry": {"type": "Point",
                                      "coordinates": [round(lon, 7), round(lat, 7)]}})
    return {"type": "FeatureCollection", "features": features}


def listening(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class LocalBroker:
    """A Mosquitto on 127.0.0.1:PORT for the demo's lifetime, logging into the demo dir."""

    def __init__(self, directory: Path, port: int = DEFAULT_BROKER[1]) -> None:
        self.directory, self.port = directory, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(binary):
            raise DemoError("nothing listens on 127.0.0.1:%d and mosquitto is not installed: "
                            "install it (make setup does) or pass --broker HOST:PORT"
                            % self.port)
        conf = self.directory / "mosquitto.conf"
        conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_inflight_messages 1000\nmax_queued_messages 100000\n" % self.port)
        logfile = self.directory / "mosquitto.log"
        with open(logfile, "ab") as out:
            self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 5
        while not listening("127.0.0.1", self.port, 0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise DemoError("mosquitto did not start on 127.0.0.1:%d; see %s"
                                % (self.port, logfile))
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class _Subscribed(logging.Handler):
    """Notices the gateway's "subscribed to" log line: only then may the vans publish."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.done = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("subscribed to"):
            self.done.set()


class GatewayThread:
    """The gateway service in a thread (it opens its store in that thread)."""

    def __init__(self, cfg: gateway_config.GatewayConfig) -> None:
        self.cfg = cfg
        self.gateway: Gateway | None = None
        self.error: BaseException | None = None
        self.created = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gateway", daemon=True)

    def _run(self) -> None:
        from fieldtrack.tools.gateway.command import build_sinks

        try:
            self.gateway = Gateway(self.cfg, sinks=build_sinks(self.cfg))
        except BaseException as exc:  # reported by start(), in the caller's thread
            self.error = exc
            return
        finally:
            self.created.set()
        self.gateway.run()

    def start(self, timeout: float = 15.0) -> None:
        watch = _Subscribed()
        gw_log = logging.getLogger("fieldtrack.gateway")
        gw_log.addHandler(watch)
        try:
            self.thread.start()
            self.created.wait(timeout)
            if self.error is not None:
                if isinstance(self.error, StoreError | FenceError | ConfigError):
                    raise DemoError(str(self.error))
                raise self.error
            if not watch.done.wait(timeout):
                raise DemoError("the gateway did not subscribe at %s:%d within %.0f s"
                                % (self.cfg.mqtt.host, self.cfg.mqtt.port, timeout))
        finally:
            gw_log.removeHandler(watch)

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        self.thread.join(30)


# --- what the view shows --------------------------------------------------------------


@dataclass
class VanRow:
    id: str
    t: int | None = None
    lat: int = 0
    lon: int = 0
    spd: int = 0
    ign: bool = False
    place: str = ""


@dataclass
class Snapshot:
    vans: list[VanRow] = field(default_factory=list)
    events: list[tuple[int, int, str, str, str]] = field(default_factory=list)  # id, t, ...
    positions: int = 0
    event_count: int = 0
    rejects: int = 0


def read_snapshot(db: sqlite3.Connection, van_ids: list[str],
                  after_event: int = -1, limit: int = EVENT_ROWS) -> Snapshot:
    """Per van its newest fix and the fence it is in; the newest events (or those after)."""
    snap = Snapshot()
    for van in van_ids:
        row = VanRow(van)
        fix = db.execute("SELECT t, lat, lon, spd, ign FROM positions WHERE device=? "
                         "ORDER BY t DESC LIMIT 1", (van,)).fetchone()
        if fix is not None:
            row.t, row.lat, row.lon, row.spd, row.ign = fix[0], fix[1], fix[2], fix[3], bool(fix[4])
        fence = db.execute("SELECT kind, data FROM events WHERE device=? AND kind IN "
                           "('geofence_enter', 'geofence_exit') ORDER BY t DESC, id DESC "
                           "LIMIT 1", (van,)).fetchone()
        if fence is not None and fence[0] == "geofence_enter":
            row.place = str(json.loads(fence[1]).get("name", ""))
        snap.vans.append(row)
    if after_event >= 0:
        rows = db.execute("SELECT id, t, device, kind, data FROM events WHERE id > ? "
                          "AND kind <> 'status' ORDER BY id", (after_event,)).fetchall()
    else:
        rows = db.execute("SELECT id, t, device, kind, data FROM events WHERE kind <> 'status' "
                          "ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    snap.events = [(r[0], r[1], r[2], r[3], describe(r[3], json.loads(r[4]))) for r in rows]
    snap.positions = db.execute("SELECT COUNT(*) FROM positions").fetchone()[0]
    snap.event_count = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    snap.rejects = db.execute("SELECT COUNT(*) FROM rejects").fetchone()[0]
    return snap


def describe(kind: str, data: dict[str, Any]) -> str:
    """A few words on an event's data, for people."""
    if kind in ("geofence_enter", "geofence_exit", "geofence_dwell"):
        return str(data.get("name", data.get("fence", "")))
    if kind == "visit":
        return "%s, %d min" % (data.get("name", ""), round(data.get("duration_s", 0) / 60))
    if kind == "trip_end":
        return "%.1f km in %d min" % (data.get("distance_m", 0) / 1000,
                                      round(data.get("duration_s", 0) / 60))
    if kind == "boot":
        return "firmware %s" % data.get("fw", "?")
    if kind in ("stop", "idle"):
        return "since %s" % clock_text(data.get("since"))
    return ""


def clock_text(t: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if isinstance(t, int) else "--:--:--"


def van_state(row: VanRow) -> str:
    if row.t is None:
        return "no fix yet"
    if row.ign and row.spd >= 5:
        return "driving"
    return "engine on" if row.ign else "parked"


def render(snap: Snapshot, header: str, sim_now: float, width: int = 100) -> str:
    """The whole screen as text: vans, recent events, totals."""
    lines = [header[:width], "",
             "%-14s %-9s %-11s %-11s %5s  %-10s %s" % ("van", "last fix", "lat", "lon",
                                                       "km/h", "state", "where")]
    for v in snap.vans:
        lines.append("%-14s %-9s %-11s %-11s %5s  %-10s %s" % (
            v.id, clock_text(v.t), "%.5f" % (v.lat * 1e-7) if v.t else "", "%.5f" % (v.lon * 1e-7)
            if v.t else "", v.spd if v.t else "", van_state(v), v.place))
    lines += ["", "recent events (simulated time %s)" % clock_text(int(sim_now))]
    for _, t, device, kind, text in snap.events:
        lines.append("  %s  %-14s %-16s %s" % (clock_text(t), device, kind, text))
    lines += ["", "stored: %d positions, %d events, %d rejected frames.   Ctrl-C stops the demo."
              % (snap.positions, snap.event_count, snap.rejects)]
    return "\n".join(line[:width] for line in lines) + "\n"


# --- the demo ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoOptions:
    broker: tuple[str, int] | None = None  # None: 127.0.0.1:1883, started if need be
    directory: Path | None = None  # None: a temporary directory, removed at the end
    vans: int = 5
    speedup: float = 10.0
    duration: float | None = None
    seed: int = 1


@dataclass
class DemoResult:
    directory: Path
    kept: bool
    positions: int
    events: int
    rejects: int
    published_frames: int


class Demo:
    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.temporary = options.directory is None
        self.directory = Path(options.directory or tempfile.mkdtemp(prefix="fieldtrack-demo-"))
        self.db_path = self.directory / "fieldtrack.db"
        self.broker: LocalBroker | None = None
        self.gateway: GatewayThread | None = None
        self.fleet: BackgroundFleet | None = None
        self.clock: SimClock | None = None
        self.van_ids: list[str] = []
        self.host, self.port = options.broker or DEFAULT_BROKER

    def start(self) -> None:
        """Broker, fences, registry, gateway, vans: in that order; undone on failure."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not listening(self.host, self.port):
            if self.options.broker is not None:
                raise DemoError("nothing listens on %s:%d: start the broker, or leave out "
                                "--broker to have the demo start one" % (self.host, self.port))
            self.broker = LocalBroker(self.directory, self.port)
            self.broker.start()
            log.info("started Mosquitto on 127.0.0.1:%d", self.port)
        fences = self.directory / "fences.geojson"
        fences.write_text(json.dumps(fences_document(), indent=1) + "\n")
        cfg = FleetConfig(devices=self.options.vans, prefix="demo-van",
                              seed=self.options.seed, city=CITY, customers=CUSTOMERS,
                              depots=(DEPOT,), group="vans")
        self.van_ids = device_ids(cfg)
        keys, _ = register_devices(self.db_path, self.van_ids, group=cfg.group)
        try:
            gw_cfg = gateway_config.parse({
                "mqtt": {"host": self.host, "port": self.port,
                         "client_id": "fieldtrack-demo-%08x" % zlib.crc32(
                             str(self.directory.resolve()).encode()),
                         "session_expiry_s": 60 if self.temporary else 3600},
                "store": {"path": str(self.db_path)},
                "http": {"enabled": False},
                "events": {"fences_file": str(fences)},
            }, "<demo>")
        except ConfigError as exc:
            raise DemoError(str(exc)) from None
        self.gateway = GatewayThread(gw_cfg)
        self.gateway.start()
        self.clock = SimClock(self.options.speedup, self.options.duration)
        fleet = Fleet.build(cfg, self.clock.now(), keys)
        runner = MqttRunner(fleet, self.host, self.port, self.clock,
                                client_id="fieldtrack-demo-vans-%d" % os.getpid())
        self.fleet = BackgroundFleet(runner)
        self.fleet.start()
        log.info("%d vans on the road; store %s", len(self.van_ids), self.db_path)

    def snapshot(self, db: sqlite3.Connection, after_event: int = -1) -> Snapshot:
        return read_snapshot(db, self.van_ids, after_event)

    def header(self) -> str:
        speed = "x%g" % self.options.speedup
        if self.clock is not None and self.clock.now() >= time.time() - 1:
            speed = "live"
        return "fieldtrack demo: %d vans (%s), broker %s:%d, store %s" % (
            len(self.van_ids), speed, self.host, self.port, self.db_path)

    def sim_now(self) -> float:
        return self.clock.now() if self.clock is not None else time.time()

    def stop(self) -> DemoResult:
        """Vans first (their buffers sent and acknowledged), then gateway, then broker."""
        published = 0
        try:
            if self.fleet is not None:
                published = self.fleet.stop().frames
                self._wait_stored(published)
        finally:
            self.fleet = None
            if self.gateway is not None:
                self.gateway.stop()
                self.gateway = None
            if self.broker is not None:
                self.broker.stop()
                self.broker = None
        return self._result(published)

    def _wait_stored(self, frames: int, timeout: float = 5.0) -> None:
        """Give the gateway a moment to commit the last acknowledged frames."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            with closing(open_reader(self.db_path)) as db:
                n = db.execute("SELECT COUNT(*) FROM positions").fetchone()[0] + \
                    db.execute("SELECT COUNT(*) FROM events WHERE boot >= 0").fetchone()[0]
            if n == last:
                return
            last = n
            time.sleep(0.3)

    def _result(self, published: int) -> DemoResult:
        counts = [0, 0, 0]
        if self.db_path.exists():
            with closing(open_reader(self.db_path)) as db:
                counts = [db.execute("SELECT COUNT(*) FROM %s" % table).fetchone()[0]
                          for table in ("positions", "events", "rejects")]
        result = DemoResult(self.directory, not self.temporary, counts[0], counts[1], counts[2],
                            published)
        if self.temporary:
            shutil.rmtree(self.directory, ignore_errors=True)
        return result


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to the store, which the gateway writes meanwhile."""
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)


def setup_logging(directory: Path | None, level: str = "info") -> None:
    """JSON log lines: on stderr, or (under the live view) into the demo directory."""
    logs.setup(level)
    if directory is not None:
        handler = logging.FileHandler(directory / "demo.log")
        handler.setFormatter(logs.JsonFormatter())
        logging.getLogger().handlers[:] = [handler]
