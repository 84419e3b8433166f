# Store and forward (firmware/ringbuf.py): on flash at once, kept until a receipt covers
# it, resent after a rewind, thinned evenly when full, survives restarts and torn writes.
import os

import ringbuf


def fresh_dir():
    return "/tmp/ft-ring-" + "".join("%02x" % b for b in os.urandom(6))


def rec(i):
    return bytes([i % 256]) * 20


def fix(i, ign=False):
    # the stored form of a fix: CBOR [0, t, ..., flags] (app.record_fix); flags last
    return bytes([0x83, 0x00, 0x18, i % 256, 0x04 if ign else 0x00])


def event(i):
    return bytes([0x82, 0x01, 0x41, i % 256])


def cleanup(d):
    for name in os.listdir(d):
        os.remove(d + "/" + name)
    os.rmdir(d)


def seqs(rb):
    return [s for _, s, _ in rb.peek(100000)]


def send(rb, n):
    """Publish up to n records (as the tracker does): their seqs."""
    out = []
    records = rb.unsent()
    pos = None
    for b, s, r, pos in records:
        out.append(s)
        if len(out) >= n:
            break
    records.close()
    if pos is not None:
        rb.mark_sent(pos)
    return out


def test_a_record_is_on_flash_when_append_returns():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=1000, segment_records=8)
    rb.append(1, 0, rec(0))
    again = ringbuf.RingBuffer(d, capacity=1000, segment_records=8)  # as after a crash
    assert again.peek(10) == [(1, 0, rec(0))]
    cleanup(d)


def test_records_stay_until_a_receipt_covers_them():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=1000, segment_records=4)
    for i in range(10):
        rb.append(1, i, rec(i))
    assert send(rb, 6) == [0, 1, 2, 3, 4, 5]
    assert seqs(rb) == list(range(10))  # sent (and PUBACKed) is not confirmed
    assert rb.confirm(1, 0, 6)
    assert seqs(rb) == [6, 7, 8, 9]
    assert rb.peek(1)[0][2] == rec(6)
    assert not rb.confirm(1, 2, 3)  # nothing new: no progress
    cleanup(d)


def test_out_of_order_receipts_advance_the_watermark_in_order():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=1000, segment_records=4)
    for i in range(12):
        rb.append(1, i, rec(i))
    send(rb, 12)
    rb.confirm(1, 4, 4)  # the frame of records 4..7 was stored first
    assert seqs(rb) == [0, 1, 2, 3, 8, 9, 10, 11]
    assert rb.done == (1, 0)  # record 0 is not confirmed yet
    rb.confirm(1, 0, 4)
    assert seqs(rb) == [8, 9, 10, 11]
    assert rb.done == (3, 0)  # past segments 1 and 2, deleted
    cleanup(d)


def test_a_rewind_sends_again_what_no_receipt_covers():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=1000, segment_records=4)
    for i in range(10):
        rb.append(1, i, rec(i))
    assert send(rb, 10) == list(range(10))
    assert send(rb, 10) == []
    rb.confirm(1, 0, 3)
    rb.confirm(1, 6, 2)  # 3..5 and 8, 9 were lost in a broker crash
    rb.rewind()
    assert send(rb, 10) == [3, 4, 5, 8, 9]
    cleanup(d)


def test_confirmed_segments_are_deleted_and_a_restart_resends_no_more_than_needed():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=1000, segment_records=4)
    for i in range(12):
        rb.append(2, i, rec(i))
    send(rb, 12)
    rb.confirm(2, 0, 6)
    assert len([n for n in os.listdir(d) if n.endswith(".jnl")]) == 2
    again = ringbuf.RingBuffer(d, capacity=1000, segment_records=4)
    assert seqs(again) == [6, 7, 8, 9, 10, 11]
    assert again.count == 8  # records 4, 5 wait in a partly confirmed segment
    cleanup(d)


def test_a_fully_confirmed_journal_leaves_no_records_on_flash():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=1000, segment_records=4)
    for i in range(6):
        rb.append(1, i, rec(i))
    send(rb, 6)
    rb.confirm(1, 0, 6)
    assert [n for n in os.listdir(d) if n.endswith(".jnl")] == []
    rb.append(1, 6, rec(6))
    assert seqs(ringbuf.RingBuffer(d, capacity=1000, segment_records=4)) == [6]
    cleanup(d)


def test_after_everything_was_confirmed_new_segments_survive_restarts():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=1000, segment_records=4)
    for i in range(6):
        rb.append(1, i, rec(i))
    send(rb, 6)
    rb.confirm(1, 0, 6)  # all deleted; the saved watermark points past them
    again = ringbuf.RingBuffer(d, capacity=1000, segment_records=4)
    for i in range(6, 16):
        again.append(1, i, rec(i))
    assert seqs(ringbuf.RingBuffer(d, capacity=1000, segment_records=4)) == list(range(6, 16))
    cleanup(d)


def test_a_torn_record_is_cut_off_at_boot_and_appending_goes_on():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=1000, segment_records=100)
    for i in range(5):
        rb.append(1, i, rec(i))
    name = d + "/" + [n for n in os.listdir(d) if n.endswith(".jnl")][0]
    with open(name, "ab") as f:
        f.write(b"\x00\x20\x01\x02")  # a crash in the middle of the next record
    again = ringbuf.RingBuffer(d, capacity=1000, segment_records=100)
    assert seqs(again) == [0, 1, 2, 3, 4] and again.corrupt == 1
    again.append(1, 5, rec(5))
    assert seqs(ringbuf.RingBuffer(d, capacity=1000, segment_records=100)) == list(range(6))
    cleanup(d)


def test_a_flipped_byte_truncates_the_segment_at_that_record():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=1000, segment_records=100)
    for i in range(5):
        rb.append(1, i, rec(i))
    name = d + "/" + [n for n in os.listdir(d) if n.endswith(".jnl")][0]
    with open(name, "r+b") as f:
        f.seek(2 * 31 + 10)  # inside the third record (6 + 25 bytes each)
        f.write(b"\xff")
    again = ringbuf.RingBuffer(d, capacity=1000, segment_records=100)
    assert seqs(again) == [0, 1]
    assert not [n for n in os.listdir(d) if n.endswith(".tmp")]
    cleanup(d)


def test_records_of_an_earlier_boot_come_first():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=1000, segment_records=2)
    rb.append(4, 70000, rec(1))
    rb.append(4, 70001, rec(2))
    rb.append(5, 0, rec(3))
    assert [(b, s) for b, s, _ in rb.peek(10)] == [(4, 70000), (4, 70001), (5, 0)]
    send(rb, 3)
    rb.confirm(4, 70000, 2)
    assert [(b, s) for b, s, _ in rb.peek(10)] == [(5, 0)]
    cleanup(d)


def test_a_new_era_with_a_lower_boot_is_sent_and_confirmed_like_any_other():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=1000, segment_records=4)
    for i in range(6):
        rb.append(900000000, i, rec(i))
    send(rb, 4)
    rb.confirm(900000000, 0, 4)
    for i in range(3):  # the state was lost: a new era, by chance below the old boot
        rb.append(30000000, i, rec(i))
    again = ringbuf.RingBuffer(d, capacity=1000, segment_records=4)
    assert [(b, s) for b, s, _ in again.peek(10)] == [
        (900000000, 4), (900000000, 5), (30000000, 0), (30000000, 1), (30000000, 2)]
    assert send(again, 10) == [4, 5, 0, 1, 2]
    again.confirm(30000000, 0, 3)
    again.confirm(900000000, 4, 2)
    assert again.peek(10) == [] and not again.unconfirmed()
    cleanup(d)


def test_a_full_buffer_thins_old_fixes_evenly_and_keeps_events_and_ignition_edges():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=64, segment_records=8)
    kinds = {}
    for i in range(200):
        if i % 25 == 0:
            r = event(i)
        else:
            r = fix(i, ign=(i // 50) % 2 == 1)  # the ignition turns on at 50, off at 100...
        kinds[i] = r
        rb.append(1, i, r)
    kept = seqs(rb)
    assert rb.count <= 64 and len(kept) == rb.count
    assert rb.dropped == 0 and rb.thinned == 200 - len(kept)
    assert all(i in kept for i in range(0, 200, 25))  # every event
    assert all(i in kept for i in (51, 100, 151))  # the first fix after each ignition edge
    gaps = [b - a for a, b in zip(kept, kept[1:])]
    assert kept[0] == 0 and max(gaps) <= 8  # evenly: no stretch of the track is gone
    assert sum(1 for s in kept if s < 100) >= 12  # the old half is thinned, not emptied
    assert kept[-8:] == list(range(192, 200))  # the newest segment is untouched
    assert ringbuf.RingBuffer(d, capacity=64, segment_records=8).thinned == rb.thinned
    cleanup(d)


def test_thinning_what_was_sent_does_not_send_it_again():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, capacity=32, segment_records=8)
    for i in range(24):
        rb.append(1, i, fix(i))
    assert send(rb, 12) == list(range(12))
    for i in range(24, 40):
        rb.append(1, i, fix(i))
    assert rb.thinned > 0
    rest = send(rb, 100)
    assert rest and rest[0] > 11 and rest[-1] == 39
    cleanup(d)


def test_thinning_keeps_every_event_and_ignition_edge_for_any_pattern():
    import random

    for seed in (1, 2, 3, 4):
        random.seed(seed)
        d = fresh_dir()
        rb = ringbuf.RingBuffer(d, capacity=160, segment_records=8)
        events, edges = [], []
        ign = False
        for i in range(400):
            if random.getrandbits(4) == 0:
                rb.append(1, i, event(i))
                events.append(i)
                continue
            if random.getrandbits(5) == 0:
                ign = not ign
                edges.append(i)
            rb.append(1, i, fix(i, ign))
        kept = seqs(rb)
        assert rb.count <= 160 and rb.dropped == 0, seed
        assert all(i in kept for i in events), seed
        # an edge is seen where the previous fix is in the same segment (the ignition
        # events themselves are among the events)
        assert len([i for i in edges if i in kept]) >= len(edges) // 2, seed
        fixes_kept = [s for s in kept if s not in events]
        gaps = [b - a for a, b in zip(fixes_kept, fixes_kept[1:])]
        assert max(gaps) <= 20, (seed, max(gaps))  # no stretch of the track is gone
        cleanup(d)
