"""The fleet simulator: virtual vans that drive, decide and publish as the firmware does.

A simulated tracker is a van (a street-grid day of customer visits, or a GPX route)
whose fixes go through the firmware's own reporting policy (``firmware/policy.py``);
its records are numbered (boot, seq) as the firmware numbers them, encoded with the
firmware's codec (``protocol.frames``) and signed with the device key. A coverage gap
buffers records that go out later, oldest first, as ``batch`` frames with the ``buf``
flag; a reboot starts a new boot epoch whose sequence starts again at 0.

Built for 10,000 devices in one process: the simulation is event driven (a heap of
each device's next instant that matters, never a tick per device per second) and the
edge is one paho-mqtt client publishing QoS 1 with a bounded number in flight.

Pure part: routes, vans, trackers and the ``Fleet``. Edge: ``MqttRunner``.
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import importlib.util
import math
import random
import select
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fieldtrack.protocol import cbor, cose, frames, topics
from fieldtrack.protocol.errors import FrameError

M_PER_DEG = 111_320.0  # as the firmware's policy: 11.132 mm per 1e-7 degree
FW_VERSION = "0.1.0-sim"
MAX_BATCH = 60  # fixes per batch frame, as the firmware sends its buffer
MAX_SEQ = 0xFFFF  # past this the firmware starts a new epoch to keep frames small
TURN_MS = 4.2  # 15 km/h through a turn
A_UP, A_DOWN = 1.2, 1.8  # m/s^2: a loaded van in town
CATCH_UP_S = 1800.0  # an open-ended run at speedup X replays this much wall time of past
POLICY_PATH = Path(__file__).resolve().parents[1] / "firmware" / "policy.py"


class SimulateError(Exception):
    """A simulation that cannot run: a bad route file, option or broker."""


def load_policy() -> ModuleType:
    """The firmware's reporting policy module, loaded from ``firmware/policy.py``."""
    if not POLICY_PATH.exists():
        raise SimulateError("%s: the firmware's reporting policy is missing; run the "
                            "simulator from a fieldtrack source checkout" % POLICY_PATH)
    spec = importlib.util.spec_from_file_location("fieldtrack_firmware_policy", POLICY_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


firmware_policy = load_policy() if POLICY_PATH.exists() else None


# --- legs: a van's day, piece by piece ---------------------------------------------


class Leg:
    """A piece of a van's day between t0 and t1: where it is, how fast, engine on or off."""

    __slots__ = ("t0", "t1", "x0", "y0", "hdg", "alt0", "ign", "site")

    def __init__(self, t0: float, t1: float, x0: float, y0: float, hdg: int, alt0: float,
                 ign: bool, site: str) -> None:
        self.t0, self.t1, self.x0, self.y0 = t0, t1, x0, y0
        self.hdg, self.alt0, self.ign, self.site = hdg, alt0, ign, site

    def state(self, t: float) -> tuple[float, float, float, float]:
        """(x, y, speed m/s, altitude) at ``t``: a stay stays."""
        return self.x0, self.y0, 0.0, self.alt0

    @property
    def moving(self) -> bool:
        return False


class Drive(Leg):
    """A straight drive: accelerate from v0, cruise at vc, brake to v1 at the end."""

    __slots__ = ("ux", "uy", "length", "v0", "vc", "a1", "ta", "tc", "sa", "sc", "alt1")

    def __init__(self, t0: float, x0: float, y0: float, x1: float, y1: float, v0: float,
                 vc: float, v1: float, alt0: float = 40.0, alt1: float = 40.0) -> None:
        length = math.hypot(x1 - x0, y1 - y0)
        hdg = round(math.degrees(math.atan2(x1 - x0, y1 - y0))) % 360
        vc = max(vc, v0, v1, 0.5)
        da, dd = (vc * vc - v0 * v0) / (2 * A_UP), (vc * vc - v1 * v1) / (2 * A_DOWN)
        if da + dd > length:  # too short to reach the cruise speed: a lower peak
            peak = math.sqrt((2 * A_UP * A_DOWN * length + A_DOWN * v0 * v0 + A_UP * v1 * v1)
                             / (A_UP + A_DOWN))
            vc = peak
            da, dd = (vc * vc - v0 * v0) / (2 * A_UP), (vc * vc - v1 * v1) / (2 * A_DOWN)
        if vc < max(v0, v1) or da < 0 or dd < 0:  # braking harder than usual: uniformly
            self.a1 = (v1 * v1 - v0 * v0) / (2 * length)
            self.ta = 2 * length / (v0 + v1)
            self.tc, self.sa, self.sc, self.vc = 0.0, length, length, v1
            total = self.ta
        else:
            self.a1, self.vc = A_UP, vc
            self.ta = (vc - v0) / A_UP
            self.tc = max(0.0, length - da - dd) / vc
            self.sa, self.sc = da, length - dd
            total = self.ta + self.tc + (vc - v1) / A_DOWN
        super().__init__(t0, t0 + total, x0, y0, hdg, alt0, True, "")
        self.ux, self.uy = (x1 - x0) / length, (y1 - y0) / length
        self.length, self.v0, self.alt1 = length, v0, alt1

    def state(self, t: float) -> tuple[float, float, float, float]:
        tau = min(max(t - self.t0, 0.0), self.t1 - self.t0)
        if tau < self.ta:
            s, v = self.v0 * tau + self.a1 * tau * tau / 2, self.v0 + self.a1 * tau
        elif tau < self.ta + self.tc:
            s, v = self.sa + self.vc * (tau - self.ta), self.vc
        else:
            u = tau - self.ta - self.tc
            s, v = self.sc + self.vc * u - A_DOWN * u * u / 2, self.vc - A_DOWN * u
        s = min(s, self.length)
        alt = self.alt0 + (self.alt1 - self.alt0) * s / self.length
        return self.x0 + self.ux * s, self.y0 + self.uy * s, max(v, 0.0), alt

    @property
    def moving(self) -> bool:
        return True


def _stay(t: float, seconds: float, x: float, y: float, hdg: int, alt: float, ign: bool,
          site: str = "") -> Leg:
    return Leg(t, t + seconds, x, y, hdg, alt, ign, site)


def _visit(rng: random.Random, t: float, x: float, y: float, hdg: int, alt: float,
           site: str, long: bool = False) -> Iterator[Leg]:
    """Park (engine on), engine off for the visit, engine on again, drive off."""
    for seconds, ign in ((rng.uniform(10, 30), True),
                         (rng.uniform(900, 2400) if long else rng.uniform(180, 900), False),
                         (rng.uniform(15, 60), True)):
        leg = _stay(t, seconds, x, y, hdg, alt, ign, site)
        yield leg
        t = leg.t1


# --- routes: a street grid, or a GPX track ------------------------------------------


@dataclass(frozen=True)
class GridCity:
    """Streets every ``block_x`` m east-west and ``block_y`` m north-south around a centre."""

    lat0: float = 52.52
    lon0: float = 13.405
    block_x: float = 160.0
    block_y: float = 120.0
    radius: int = 12  # blocks from the centre to the edge

    def xy(self, node: tuple[int, int]) -> tuple[float, float]:
        return node[0] * self.block_x, node[1] * self.block_y

    def lat_lon(self, node: tuple[int, int]) -> tuple[float, float]:
        x, y = self.xy(node)
        return (self.lat0 + y / M_PER_DEG,
                self.lon0 + x / (M_PER_DEG * math.cos(math.radians(self.lat0))))

    def random_node(self, rng: random.Random) -> tuple[int, int]:
        return rng.randint(-self.radius, self.radius), rng.randint(-self.radius, self.radius)


@dataclass(frozen=True)
class Site:
    """A named place on the grid that vans visit (a customer) or return to (a depot)."""

    id: str
    name: str
    node: tuple[int, int]


def _grid_drive(city: GridCity, rng: random.Random, t: float, a: tuple[int, int],
                b: tuple[int, int]) -> Iterator[Leg]:
    """From junction a to b block by block: straight runs, turns, red lights."""
    steps: list[tuple[int, int]] = []
    ci, cj = a
    axis = rng.randrange(2)
    while (ci, cj) != b:
        di, dj = b[0] - ci, b[1] - cj
        if di and dj:
            if rng.random() < 0.3:
                axis = 1 - axis
        else:
            axis = 0 if di else 1
        step = ((1 if di > 0 else -1), 0) if axis == 0 else (0, (1 if dj > 0 else -1))
        steps.append(step)
        ci, cj = ci + step[0], cj + step[1]
    runs: list[tuple[tuple[int, int], int]] = []
    for step in steps:
        if runs and runs[-1][0] == step:
            runs[-1] = (step, runs[-1][1] + 1)
        else:
            runs.append((step, 1))
    node, v_in = a, 0.0
    for n, (step, blocks) in enumerate(runs):
        vc = rng.uniform(30, 50) / 3.6
        last_run = n == len(runs) - 1
        stops = [k for k in range(1, blocks) if rng.random() < 0.12]  # red lights on the way
        if not last_run and rng.random() < 0.2:
            stops.append(blocks)  # a red light before the turn
        if last_run:
            stops.append(blocks)
        done = 0
        for k in stops + ([] if blocks in stops else [blocks]):
            x0, y0 = city.xy(node)
            node = (node[0] + step[0] * (k - done), node[1] + step[1] * (k - done))
            x1, y1 = city.xy(node)
            stop = k in stops
            leg = Drive(t, x0, y0, x1, y1, v_in, vc, 0.0 if stop else TURN_MS)
            yield leg
            t, done = leg.t1, k
            v_in = 0.0 if stop else TURN_MS
            if stop and not (last_run and k == blocks):
                light = _stay(t, rng.uniform(5, 45), x1, y1, leg.hdg, 40.0, True)
                yield light
                t = light.t1


def grid_day(city: GridCity, rng: random.Random, t: float, customers: Sequence[Site],
             depot: Site) -> Iterator[Leg]:
    """A van's endless working day: a few customers, back to the depot, again.

    Without ``customers`` every stop is a new random address in the city.
    """

    def customer() -> Site:
        return rng.choice(customers) if customers else Site("", "", city.random_node(rng))

    here = customer()
    x, y = city.xy(here.node)
    if rng.random() < 0.3:  # met in the middle of a visit
        first = _stay(t, rng.uniform(30, 600), x, y, 0, 40.0, False, here.id)
        yield first
        t = first.t1
    hdg = 0
    while True:
        stops = [customer() for _ in range(rng.randint(3, 6))] + [depot]
        for site in stops:
            if site.node == here.node:
                continue
            for leg in _grid_drive(city, rng, t, here.node, site.node):
                yield leg
                t, hdg = leg.t1, leg.hdg
            here = site
            x, y = city.xy(site.node)
            for leg in _visit(rng, t, x, y, hdg, 40.0, site.id, long=site is depot):
                yield leg
                t = leg.t1


@dataclass(frozen=True)
class GpxRoute:
    """A track in local metres east/north of its first point; speeds where it had times."""

    name: str
    lat0: float
    lon0: float
    points: tuple[tuple[float, float, float], ...]  # x, y, altitude
    speeds: tuple[float | None, ...]  # per segment, m/s, from the recorded times


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def load_gpx(path: str | Path) -> GpxRoute:
    """Read the track points (or else route points) of a GPX 1.0/1.1 file."""
    name = str(path)
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise SimulateError("%s: cannot read the route (%s)" % (name, exc.strerror)) from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise SimulateError("%s:%d:%d: not valid XML: %s" % (name, line, column, exc)) from None
    if _local_name(root.tag) != "gpx":
        raise SimulateError("%s: not a GPX file: the root element is <%s>, not <gpx>"
                            % (name, _local_name(root.tag)))
    raw: list[tuple[float, float, float | None, float | None]] = []
    for kind in ("trkpt", "rtept"):
        for n, el in enumerate(e for e in root.iter() if _local_name(e.tag) == kind):
            try:
                lat, lon = float(el.attrib["lat"]), float(el.attrib["lon"])
            except (KeyError, ValueError):
                raise SimulateError("%s: <%s> number %d: needs numeric lat and lon attributes"
                                    % (name, kind, n + 1)) from None
            if not (-85 <= lat <= 85 and -180 <= lon <= 180):
                raise SimulateError("%s: <%s> number %d: lat %s, lon %s is not a place on the "
                                    "map" % (name, kind, n + 1, lat, lon))
            ele = stamp = None
            for child in el:
                text = (child.text or "").strip()
                try:
                    if _local_name(child.tag) == "ele":
                        ele = float(text)
                    elif _local_name(child.tag) == "time":
                        stamp = datetime.fromisoformat(text).timestamp()
                except ValueError:
                    pass  # a point without a usable height or time still has a place
            raw.append((lat, lon, ele, stamp))
        if raw:
            break
    return _route(name, raw)


def _route(name: str, raw: list[tuple[float, float, float | None, float | None]]) -> GpxRoute:
    if not raw:
        raise SimulateError("%s: no <trkpt> or <rtept> points: export the route as a track"
                            % name)
    lat0, lon0 = raw[0][0], raw[0][1]
    cos0 = math.cos(math.radians(lat0))
    points: list[tuple[float, float, float]] = []
    speeds: list[float | None] = []
    last_t: float | None = None
    for lat, lon, ele, stamp in raw:
        x, y = (lon - lon0) * M_PER_DEG * cos0, (lat - lat0) * M_PER_DEG
        alt = ele if ele is not None else (points[-1][2] if points else 40.0)
        if points:
            d = math.hypot(x - points[-1][0], y - points[-1][1])
            if d < 1.0:
                continue  # a repeated point: nothing to drive
            v = d / (stamp - last_t) if stamp is not None and last_t is not None \
                and stamp > last_t else None
            speeds.append(min(v, 40.0) if v is not None and v >= 1.0 else None)
        points.append((x, y, alt))
        last_t = stamp
    length = sum(math.hypot(b[0] - a[0], b[1] - a[1])
                 for a, b in zip(points, points[1:], strict=False))
    if length < 50:
        raise SimulateError("%s: the route is %.0f m long: give a track of at least 50 m"
                            % (name, length))
    return GpxRoute(name, lat0, lon0, tuple(points), tuple(speeds))


def _turn(a: tuple[float, float, float], b: tuple[float, float, float],
          c: tuple[float, float, float]) -> float:
    h1 = math.atan2(b[0] - a[0], b[1] - a[1])
    h2 = math.atan2(c[0] - b[0], c[1] - b[1])
    return abs((math.degrees(h2 - h1) + 180) % 360 - 180)


def gpx_day(route: GpxRoute, rng: random.Random, t: float) -> Iterator[Leg]:
    """Drive the route to its end, visit a customer there, drive it back; again."""
    pts = route.points
    forward = rng.random() < 0.5
    i = rng.randrange(len(pts) - 1)
    vc = rng.uniform(30, 50) / 3.6
    v_in = 0.0
    hdg = 0
    while True:
        order = range(i, len(pts) - 1) if forward else range(len(pts) - 1 - i, 0, -1)
        step = 1 if forward else -1
        for k in order:
            a, b = pts[k], pts[k + step]
            seg = route.speeds[min(k, k + step)]
            if rng.random() < 0.01:
                vc = rng.uniform(30, 50) / 3.6
            v = seg if seg is not None else vc
            end = k + step == (len(pts) - 1 if forward else 0)
            light = False
            if end:
                v_out = 0.0
            else:
                turn = _turn(a, b, pts[k + 2 * step])
                light = rng.random() < (0.15 if turn > 60 else 0.01)
                limit = TURN_MS if turn > 60 else v * (1 - turn / 90) + TURN_MS * turn / 90
                v_out = 0.0 if light else min(v, limit)
            leg = Drive(t, a[0], a[1], b[0], b[1], min(v_in, v), v, min(v_out, v), a[2], b[2])
            yield leg
            t, v_in, hdg = leg.t1, v_out, leg.hdg
            if light:
                stop = _stay(t, rng.uniform(5, 40), b[0], b[1], leg.hdg, b[2], True)
                yield stop
                t = stop.t1
        last = pts[-1] if forward else pts[0]
        for stay in _visit(rng, t, last[0], last[1], hdg, last[2], "route-end"):
            yield stay
            t = stay.t1
        forward, i, v_in = not forward, 0, 0.0


# --- the tracker: GNSS, policy, records, buffer -------------------------------------


class Signer:
    """``cose.sign`` with the key's HMAC pads computed once: the same bytes, cheaper."""

    __slots__ = ("inner", "outer", "head")

    # cbor(["MAC0", protected, h'', payload]) up to the payload's byte-string head
    MAC0_PREFIX = b"\x84\x64MAC0" + b"\x43" + cose.PROTECTED + b"\x40"

    IPAD = bytes(b ^ 0x36 for b in range(256))
    OPAD = bytes(b ^ 0x5C for b in range(256))

    def __init__(self, key: bytes, kid: str) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        self.inner = hashlib.sha256(key.translate(self.IPAD))
        self.inner.update(self.MAC0_PREFIX)
        self.outer = hashlib.sha256(key.translate(self.OPAD))
        # 17([protected, {4: kid}, payload, tag]) up to the payload
        self.head = b"\xd1\x84\x43" + cose.PROTECTED + b"\xa1\x04" + cbor.dumps(kid.encode())

    def sign(self, payload: bytes) -> bytes:
        body = _bstr_head(len(payload)) + payload  # the payload as a CBOR byte string
        inner = self.inner.copy()
        inner.update(body)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return self.head + body + b"\x48" + outer.digest()[: cose.TAG_BYTES]


def _bstr_head(n: int) -> bytes:
    """The head of a CBOR byte string of n bytes (RFC 8949, major type 2)."""
    if n < 24:
        return bytes((0x40 | n,))
    if n < 0x100:
        return bytes((0x58, n))
    if n < 0x10000:
        return b"\x59" + n.to_bytes(2, "big")
    return b"\x5a" + n.to_bytes(4, "big")


@dataclass
class Counts:
    """What one device published: the records the store should hold, no more, no less."""

    positions: int = 0
    events: int = 0  # device events, status frames included (stored as events)
    frames: int = 0
    batches: int = 0
    buffered: int = 0  # fixes that went out late, in batches
    seqs: dict[int, int] = field(default_factory=dict)  # boot -> records numbered 0..n-1


@dataclass(frozen=True)
class FleetConfig:
    devices: int = 10
    prefix: str = "sim"
    seed: int = 1
    city: GridCity = field(default_factory=GridCity)
    customers: tuple[Site, ...] = ()  # empty: every stop is a random address
    depots: tuple[Site, ...] = ()
    route: GpxRoute | None = None  # drive this instead of the grid
    gaps: bool = False
    gap_every_s: float = 1800.0  # mean time between coverage gaps
    gap_s: tuple[float, float] = (60.0, 600.0)
    reboots: bool = False
    reboot_every_s: float = 4 * 3600.0  # mean time between reboots
    reporting: dict[str, Any] | None = None  # the firmware's reporting config
    gnss_noise_m: float = 1.4  # standard deviation per axis of the wandering GNSS error
    status_period_s: int = 3600
    presence: bool = True
    start_spread_s: float = 10.0  # devices power on within this long of the start
    group: str = "sim"


Outgoing = tuple[str, bytes, bool]  # topic, payload, retain


class SimDevice:
    """One tracker: the firmware's record keeping, driven by a van's legs."""

    __slots__ = ("id", "cfg", "rng", "legs", "leg", "policy", "signer", "topic", "boot", "seq",
                 "ignition", "check_at", "status_at", "gap_end", "next_gap", "next_reboot",
                 "down_until", "booting", "buffer", "noise", "counts", "next_t", "started",
                 "cos0", "lat0", "lon0", "sigma")

    def __init__(self, device_id: str, cfg: FleetConfig, legs: Iterator[Leg], rng: random.Random,
                 key: bytes | None, start_t: int, boot: int, origin: tuple[float, float]) -> None:
        """``legs`` is the van's day (its own random stream); ``rng`` draws the rest."""
        assert firmware_policy is not None
        self.id, self.cfg, self.rng, self.legs = device_id, cfg, rng, legs
        self.leg = next(legs)
        self.policy = firmware_policy.Policy(cfg.reporting or firmware_policy.DEFAULTS)
        self.signer = Signer(key, device_id) if key else None
        self.topic = topics.uplink(device_id)
        self.boot, self.seq, self.ignition = boot - 1, 0, None
        self.check_at = self.status_at = self.next_t = start_t
        self.gap_end: int | None = None
        self.next_gap = start_t + self._exp(cfg.gap_every_s) if cfg.gaps else math.inf
        self.next_reboot = start_t + self._exp(cfg.reboot_every_s) if cfg.reboots else math.inf
        self.down_until: float = start_t
        self.booting = True
        self.buffer: list[tuple[int, int, dict[str, Any]]] = []  # boot, seq, fix or frame
        self.noise = [0.0, 0.0, float(start_t)]  # east, north, time
        self.counts = Counts()
        self.started = False
        self.lat0, self.lon0 = origin
        self.cos0 = math.cos(math.radians(origin[0]))
        self.sigma = cfg.gnss_noise_m

    def _exp(self, mean: float) -> float:
        return round(self.rng.expovariate(1.0 / mean)) + 1

    # --- records, as the firmware numbers them ---------------------------------------

    def _boot(self, t: int, out: list[Outgoing]) -> None:
        """A start: a new epoch, a fresh policy, the boot event and a status, as the firmware."""
        self.boot += 1
        self.seq = 0
        self.policy.last = None
        self.ignition = None
        self.check_at = t
        self._event(t, "boot", None, {"reason": 0, "fw": FW_VERSION}, out)
        self._status(t, out)

    def _next_seq(self) -> int:
        if self.seq > MAX_SEQ:  # as the firmware: a new epoch rather than 5-byte seqs
            self.boot += 1
            self.seq = 0
        seq = self.seq
        self.seq += 1
        self.counts.seqs[self.boot] = self.seq
        return seq

    def _record(self, boot: int, seq: int, item: dict[str, Any], out: list[Outgoing]) -> None:
        if self.gap_end is not None:
            self.buffer.append((boot, seq, item))
        elif "type" in item:
            self._send(dict(item, boot=boot, seq=seq), out)
        else:
            self._send(dict(item, type="position", boot=boot, seq=seq), out)

    def _event(self, t: int, kind: str, fix: dict[str, Any] | None, data: dict[str, Any],
               out: list[Outgoing]) -> None:
        frame: dict[str, Any] = {"type": "event", "t": t, "kind": kind, "data": data}
        if fix is not None:
            frame["lat"], frame["lon"], frame["acc"] = fix["lat"], fix["lon"], fix["acc"]
        self._record(self.boot, self._next_seq(), frame, out)

    def _status(self, t: int, out: list[Outgoing]) -> None:
        frame = {"type": "status", "t": t, "batt_mv": 4010 + self.rng.randint(-20, 20),
                 "supply_mv": 12600 + self.rng.randint(-300, 300), "fw": FW_VERSION,
                 "buffered": len(self.buffer), "dropped": 0,
                 "uptime": max(0, int(t - self.down_until)), "heap_free": 81920}
        self._record(self.boot, self._next_seq(), frame, out)
        self.status_at = t + self.cfg.status_period_s

    def _send(self, frame: dict[str, Any], out: list[Outgoing]) -> None:
        payload = frames.encode(frame)
        if self.signer is not None:
            payload = self.signer.sign(payload)
        out.append((self.topic, payload, False))
        c = self.counts
        c.frames += 1
        if frame["type"] == "position":
            c.positions += 1
        elif frame["type"] == "batch":
            c.batches += 1
            c.positions += len(frame["fixes"])
            c.buffered += len(frame["fixes"])
        else:
            c.events += 1

    def flush(self, out: list[Outgoing]) -> None:
        """Coverage is back: the buffer goes out oldest first, runs of fixes as batches."""
        self.gap_end = None
        run: list[dict[str, Any]] = []
        first = (0, 0)
        for boot, seq, item in self.buffer:
            joins = "type" not in item and boot == first[0] and seq == first[1] + len(run)
            if run and not (joins and len(run) < MAX_BATCH):
                self._send({"type": "batch", "boot": first[0], "seq": first[1], "fixes": run},
                           out)
                run = []
            if "type" in item:
                self._send(dict(item, boot=boot, seq=seq), out)
                continue
            if not run:
                first = (boot, seq)
            run.append(dict(item, buf=True))
        if run:
            self._send({"type": "batch", "boot": first[0], "seq": first[1], "fixes": run}, out)
        self.buffer = []

    # --- the van's GNSS fix ------------------------------------------------------------

    def fix(self, t: int) -> dict[str, Any]:
        leg = self.leg
        while t >= leg.t1:
            leg = self.leg = next(self.legs)
        x, y, v, alt = leg.state(t)
        n = self.noise
        if self.sigma:  # a slowly wandering error (first-order Gauss-Markov), exact for any dt
            a = 0.9 ** (t - n[2])
            s = self.sigma * math.sqrt(max(0.0, 1 - a * a))
            n[0], n[1] = a * n[0] + self.rng.gauss(0, s), a * n[1] + self.rng.gauss(0, s)
        n[2] = t
        rng = self.rng
        spd, hdg = 0, leg.hdg  # standing, a receiver keeps the last course
        if v > 0.3:
            if self.sigma:
                hdg = round(leg.hdg + rng.gauss(0, 2.0)) % 360
            spd = max(0, round(v * 3.6 + (rng.gauss(0, 0.4) if self.sigma else 0.0)))
        lat = self.lat0 + (y + n[1]) / M_PER_DEG
        lon = self.lon0 + (x + n[0]) / (M_PER_DEG * self.cos0)
        return {"t": t, "lat": round(lat * 1e7), "lon": round(lon * 1e7), "spd": spd,
                "hdg": hdg, "alt": round(alt), "acc": rng.choice((2, 3, 3, 3, 4)),
                "sats": rng.randint(8, 13), "fix": 2, "ign": leg.ign, "buf": False,
                "mock": False}

    def _check(self, t: int, out: list[Outgoing]) -> None:
        """One fix through the firmware's policy, as ``Tracker.on_fix`` does it."""
        fix = self.fix(t)
        ign = fix["ign"]
        changed = self.ignition is not None and ign != self.ignition
        if changed:
            self._event(t, "ignition_on" if ign else "ignition_off", fix, {}, out)
        self.ignition = ign
        if self.policy.due(fix, ign, changed):
            self.policy.reported(fix)
            self._record(self.boot, self._next_seq(), fix, out)
        self.check_at = self._next_check(t, ign)

    def _next_check(self, t: int, ign: bool) -> int:
        """The next second at which the policy's answer can change.

        While the van drives, every second after the minimum period. While it stands,
        its fix changes only by GNSS noise, far less than the policy's distances, so the
        answer changes only at the minimum and maximum periods, or when the stay ends.
        """
        p = self.policy.profile({"spd": 0}, ign)
        last = self.policy.last
        leg_end = math.ceil(self.leg.t1)
        if last is None:
            return t + 1
        quiet = p["min_distance_m"] == 0 or p["min_distance_m"] > 8 * self.sigma + 2
        if self.leg.moving or not quiet:
            return min(max(t + 1, last[0] + p["min_period_s"]), leg_end)
        later = [c for c in (last[0] + p["min_period_s"], last[0] + p["max_period_s"])
                 if c > t]
        return min(later + [leg_end])

    # --- the timeline --------------------------------------------------------------

    def wake(self, t: int) -> list[Outgoing]:
        """Everything that happens at second ``t``; sets ``next_t``."""
        out: list[Outgoing] = []
        if not self.started:
            self.started = True
            if self.cfg.presence:
                out.append((topics.presence(self.id), topics.ONLINE, True))
        if t < self.down_until:
            self.next_t = math.ceil(self.down_until)
            return out
        if self.booting:
            self.booting = False
            self._boot(t, out)
        if self.gap_end is not None and t >= self.gap_end:
            self.flush(out)
            self.next_gap = t + self._exp(self.cfg.gap_every_s)
        elif self.gap_end is None and t >= self.next_gap:
            self.gap_end = t + round(self.rng.uniform(*self.cfg.gap_s))
            self.next_gap = math.inf
        if t >= self.next_reboot:
            self.next_reboot = t + self._exp(self.cfg.reboot_every_s)
            self.down_until = t + self.rng.uniform(8, 30)  # the tracker starts again
            self.booting = True
            self.next_t = math.ceil(self.down_until)
            return out
        if t >= self.status_at:
            self._status(t, out)
        if t >= self.check_at:
            self._check(t, out)
        nxt = min(self.check_at, self.status_at, self.next_reboot,
                  self.gap_end if self.gap_end is not None else self.next_gap)
        self.next_t = int(nxt)
        return out


# --- the fleet -----------------------------------------------------------------------


def device_ids(cfg: FleetConfig) -> list[str]:
    """PREFIX-001, PREFIX-002, ... (as many digits as the count needs, at least three)."""
    if cfg.devices < 1:
        raise SimulateError("devices: %d; simulate at least one" % cfg.devices)
    width = max(3, len(str(cfg.devices)))
    ids = ["%s-%0*d" % (cfg.prefix, width, i + 1) for i in range(cfg.devices)]
    try:
        topics.check_device_id(ids[-1])  # the longest; all share the prefix's characters
    except FrameError:
        raise SimulateError("prefix %r: device ids like %s must be 1..%d of letters, digits, "
                            "'-' and '_'" % (cfg.prefix, ids[-1], topics.MAX_DEVICE_ID)) from None
    return ids


DEPOTS = ((0, 0), (-8, -6), (7, 9), (9, -8))


class Fleet:
    """Every device, and a heap of (next second that matters, device index)."""

    def __init__(self, devices: list[SimDevice]) -> None:
        self.devices = devices
        self.heap = [(d.next_t, i) for i, d in enumerate(devices)]
        heapq.heapify(self.heap)

    @classmethod
    def build(cls, cfg: FleetConfig, t0: float, keys: dict[str, bytes | None] | None = None
              ) -> Fleet:
        """``cfg.devices`` trackers powering on within ``start_spread_s`` of ``t0``.

        A device with a key in ``keys`` signs its frames. Each van's route comes from its
        own random stream (seed, index), so the same seed drives the same routes.
        """
        if firmware_policy is None:
            load_policy()  # raises, saying what is missing
        assert firmware_policy is not None
        if cfg.reporting is not None:
            errors = firmware_policy.check(cfg.reporting)
            if errors:
                raise SimulateError("reporting: " + "; ".join(errors))
        keys = keys or {}
        spread = random.Random("%s/start" % cfg.seed)
        shared = random.Random("%s/gnss" % cfg.seed)  # noise, gaps, reboots: drawn in heap order
        devices = []
        city = cfg.city
        depots = cfg.depots or tuple(Site("depot-%d" % k, "depot %d" % k, node)
                                     for k, node in enumerate(DEPOTS))
        for i, device_id in enumerate(device_ids(cfg)):
            rng = random.Random("%s/%d" % (cfg.seed, i))
            start = int(t0 + spread.uniform(0, cfg.start_spread_s))
            legs: Iterator[Leg]
            if cfg.route is not None:
                legs = gpx_day(cfg.route, rng, start)
                origin = (cfg.route.lat0, cfg.route.lon0)
            else:
                legs = grid_day(city, rng, start, cfg.customers, depots[i % len(depots)])
                origin = (city.lat0, city.lon0)
            devices.append(SimDevice(device_id, cfg, legs, shared, keys.get(device_id), start,
                                     spread.randint(1, 40), origin))
        return cls(devices)

    def advance(self, until: float, limit: int = 1 << 30) -> list[Outgoing]:
        """Wake every device whose next second is at or before ``until``."""
        out: list[Outgoing] = []
        heap, devices = self.heap, self.devices
        while heap and heap[0][0] <= until and len(out) < limit:
            t, i = heapq.heappop(heap)
            dev = devices[i]
            out.extend(dev.wake(t))
            heapq.heappush(heap, (dev.next_t, i))
        return out

    def next_due(self) -> float:
        return self.heap[0][0] if self.heap else math.inf

    def drain(self) -> list[Outgoing]:
        """The end: coverage comes back everywhere and every buffer goes out."""
        out: list[Outgoing] = []
        for dev in self.devices:
            if dev.buffer or dev.gap_end is not None:
                dev.flush(out)
        return out

    def offline(self) -> list[Outgoing]:
        if not self.devices or not self.devices[0].cfg.presence:
            return []
        return [(topics.presence(d.id), topics.OFFLINE, True) for d in self.devices]

    def summary(self) -> dict[str, Any]:
        per = {d.id: {"positions": d.counts.positions, "events": d.counts.events,
                      "frames": d.counts.frames, "batches": d.counts.batches,
                      "buffered": d.counts.buffered, "boots": {str(b): n for b, n
                                                                 in d.counts.seqs.items()}}
               for d in self.devices}
        totals = {k: sum(getattr(d.counts, k) for d in self.devices)
                  for k in ("positions", "events", "frames", "batches", "buffered")}
        return {"devices": len(self.devices), "totals": totals, "per_device": per}


def register_devices(store_path: str | Path, ids: Sequence[str], group: str = "sim"
                     ) -> tuple[dict[str, bytes | None], int]:
    """Keys of ``ids`` from the store, registering (in one transaction) those it lacks.

    Returns the keys and how many devices were new. A device registered without a key
    sends unsigned frames, as a real one would.
    """
    from fieldtrack.gateway import registry
    from fieldtrack.gateway.store import Store, StoreError

    try:
        store = Store(store_path)
    except StoreError as exc:
        raise SimulateError(str(exc)) from None
    try:
        known = store.devices()
        keys: dict[str, bytes | None] = {i: known[i].key for i in ids if i in known}
        missing = [i for i in ids if i not in known]
        if missing:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "devices.csv"
                with open(path, "w", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(["id", "group", "name"])
                    writer.writerows([i, group, "simulated van"] for i in missing)
                result = registry.import_file(store, path, generate_keys=True)
            keys.update(result.keys)
    except registry.RegistryError as exc:
        raise SimulateError("%s: %s" % (store_path, exc)) from None
    finally:
        store.close()
    return keys, len(missing)


# --- the clock -----------------------------------------------------------------------


class SimClock:
    """Simulated Unix time: ``speedup`` times as fast as the wall, never ahead of it.

    A run at speedup X replays the recent past: it starts ``lead_s`` back, so fix times
    reach the present at the end of a bounded run (or after CATCH_UP_S of an open one)
    and continue in real time from there. The gateway drops fixes from the future.
    """

    def __init__(self, speedup: float, duration: float | None,
                 wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        if speedup <= 0:
            raise SimulateError("speedup: %s is not a positive number" % speedup)
        self.speedup, self.wall, self.mono = speedup, wall, mono
        lead = (speedup - 1) * (duration if duration is not None else CATCH_UP_S)
        self.start = wall() - lead
        self.m0 = mono()

    def now(self) -> float:
        return min(self.start + (self.mono() - self.m0) * self.speedup, self.wall())

    def wall_delay(self, sim_t: float) -> float:
        """Wall seconds until the clock shows ``sim_t`` (an estimate near the present)."""
        return max(0.0, (sim_t - self.now()) / self.speedup)


# --- the edge: MQTT --------------------------------------------------------------------


@dataclass
class RunStats:
    """MQTT messages (frames and presence) published and acknowledged, and what it cost."""

    published: int = 0
    acked: int = 0
    frames: int = 0  # of the published messages, protocol frames (the rest: presence)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    sim_s: float = 0.0  # simulated seconds covered
    lag_s: float = 0.0  # how far the simulation was behind its clock at the end
    unacked: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, Any]:
        rate = self.acked / self.wall_s if self.wall_s else 0.0  # messages; frames dominate
        return {"published": self.published, "acked": self.acked, "unacked": self.unacked,
                "frames": self.frames,
                "wall_s": round(self.wall_s, 3), "cpu_s": round(self.cpu_s, 3),
                "sim_s": round(self.sim_s, 1), "lag_s": round(self.lag_s, 1),
                "messages_per_s": round(rate, 1), "reconnects": self.reconnects}


def parse_broker(text: str) -> tuple[str, int]:
    """``mqtt://host:port``, ``host:port`` or ``host`` (port 1883)."""
    rest = text.strip()
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme not in ("mqtt", "tcp"):
            raise SimulateError("%s: only mqtt://HOST:PORT is supported (no TLS or websockets "
                                "in the simulator)" % text)
    rest = rest.rstrip("/")
    host, _, port = rest.rpartition(":") if ":" in rest else (rest, "", "1883")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SimulateError("%s: expected HOST:PORT, e.g. 127.0.0.1:1883" % text)
    return host, int(port)


class MqttRunner:
    """Runs a fleet against a broker: one paho client, QoS 1, at most ``max_inflight`` unacked.

    paho's own in-flight window is off (it rescans every message on each PUBACK); the
    window is kept here, so the simulation simply waits when the broker falls behind.
    The client's socket is served from this thread (paho's external-loop interface).
    """

    def __init__(self, fleet: Fleet, host: str, port: int, clock: SimClock,
                 max_inflight: int = 1000, client_id: str = "") -> None:
        self.fleet, self.host, self.port, self.clock = fleet, host, port, clock
        self.max_inflight = max_inflight
        self.stats = RunStats()
        self.want_write = False
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or "fieldtrack-sim-%d" % time.time_ns())
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.refused = ""
        self.connected = False
        self.client.on_socket_register_write = self._register_write
        self.client.on_socket_unregister_write = self._unregister_write

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        self.stats.acked += 1

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self.connected = not reason.is_failure
        self.refused = "" if self.connected else str(reason)

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.want_write = True

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.want_write = False

    def connect(self, timeout: float = 10.0) -> None:
        """Connect and wait for the broker's answer, so a refusal is reported here."""
        where = "the broker at %s:%d" % (self.host, self.port)
        try:
            self.client.connect(self.host, self.port, keepalive=60)
        except OSError as exc:
            raise SimulateError("cannot reach %s (%s): start Mosquitto or pass --broker "
                                "HOST:PORT" % (where, exc.strerror or exc)) from None
        deadline = time.monotonic() + timeout
        while not self.connected and not self.refused and time.monotonic() < deadline:
            self._io(0.05, reconnect=False)
        if self.refused:
            raise SimulateError("%s refused the connection: %s (does it need a user name, "
                                "or an ACL for ft/#?)" % (where, self.refused))
        if not self.connected:
            raise SimulateError("%s did not answer within %.0f s" % (where, timeout))

    @property
    def in_flight(self) -> int:
        return self.stats.published - self.stats.acked

    def _publish(self, messages: list[Outgoing]) -> None:
        publish = self.client.publish
        for topic, payload, retain in messages:
            publish(topic, payload, qos=1, retain=retain)
            if not retain:
                self.stats.frames += 1
        self.stats.published += len(messages)

    def _io(self, timeout: float, reconnect: bool = True) -> None:
        client = self.client
        sock = client.socket()
        if sock is None:
            if reconnect:
                self._reconnect()
            return
        client.loop_write()
        try:
            readable, writable, _ = select.select([sock], [sock] if self.want_write else [], [],
                                                  timeout)
        except (OSError, ValueError):
            readable = writable = []
        rc = mqtt.MQTT_ERR_SUCCESS
        if readable:
            rc = client.loop_read()
        if writable and rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_write()
        if rc == mqtt.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        if rc != mqtt.MQTT_ERR_SUCCESS and reconnect:
            self._reconnect()

    def _reconnect(self) -> None:
        self.stats.reconnects += 1
        time.sleep(min(2.0, 0.2 * self.stats.reconnects))
        try:
            self.client.reconnect()  # paho sends the unacknowledged messages again
        except OSError:
            pass

    def run(self, stop: threading.Event, duration: float | None = None,
            progress: Callable[[RunStats], None] | None = None,
            progress_s: float = 5.0) -> RunStats:
        """Simulate and publish until ``stop`` is set or ``duration`` wall seconds pass."""
        started, cpu0 = time.monotonic(), time.process_time()
        sim0 = min(self.clock.now(), self.fleet.next_due())
        next_progress = started + progress_s
        fleet = self.fleet
        while not stop.is_set():
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            room = self.max_inflight - self.in_flight
            sim_now = self.clock.now()
            if room > 0:
                self._publish(fleet.advance(sim_now, min(room, 500)))
            if self.in_flight >= self.max_inflight:
                timeout = 0.05  # the window is full: wait for acks
            elif fleet.next_due() <= sim_now:
                timeout = 0.0
            else:
                timeout = min(0.05, self.clock.wall_delay(fleet.next_due()))
            self._io(timeout)
            if progress is not None and now >= next_progress:
                next_progress = now + progress_s
                self._measure(started, cpu0, sim0)
                progress(self.stats)
        self._finish()
        self._measure(started, cpu0, sim0)
        return self.stats

    def _measure(self, started: float, cpu0: float, sim0: float) -> None:
        s = self.stats
        s.wall_s, s.cpu_s = time.monotonic() - started, time.process_time() - cpu0
        now = self.clock.now()
        done = min(now, self.fleet.next_due())  # how far the fleet got
        s.sim_s = done - sim0
        s.lag_s = now - done
        s.unacked = self.in_flight

    def _finish(self, timeout: float = 30.0) -> None:
        """Drain every buffer, say goodbye (presence), wait for the acks, disconnect."""
        pending = self.fleet.drain() + self.fleet.offline()
        deadline = time.monotonic() + timeout
        while (pending or self.in_flight) and time.monotonic() < deadline:
            room = self.max_inflight - self.in_flight
            if pending and room > 0:
                self._publish(pending[:room])
                pending = pending[room:]
            self._io(0.01)
        self.client.disconnect()
        self.client.loop_write()


class BackgroundFleet:
    """A fleet publishing from its own thread: for the demo and ``gateway run``."""

    def __init__(self, runner: MqttRunner, duration: float | None = None,
                 delay_s: float = 0.0) -> None:
        self.runner = runner
        self.duration = duration
        self.delay_s = delay_s  # e.g. until a running gateway has reloaded its registry
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.stats = RunStats()
        self.thread = threading.Thread(target=self._run, name="fleet-simulator", daemon=True)

    def _run(self) -> None:
        try:
            if self.stopping.wait(self.delay_s):
                self.runner.client.disconnect()  # stopped before it began
                return
            self.stats = self.runner.run(self.stopping, self.duration)
        except BaseException as exc:  # reported by stop(), in the caller's thread
            self.error = exc

    def start(self) -> None:
        self.runner.connect()
        self.thread.start()

    def stop(self, timeout: float = 40.0) -> RunStats:
        self.stopping.set()
        self.thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.stats


def sample_fleet(host: str, port: int, store_path: str, devices: int = 3,
                 speedup: float = 1.0) -> BackgroundFleet:
    """A few signed, registered vans for ``gateway run --sample-publisher``.

    Vans new to the store wait until a running gateway has reloaded its registry.
    """
    from fieldtrack.gateway.worker import REGISTRY_POLL_S

    cfg = FleetConfig(devices=devices, prefix="demo-van", group="demo")
    keys, added = register_devices(store_path, device_ids(cfg), group=cfg.group)
    clock = SimClock(speedup, None)
    fleet = Fleet.build(cfg, clock.now(), keys)
    runner = MqttRunner(fleet, host, port, clock, client_id="fieldtrack-sample-vans")
    return BackgroundFleet(runner, delay_s=REGISTRY_POLL_S + 1 if added else 0.0)
