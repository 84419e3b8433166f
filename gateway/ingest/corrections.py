"""Re-derivation after late fixes: the store read, the engine run again, the changes written.

The pipeline process runs this after a commit, for each device whose late fixes
stopped coming (``EventEngine.due``): the newest checkpoint before the earliest late
fix, the stored fixes from there up to the device's judged time, the engine's
``rederive`` over them, and ``derive.rederive.diff`` against the derived events
stored for the span. The new state, the new checkpoints and every added, corrected
and retracted event are written in one transaction, so a crash repeats the whole
re-derivation (the late fix's ``redo`` mark is in the stored state) or none of it.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass

from fieldtrack.gateway.derive.engine import EventEngine
from fieldtrack.gateway.derive.identity import key_seq
from fieldtrack.gateway.derive.rederive import diff, row_of
from fieldtrack.gateway.store import derived as history
from fieldtrack.gateway.store.sqlite import Batch, Device, Store

log = logging.getLogger("fieldtrack.gateway")


@dataclass
class Corrected:
    """What re-derivations did (the counters of /metrics)."""

    rederived: int = 0  # device spans judged again
    fixes: int = 0  # fixes judged again
    added: int = 0
    changed: int = 0
    retracted: int = 0
    seconds: float = 0.0

    def __iadd__(self, other: Corrected) -> Corrected:
        for name in ("rederived", "fixes", "added", "changed", "retracted", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


def run(engine: EventEngine, store: Store, registry: Mapping[str, Device], now: float,
        *, force: bool = False) -> Corrected:
    """Re-derive every device that is due (every one with late fixes: ``force``)."""
    done = Corrected()
    for device_id in engine.due(now, force):
        device = registry.get(device_id) or Device(device_id, "default", None, True)
        saved = copy.deepcopy(engine.states.get(device_id))
        try:
            done += rederive(engine, store, device, now)
        except sqlite3.Error:
            # The store's trouble, as for any commit: the engine goes back to the state
            # the store still holds, so the re-derivation is tried again, not half done.
            if saved is not None:
                engine.states[device_id] = saved
            engine.redo.add(device_id)
            raise
        except Exception:
            # A state this version cannot judge from must not stop the gateway, nor be
            # tried again at every commit: the device's events stay as they were.
            log.exception("re-derivation of %s failed; its events stay as derived live",
                          device_id)
            engine.forget_redo(device_id)
            batch = Batch()
            engine.flush(batch)
            store.commit(batch)
    return done


def rederive(engine: EventEngine, store: Store, device: Device, now: float) -> Corrected:
    """Judge one device's span again from its checkpoint and store what changed."""
    started = time.perf_counter()
    st = engine.states[device.id]
    late = st.get("redo")
    if late is None:
        return Corrected()
    after, checkpoint = history.checkpoint_before(store, device.id, late)
    fixes = history.replay_fixes(store, device.id, after, st["released_t"])
    fresh = [row_of(e) for e in engine.rederive(device, checkpoint, fixes)]
    changes = diff(history.derived_after(store, device.id, after), fresh)
    received_ms = int(now * 1000)
    batch = Batch()
    engine.flush(batch)
    for row in changes.added:
        batch.events.append((device.id, -1, key_seq(row.key), row.t, row.kind, row.lat,
                             row.lon, None, row.data, received_ms, row.ms, row.key, row.judged))
        if row.kind == "visit":
            batch.visits.append(history.visit_row(device.id, row))
    store.commit(batch, first=history.corrections(device.id, after, changes, received_ms))
    done = Corrected(1, len(fixes), len(changes.added), len(changes.changed),
                     len(changes.retracted), time.perf_counter() - started)
    log.info("late fixes for %s from %s: judged %d fixes again from %s; %d events added, "
             "%d corrected, %d retracted (%.0f ms)", device.id, _iso(late), len(fixes),
             "the start" if after is None else _iso(after), done.added, done.changed,
             done.retracted, done.seconds * 1000)
    return done


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
