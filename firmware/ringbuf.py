# Store and forward: every record goes here first and leaves only when the broker
# has acknowledged it.
#
# Records (the CBOR bytes of one fix or event, keyed by (boot, seq)) collect in a RAM
# block; a full block is written to flash as one segment file, so flash sees one write
# per block, not per fix. A segment is written to a temporary name and renamed, and
# carries a CRC32, so a power cut mid-write leaves either the old state or the new one,
# never a corrupt buffer. What the broker acknowledged is recorded as a watermark
# (also written by rename). The buffer is bounded: past ``max_segments`` the oldest
# segment is dropped and its records counted. Records still in RAM are lost on a
# power cut; ``flush()`` (on low supply voltage, before sleep, on a timer) limits that.
#
# Memory: the RAM block is kept as the segment's own bytes (the CBOR of each [boot, seq,
# record] back to back in one bytearray, allocated once and reused), so a flush writes
# it as it is; reading goes one segment at a time (``records()``), never the whole
# buffer.

import binascii
import os

from protocol.cbor import dumps, head, iter_array, loads

SUFFIX = ".seg"
TMP = ".tmp"
STATE = "ring.state"
RECORD_BYTES = 48  # a fix with its key; the block grows for longer records


def _write_atomic(path, *parts):
    tmp = path + TMP
    with open(tmp, "wb") as f:
        for part in parts:
            f.write(part)
    try:
        os.remove(path)
    except OSError:
        pass
    os.rename(tmp, path)


def _key(boot, seq):
    return boot * 4294967296 + seq


class RingBuffer:
    def __init__(self, directory, block_records=32, max_segments=64):
        self.dir = directory
        self.block_records = block_records
        self.max_segments = max_segments
        self.block = bytearray(block_records * RECORD_BYTES)  # the RAM block, reused
        self.used = 0  # how much of it holds records: CBOR of [boot, seq, record] each
        self.keys = []  # the key of each record in the block
        self.ends = []  # where each record's CBOR ends in the block
        self.segments = []  # [(first key, last key, file name, records)] oldest first
        self.acked = -1  # highest key the broker acknowledged
        self.dropped = 0
        self.corrupt = 0
        try:
            os.mkdir(directory)
        except OSError:
            pass
        self._load()

    # --- persistence --------------------------------------------------------

    def _path(self, name):
        return self.dir + "/" + name

    def _load(self):
        try:
            with open(self._path(STATE), "rb") as f:
                state = loads(f.read())
            self.acked, self.dropped, self.corrupt = state[0], state[1], state[2]
        except (OSError, ValueError, IndexError, TypeError):
            pass
        names = []
        for name in os.listdir(self.dir):
            if name.endswith(TMP):  # a write that a power cut interrupted
                os.remove(self._path(name))
            elif name.endswith(SUFFIX):
                names.append(name)
        names.sort()
        for name in names:
            first, last, n = -1, -1, 0
            try:
                for b, s, _ in self._read(name):
                    last = _key(b, s)
                    first = last if n == 0 else first
                    n += 1
            except ValueError:
                n = -1
            if n < 0:
                self.corrupt += 1
                os.remove(self._path(name))
            elif last <= self.acked:
                os.remove(self._path(name))
            else:
                self.segments.append((first, last, name, n))

    def _read(self, name):
        """The [boot, seq, record] items of a segment file, decoded one at a time.

        Raises ValueError when the file is corrupt (CRC, or not CBOR). One record is
        decoded at a time: a whole segment decoded would hold 32 lists and byte strings.
        """
        path = self._path(name)
        try:
            size = os.stat(path)[6] - 4
            with open(path, "rb") as f:
                body = f.read(size) if size > 0 else b""  # one allocation, decoded in place
                crc = f.read(4)
        except OSError:
            raise ValueError(name) from None
        if size <= 0 or len(body) != size or binascii.crc32(body) & 0xFFFFFFFF \
                != int.from_bytes(crc, "big"):
            raise ValueError(name)
        return iter_array(body, 1 << 20, 4)

    def _records_of(self, name):
        """A segment's items, none when it cannot be read (counted at boot, see _load)."""
        try:
            for item in self._read(name):
                yield item
        except ValueError:
            return

    def _save_state(self):
        _write_atomic(self._path(STATE), dumps([self.acked, self.dropped, self.corrupt]))

    def flush(self):
        """Write the RAM block (if any) to flash as one segment."""
        n = len(self.keys)
        if not n:
            return
        first, last = self.keys[0], self.keys[-1]
        top = bytearray()
        head(top, 4, n)
        body = memoryview(self.block)[:self.used]
        crc = binascii.crc32(body, binascii.crc32(top)) & 0xFFFFFFFF
        name = "%010d-%010d%s" % (first >> 32, first & 0xFFFFFFFF, SUFFIX)
        _write_atomic(self._path(name), top, body, crc.to_bytes(4, "big"))
        self.used = 0
        self.keys = []
        self.ends = []
        self.segments.append((first, last, name, n))
        while len(self.segments) > self.max_segments:
            old = self.segments.pop(0)
            self.dropped += old[3]
            try:
                os.remove(self._path(old[2]))
            except OSError:
                pass
            self._save_state()

    # --- use ------------------------------------------------------------------

    def append(self, boot, seq, record):
        entry = dumps([boot, seq, record])
        end = self.used + len(entry)
        if end > len(self.block):
            self.block.extend(bytes(end - len(self.block)))
        self.block[self.used:end] = entry
        self.used = end
        self.keys.append(_key(boot, seq))
        self.ends.append(end)
        if len(self.keys) >= self.block_records:
            self.flush()

    def records(self):
        """Unacknowledged records oldest first, as (boot, seq, bytes), read lazily."""
        for seg in self.segments:
            if seg[1] <= self.acked:
                continue
            for b, s, r in self._records_of(seg[2]):
                if _key(b, s) > self.acked:
                    yield b, s, r
        start = 0
        for i in range(len(self.keys)):
            end = self.ends[i]
            if self.keys[i] > self.acked:
                yield loads(bytes(memoryview(self.block)[start:end]), 1 << 16, 4, False, ())
            start = end

    def pending(self):
        """True when records may wait to be sent (cheap: reads no segment)."""
        return bool(self.keys) or bool(self.segments)

    def peek(self, n):
        """Up to ``n`` unacknowledged records, oldest first: [(boot, seq, bytes)]."""
        out: list = []
        if n > 0:
            for rec in self.records():
                out.append(tuple(rec))
                if len(out) >= n:
                    break
        return out

    def ack(self, boot, seq):
        """The broker has everything up to (boot, seq): forget it, on flash too."""
        key = _key(boot, seq)
        if key <= self.acked:
            return
        self.acked = key
        done = 0
        while done < len(self.keys) and self.keys[done] <= key:
            done += 1
        if done:
            cut = self.ends[done - 1]
            self.block[0:self.used - cut] = self.block[cut:self.used]
            self.used -= cut
            self.keys = self.keys[done:]
            self.ends = [e - cut for e in self.ends[done:]]
        keep = []
        for seg in self.segments:
            if seg[1] <= key:
                try:
                    os.remove(self._path(seg[2]))
                except OSError:
                    pass
            else:
                keep.append(seg)
        self.segments = keep
        if keep:  # only the watermark inside a partly sent segment needs saving
            self._save_state()

    def depth(self):
        """How many records wait to be sent. Only the oldest segment can be partly sent,
        so it is the only one read."""
        n = len(self.keys)
        for i, seg in enumerate(self.segments):
            if i == 0 and seg[0] <= self.acked:
                n += sum(1 for b, s, _ in self._records_of(seg[2]) if _key(b, s) > self.acked)
            else:
                n += seg[3]
        return n
