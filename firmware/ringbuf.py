# Store and forward on flash: a record is written to flash before it can be sent and
# stays there until a receipt from the gateway covers it.
#
# The store is a journal of numbered segment files ("00000001.jnl", ...), each an
# append-only run of records. A record on flash is a 6-byte header (length of the body,
# 2 bytes; CRC32 of the body, 4 bytes) and the body, the CBOR of [boot, seq, record].
# Appending is one write and a close: nothing waits in RAM, so a crash or power cut
# loses at most the record being written, which the scan at boot cuts off (the segment
# is truncated at its first record whose length or CRC does not check).
#
# Places in the journal are (segment, offset): they grow in the order of writing, which
# keys (boot, seq) need not do (a new era after a lost state may start at a lower boot).
# ``done`` is the watermark: every record before it is covered by a receipt. ``cursor``
# is where the next record to send is read; a rewind moves it back to ``done``. Receipts
# are kept as a few key ranges (``got``); the watermark advances over the records in
# order while each is covered, and segments wholly before it are deleted. ``done`` is
# saved (ring.state, by rename) when that happens, so a restart resends at most one
# segment's worth of records the gateway already has; it answers them as duplicates.
#
# Room: at ``capacity`` records the oldest segments are thinned (``thinning.py``, loaded
# only then) or, as a last resort, dropped (``dropped``).
#
# Memory: no record and no segment table is held in RAM; reading goes one record at a
# time through one reused buffer.

import binascii
import os
import sys

from protocol.cbor import dumps, loads

SUFFIX = ".jnl"
TMP = ".tmp"
STATE = "ring.state"
HEADER = 6
MAX_RANGES = 16


def key_of(boot, seq):
    return boot * 4294967296 + seq


def _write_atomic(path, data):
    """Write a file by rename over the old one: a crash leaves the old or the new."""
    tmp = path + TMP
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
    if hasattr(os, "sync"):
        os.sync()
    os.rename(tmp, path)


def _frame(body):
    return len(body).to_bytes(2, "big") + \
        (binascii.crc32(body) & 0xFFFFFFFF).to_bytes(4, "big") + body


class RingBuffer:
    def __init__(self, directory, capacity=30000, segment_records=128):
        self.dir = directory
        self.capacity = max(capacity, 2 * segment_records)
        self.seg_records = segment_records
        self.buf = bytearray(256)  # one record body at a time, grown when one is longer
        self.first = 1  # the oldest segment on flash
        self.last = 1  # the segment appended to
        self.last_n = 0  # records in it
        self.last_size = 0  # its bytes
        self.count = 0  # records on flash, all segments
        self.done = (1, 0)  # watermark: every record before it is confirmed
        self.got = []  # [lo, hi] key ranges from receipts, newest last
        self.cursor = (1, 0)  # where the next record to send is read
        self.dropped = 0
        self.thinned = 0
        self.corrupt = 0  # segments cut short at boot (torn writes)
        self.thin_seg = 0  # the next segment to thin
        try:
            os.mkdir(directory)
        except OSError:
            pass
        self._load()

    # --- files ----------------------------------------------------------------------

    def _path(self, n):
        return "%s/%08d%s" % (self.dir, n, SUFFIX)

    def _load(self):
        done = (0, 0)
        try:
            with open(self.dir + "/" + STATE, "rb") as f:
                st = loads(f.read())
            done = (st[0], st[1])
            self.dropped, self.thinned, self.corrupt, self.thin_seg = st[2:6]
        except (OSError, ValueError, IndexError, TypeError):
            pass
        numbers = []
        for name in os.listdir(self.dir):
            if name.endswith(TMP):  # a rewrite that a crash interrupted: the old file stands
                os.remove(self.dir + "/" + name)
            elif name.endswith(SUFFIX):
                try:
                    numbers.append(int(name[:-len(SUFFIX)]))
                except ValueError:
                    pass
        numbers.sort()
        kept = []
        for n in numbers:
            if n < done[0]:
                os.remove(self._path(n))  # confirmed: the delete was cut short
                continue
            records, size, whole = self._check(n)
            if not whole:
                self._truncate(n, size)
            kept.append(n)
            self.count += records
            self.last, self.last_n, self.last_size = n, records, size
        if not kept:  # never reuse a number the saved watermark may point past
            self.last = max(1, done[0])
        self.first = kept[0] if kept else self.last
        if done[0] < self.first:
            done = (self.first, 0)
        self.done = self.cursor = done

    def _check(self, n):
        """(records, bytes of whole records, True when the file is whole)."""
        records, pos = 0, 0
        try:
            with open(self._path(n), "rb") as f:
                while True:
                    body_len = self._read(f)
                    if body_len is None:
                        return records, pos, True
                    loads(memoryview(self.buf)[:body_len], 1 << 16, 4, False, ())
                    records += 1
                    pos += HEADER + body_len
        except (OSError, ValueError, TypeError):
            pass
        return records, pos, False

    def _read(self, f):
        """The next record of an open segment into ``self.buf``: its body length, None
        at the end; ValueError for a torn or corrupt record."""
        head = f.read(HEADER)
        if not head:
            return None
        if len(head) < HEADER:
            raise ValueError("torn header")
        n = int.from_bytes(head[:2], "big")
        if n > len(self.buf):
            self.buf = bytearray(n)
        view = memoryview(self.buf)[:n]
        if f.readinto(view) != n or binascii.crc32(view) & 0xFFFFFFFF \
                != int.from_bytes(head[2:], "big"):
            raise ValueError("bad record")
        return n

    def _truncate(self, n, size):
        """Keep the first ``size`` bytes of a segment (its whole records)."""
        path = self._path(n)
        with open(path, "rb") as f:
            keep = f.read(size)
        self.corrupt += 1
        _write_atomic(path, keep)

    def _records(self, n, off=0):
        """(boot, seq, record, offset after it) of segment ``n`` from ``off``."""
        try:
            f = open(self._path(n), "rb")
        except OSError:
            return
        try:
            f.seek(off)
            while True:
                try:
                    body_len = self._read(f)
                except ValueError:
                    return  # cut off at the next boot's scan
                if body_len is None:
                    return
                off += HEADER + body_len
                b, s, r = loads(memoryview(self.buf)[:body_len], 1 << 16, 4, False, ())
                yield b, s, r, off
        finally:
            f.close()

    def _from(self, place):
        """(boot, seq, record, place after it) from ``place`` to the end."""
        n, off = place
        while n <= self.last:
            records = self._records(n, off)
            try:
                for b, s, r, end in records:
                    yield b, s, r, (n, end)
            finally:
                records.close()  # no refcounting on MicroPython: close the file now
            n, off = n + 1, 0

    def _save_state(self):
        _write_atomic(self.dir + "/" + STATE, dumps([
            self.done[0], self.done[1], self.dropped, self.thinned, self.corrupt,
            self.thin_seg]))

    def _remove(self, n):
        try:
            os.remove(self._path(n))
        except OSError:
            pass

    def _count_of(self, n):
        if n == self.last:
            return self.last_n
        c = 0
        for _ in self._records(n):
            c += 1
        return c

    # --- writing ----------------------------------------------------------------------

    def append(self, boot, seq, record):
        """Put a record on flash; it is there when this returns."""
        if self.last_n >= self.seg_records:
            self.last += 1
            self.last_n = self.last_size = 0
        if self.count >= self.capacity:
            import thinning  # loaded only while the journal is full, dropped after

            try:
                while self.count >= self.capacity:
                    thinning.make_room(self)
            finally:
                sys.modules.pop("thinning", None)
        data = self.encode(boot, seq, record)
        with open(self._path(self.last), "ab") as f:
            f.write(data)
        self.last_n += 1
        self.last_size += len(data)
        self.count += 1

    def encode(self, boot, seq, record):
        """A record as it is on flash: header and CBOR."""
        return _frame(dumps([boot, seq, record]))

    def rewrite(self, n, data, moved):
        """Replace segment ``n`` (thinned) by ``data``, by rename; ``moved`` maps the old
        offsets after records to the new ones, for the places that point into it."""
        _write_atomic(self._path(n), data)
        if n == self.last:
            self.last_size = len(data)
        if self.cursor[0] == n:
            self.cursor = (n, moved.get(self.cursor[1], 0))
        if self.done[0] == n:
            self.done = (n, moved.get(self.done[1], 0))
        if self.cursor < self.done:
            self.cursor = self.done

    def flush(self):
        """Nothing waits in RAM; kept for the callers that ask before a reset or sleep."""
        if hasattr(os, "sync"):
            os.sync()

    # --- sending ------------------------------------------------------------------------

    def is_confirmed(self, k):
        """True when a receipt still held covers key ``k`` (records before the watermark
        are confirmed by their place, whatever this says)."""
        for lo, hi in self.got:
            if lo <= k <= hi:
                return True
        return False

    def unsent(self):
        """Records from the cursor that no receipt covers, oldest first, as
        (boot, seq, record, place after it); ``mark_sent(place)`` after publishing.
        Close the generator when stopping early."""
        items = self._from(self.cursor)
        try:
            for item in items:
                if not self.is_confirmed(key_of(item[0], item[1])):
                    yield item
        finally:
            items.close()

    def mark_sent(self, place):
        self.cursor = place

    def skip_sent(self):
        """Nothing from the cursor on needs sending (all sent or confirmed): move it to
        the end, so that ``pending`` reads no flash until a record is appended."""
        self.cursor = (self.last, self.last_size)

    def pending(self):
        """True when records may wait to be sent (reads no flash)."""
        return self.cursor < (self.last, self.last_size)

    def unconfirmed(self):
        """True when records were sent and no receipt covers them yet."""
        return self.cursor > self.done

    def rewind(self):
        """Send again from the oldest unconfirmed record (a reconnect, a receipt overdue)."""
        self.cursor = self.done

    def depth(self):
        """Records on flash (those confirmed in a partly confirmed oldest segment count
        until it goes)."""
        return self.count

    def left(self):
        """How many records no receipt covers (reads the journal from the watermark)."""
        c = 0
        for b, s, _, _ in self._from(self.done):
            if not self.is_confirmed(key_of(b, s)):
                c += 1
        return c

    def peek(self, n):
        """Up to ``n`` unconfirmed records, oldest first: [(boot, seq, bytes)]."""
        out = []
        if n > 0:
            records = self._from(self.done)
            for b, s, r, _ in records:
                if not self.is_confirmed(key_of(b, s)):
                    out.append((b, s, r))
                    if len(out) >= n:
                        break
            records.close()
        return out

    # --- receipts -------------------------------------------------------------------------

    def confirm(self, boot, seq, n):
        """A receipt for (boot, seq) .. (boot, seq + n - 1). True when it covered keys
        not covered before (progress)."""
        lo = key_of(boot, seq)
        hi = lo + n - 1
        for r in self.got:
            if r[0] <= lo and hi <= r[1]:
                return False
        keep = []
        for r in self.got:
            if r[1] < lo - 1 or r[0] > hi + 1:
                keep.append(r)
            else:  # overlapping or adjacent: merged into the new range
                lo, hi = min(lo, r[0]), max(hi, r[1])
        keep.append([lo, hi])
        self.got = keep[-MAX_RANGES:]  # the oldest go first: behind the watermark by then
        self._advance()
        return True

    def _advance(self):
        """Move the watermark over the records in order while each is covered; delete
        the segments it passes."""
        n, off = self.done
        deleted = False
        while n <= self.last:
            complete = True
            records = self._records(n, off)
            for b, s, _, end in records:
                if not self.is_confirmed(key_of(b, s)):
                    complete = False
                    break
                off = end
            records.close()  # no refcounting on MicroPython: close the file now
            if not complete:
                break
            if n == self.last:
                if off >= self.last_size and self.last_n:
                    # the segment being written is confirmed too: start a new one
                    self._remove(n)
                    self.count -= self.last_n
                    self.last += 1
                    self.last_n = self.last_size = 0
                    self.first = self.last
                    n, off = self.last, 0
                    deleted = True
                break
            self.count -= self._count_of(n)
            self._remove(n)
            n, off = n + 1, 0
            self.first = n
            deleted = True
        self.done = (n, off)
        if self.cursor < self.done:
            self.cursor = self.done
        if self.done == (self.last, self.last_size):
            self.got = []  # everything on flash is confirmed
        if deleted:  # the watermark on flash must pass what is gone
            self._save_state()
