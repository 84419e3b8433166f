"""The derived-events stage: fixes in fix-time order through fences and motion rules.

Fixes of one device are held in a small reorder buffer and released in fix-time order
once they are ``reorder_window_s`` older than the newest fix or have waited
``reorder_hold_s`` of wall time, so a tracker's buffer that arrives shuffled is
judged in the order it happened. A fix at or before the newest one already judged is
late: it is stored, counted (``late_fixes``), and marks its device for re-derivation
from that time (``redo`` in the state). Once no late fix has come for
``rederive_delay_s``, ``ingest.corrections`` judges the device's stored positions
again from the newest checkpoint before the earliest late fix (``rederive``); the
checkpoints are snapshots of the state taken every ``checkpoint_every_s`` of fix time
while judging. The state of every device is saved with the same commit as the records
that changed it, so a restart resumes exactly where the store left off, a pending
re-derivation included. The held fixes are not part of that state: they are the
device's stored positions newer than ``released_t`` (``Store.held_fixes``), read back
at start.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from fieldtrack.gateway.derive import fence_tracker, motion, stop_cluster
from fieldtrack.gateway.derive.fence_tracker import Derived, FenceConfig
from fieldtrack.gateway.derive.state import DeviceDerive, FenceState
from fieldtrack.gateway.fences.index import FenceIndex
from fieldtrack.gateway.store.sqlite import Batch, Device

HeldFix = tuple[int, float, dict[str, Any]]  # (fix time, received, fix): waiting to be judged


@dataclass(frozen=True)
class DeriveConfig:
    fences: FenceConfig = field(default_factory=FenceConfig)
    motion: motion.MotionConfig = field(default_factory=motion.MotionConfig)
    reorder_window_s: int = 60
    reorder_hold_s: float = 30.0
    heartbeat_timeout_s: int = 900  # device_offline when silent this long (0: off)
    working_hours: dict[str, Any] = field(default_factory=dict)  # group -> ActiveHours
    checkpoint_every_s: int = 3600  # a snapshot of the state per this much fix time
    rederive_delay_s: float = 2.0  # re-derive once late fixes stopped coming this long


# The parts of a device's state that follow from its fixes alone: what a checkpoint keeps.
# Presence (seen, online) follows the arrivals and is taken from the live state.
CHECKPOINT_KEYS = ("fences", "motion", "released_t", "ooh_t", "cp_t")


class EventEngine:
    """Holds every device's derive state; ``process`` feeds it, ``flush`` saves it."""

    def __init__(
        self,
        config: DeriveConfig,
        index: FenceIndex,
        states: dict[str, dict[str, Any]],  # as read from the store: JSON documents
        clock: Callable[[], float],
        held: dict[str, list[HeldFix]] | None = None,
    ) -> None:
        self.config = config
        self.index = index
        self.states = cast("dict[str, DeviceDerive]", states)
        self.clock = clock
        # Per device, the fixes waiting in fix-time order: (t, received, fix).
        self.held: dict[str, list[HeldFix]] = held if held is not None else {}
        self.dirty: set[str] = set()
        self.late_fixes = 0  # fixes at or before their device's judged time
        # Devices with late fixes waiting for re-derivation (``redo`` in their state).
        self.redo: set[str] = {d for d, st in self.states.items() if st.get("redo") is not None}
        self.checkpoints: list[tuple[str, int, str]] = []  # (device, t, state JSON) to save

    def state(self, device: str) -> DeviceDerive:
        st = self.states.get(device)
        if st is None:
            st = {"fences": fence_tracker.new_state(), "motion": motion.new_state(),
                  "released_t": None, "seen": 0.0, "online": None}
            self.states[device] = st
        return st

    def add_fix(self, device: Device, fix: dict[str, Any], received: float) -> list[Derived]:
        """Queue one stored fix; returns the events of every fix it releases."""
        return self.add_fixes(device, (fix,), received)

    def add_fixes(self, device: Device, fixes: Sequence[dict[str, Any]],
                  received: float) -> list[Derived]:
        """Queue the stored fixes of one message, one after the other, as ``add_fix``."""
        st = self.state(device.id)
        self.dirty.add(device.id)
        if received > st["seen"]:
            st["seen"] = received
        buf = self.held.get(device.id)
        if buf is None:
            buf = self.held[device.id] = []
        if st["online"] is True and _newer_in_order(fixes, buf, st["released_t"]):
            # The usual batch: each fix newer than the last. Queued all at once, the same
            # fixes are released in the same order as one by one.
            buf.extend([(fix["t"], received, fix) for fix in fixes])
            return self._release(device, st, buf, received)
        window, hold = self.config.reorder_window_s, self.config.reorder_hold_s
        events: list[Derived] = []
        for fix in fixes:
            if st["online"] is not True:
                # Stamped with the arrival: a buffer replayed after a gap starts with fixes
                # from before the device_offline that this event answers.
                st["online"] = True
                events.append(Derived("device_online", int(received), fix["lat"], fix["lon"],
                                      ms=_ms(received)))
            t = fix["t"]
            released = st["released_t"]
            if released is not None and t <= released:
                self._late(device.id, st, t, received)
                continue
            if not buf or t > buf[-1][0]:
                buf.append((t, received, fix))
            else:
                i = bisect.bisect_left(buf, t, key=_fix_time)
                if buf[i][0] == t:
                    continue  # a redelivered copy of a fix already waiting here
                buf.insert(i, (t, received, fix))
            first = buf[0]
            if first[0] <= buf[-1][0] - window or received - first[1] >= hold:
                events.extend(self._release(device, st, buf, received))
        return events

    def _release(self, device: Device, st: DeviceDerive, buf: list[HeldFix],
                 now: float) -> list[Derived]:
        if not buf:
            return []
        oldest = buf[-1][0] - self.config.reorder_window_s
        hold = self.config.reorder_hold_s
        events: list[Derived] = []
        n = 0
        for t, received, fix in buf:
            if t > oldest and now - received < hold:
                break
            n += 1
            st["released_t"] = t
            events.extend(self._judge(device, st, fix))
        if n:
            del buf[:n]
            judged = cast(int, st["released_t"])
            cp = st.get("cp_t")
            if cp is None or judged - cp >= self.config.checkpoint_every_s:
                self._checkpoint(device.id, st, judged)  # after the fixes released together
        return events

    def _late(self, device_id: str, st: DeviceDerive, t: int, received: float) -> None:
        """A fix for a time already judged: re-derive from it (``rederive``) later."""
        self.late_fixes += 1
        redo = st.get("redo")
        if redo is None or t < redo:
            st["redo"] = t
        st["redo_at"] = received
        self.redo.add(device_id)

    def _checkpoint(self, device_id: str, st: DeviceDerive, t: int) -> None:
        st["cp_t"] = t
        snapshot = {k: st[k] for k in CHECKPOINT_KEYS if k in st}  # type: ignore[literal-required]
        text = orjson.dumps(snapshot, option=orjson.OPT_NON_STR_KEYS).decode()
        self.checkpoints.append((device_id, t, text))

    def forget_redo(self, device_id: str) -> None:
        """Give up a re-derivation (it failed): the state is saved without the mark."""
        st = self.states[device_id]
        st.pop("redo", None)
        st.pop("redo_at", None)
        self.redo.discard(device_id)
        self.dirty.add(device_id)

    def due(self, now: float, force: bool = False) -> list[str]:
        """Devices whose late fixes stopped coming ``rederive_delay_s`` ago (all: ``force``)."""
        delay = self.config.rederive_delay_s
        return sorted(d for d in self.redo
                      if force or now - self.states[d].get("redo_at", 0.0) >= delay)

    def rederive(self, device: Device, checkpoint: dict[str, Any] | None,
                 fixes: Sequence[dict[str, Any]]) -> list[Derived]:
        """Judge ``fixes`` (stored, in fix-time order, newer than ``checkpoint``) again.

        The result replaces the device's state; its presence and the fixes still held
        in the reorder buffer carry over. Returns every event the fixes give, each with
        the fix time that produced it (``judged``): the caller compares them with the
        events stored for the same span. New checkpoints go to ``checkpoints``.
        """
        live = self.state(device.id)
        if checkpoint is None:
            st = cast("DeviceDerive", {"fences": fence_tracker.new_state(),
                                       "motion": motion.new_state(), "released_t": None})
        else:
            st = cast("DeviceDerive", checkpoint)
        every = self.config.checkpoint_every_s
        events: list[Derived] = []
        for fix in fixes:
            t = fix["t"]
            st["released_t"] = t
            events.extend(self._judge(device, st, fix))
            cp = st.get("cp_t")
            if cp is None or t - cp >= every:
                self._checkpoint(device.id, st, t)
        st["released_t"] = live["released_t"]
        st["seen"], st["online"] = live["seen"], live["online"]
        self.states[device.id] = st
        self.redo.discard(device.id)
        self.dirty.add(device.id)
        return events

    def _judge(self, device: Device, st: DeviceDerive, fix: dict[str, Any]) -> list[Derived]:
        """All rules, on one fix, in fix-time order."""
        fences = st["fences"]
        # Whether the fix is part of a stop: fences judge a stop as a whole.
        observed = stop_cluster.observe(st["motion"], fix, self.config.motion.moving_kmh)
        events = fence_tracker.track(fences, fix, device.group, self.index, self.config.fences,
                                     observed)
        limit = self._speed_limit(fences) if fences["inside"] else None
        moved = motion.step(st["motion"], fix, limit, self.config.motion, observed)
        if moved:
            events.extend(moved)
        if events:
            t, ms = fix["t"], fix.get("ms", 0)
            for e in events:
                e.judged = t
                if e.t == t:
                    e.ms = ms
        hours = self.config.working_hours.get(device.group) if self.config.working_hours else None
        if hours is not None and fix["spd"] >= self.config.motion.moving_kmh \
                and not hours.active(fix["t"]):
            last = st.get("ooh_t", 0)
            if fix["t"] - last >= 3600:  # at most once an hour while it goes on
                st["ooh_t"] = fix["t"]
                events.append(Derived("out_of_hours", fix["t"], fix["lat"], fix["lon"], "",
                                      {"group": device.group}))
        return events

    def _speed_limit(self, fence_state: FenceState) -> int | None:
        limits = [f.speed_limit_kmh for fid in fence_state["inside"]
                  if (f := self.index.by_id.get(fid)) is not None
                  and f.speed_limit_kmh is not None]
        return min(limits) if limits else None

    def tick(self, registry: dict[str, Device]) -> list[tuple[Device, Derived]]:
        """Release fixes that waited long enough; mark silent devices offline."""
        now = self.clock()
        out: list[tuple[Device, Derived]] = []
        for device_id, st in self.states.items():
            device = registry.get(device_id)
            if device is None:
                continue
            before = len(out)
            buf = self.held.get(device_id)
            if buf:
                waiting = len(buf)
                out.extend((device, e) for e in self._release(device, st, buf, now))
                if len(buf) < waiting:  # judged: save the state even without an event
                    self.dirty.add(device_id)
            timeout = self.config.heartbeat_timeout_s
            if timeout and st["online"] and now - st["seen"] > timeout:
                st["online"] = False
                lat, lon = _where(st)
                silent = int(now - st["seen"])
                out.append((device, Derived("device_offline", int(now), lat, lon, "",
                                            {"reason": "heartbeat", "silent_s": silent},
                                            ms=_ms(now))))
            if len(out) > before:
                self.dirty.add(device_id)
        return out

    def presence(self, device: Device, online: bool) -> list[Derived]:
        """The broker's retained presence / last will for a device."""
        st = self.state(device.id)
        if st["online"] is online:
            return []
        st["online"] = online
        self.dirty.add(device.id)
        kind = "device_online" if online else "device_offline"
        now = self.clock()
        return [Derived(kind, int(now), *_where(st), "", {"reason": "presence"},
                        ms=_ms(now))]

    def flush(self, batch: Batch) -> None:
        """Hand the changed states to the batch; the store serialises them at commit."""
        for device_id in self.dirty:
            batch.derive_states[device_id] = cast("dict[str, Any]", self.states[device_id])
        self.dirty.clear()
        if self.checkpoints:
            batch.checkpoints.extend(self.checkpoints)
            self.checkpoints.clear()


def _ms(seconds: float) -> int:
    return int(seconds * 1000) % 1000


def _where(st: DeviceDerive) -> tuple[int | None, int | None]:
    """The newest judged position; before its first fix a device is nowhere (not 0, 0)."""
    last = st["fences"]["last"]
    return (last[1], last[2]) if last else (None, None)


def _fix_time(item: HeldFix) -> int:
    return item[0]


def _newer_in_order(fixes: Sequence[dict[str, Any]], buf: list[HeldFix],
                    released: int | None) -> bool:
    """Every fix newer than the one before it, than those held, than those judged."""
    last = buf[-1][0] if buf else (released if released is not None else -1)
    for fix in fixes:
        t = fix["t"]
        if t <= last:
            return False
        last = t
    return True
