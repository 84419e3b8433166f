"""One simulated tracker: the firmware's policy and record keeping, driven by a van's legs.

Its fixes go through the firmware's own reporting policy (``firmware/policy.py``); its
records are numbered (boot, seq) as the firmware numbers them, encoded with the
firmware's codec (``protocol.frames``) and signed with the device key. A coverage gap
buffers records that go out later, oldest first, as ``batch`` frames with the ``buf``
flag; a reboot starts a new boot epoch whose sequence starts again at 0.
"""

from __future__ import annotations

import importlib.util
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from fieldtrack.protocol import frames, topics
from fieldtrack.tools.simulate.config import FleetConfig
from fieldtrack.tools.simulate.errors import SimulateError
from fieldtrack.tools.simulate.legs import M_PER_DEG, Leg
from fieldtrack.tools.simulate.signer import Signer

FW_VERSION = "0.1.0-sim"
MAX_BATCH = 60  # fixes per batch frame, as the firmware sends its buffer
MAX_SEQ = 0xFFFF  # past this the firmware starts a new epoch to keep frames small
POLICY_PATH = Path(__file__).resolve().parents[2] / "firmware" / "policy.py"


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


@dataclass
class Counts:
    """What one device published: the records the store should hold, no more, no less."""

    positions: int = 0
    events: int = 0  # device events, status frames included (stored as events)
    frames: int = 0
    batches: int = 0
    buffered: int = 0  # fixes that went out late, in batches
    seqs: dict[int, int] = field(default_factory=dict)  # boot -> records numbered 0..n-1


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
