"""The gateway pipeline, top to bottom: one MQTT message in, rows for one commit out.

    authenticate -> decode -> judge the boot -> filter positions -> rows
                                                    -> derive events (fences, trips, ...)
                                                    -> attendance (check-in/out)

Pure logic: no sockets, no SQL. The service feeds it messages and commits the
``Batch`` it fills; the one question it asks the store (has a device's boot records?)
comes in as a function. A message's effects are in the batch or it is rejected with
a reason code. Derived events (``derive.EventEngine``) and attendance verdicts are
rows of the same batch, so they are committed with the fixes that caused them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fieldtrack.gateway import epochs
from fieldtrack.gateway.derive import attendance
from fieldtrack.gateway.derive.engine import EventEngine
from fieldtrack.gateway.derive.fence_tracker import Derived
from fieldtrack.gateway.derive.identity import attendance_key, key_seq
from fieldtrack.gateway.derive.rederive import row_of
from fieldtrack.gateway.ingest.authenticate import Rejected, authenticate
from fieldtrack.gateway.ingest.position_filter import FilterConfig, failed_filters
from fieldtrack.gateway.store.sqlite import (
    MAX_REJECT_BYTES,
    Batch,
    Device,
    DeviceState,
    event_data_json,
)
from fieldtrack.protocol import fast, frames
from fieldtrack.protocol.errors import FrameError


@dataclass(frozen=True)
class PipelineConfig:
    filters: FilterConfig = field(default_factory=FilterConfig)
    max_boot_lag: int = 3  # how many boot epochs back a new boot may be and still be taken
    attendance: attendance.AttendanceConfig = field(
        default_factory=attendance.AttendanceConfig)


@dataclass(slots=True)
class Record:
    """One accepted fix or event on its way to the store, open to later stages."""

    device: Device
    frame_type: str  # position | event | status | command_ack
    boot: int
    seq: int
    values: dict[str, Any]
    flagged: list[str] = field(default_factory=list)
    late: bool = False  # older than the device's newest fix: from a buffer


@dataclass
class Outcome:
    device: str | None = None
    records: int = 0
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (filter, detail)
    reject: Rejected | None = None
    keys: tuple[int, int, int] | None = None  # (boot, seq, n) of an authenticated frame
    epoch: str | None = None  # the boot's verdict when it moved the device's reference
    boot: int = -1  # ... and that boot


class Pipeline:
    def __init__(
        self,
        config: PipelineConfig,
        registry: dict[str, Device],
        states: dict[str, DeviceState],
        engine: EventEngine | None = None,
        clock: Callable[[], float] | None = None,
        device_epochs: dict[str, epochs.DeviceEpochs] | None = None,
        boot_stored: Callable[[str, int], bool] | None = None,
    ) -> None:
        import time

        self.config = config
        self.registry = registry
        self.states = states
        self.engine = engine
        self.clock = clock or time.time
        self.epochs = device_epochs if device_epochs is not None else {}
        self.boot_stored = boot_stored or (lambda device, boot: False)

    def process(self, topic: str, data: bytes, received_ms: int, batch: Batch) -> Outcome:
        """Run one message through every stage, adding its rows to ``batch``."""
        outcome = Outcome()
        try:
            speaker = authenticate(topic, data, self.registry)
            outcome.device = speaker.device.id
            frame = self._decode(speaker.payload, speaker.device.id)
            outcome.keys = (frame["boot"], frame["seq"],
                            len(frame["fixes"]) if frame["type"] == "batch" else 1)
            known = self.epochs.get(speaker.device.id)
            if known is None or frame["boot"] != known.reference or known.reset:
                self._judge_boot(speaker.device.id, frame["boot"], outcome, batch)
            records = self._records(speaker.device, frame, outcome)
        except Rejected as exc:
            outcome.reject = exc
            batch.rejects.append(_reject_row(topic, data, exc, received_ms))
            return outcome
        if records:  # where its rows start: a frame whose keys were reused is kept whole
            batch.sources.append((len(batch.positions), len(batch.events), topic, data,
                                  received_ms))
        if records and records[0].frame_type == "position":  # one message: all positions
            self._position_rows(records, received_ms, batch)
        else:
            for record in records:
                self._event_row(record, received_ms, batch)
        if self.engine is not None:
            self._derive(records, received_ms, batch)
        outcome.records = len(records)
        for name, detail in outcome.dropped:
            rej = Rejected("filter_" + name, detail, outcome.device)
            batch.rejects.append(_reject_row(topic, data, rej, received_ms))
        return outcome

    def _decode(self, payload: bytes, device: str) -> dict[str, Any]:
        try:
            frame = fast.decode(payload)
        except FrameError as exc:
            raise Rejected(exc.code, str(exc), device) from None
        if frame["type"] not in frames.UPLINK_TYPES:
            raise Rejected("unexpected_type", "a device does not send %s frames" % frame["type"],
                           device)
        return frame

    def _judge_boot(self, device: str, boot: int, outcome: Outcome, batch: Batch) -> None:
        """A boot other than the device's reference: take it (as what?) or reject it."""
        known = self.epochs.get(device)
        lag = self.config.max_boot_lag
        verdict = epochs.judge(known, boot, lag, lambda b: self.boot_stored(device, b))
        if verdict == epochs.INVALID:
            raise Rejected("bad_boot", "boot %d of %s is not a boot counter (boots are below "
                           "2^31, SPEC section 8.1): the device's firmware or state file is "
                           "broken; the frame is kept here" % (boot, device), device)
        if verdict == epochs.BEHIND:
            assert known is not None
            raise Rejected("boot_behind", "boot %d of %s was never seen and is %d behind its "
                           "boot %d (more than max_boot_lag %d): if the device lost its boot "
                           "counter, run `fieldtrack devices reset-epochs %s` to take its next "
                           "boot" % (boot, device, known.reference - boot, known.reference,
                                     lag, device), device)
        known = self.epochs[device] = epochs.take(known, verdict, boot)
        if epochs.moves_reference(verdict):
            batch.epochs[device] = known
            outcome.epoch, outcome.boot = verdict, boot

    def _records(self, device: Device, frame: dict[str, Any], outcome: Outcome) -> list[Record]:
        state = self.states.get(device.id)
        boot = frame["boot"]
        ftype = frame["type"]
        if ftype == "position":
            fixes = [frame]
        elif ftype == "batch":
            fixes = frame["fixes"]
        else:
            values = {k: v for k, v in frame.items() if k not in ("type", "v", "boot", "seq")}
            return [Record(device, ftype, boot, frame["seq"], values)]
        now = self.clock()
        now_s, now_ms = int(now), int(now * 1000)
        filters = self.config.filters
        seq0 = frame["seq"]
        records = []
        for i, fix in enumerate(fixes):
            seq = seq0 + i
            if state is not None and state.seq == seq and state.boot == boot:
                # A redelivery of the newest record: the store already has it (or will
                # ignore the copy); it is not a "duplicate fix" to filter out.
                records.append(Record(device, "position", boot, seq, fix, [], True))
                continue
            t = fix["t"]
            late = state is not None and t < state.t
            flagged: list[str] = []
            failed = failed_filters(fix, state, now_s, filters)
            if failed:
                drops = [(name, detail) for name, action, detail in failed if action == "drop"]
                if drops:
                    outcome.dropped.extend(
                        (name, "seq %d: %s" % (seq, detail)) for name, detail in drops
                    )
                    continue
                flagged = [name for name, _, _ in failed]
            records.append(Record(device, "position", boot, seq, fix, flagged, late))
            if not late:
                if state is None:
                    state = self.states[device.id] = DeviceState(
                        device.id, boot, seq, t, fix["lat"], fix["lon"], fix["spd"], now_ms,
                        True)
                else:  # the newest fix so far: the state is updated in place
                    state.boot, state.seq, state.t = boot, seq, t
                    state.lat, state.lon, state.spd = fix["lat"], fix["lon"], fix["spd"]
                    state.received, state.online = now_ms, True
        return records

    def _position_rows(self, records: list[Record], received_ms: int, batch: Batch) -> None:
        dev = records[0].device.id
        batch.positions.extend([
            (dev, r.boot, r.seq, v["t"], v.get("ms", 0), v["lat"], v["lon"], v["spd"], v["hdg"],
             v["alt"], v["acc"], v["sats"], v["fix"], int(v["ign"]), int(v["buf"]),
             int(v["mock"]), ",".join(r.flagged), received_ms)
            for r in records for v in (r.values,)
        ])
        if dev in self.states and not all(r.late for r in records):
            batch.states[dev] = self.states[dev]

    def _event_row(self, record: Record, received_ms: int, batch: Batch) -> None:
        v = record.values
        dev = record.device.id
        if record.frame_type == "event":
            kind, data = v["kind"], v.get("data", {})
        else:  # status and command_ack are stored as events of that kind
            kind = record.frame_type
            data = {k: x for k, x in v.items() if k != "t"}
            if kind == "command_ack":  # settles its command in the same commit
                batch.acks.append((dev, v["cid"], v["result"], v.get("reason"), received_ms))
        batch.events.append((
            dev, record.boot, record.seq, v["t"], kind, v.get("lat"), v.get("lon"), v.get("acc"),
            event_data_json(data), received_ms, v.get("ms", 0), None, None,
        ))


    # --- derived events -------------------------------------------------------

    def _derive(self, records: list[Record], received_ms: int, batch: Batch) -> None:
        assert self.engine is not None
        if records and records[0].frame_type == "position":  # one message: all positions
            derived = self.engine.add_fixes(records[0].device, [r.values for r in records],
                                            received_ms / 1000)
            if derived:
                self._derived_rows(records[0].device, derived, received_ms, batch)
        for record in records:
            if record.frame_type == "event" and record.values["kind"] in ("check_in",
                                                                          "check_out"):
                self._attendance(record, received_ms, batch)
        self.engine.flush(batch)

    def _attendance(self, record: Record, received_ms: int, batch: Batch) -> None:
        assert self.engine is not None
        v = record.values
        verdict = attendance.judge(v, self.engine.index, int(self.clock()),
                                   self.config.attendance)
        site = str(v.get("data", {}).get("site", ""))
        batch.attendance.append((
            record.device.id, record.boot, record.seq, v["kind"], site, v["t"], v.get("lat"),
            v.get("lon"), v.get("acc"), int(verdict.accepted), verdict.reason,
            None if verdict.distance_m is None else round(verdict.distance_m, 1),
        ))
        kind = "attendance_accepted" if verdict.accepted else "attendance_rejected"
        data = {"check": v["kind"], "site": site, "reason": verdict.reason, "seq": record.seq}
        if verdict.distance_m is not None:
            data["distance_m"] = round(verdict.distance_m, 1)
        derived = Derived(kind, v["t"], v.get("lat"), v.get("lon"), site, data,
                          ms=v.get("ms", 0), key=attendance_key(site, record.boot, record.seq))
        self._derived_rows(record.device, [derived], received_ms, batch)

    def _derived_rows(self, device: Device, derived: list[Derived], received_ms: int,
                      batch: Batch) -> None:
        for e in derived:
            row = row_of(e)
            batch.events.append((
                device.id, -1, key_seq(row.key), e.t, e.kind, e.lat, e.lon, None, row.data,
                received_ms, e.ms, row.key, e.judged,
            ))
            if e.kind == "visit":
                batch.visits.append((device.id, e.fence, e.data["arrive"], e.data["leave"],
                                     e.data["duration_s"], e.lat, e.lon))

    def request_reset(self, device: str, requested: int) -> None:
        """The operator's ``reset-epochs``: the device's next new boot becomes its reference."""
        known = self.epochs.get(device)
        if known is not None and requested > known.reset_taken:
            known.reset = requested

    def tick(self, batch: Batch) -> None:
        """Time passes: release held fixes, notice silent devices."""
        if self.engine is None:
            return
        now_ms = int(self.clock() * 1000)
        for device, e in self.engine.tick(self.registry):
            self._derived_rows(device, [e], now_ms, batch)
        self.engine.flush(batch)

    def presence(self, device_id: str, online: bool, batch: Batch) -> None:
        device = self.registry.get(device_id)
        if self.engine is None or device is None:
            return
        now_ms = int(self.clock() * 1000)
        self._derived_rows(device, self.engine.presence(device, online), now_ms, batch)
        self.engine.flush(batch)


# Authenticated frames of genuine device data: their reject rows keep the whole frame.
KEEP_WHOLE = frozenset(("boot_behind", "bad_boot", "key_reused"))


def _reject_row(topic: str, data: bytes, rej: Rejected, received_ms: int) -> tuple[Any, ...]:
    raw = data if rej.reason in KEEP_WHOLE else data[:MAX_REJECT_BYTES]
    return (received_ms, topic[:200], rej.device, rej.reason, rej.detail[:500], bytes(raw),
            len(data))
