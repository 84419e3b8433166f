"""The derived-events stage: fixes in fix-time order through fences and motion rules.

Fixes of one device are held in a small reorder buffer and released in fix-time order
once they are ``reorder_window_s`` older than the newest fix or have waited
``reorder_hold_s`` of wall time, so a tracker's buffer that arrives shuffled is
judged in the order it happened. A fix older than what was already released is still
stored, but it can no longer change the device's state (it is counted as too late).
The state of every device is saved with the same commit as the records that changed
it, so a restart resumes exactly where the store left off, and re-deriving an event
after a redelivery produces the same key (device, kind, time, fence), which the store
ignores. The held fixes are not part of that state: they are the device's stored
positions newer than ``released_t`` (``Store.held_fixes``), read back at start.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from fieldtrack.gateway.derive import fence_tracker, motion
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


def derived_seq(kind: str, t: int, fence: str) -> int:
    """The store key of a derived event: the same event always gets the same number."""
    return zlib.crc32(("%s|%d|%s" % (kind, t, fence)).encode())


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
        self.too_late = 0

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
                events.append(Derived("device_online", int(received), fix["lat"], fix["lon"]))
            t = fix["t"]
            released = st["released_t"]
            if released is not None and t <= released:
                self.too_late += 1
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
        return events

    def _judge(self, device: Device, st: DeviceDerive, fix: dict[str, Any]) -> list[Derived]:
        """All rules, on one fix, in fix-time order."""
        fences = st["fences"]
        events = fence_tracker.track(fences, fix, device.group, self.index, self.config.fences)
        limit = self._speed_limit(fences) if fences["inside"] else None
        moved = motion.step(st["motion"], fix, limit, self.config.motion)
        if moved:
            events.extend(moved)
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
                out.extend((device, e) for e in self._release(device, st, buf, now))
            timeout = self.config.heartbeat_timeout_s
            if timeout and st["online"] and now - st["seen"] > timeout:
                st["online"] = False
                last = st["fences"]["last"] or [int(st["seen"]), 0, 0]
                silent = int(now - st["seen"])
                out.append((device, Derived("device_offline", int(now), last[1], last[2], "",
                                            {"reason": "heartbeat", "silent_s": silent})))
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
        last = st["fences"]["last"] or [int(self.clock()), 0, 0]
        kind = "device_online" if online else "device_offline"
        return [Derived(kind, int(self.clock()), last[1], last[2], "",
                        {"reason": "presence"})]

    def flush(self, batch: Batch) -> None:
        """Hand the changed states to the batch; the store serialises them at commit."""
        for device_id in self.dirty:
            batch.derive_states[device_id] = cast("dict[str, Any]", self.states[device_id])
        self.dirty.clear()


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
