"""One device flooding bad frames cannot push the other devices' rejects out."""

from __future__ import annotations

from pathlib import Path

from conftest import Broker
from harness import (
    GatewayProcess,
    Publisher,
    count,
    frame_bytes,
    position,
    wait_until,
    write_config,
)

from fieldtrack.gateway.store.sqlite import Batch, Device, Store, newest_per_topic

QUOTA = 50


def reject(topic: str, n: int) -> tuple[object, ...]:
    return (n, topic, topic.rsplit("/", 1)[-1], "malformed", "seq %d" % n, b"\xff", 1)


def rows(store: Store, topic: str) -> list[str]:
    return [r[0] for r in store.db.execute(
        "SELECT detail FROM rejects WHERE topic=? ORDER BY id", (topic,))]


def test_each_topic_keeps_its_newest_rejects_within_its_quota(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", rejects_per_topic=QUOTA)
    try:
        store.commit(Batch(rejects=[reject("ft/u/quiet", i) for i in range(5)]))
        for start in range(0, 1000, 200):  # the flood, over several commits
            store.commit(Batch(rejects=[reject("ft/u/noisy", i)
                                        for i in range(start, start + 200)]))
        assert rows(store, "ft/u/quiet") == ["seq %d" % i for i in range(5)]
        assert rows(store, "ft/u/noisy") == ["seq %d" % i for i in range(950, 1000)]
    finally:
        store.close()


def test_without_a_quota_every_reject_is_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    try:
        store.commit(Batch(rejects=[reject("ft/u/noisy", i) for i in range(300)]))
        assert len(rows(store, "ft/u/noisy")) == 300
    finally:
        store.close()


def test_newest_per_topic_keeps_order_and_the_newest() -> None:
    batch = [reject("a", 0), reject("b", 1), reject("a", 2), reject("a", 3), reject("b", 4)]
    assert newest_per_topic(batch, 2) == [batch[1], batch[2], batch[3], batch[4]]


def test_a_flooding_device_leaves_the_others_rejects_in_place(
    tmp_path: Path, mosquitto_broker: Broker
) -> None:
    quota = 10  # below the rows a flood gets per second (REJECT_DETAILS_PER_S)
    config = write_config(tmp_path, mosquitto_broker.port,
                          store={"rejects_per_device": quota, "rejects_keep": 1000})
    store = Store(tmp_path / "fieldtrack.db")
    for device in ("van-1", "van-2"):
        store.put_device(Device(device, "vans", None, True))
    store.close()
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    gw.start()
    gw.wait_subscribed()
    pub = Publisher(mosquitto_broker.port)
    db = tmp_path / "fieldtrack.db"
    try:
        pub.publish_many("van-2", [b"\xff not cbor %d" % i for i in range(5)])
        wait_until(lambda: count(db, "SELECT COUNT(*) FROM rejects") == 5, what="5 rejects")
        pub.publish_many("van-1", [b"\xff flood %d" % i for i in range(3000)])
        # One publisher's messages arrive in order: once this one is stored, the flood
        # before it has been handled.
        pub.publish("van-2", frame_bytes(position(0), "van-2", None))
        wait_until(lambda: count(db) == 1, timeout=60, what="the frame after the flood")
        assert count(db, "SELECT COUNT(*) FROM rejects WHERE device='van-2'") == 5
        assert count(db, "SELECT COUNT(*) FROM rejects WHERE device='van-1'") == quota
    finally:
        pub.close()
        gw.stop_quietly()


def test_a_flood_beyond_the_budget_is_counted_without_rows_or_dead_letters(
    tmp_path: Path,
) -> None:
    """Reading garbage must cost little: past the budget a reject is only counted."""
    from fieldtrack.gateway.config import parse
    from fieldtrack.gateway.ingest.worker import REJECT_DETAILS_PER_S, Worker

    config = parse({"store": {"path": str(tmp_path / "s.db")}})
    worker = Worker(config)
    try:
        for i in range(200):
            worker.handle("ft/u/noisy", b"\xff garbage %d" % i, i)
        worker.handle("ft/u/quiet", b"\xff one bad frame", 200)
        topics = [row[1] for row in worker.batch.rejects]
        assert topics.count("ft/u/noisy") == REJECT_DETAILS_PER_S
        assert topics.count("ft/u/quiet") == 1
        assert len(worker.report.dead_letters) == REJECT_DETAILS_PER_S + 1
        assert sum(worker.report.rejects.values()) == 201  # every one counted
        assert worker.report.unrecorded == 200 - REJECT_DETAILS_PER_S
    finally:
        worker.close()


def test_the_quota_never_deletes_the_only_copies_of_records(tmp_path: Path) -> None:
    """key_reused and bad_boot rows hold genuine device records: outside every bound."""
    store = Store(tmp_path / "s.db", rejects_per_topic=3)
    try:
        kept = [(i, "ft/u/noisy", "noisy", "bad_boot", "boot", b"\x01", 1) for i in range(5)]
        store.commit(Batch(rejects=kept))
        store.commit(Batch(rejects=[reject("ft/u/noisy", i) for i in range(50)]))
        store.prune_rejects(2)
        reasons = [r[0] for r in store.db.execute("SELECT reason FROM rejects ORDER BY id")]
        assert reasons.count("bad_boot") == 5
        assert reasons.count("malformed") == 2  # pruned to the newest 2 overall
    finally:
        store.close()
