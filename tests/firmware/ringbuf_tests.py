# Store and forward (firmware/ringbuf.py): bounded, acknowledged, survives restarts.
import os

import ringbuf


def fresh_dir():
    name = "/tmp/ft-ring-" + "".join("%02x" % b for b in os.urandom(6))
    return name


def rec(i):
    return bytes([i % 256]) * 20


def cleanup(d):
    for name in os.listdir(d):
        os.remove(d + "/" + name)
    os.rmdir(d)


def test_records_come_back_in_order_until_acknowledged():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, block_records=4, max_segments=100)
    for i in range(10):
        rb.append(1, i, rec(i))
    assert [s for _, s, _ in rb.peek(100)] == list(range(10))
    rb.ack(1, 5)
    assert [s for _, s, _ in rb.peek(100)] == [6, 7, 8, 9]
    assert rb.peek(100)[0][2] == rec(6)
    cleanup(d)


def test_flash_sees_one_write_per_block_not_per_record():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, block_records=8, max_segments=100)
    for i in range(7):
        rb.append(1, i, rec(i))
    assert [n for n in os.listdir(d) if n.endswith(".seg")] == []
    rb.append(1, 7, rec(7))
    assert len([n for n in os.listdir(d) if n.endswith(".seg")]) == 1
    cleanup(d)


def test_unacknowledged_records_survive_a_restart():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, block_records=4, max_segments=100)
    for i in range(12):
        rb.append(2, i, rec(i))
    rb.ack(2, 5)
    again = ringbuf.RingBuffer(d, block_records=4, max_segments=100)
    assert [s for _, s, _ in again.peek(100)] == [6, 7, 8, 9, 10, 11]
    cleanup(d)


def test_full_buffer_drops_the_oldest_and_counts_them():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, block_records=4, max_segments=3)
    for i in range(20):
        rb.append(1, i, rec(i))
    assert [s for _, s, _ in rb.peek(100)] == list(range(8, 20))
    assert rb.dropped == 8
    assert ringbuf.RingBuffer(d, block_records=4, max_segments=3).dropped == 8
    cleanup(d)


def test_torn_and_corrupt_writes_are_discarded_not_fatal():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, block_records=4, max_segments=100)
    for i in range(8):
        rb.append(1, i, rec(i))
    with open(d + "/0000000001-0000000008.seg.tmp", "wb") as f:
        f.write(b"\x82\x01")  # a write cut by power loss: never renamed
    segs = sorted(n for n in os.listdir(d) if n.endswith(".seg"))
    with open(d + "/" + segs[1], "r+b") as f:
        f.seek(5)
        f.write(b"\xff")  # a flipped byte in the second segment
    again = ringbuf.RingBuffer(d, block_records=4, max_segments=100)
    assert [s for _, s, _ in again.peek(100)] == [0, 1, 2, 3]
    assert again.corrupt == 1
    assert not [n for n in os.listdir(d) if n.endswith(".tmp")]
    cleanup(d)


def test_records_of_an_earlier_boot_come_first():
    d = fresh_dir()
    rb = ringbuf.RingBuffer(d, block_records=2, max_segments=100)
    rb.append(4, 70000, rec(1))
    rb.append(4, 70001, rec(2))
    rb.append(5, 0, rec(3))
    assert [(b, s) for b, s, _ in rb.peek(10)] == [(4, 70000), (4, 70001), (5, 0)]
    rb.ack(4, 70001)
    assert [(b, s) for b, s, _ in rb.peek(10)] == [(5, 0)]
    cleanup(d)
