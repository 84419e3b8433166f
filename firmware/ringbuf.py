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
# A record's key is boot * 2^32 + seq: keys grow in the order of writing. Three places
# in the journal: ``done`` (every record up to it is covered by a receipt), what was
# sent (``sent``, the key of the last record published since the last rewind) and the
# end. Receipts that arrive out of order are kept as a few key ranges above ``done``;
# the watermark then advances over the records in order while each is covered. A
# segment wholly at or below it is deleted; ``done`` is saved (ring.state, written by
# rename) when that happens, so a restart resends at most one segment's worth of
# records the gateway already has, which it answers as duplicates.
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
        self.done = -1  # watermark: every record up to this key is confirmed
        self.done_pos = (1, 0)  # where the scan for the watermark resumes
        self.got = []  # [lo, hi] key ranges confirmed above the watermark, sorted
        self.sent = -1  # the key of the last record sent since the last rewind
        self.cursor = (1, 0)  # where the next record to send is read from
        self.dropped = 0
        self.thinned = 0
        self.corrupt = 0  # records cut off at boot (torn writes)
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
        try:
            with open(self.dir + "/" + STATE, "rb") as f:
                st = loads(f.read())
            self.done, self.dropped, self.thinned, self.corrupt, self.thin_seg = st[:5]
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
            records, size, last_key, whole = self._check(n)
            if not whole:
                self._truncate(n, size)
            if records and last_key <= self.done and n != numbers[-1]:
                os.remove(self._path(n))  # confirmed: the delete was cut short
                continue
            kept.append(n)
            self.count += records
            if n == numbers[-1]:
                self.last, self.last_n, self.last_size = n, records, size
        self.first = kept[0] if kept else self.last
        self.done_pos = self.cursor = (self.first, 0)
        self.sent = self.done

    def _check(self, n):
        """(records, bytes of whole records, last key, True when the file is whole)."""
        records, pos, last_key = 0, 0, -1
        try:
            with open(self._path(n), "rb") as f:
                while True:
                    item = self._read(f)
                    if item is None:
                        return records, pos, last_key, True
                    body_len = item
                    try:
                        b, s, _ = loads(memoryview(self.buf)[:body_len], 1 << 16, 4, False, ())
                    except (ValueError, TypeError):
                        break
                    last_key = key_of(b, s)
                    records += 1
                    pos += HEADER + body_len
        except (OSError, ValueError):
            pass
        return records, pos, last_key, False

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

    def _save_state(self):
        _write_atomic(self.dir + "/" + STATE, dumps([self.done, self.dropped, self.thinned,
                                                     self.corrupt, self.thin_seg]))

    def _remove(self, n):
        try:
            os.remove(self._path(n))
        except OSError:
            pass

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

    def rewrite(self, n, data):
        """Replace segment ``n`` (thinned) by ``data``, by rename."""
        _write_atomic(self._path(n), data)
        if self.cursor[0] == n:
            self.cursor = (n, 0)  # offsets moved; ``sent`` skips what went out already
        if self.done_pos[0] == n:
            self.done_pos = (n, 0)

    def flush(self):
        """Nothing waits in RAM; kept for the callers that ask before a reset or sleep."""
        if hasattr(os, "sync"):
            os.sync()

    # --- sending ------------------------------------------------------------------------

    def is_confirmed(self, k):
        if k <= self.done:
            return True
        for lo, hi in self.got:
            if lo <= k <= hi:
                return True
        return False

    def _from(self, n, off):
        """(boot, seq, record, (segment, offset after it, key)) from a place, onwards."""
        while n <= self.last:
            records = self._records(n, off)
            try:
                for b, s, r, end in records:
                    yield b, s, r, (n, end, key_of(b, s))
            finally:
                records.close()  # no refcounting on MicroPython: close the file now
            n, off = n + 1, 0

    def unsent(self):
        """Records not sent since the last rewind and not confirmed, oldest first, as
        (boot, seq, record, position); ``mark_sent(position)`` after publishing. Close
        the generator when stopping early."""
        items = self._from(self.cursor[0], self.cursor[1])
        try:
            for item in items:
                k = item[3][2]
                if k > self.sent and not self.is_confirmed(k):
                    yield item
        finally:
            items.close()

    def left(self):
        """How many records no receipt covers (reads the journal from the watermark)."""
        c = 0
        for item in self._from(self.done_pos[0], self.done_pos[1]):
            if not self.is_confirmed(item[3][2]):
                c += 1
        return c

    def peek(self, n):
        """Up to ``n`` unconfirmed records, oldest first: [(boot, seq, bytes)]."""
        out = []
        if n > 0:
            records = self._from(self.done_pos[0], self.done_pos[1])
            for b, s, r, pos in records:
                if not self.is_confirmed(pos[2]):
                    out.append((b, s, r))
                    if len(out) >= n:
                        break
            records.close()
        return out

    def skip_sent(self):
        """Nothing from the cursor on needs sending (all sent or confirmed): move it to
        the end, so that ``pending`` reads no flash until a record is appended."""
        self.cursor = (self.last, self.last_size)

    def mark_sent(self, position):
        n, off, k = position
        self.cursor = (n, off)
        self.sent = k

    def pending(self):
        """True when records may wait to be sent (reads no flash)."""
        n, off = self.cursor
        return n < self.last or (n == self.last and off < self.last_size)

    def unconfirmed(self):
        """True when records were sent and no receipt covers them yet."""
        return self.sent > self.done

    def rewind(self):
        """Send again from the oldest unconfirmed record (a reconnect, a receipt overdue)."""
        self.cursor = self.done_pos
        self.sent = self.done

    def depth(self):
        """Records on flash that no receipt has covered (approximately: those confirmed
        in a partly confirmed oldest segment count until it goes)."""
        return self.count

    # --- receipts -------------------------------------------------------------------------

    def confirm(self, boot, seq, n):
        """A receipt for (boot, seq) .. (boot, seq + n - 1). True when it covered a record
        not confirmed before (progress)."""
        lo = key_of(boot, seq)
        hi = lo + n - 1
        if hi <= self.done:
            return False
        if lo <= self.done:
            lo = self.done + 1
        for r in self.got:
            if r[0] <= lo and hi <= r[1]:
                return False
        got = [r for r in self.got if r[1] < lo - 1 or r[0] > hi + 1]
        for r in self.got:
            if not (r[1] < lo - 1 or r[0] > hi + 1):
                lo, hi = min(lo, r[0]), max(hi, r[1])
        got.append([lo, hi])
        got.sort()
        self.got = got[:MAX_RANGES]  # past that, the highest are confirmed again later
        self._advance()
        return True

    def _advance(self):
        """Move the watermark over the records in order while each is covered; delete
        the segments it passes."""
        n, off = self.done_pos
        deleted = False
        while n <= self.last:
            complete = True
            records = self._records(n, off)
            for b, s, _, end in records:
                k = key_of(b, s)
                if k > self.done and not self.is_confirmed(k):
                    complete = False
                    break
                if k > self.done:
                    self.done = k
                off = end
            records.close()  # no refcounting on MicroPython: close the file now
            if not complete:
                break
            if n == self.last:
                if off < self.last_size:
                    break
                if self.last_n:  # the segment being written is confirmed too: start anew
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
        self.done_pos = (n, off)
        if self.cursor < self.done_pos:
            self.cursor = self.done_pos
        self.got = [r for r in self.got if r[1] > self.done]
        if deleted:  # the watermark on flash must pass what is gone
            self._save_state()

    def _count_of(self, n):
        if n == self.last:
            return self.last_n
        c = 0
        for _ in self._records(n):
            c += 1
        return c
