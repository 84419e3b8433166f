"""The command queue without a network: the store's table and the gateway's send rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldtrack.gateway.ingest.downlink import Downlink, publication
from fieldtrack.gateway.ingest.pipeline import Pipeline, PipelineConfig
from fieldtrack.gateway.store import commands as queue
from fieldtrack.gateway.store.commands import CommandError
from fieldtrack.gateway.store.sqlite import Batch, Device, Store
from fieldtrack.protocol import cose, frames, topics

KEY = bytes(range(32))
NOW = 1_796_400_000.0


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "fieldtrack.db")
    s.put_device(Device("van-1", "vans", KEY, True))
    s.put_device(Device("van-2", "vans", None, True))
    s.put_device(Device("van-off", "vans", KEY, False))
    return s


def test_a_queued_command_is_a_valid_signed_frame_with_an_expiry(store: Store) -> None:
    row = queue.queue_command(store.db, "van-1", "set_config",
                              {"config": {"moving.min_period_s": 5}}, now=NOW)
    assert (row.cid, row.state, row.exp, row.tries) == (1, "queued", int(NOW) + 3600, 0)
    frame = frames.decode(queue.encode(row.cid, row.kind, row.exp, row.args))
    assert frame == {"type": "command", "v": 1, "cid": 1, "kind": "set_config",
                     "exp": int(NOW) + 3600, "args": {"config": {"moving.min_period_s": 5}}}
    assert queue.get_command(store.db, "van-1", 1) == row


def test_cids_grow_per_device_and_are_never_reused(store: Store, tmp_path: Path) -> None:
    assert queue.queue_command(store.db, "van-1", "locate", now=NOW).cid == 1
    assert queue.queue_command(store.db, "van-1", "status", now=NOW).cid == 2
    assert queue.queue_command(store.db, "van-2", "locate", now=NOW).cid == 1
    assert queue.cancel_command(store.db, "van-1", 2)
    store.close()
    store = Store(tmp_path / "fieldtrack.db")  # a restart
    assert queue.queue_command(store.db, "van-1", "locate", now=NOW).cid == 3
    # the device removed, its commands deleted, then added again: still no cid comes back
    store.db.execute("DELETE FROM devices WHERE id='van-1'")
    store.db.execute("DELETE FROM commands WHERE device='van-1'")
    store.put_device(Device("van-1", "vans", KEY, True))
    assert queue.queue_command(store.db, "van-1", "locate", now=NOW).cid == 4


def test_cids_start_above_those_the_device_answered_before(store: Store) -> None:
    store.db.execute(
        "INSERT INTO events (device, boot, seq, t, kind, data, received) VALUES "
        "('van-2', 1, 7, 0, 'command_ack', ?, 0)", (json.dumps({"cid": 41, "result": "ok"}),))
    assert queue.queue_command(store.db, "van-2", "locate", now=NOW).cid == 42


@pytest.mark.parametrize(("device", "kind", "args", "ttl", "field", "words"), [
    ("nobody", "locate", None, None, "device", "no such device"),
    ("van-off", "locate", None, None, "device", "disabled"),
    ("bad id!", "locate", None, None, "device", "not a device id"),
    ("van-1", "dance", None, None, "kind", "not a command kind"),
    ("van-1", "set_config", None, None, "config", "set_config needs config"),
    ("van-1", "set_config", {"config": {}}, None, "config", "non-empty"),
    ("van-1", "set_config", {"config": {"a": [1]}}, None, "config.a", "not an integer"),
    ("van-1", "fw_update", {"url": "http://x/f.bin", "sha256": "ab" * 31}, None, "sha256",
     "64 hex"),
    ("van-1", "fw_update", {"url": "http://x/f.bin", "sha256": "zz" * 32}, None, "sha256",
     "64 hex"),
    ("van-1", "fw_update", {"sha256": "ab" * 32}, None, "url", "fw_update needs url"),
    ("van-1", "locate", {"colour": "red"}, None, "colour", "unknown field"),
    ("van-1", "reboot", None, 0, "ttl", "needs an expiry"),
    ("van-1", "locate", None, 86401, "ttl", "more than 24 h"),
    ("van-1", "locate", None, -5, "ttl", "1..86400"),
])
def test_a_bad_command_is_refused_naming_the_field_and_nothing_is_written(
        store: Store, device: str, kind: str, args: dict[str, object] | None,
        ttl: float | None, field: str, words: str) -> None:
    with pytest.raises(CommandError) as caught:
        queue.queue_command(store.db, device, kind, args, ttl_s=ttl, now=NOW)
    assert caught.value.field == field
    assert words in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert store.db.execute("SELECT COUNT(*) FROM commands").fetchone()[0] == 0
    assert store.db.execute("SELECT COUNT(*) FROM command_cids").fetchone()[0] == 0


def test_settings_from_key_value_texts() -> None:
    assert queue.config_of(["moving.min_period_s=10", "apn=internet.t-d1.de", "gps=false",
                            "note=a=b"]) == {
        "moving.min_period_s": 10, "apn": "internet.t-d1.de", "gps": False, "note": "a=b"}
    for bad in (["novalue"], ["=3"], ["a=1", "a=2"], []):
        with pytest.raises(CommandError):
            queue.config_of(bad)


def test_list_pages_newest_first_and_cancel_only_while_pending(store: Store) -> None:
    for _ in range(5):
        queue.queue_command(store.db, "van-1", "locate", now=NOW)
    queue.queue_command(store.db, "van-2", "status", now=NOW)
    first = queue.list_commands(store.db, "van-1", limit=2)
    assert [r.cid for r in first] == [5, 4]
    assert [r.cid for r in queue.list_commands(store.db, "van-1", limit=10,
                                               before_id=first[-1].id)] == [3, 2, 1]
    assert len(queue.list_commands(store.db)) == 6
    assert queue.cancel_command(store.db, "van-1", 5)
    assert not queue.cancel_command(store.db, "van-1", 5)
    assert not queue.cancel_command(store.db, "van-1", 99)
    assert queue.get_command(store.db, "van-1", 5).state == "cancelled"  # type: ignore[union-attr]


def _ack(cid: int, seq: int, result: str = "ok", reason: str | None = None
         ) -> tuple[str, bytes]:
    frame: dict[str, object] = {"type": "command_ack", "boot": 1, "seq": seq, "t": int(NOW),
                                "cid": cid, "result": result}
    if reason:
        frame["reason"] = reason
    return topics.uplink("van-1"), cose.sign(frames.encode(frame), KEY, "van-1")


def test_an_ack_settles_its_command_in_the_commit_that_stores_it_once(store: Store) -> None:
    row = queue.queue_command(store.db, "van-1", "set_config", {"config": {"x": 1}}, now=NOW)
    pipeline = Pipeline(PipelineConfig(), store.devices(), {})
    for copy in range(2):  # the frame, then a redelivered copy
        batch = Batch()
        topic, data = _ack(row.cid, 3, "rejected", "x: not a setting")
        pipeline.process(topic, data, int(NOW * 1000) + copy, batch)
        done = store.commit(batch)
        assert done.acked == ((("van-1", row.cid, "rejected"),) if copy == 0 else ())
    settled = queue.get_command(store.db, "van-1", row.cid)
    assert settled is not None
    assert (settled.state, settled.result, settled.reason) == ("acked", "rejected",
                                                              "x: not a setting")
    assert settled.acked_ms == int(NOW * 1000)
    assert store.db.execute("SELECT COUNT(*) FROM events WHERE kind='command_ack'"
                            ).fetchone()[0] == 1


def test_an_ack_whose_commit_fails_leaves_its_command_pending(store: Store) -> None:
    row = queue.queue_command(store.db, "van-1", "locate", now=NOW)
    batch = Batch()
    Pipeline(PipelineConfig(), store.devices(), {}).process(*_ack(row.cid, 4), 0, batch)

    def fail(db: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.commit(batch, first=fail)
    assert queue.get_command(store.db, "van-1", row.cid).state == "queued"  # type: ignore[union-attr]
    store.commit(batch)
    assert queue.get_command(store.db, "van-1", row.cid).state == "acked"  # type: ignore[union-attr]


# --- when the gateway sends ---------------------------------------------------------


def _downlink(store: Store, online: bool = True) -> Downlink:
    link = Downlink(resend_s=30)
    link.load(queue.pending(store.db), lambda d: online)
    return link


def test_queued_commands_go_out_at_once_in_cid_order_signed(store: Store) -> None:
    for kind in ("status", "locate"):
        queue.queue_command(store.db, "van-1", kind, now=NOW)
    queue.queue_command(store.db, "van-2", "locate", now=NOW)
    link = _downlink(store)
    send, expired = link.due(NOW, store.devices())
    assert [(p.device, p.cid) for p in send] == [("van-1", 1), ("van-1", 2), ("van-2", 1)]
    assert expired == []
    topic, payload = publication(send[0], store.devices())  # type: ignore[misc]
    assert topic == "ft/d/van-1"
    mac, inner = cose.unwrap(payload, 1000)
    assert mac.kid == "van-1" and mac.verify(KEY)
    assert frames.decode_command(inner)["kind"] == "status"
    plain = publication(send[2], store.devices())
    assert plain is not None and frames.decode_command(plain[1])["cid"] == 1  # no key: plain


def test_a_sent_command_goes_again_every_resend_s_while_online_only(store: Store) -> None:
    queue.queue_command(store.db, "van-1", "locate", now=NOW)
    link = _downlink(store, online=False)
    registry = store.devices()
    send, _ = link.due(NOW, registry)
    link.sent(send, NOW)
    assert link.due(NOW + 29, registry)[0] == []
    assert link.due(NOW + 31, registry)[0] == []  # offline: nobody to send to
    link.heard("van-1")  # an uplink frame: back, so at once
    assert [p.cid for p in link.due(NOW + 32, registry)[0]] == [1]
    link.sent(send, NOW + 32)
    link.heard("van-1")  # frames while online: no extra copies
    assert link.due(NOW + 33, registry)[0] == []
    assert [p.cid for p in link.due(NOW + 62, registry)[0]] == [1]  # online, 30 s later
    link.presence("van-1", False)
    link.sent(send, NOW + 62)
    assert link.due(NOW + 100, registry)[0] == []
    link.presence("van-1", True)  # reconnected: at once
    assert [p.cid for p in link.due(NOW + 101, registry)[0]] == [1]
    link.settled("van-1", 1)
    assert link.waiting == {} and link.due(NOW + 200, registry) == ([], [])


def test_a_command_past_its_expiry_is_given_up(store: Store) -> None:
    row = queue.queue_command(store.db, "van-1", "locate", ttl_s=10, now=NOW)
    link = _downlink(store)
    assert link.due(NOW + 10, store.devices())[1] == []
    send, expired = link.due(NOW + 11, store.devices())
    assert send == [] and [p.id for p in expired] == [row.id]
    assert link.waiting == {}
    event = queue.expired_event("van-1", 77, "command/1/expired", 1, "locate", row.exp,
                                int(NOW * 1000) + 11_000)
    assert queue.mark_expired(store.db, [(row.id, event)]) == 1
    assert queue.get_command(store.db, "van-1", 1).state == "expired"  # type: ignore[union-attr]
    assert queue.mark_expired(store.db, [(row.id, event)]) == 0
    logged = store.db.execute("SELECT boot, seq, kind, data, key FROM events").fetchall()
    assert logged == [(-1, 77, "command_expired",
                       '{"cid":1,"exp":%d,"kind":"locate"}' % row.exp, "command/1/expired")]


def test_a_disabled_device_gets_nothing(store: Store) -> None:
    queue.queue_command(store.db, "van-1", "locate", now=NOW)
    store.put_device(Device("van-1", "vans", KEY, False))
    link = _downlink(store)
    assert link.due(NOW, store.devices()) == ([], [])


def test_a_cancel_wins_over_a_send(store: Store) -> None:
    row = queue.queue_command(store.db, "van-1", "locate", now=NOW)
    link = _downlink(store)
    send, _ = link.due(NOW, store.devices())
    queue.cancel_command(store.db, "van-1", row.cid)  # between the decision and the mark
    assert queue.mark_sent(store.db, [p.id for p in send], int(NOW * 1000)) == set()
    assert queue.get_command(store.db, "van-1", 1).tries == 0  # type: ignore[union-attr]


def test_a_row_that_makes_no_frame_is_left_out_and_named(store: Store) -> None:
    queue.queue_command(store.db, "van-1", "locate", now=NOW)
    store.db.execute("INSERT INTO commands (device, cid, kind, args, exp, created_ms) VALUES "
                     "('van-1', 9, 'locate', '{\"colour\": 1}', 0, 0)")  # not via the queue
    link = Downlink()
    link.load(queue.pending(store.db), lambda d: True)
    assert [p.cid for p in link.waiting["van-1"]] == [1]
    assert [(row.cid, "colour" in why) for row, why in link.unsendable] == [(9, True)]
