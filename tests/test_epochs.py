"""Boot counters that go back: nothing is lost silently, and the operator can repair it.

Through the real pipeline process's ``Worker`` on a real SQLite store, and once end to
end through Mosquitto with the gateway running.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import Broker
from harness import (
    GatewayProcess,
    Publisher,
    count,
    frame_bytes,
    free_port,
    position,
    wait_until,
)
from harness import write_config as write_gateway_config

from fieldtrack.gateway import epochs
from fieldtrack.gateway.config import parse
from fieldtrack.gateway.ingest.worker import Report, Worker
from fieldtrack.gateway.store.sqlite import Device, Store, now_ms
from fieldtrack.protocol import cose, frames
from fieldtrack.tools.devices.command import devices

KEY = bytes(range(7, 39))
DEVICE = "van-1"
TOPIC = "ft/u/" + DEVICE
T0 = int(time.time()) - 50_000


def frame(boot: int, seq: int, t0: int = T0) -> bytes:
    return frame_bytes(position(seq, boot, t0), DEVICE, KEY)


def batch_frame(boot: int, seq: int, n: int, t0: int) -> bytes:
    fixes = [{k: v for k, v in position(seq + i, boot, t0).items()
              if k not in ("type", "boot", "seq")} for i in range(n)]
    return frame_bytes({"type": "batch", "boot": boot, "seq": seq, "fixes": fixes}, DEVICE, KEY)


class Gateway:
    """The pipeline process's worker on a store with one registered, keyed device."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "fieldtrack.db"
        store = Store(self.db)
        store.put_device(Device(DEVICE, "vans", KEY, True))
        store.close()
        self.worker = Worker(parse({"store": {"path": str(self.db)},
                                     "pipeline": {"receipt_delay_ms": 0}}))

    def send(self, *frames: bytes) -> Report:
        """Handle the frames and commit them as one batch."""
        for data in frames:
            self.worker.handle(TOPIC, data, now_ms())
        return self.worker.commit()

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(self.db)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def stored(self, boot: int) -> int:
        return len(self.rows("SELECT 1 FROM positions WHERE device=? AND boot=?", DEVICE, boot))

    def rejects(self) -> list[tuple[str, bytes]]:
        return [(r[0], bytes(r[1])) for r in self.rows("SELECT reason, raw FROM rejects")]

    def notice_resets(self) -> None:
        self.worker.checked["registry"] = 0.0  # as if the poll interval had passed
        self.worker.housekeeping()

    def close(self) -> None:
        self.worker.close()


@pytest.fixture
def gw(tmp_path: Path) -> Any:
    g = Gateway(tmp_path)
    yield g
    g.close()


def receipted(report: Report) -> list[tuple[int, int, int]]:
    """(boot, seq, n) of the receipts a commit sends."""
    out = []
    for _, payload in report.receipts:
        r = frames.decode_downlink(cose.unwrap(payload, frames.MAX_FRAME_BYTES)[1])
        out.append((r["boot"], r["seq"], r["n"]))
    return out


def cli(db: Path, *args: str) -> Result:
    return CliRunner().invoke(devices, ["--store", str(db), *args])


# --- the rule --------------------------------------------------------------------------

NEVER = lambda boot: False  # noqa: E731 (a store that holds nothing)


@pytest.mark.parametrize(
    ("reference", "boot", "verdict"),
    [
        (10, 10, epochs.KNOWN),
        (10, 11, epochs.AHEAD),
        (10, epochs.ERA_BASE, epochs.ERA),
        (epochs.ERA_BASE, epochs.ERA_BASE + 1, epochs.AHEAD),
        (10, 7, epochs.LAGGING),
        (10, 6, epochs.BEHIND),
        (40_000_000, epochs.ERA_BASE, epochs.ERA),
        (40_000_000, epochs.ERA_BASE - 1, epochs.BEHIND),
        (20_000_000, 2**31 - 1, epochs.AHEAD),
        (10, 2**31, epochs.INVALID),
        (10, 2**32 - 1, epochs.INVALID),
    ],
)
def test_the_boot_rule(reference: int, boot: int, verdict: str) -> None:
    assert epochs.judge(epochs.DeviceEpochs(reference), boot, 3, NEVER) == verdict


def test_a_stored_boot_is_known_however_far_behind() -> None:
    assert epochs.judge(epochs.DeviceEpochs(500), 2, 3, lambda b: b == 2) == epochs.KNOWN


def test_a_pending_reset_takes_any_new_boot() -> None:
    known = epochs.DeviceEpochs(500, reset=123)
    assert epochs.judge(known, 1, 3, NEVER) == epochs.RESET
    after = epochs.take(known, epochs.RESET, 1)
    assert (after.reference, after.reset, after.reset_taken) == (1, 0, 123)


def test_a_pending_reset_is_not_taken_by_a_late_frame_of_a_stored_boot() -> None:
    known = epochs.DeviceEpochs(500, reset=123)
    assert epochs.judge(known, 499, 3, lambda b: b == 499) == epochs.KNOWN
    assert epochs.judge(known, 500, 3, NEVER) == epochs.KNOWN
    assert known.reset == 123


# --- a reset within the lag: reused keys -----------------------------------------------


def test_a_reset_within_the_lag_makes_every_reused_key_a_reject_keeping_its_frame(
        gw: Gateway) -> None:
    gw.send(*[frame(1, s) for s in range(50)])
    gw.send(frame(2, 0, T0 + 100), frame(3, 0, T0 + 200))
    again = [frame(1, s, T0 + 1000) for s in range(50)]  # counter back to 1: new fixes
    report = gw.send(*again)
    assert gw.stored(1) == 50
    assert report.rejects == {"key_reused": 50}
    assert report.duplicates == 0
    assert receipted(report) == [(1, 0, 50)]  # final: the reject rows keep them
    assert gw.rejects() == [("key_reused", data) for data in again]


def test_an_identical_redelivery_stays_a_silent_duplicate(gw: Gateway) -> None:
    frames = [frame(1, s) for s in range(10)]
    gw.send(*frames)
    report = gw.send(*frames, *frames)  # twice more, the second copy in the same commit
    assert report.duplicates == 20 and report.rejects == {}
    assert gw.stored(1) == 10 and gw.rejects() == []


def test_a_batch_frame_reusing_some_keys_stores_the_new_ones_and_is_kept_whole(
        gw: Gateway) -> None:
    gw.send(*[frame(1, s) for s in range(50)])
    data = batch_frame(1, 48, 5, T0 + 1000)  # seqs 48..52: 48 and 49 are taken
    report = gw.send(data)
    assert gw.stored(1) == 53
    assert gw.rejects() == [("key_reused", data)]
    (detail,), = gw.rows("SELECT detail FROM rejects")
    assert "seqs 48..49 (2 records)" in detail
    assert report.positions == 3 and report.duplicates == 0


def test_a_reused_event_key_is_a_reject_too(gw: Gateway) -> None:
    def event(t: int) -> bytes:
        return frame_bytes({"type": "event", "boot": 1, "seq": 7, "t": t, "kind": "sos",
                            "data": {}}, DEVICE, KEY)

    gw.send(event(T0))
    report = gw.send(event(T0), event(T0 + 60))
    assert report.duplicates == 1 and report.rejects == {"key_reused": 1}
    assert gw.rejects() == [("key_reused", event(T0 + 60))]


# --- a reset far behind: rejected until the operator resets ----------------------------


def test_a_new_small_boot_far_behind_is_rejected_then_taken_after_reset_epochs(
        gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    gw.send(*[frame(b, 0, T0 + 10 * b) for b in range(20, 26)])
    lost = [frame(1, s, T0 + 1000) for s in range(5)]
    with caplog.at_level(logging.WARNING, logger="fieldtrack.gateway"):
        report = gw.send(*lost)
    assert report.rejects == {"boot_behind": 5}
    assert receipted(report) == []  # the device keeps them for after the reset
    assert gw.rejects() == [("boot_behind", data) for data in lost]
    assert any(r.levelno == logging.WARNING and DEVICE in r.getMessage()
               and "fieldtrack devices reset-epochs %s" % DEVICE in r.getMessage()
               for r in caplog.records)

    result = cli(gw.db, "reset-epochs", DEVICE)
    assert result.exit_code == 0, result.output
    gw.notice_resets()
    gw.send(frame(24, 1, T0 + 241))  # a late frame of a stored boot: taken, the reset waits
    report = gw.send(*lost)  # the device sends them again: nothing was confirmed
    assert report.positions == 5 and report.rejects == {}
    assert receipted(report) == [(1, 0, 5)]
    gw.send(frame(2, 0, T0 + 2000))  # its next boot: ahead of the new reference
    gw.send(frame(25, 1, T0 + 260))  # a late frame of a stored boot: taken, not a reference
    report = gw.send(frame(3, 0, T0 + 3000))
    assert report.positions == 1 and report.rejects == {}
    assert gw.rows("SELECT reference FROM device_epochs") == [(3,)]


def test_a_reset_requested_while_the_gateway_is_down_is_taken_at_start(
        gw: Gateway, tmp_path: Path) -> None:
    gw.send(frame(20, 0))
    gw.close()
    assert cli(gw.db, "reset-epochs", DEVICE).exit_code == 0
    gw.worker = Worker(parse({"store": {"path": str(gw.db)},
                                "pipeline": {"receipt_delay_ms": 0}}))
    assert gw.send(frame(1, 0, T0 + 100)).positions == 1


# --- a new era ---------------------------------------------------------------------------


def test_an_era_start_far_behind_is_taken_as_the_new_reference(
        gw: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    old, era = 40_000_000, 20_000_000
    gw.send(frame(old, 0), frame(old + 1, 0, T0 + 10))
    with caplog.at_level(logging.WARNING, logger="fieldtrack.gateway"):
        report = gw.send(frame(era, 0, T0 + 100))
    assert report.positions == 1 and report.eras == 1
    assert any("new boot era" in r.getMessage() and DEVICE in r.getMessage()
               for r in caplog.records)
    gw.send(frame(old + 1, 1, T0 + 20))  # late, from a stored boot of the old era
    report = gw.send(frame(era + 1, 0, T0 + 200))
    assert report.positions == 1 and report.eras == 0 and report.rejects == {}
    assert gw.rows("SELECT reference FROM device_epochs") == [(era + 1,)]


def test_the_first_era_of_a_device_that_counted_from_zero_is_counted(gw: Gateway) -> None:
    gw.send(frame(30, 0))
    report = gw.send(frame(20_000_000, 0, T0 + 100))
    assert report.positions == 1 and report.eras == 1
    assert gw.send(frame(20_000_001, 0, T0 + 200)).eras == 0


# --- an absurd boot ----------------------------------------------------------------------


def test_boot_2_32_minus_1_is_rejected_and_later_frames_are_stored(gw: Gateway) -> None:
    gw.send(frame(5, 0))
    absurd = frame(2**32 - 1, 0, T0 + 10)
    report = gw.send(absurd)
    assert report.rejects == {"bad_boot": 1}
    assert gw.rejects() == [("bad_boot", absurd)]
    later = [frame(5, 1, T0 + 20), frame(6, 0, T0 + 30), frame(7, 0, T0 + 40)]
    report = gw.send(*later)
    assert report.positions == 3 and report.rejects == {}


def test_an_old_store_poisoned_by_an_absurd_boot_gets_a_sane_reference(tmp_path: Path) -> None:
    db = tmp_path / "fieldtrack.db"
    store = Store(db)
    store.put_device(Device(DEVICE, "vans", KEY, True))
    store.close()
    con = sqlite3.connect(db)
    con.execute("DROP TABLE device_epochs")  # as a store made before the table existed
    for boot, seq in ((4, 0), (5, 0), (2**32 - 1, 0)):
        con.execute("INSERT INTO positions (device, boot, seq, t, lat, lon, spd, hdg, alt, "
                    "acc, sats, fix, ign, buf, mock, received) VALUES "
                    "(?, ?, ?, ?, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0)",
                    (DEVICE, boot, seq, T0 + boot % 1000))
    con.commit()
    con.close()
    worker = Worker(parse({"store": {"path": str(db)}, "pipeline": {"receipt_delay_ms": 0}}))
    try:
        assert worker.pipeline.epochs[DEVICE].reference == 5
        worker.handle(TOPIC, frame(6, 0, T0 + 500), now_ms())
        assert worker.commit().positions == 1
    finally:
        worker.close()


# --- the operator's commands --------------------------------------------------------------


def test_devices_epochs_shows_boots_reference_and_sequence_rejects(gw: Gateway) -> None:
    gw.send(*[frame(1, s) for s in range(3)])
    gw.send(frame(2, 0, T0 + 100), frame(2, 1, T0 + 101))
    gw.send(frame(1, 0, T0 + 1000))  # a reused key
    result = cli(gw.db, "epochs", DEVICE)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "reference boot: 2" in out
    rows = {cells[0]: cells[1:4] for cells in map(str.split, out.splitlines()) if cells}
    assert rows["2"] == ["2", "0", "0..1"]  # boot: positions, events, seqs
    assert rows["1"] == ["3", "0", "0..2"]
    assert "key_reused: 1" in out and "seq 0: the key is already stored" in out

    as_json = cli(gw.db, "epochs", DEVICE, "--format", "json")
    assert as_json.exit_code == 0
    data = json.loads(as_json.stdout)
    assert data["reference"] == 2 and [b["boot"] for b in data["boots"]] == [2, 1]


def test_devices_epochs_of_a_registered_device_that_sent_nothing(gw: Gateway) -> None:
    result = cli(gw.db, "epochs", DEVICE)
    assert result.exit_code == 0
    assert "has sent nothing" in result.output


@pytest.mark.parametrize("command", ["epochs", "reset-epochs"])
def test_an_unknown_device_is_a_clear_error(gw: Gateway, command: str) -> None:
    result = cli(gw.db, command, "van-2")
    assert result.exit_code == 2
    assert "no device van-2" in result.output and "did you mean van-1" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["epochs", "reset-epochs"])
def test_a_missing_store_is_a_clear_error(tmp_path: Path, command: str) -> None:
    result = cli(tmp_path / "nope.db", command, DEVICE)
    assert result.exit_code == 2
    assert "nope.db: no such store" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "nope.db").exists()


def test_reset_epochs_of_a_device_that_sent_nothing_changes_nothing(gw: Gateway) -> None:
    result = cli(gw.db, "reset-epochs", DEVICE)
    assert result.exit_code == 0
    assert "sent nothing" in result.output
    assert gw.rows("SELECT COUNT(*) FROM device_epochs") == [(0,)]


def test_reset_epochs_is_shown_as_pending_until_taken(gw: Gateway) -> None:
    gw.send(frame(20, 0))
    assert cli(gw.db, "reset-epochs", DEVICE).exit_code == 0
    assert "reset requested" in cli(gw.db, "epochs", DEVICE).stdout
    gw.notice_resets()
    gw.send(frame(1, 0, T0 + 100))
    assert "reset requested" not in cli(gw.db, "epochs", DEVICE).stdout


def test_pruning_the_rejects_keeps_the_only_copies_of_records(gw: Gateway) -> None:
    gw.send(frame(20, 0))
    gw.send(frame(20, 0, T0 + 100), frame(2**32 - 1, 0), frame(1, 0), frame(1, 1))
    store = Store(gw.db)
    try:
        store.prune_rejects(0)
    finally:
        store.close()
    assert sorted(reason for reason, _ in gw.rejects()) == ["bad_boot", "key_reused"]


# --- end to end ---------------------------------------------------------------------------


@pytest.mark.slow
def test_end_to_end_a_reset_device_is_rejected_visibly_and_taken_after_reset_epochs(
        tmp_path: Path, mosquitto_broker: Broker) -> None:
    http_port = free_port()
    config = write_gateway_config(tmp_path, mosquitto_broker.port,
                                  http={"enabled": True, "port": http_port})
    db = tmp_path / "fieldtrack.db"
    store = Store(db)
    store.put_device(Device(DEVICE, "vans", KEY, True))
    store.close()
    log = tmp_path / "gateway.log"
    gw = GatewayProcess(config, log)
    gw.start()
    gw.wait_subscribed()
    pub = Publisher(mosquitto_broker.port)
    try:
        pub.publish_many(DEVICE, [frame(b, 0, T0 + 10 * b) for b in range(20, 24)])
        wait_until(lambda: count(db) == 4, what="the history")
        lost = [frame(1, s, T0 + 1000) for s in range(10)]
        pub.publish_many(DEVICE, lost)
        wait_until(lambda: count(db, "SELECT COUNT(*) FROM rejects WHERE reason='boot_behind'")
                   == 10, what="10 boot_behind rejects")
        assert count(db) == 4
        text = log.read_text()
        assert "boot_behind" in text and "fieldtrack devices reset-epochs %s" % DEVICE in text
        reused = frame(20, 0, T0 + 5000)  # a stored key with other content
        pub.publish(DEVICE, reused)
        wait_until(lambda: count(db, "SELECT COUNT(*) FROM rejects WHERE reason='key_reused'")
                   == 1, what="a key_reused reject")

        assert cli(db, "reset-epochs", DEVICE).exit_code == 0
        wait_until(lambda: "reset-epochs for %s" % DEVICE in log.read_text(),
                   what="the gateway to notice the reset")
        pub.publish_many(DEVICE, lost)  # the device sends them again: nothing was confirmed
        wait_until(lambda: count(db, "SELECT COUNT(*) FROM positions WHERE boot=1") == 10,
                   what="the reset device's frames")
        assert count(db, "SELECT COUNT(*) FROM rejects") == 11
        assert "boot 1 taken as its reference boot" in log.read_text()

        # It loses its counter twice more, now with era firmware: two new eras, taken.
        pub.publish_many(DEVICE, [frame(40_000_000, 0, T0 + 6000),
                                  frame(20_000_000, 0, T0 + 7000)])
        wait_until(lambda: count(db) == 16, what="both era frames")
        text = log.read_text()
        assert "new boot era at boot 40000000" in text and "era at boot 20000000" in text

        def metrics() -> str:
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % http_port) as r:
                return str(r.read().decode())

        wait_until(lambda: "fieldtrack_boot_eras_total 2.0" in metrics(), what="the metric")
        assert 'fieldtrack_rejects_total{reason="boot_behind"} 10.0' in metrics()
        assert 'fieldtrack_rejects_total{reason="key_reused"} 1.0' in metrics()
        assert gw.terminate() == 0
    finally:
        pub.close()
        gw.stop_quietly()


