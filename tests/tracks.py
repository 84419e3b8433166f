"""Test tracks and fences, built in metres: fixes, fence documents, a clock, an engine.

Positions are metres north and east of ``ORIGIN`` on a sphere of the radius the
gateway's haversine uses, so a step of 750 m east *is* 750 m to the odometer. Fences
are built the same way. Times are Unix seconds; ``MONDAY`` is a Monday, 08:00 UTC.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fieldtrack.gateway.derive.engine import DeriveConfig, EventEngine
from fieldtrack.gateway.derive.fence_tracker import Derived
from fieldtrack.gateway.fences.index import FenceIndex
from fieldtrack.gateway.fences.loader import parse
from fieldtrack.gateway.geo import EARTH_RADIUS_M
from fieldtrack.gateway.ingest import corrections
from fieldtrack.gateway.ingest.pipeline import Outcome, Pipeline, PipelineConfig
from fieldtrack.gateway.store.sqlite import Batch, Device, Store
from fieldtrack.protocol import fast, topics

ORIGIN = (52.52, 13.405)  # degrees: central Berlin
MONDAY = 1_767_600_000  # 2026-01-05 08:00:00 UTC, a Monday (09:00 in Berlin)
VAN = Device("van-1", "vans", None, True)


def lat_lon(north_m: float, east_m: float,
            origin: tuple[float, float] = ORIGIN) -> tuple[float, float]:
    """Degrees of the point ``north_m`` north and ``east_m`` east of ``origin``."""
    lat = origin[0] + math.degrees(north_m / EARTH_RADIUS_M)
    lon = origin[1] + math.degrees(
        east_m / (EARTH_RADIUS_M * math.cos(math.radians(origin[0]))))
    return lat, lon


def at(north_m: float, east_m: float) -> tuple[int, int]:
    """The same point in the wire's 1e-7 degrees."""
    lat, lon = lat_lon(north_m, east_m)
    return round(lat * 1e7), round(lon * 1e7)


# --- fixes ---------------------------------------------------------------------------


def fix(t: int, north_m: float, east_m: float, *, spd: int = 0, acc: int = 5,
        ign: bool = False, hdg: int = 0) -> dict[str, Any]:
    """A fix with every field of a position frame (less type, boot and seq)."""
    lat, lon = at(north_m, east_m)
    return {"t": t, "lat": lat, "lon": lon, "spd": spd, "hdg": hdg, "alt": 40, "acc": acc,
            "sats": 9, "fix": 2, "ign": ign, "buf": False, "mock": False}


class Track:
    """A vehicle's fixes, written as what it does: drive, park, go silent.

    Every step adds fixes *after* the current time; the constructor adds the first.
    """

    def __init__(self, t0: int, north_m: float = 0.0, east_m: float = 0.0, *,
                 every: int = 10, acc: int = 5, ign: bool = False, spd: int = 0) -> None:
        self.t, self.n, self.e = t0, north_m, east_m
        self.every, self.acc, self.ign = every, acc, ign
        self.fixes: list[dict[str, Any]] = [fix(t0, north_m, east_m, spd=spd, acc=acc, ign=ign)]

    def drive(self, north_m: float, east_m: float, kmh: float, *, every: int | None = None,
              ign: bool | None = None) -> Track:
        """Straight to (north_m, east_m) at ``kmh``; a fix every ``every`` s and on arrival."""
        step = every or self.every
        ign = self.ign if ign is None else ign
        dn, de = north_m - self.n, east_m - self.e
        duration = math.hypot(dn, de) / (kmh / 3.6)
        hdg = round(math.degrees(math.atan2(de, dn))) % 360
        t0, n0, e0 = self.t, self.n, self.e
        times = list(range(step, math.ceil(duration), step)) + [round(duration)]
        for dt in times:
            k = min(1.0, dt / duration)
            self.fixes.append(fix(t0 + dt, n0 + k * dn, e0 + k * de, spd=round(kmh),
                                  acc=self.acc, ign=ign, hdg=hdg))
        self.t, self.n, self.e = t0 + round(duration), north_m, east_m
        return self

    def park(self, seconds: int, *, every: int | None = None, ign: bool | None = None,
             noise_m: tuple[int, int] | None = None, seed: int = 0) -> Track:
        """Stand still for ``seconds``. With ``noise_m`` (lo, hi) each fix reports an
        accuracy of lo..hi m and lands lo m to that accuracy away, in any direction."""
        step = every or self.every
        ign = self.ign if ign is None else ign
        rng = random.Random(seed)
        for dt in range(step, seconds + 1, step):
            n, e, acc = self.n, self.e, self.acc
            if noise_m is not None:
                acc = rng.randint(*noise_m)
                r, a = rng.uniform(noise_m[0], acc), rng.uniform(0, 2 * math.pi)
                n, e = n + r * math.cos(a), e + r * math.sin(a)
            self.fixes.append(fix(self.t + dt, n, e, acc=acc, ign=ign))
        self.t += seconds
        return self

    def silent(self, seconds: int) -> Track:
        """No fixes for ``seconds`` (no coverage, or switched off)."""
        self.t += seconds
        return self


# --- fences --------------------------------------------------------------------------


def circle(fid: str, north_m: float, east_m: float, radius_m: float,
           **props: Any) -> dict[str, Any]:
    lat, lon = lat_lon(north_m, east_m)
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"id": fid, "radius_m": radius_m, **props}}


def rectangle(fid: str, south_m: float, west_m: float, north_m: float, east_m: float, *,
              origin: tuple[float, float] = ORIGIN, **props: Any) -> dict[str, Any]:
    corners = [(south_m, west_m), (south_m, east_m), (north_m, east_m), (north_m, west_m),
               (south_m, west_m)]
    ring = [[lon, lat] for lat, lon in (lat_lon(n, e, origin) for n, e in corners)]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {"id": fid, **props}}


def corridor(fid: str, points: Iterable[tuple[float, float]], width_m: float,
             **props: Any) -> dict[str, Any]:
    line = [[lon, lat] for lat, lon in (lat_lon(n, e) for n, e in points)]
    return {"type": "Feature", "geometry": {"type": "LineString", "coordinates": line},
            "properties": {"id": fid, "width_m": width_m, **props}}


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def fences(*features: dict[str, Any]) -> FenceIndex:
    return FenceIndex(parse(collection(*features), "test"))


def write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return path


# --- driving the engine --------------------------------------------------------------


class Clock:
    """Wall time under the test's control."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def engine(index: FenceIndex, clock: Clock, config: DeriveConfig | None = None,
           states: dict[str, Any] | None = None) -> EventEngine:
    return EventEngine(config or DeriveConfig(), index, {} if states is None else states, clock)


def replay(eng: EventEngine, fixes: Iterable[dict[str, Any]], clock: Clock,
           device: Device = VAN, delay: float = 1.0) -> list[Derived]:
    """Deliver fixes as they happen (each ``delay`` s after its fix time), then let the
    reorder buffer empty: every event the track causes, in the order they come out."""
    out: list[Derived] = []
    for f in fixes:
        clock.now = max(clock.now, f["t"] + delay)
        out.extend(eng.add_fix(device, f, clock.now))
    out.extend(drain(eng, clock, device))
    return out


def drain(eng: EventEngine, clock: Clock, device: Device = VAN) -> list[Derived]:
    """Wait just long enough for every held fix to be released."""
    clock.now += eng.config.reorder_hold_s
    return [e for _, e in eng.tick({device.id: device})]


def brief(events: Iterable[Derived]) -> list[tuple[str, int, str]]:
    """(kind, fix time, fence) of each event: what a test states in full."""
    return [(e.kind, e.t, e.fence) for e in events]


def of_kind(events: Iterable[Derived], *kinds: str) -> list[Derived]:
    return [e for e in events if e.kind in kinds]


# --- the whole pipeline --------------------------------------------------------------


class Rig:
    """The real pipeline, event engine and SQLite store, on a clock the test moves.

    ``restart`` closes the store and builds everything again from what it holds, as
    the service does when it starts. After each commit, devices whose late fixes
    stopped coming are re-derived, as the pipeline process does.
    """

    def __init__(self, path: Path, index: FenceIndex, *, config: DeriveConfig | None = None,
                 pipeline: PipelineConfig | None = None,
                 devices: Iterable[Device] = (VAN,), now: float = MONDAY) -> None:
        self.path, self.index = path, index
        self.config = config or DeriveConfig()
        self.pipeline_config = pipeline or PipelineConfig()
        self.registry = {d.id: d for d in devices}
        self.clock = Clock(now)
        self.seq = 0
        self.corrected = corrections.Corrected()
        self._open()

    def _open(self) -> None:
        self.store = Store(self.path, synchronous="OFF")  # a test: no power cuts here
        self.engine = EventEngine(self.config, self.index, self.store.derive_states(),
                                  self.clock, self.store.held_fixes())
        self.pipeline = Pipeline(self.pipeline_config, self.registry, self.store.states(),
                                 self.engine, clock=self.clock)

    def restart(self) -> None:
        self.store.close()
        self._open()

    def close(self) -> None:
        self.store.close()

    def send(self, frame: dict[str, Any], device: str = VAN.id,
             at: float | None = None) -> Outcome:
        """One MQTT message through the pipeline, committed like the service does."""
        if at is not None:
            self.clock.now = at
        batch = Batch()
        outcome = self.pipeline.process(topics.uplink(device), fast.encode(frame),
                                        int(self.clock.now * 1000), batch)
        self.store.commit(batch)
        self.corrected += corrections.run(self.engine, self.store, self.registry,
                                          self.clock.now)
        return outcome

    def position(self, f: dict[str, Any], device: str = VAN.id, delay: float = 1.0) -> Outcome:
        self.seq += 1
        return self.send(dict(f, type="position", boot=1, seq=self.seq), device,
                         at=max(self.clock.now, f["t"] + delay))

    def drive(self, fixes: Iterable[dict[str, Any]], device: str = VAN.id) -> None:
        for f in fixes:
            outcome = self.position(f, device)
            assert outcome.reject is None and not outcome.dropped, outcome

    def tick(self, at: float) -> None:
        self.clock.now = at
        batch = Batch()
        self.pipeline.tick(batch)
        self.store.commit(batch)
        self.corrected += corrections.run(self.engine, self.store, self.registry,
                                          self.clock.now)

    def events(self) -> list[tuple[str, int, str]]:
        """(kind, time, fence or site) of every derived event in the events table."""
        rows = self.store.iter_rows("SELECT kind, t, data FROM events WHERE boot = -1 "
                                    "ORDER BY id")
        return [(r["kind"], r["t"], json.loads(r["data"]).get("fence", "")) for r in rows]
