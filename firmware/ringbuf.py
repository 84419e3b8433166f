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

import binascii
import os

from protocol.cbor import dumps, loads

SUFFIX = ".seg"
TMP = ".tmp"
STATE = "ring.state"


def _write_atomic(path, data):
    tmp = path + TMP
    with open(tmp, "wb") as f:
        f.write(data)
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
        self.ram = []  # [(key, boot, seq, record bytes)]
        self.segments = []  # [(first key, last key, file name)] oldest first
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
            records = self._read(name)
            if records is None:
                self.corrupt += 1
                os.remove(self._path(name))
            elif not records or records[-1][0] <= self.acked:
                os.remove(self._path(name))
            else:
                self.segments.append((records[0][0], records[-1][0], name))

    def _read(self, name):
        try:
            with open(self._path(name), "rb") as f:
                data = f.read()
        except OSError:
            return None
        if len(data) < 4 or binascii.crc32(data[:-4]) & 0xFFFFFFFF != int.from_bytes(
                data[-4:], "big"):
            return None
        try:
            items = loads(data[:-4], 1 << 20, 4, False, ())
        except ValueError:
            return None
        return [(_key(b, s), b, s, r) for b, s, r in items]

    def _save_state(self):
        _write_atomic(self._path(STATE), dumps([self.acked, self.dropped, self.corrupt]))

    def flush(self):
        """Write the RAM block (if any) to flash as one segment."""
        pending = [r for r in self.ram if r[0] > self.acked]
        self.ram = []
        if not pending:
            return
        body = dumps([[b, s, r] for _, b, s, r in pending])
        crc = (binascii.crc32(body) & 0xFFFFFFFF).to_bytes(4, "big")
        name = "%010d-%010d%s" % (pending[0][1], pending[0][2], SUFFIX)
        _write_atomic(self._path(name), body + crc)
        self.segments.append((pending[0][0], pending[-1][0], name))
        while len(self.segments) > self.max_segments:
            first, last, old = self.segments.pop(0)
            records = self._read(old)
            self.dropped += len(records) if records else 0
            try:
                os.remove(self._path(old))
            except OSError:
                pass
            self._save_state()

    # --- use ------------------------------------------------------------------

    def append(self, boot, seq, record):
        self.ram.append((_key(boot, seq), boot, seq, bytes(record)))
        if len(self.ram) >= self.block_records:
            self.flush()

    def peek(self, n):
        """Up to ``n`` unacknowledged records, oldest first: [(boot, seq, bytes)]."""
        out: list = []
        for first, last, name in self.segments:
            if len(out) >= n:
                break
            for key, b, s, r in self._read(name) or ():
                if key > self.acked and len(out) < n:
                    out.append((b, s, r))
        for key, b, s, r in self.ram:
            if key > self.acked and len(out) < n:
                out.append((b, s, r))
        return out

    def ack(self, boot, seq):
        """The broker has everything up to (boot, seq): forget it, on flash too."""
        key = _key(boot, seq)
        if key <= self.acked:
            return
        self.acked = key
        self.ram = [r for r in self.ram if r[0] > key]
        keep = []
        for first, last, name in self.segments:
            if last <= key:
                try:
                    os.remove(self._path(name))
                except OSError:
                    pass
            else:
                keep.append((first, last, name))
        self.segments = keep
        if keep:  # only the watermark inside a partly sent segment needs saving
            self._save_state()

    def depth(self):
        """How many records wait to be sent (an upper bound for partly sent segments)."""
        n = sum(1 for r in self.ram if r[0] > self.acked)
        for first, last, name in self.segments:
            records = self._read(name) or ()
            n += sum(1 for r in records if r[0] > self.acked)
        return n
