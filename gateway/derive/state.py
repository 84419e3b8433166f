"""The per-device derive state, as typed records: their fields are the documentation.

The state is saved as JSON with the commit that changed it (``derive_state`` in
STORE.md) and read back at start, so the records are TypedDicts: plain dicts at run
time (no conversion on the per-fix path, nothing to measure), typed for the checker.
Tuples come back from JSON as lists; the code reads them by position either way.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class LastFix(TypedDict):
    """The newest judged fix, for step lengths and the odometer."""

    t: int
    lat: int
    lon: int
    acc: int
    spd: NotRequired[int]


class Trip(TypedDict):
    """A trip in progress: where and when it started, distance so far, top speed."""

    start: int
    lat: int
    lon: int
    dist: float
    max: int
    announced: bool  # trip_start was sent
    arrived: NotRequired[int]  # when it stopped, if it did: the trip's end unless it moves on


class Overspeed(TypedDict):
    """A stretch above the limit in progress (sent once it lasts overspeed_min_s)."""

    start: int
    lat: int
    lon: int
    max: int
    limit: int
    sent: bool


class Cluster(TypedDict):
    """The fixes of a (possible) stop, as sums: see ``stop_cluster``."""

    t0: int  # the first member's fix time
    t: int  # the newest member's
    lat0: int  # the anchor: member offsets are metres east (x) and north (y) of it
    lon0: int
    kx: float  # metres per 1e-7 degree of longitude at the anchor
    n: int
    sx: float
    sy: float
    sq: float  # sum of x*x + y*y
    sacc: float  # sum of the members' reported accuracies
    held: list[list[int]]  # fixes beyond the gate: [t, lat, lon, acc, spd, distance]
    arrived: NotRequired[bool]  # the device drove to it (not so for its very first fix)


class MotionState(TypedDict):
    last: LastFix | None
    odometer_m: float
    ign_seen: bool  # the device reports ignition: it, not motion, decides trips
    trip: Trip | None
    still_since: int | None
    stop_sent: bool
    idle_sent: bool
    over: Overspeed | None
    cluster: NotRequired[Cluster | None]  # the stop the device is in (or may be)


class Inside(TypedDict):
    """A fence the device is in: since when, where it entered, the exit streak."""

    since: int
    lat: int
    lon: int
    out: int  # consecutive fixes beyond the exit threshold
    out_t: int
    out_lat: NotRequired[int]
    out_lon: NotRequired[int]
    dwell: bool  # geofence_dwell was sent
    stop: NotRequired[bool]  # entered by the judgement of a stop, not by fixes


# fence id -> (fixes beyond the entry threshold in a row, first one's t, lat, lon)
Pending = tuple[int, int, int, int]


# fence id -> fixes inside it, not confirmed, after one outside: the fix before them
# [t, lat, lon], the first inside [t, lat, lon, acc], the newest [t, lat, lon], their
# number and the sum of their depths in standard deviations.
Lone = list[float]  # see fence_tracker._run_step for the fields


class FenceState(TypedDict):
    inside: dict[str, Inside]
    pending: dict[str, Pending]
    lone: NotRequired[dict[str, Lone]]
    last: list[int] | None  # [t, lat, lon] of the newest judged fix
    back: NotRequired[list[int] | None]  # ...and of the one before it (a jump's way back)


class DeviceDerive(TypedDict):
    """Everything derived per device, saved with each commit that changes it."""

    fences: FenceState
    motion: MotionState
    released_t: int | None  # the newest fix time judged (the reorder window's edge)
    seen: float  # when the device was last heard from (arrival time)
    online: bool | None
    ooh_t: NotRequired[int]  # the last out_of_hours event (at most one an hour)
    cp_t: NotRequired[int]  # fix time of the newest checkpoint (derive_checkpoints)
    redo: NotRequired[int]  # the earliest late fix waiting for re-derivation
    redo_at: NotRequired[float]  # when the newest late fix arrived (wall time, s)
