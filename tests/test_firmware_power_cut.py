"""kill -9 the tracker's store-and-forward mid-write, many times: nothing written is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRITER = """
import sys, ringbuf
rb = ringbuf.RingBuffer(%r, capacity=100000, segment_records=16)
seq = 0
for _, s, _, _ in rb.unsent():
    seq = s + 1
while True:
    rb.append(1, seq, bytes([seq %% 256]) * 40)
    sys.stdout.write("%%d\\n" %% seq)  # on flash now: the test holds us to it
    seq += 1
"""
READER = """
import json, ringbuf
rb = ringbuf.RingBuffer(%r, capacity=100000, segment_records=16)
seqs, ok = [], True
for _, s, r, _ in rb.unsent():  # nothing sent yet: every record, one at a time
    seqs.append(s)
    ok = ok and r == bytes([s %% 256]) * 40
print(json.dumps({"seqs": seqs, "corrupt": rb.corrupt, "ok": ok}))
"""


def _env() -> dict[str, str]:
    return dict(os.environ, MICROPYPATH=".frozen:%s:%s" % (ROOT / "firmware", ROOT))


def test_kill_9_during_writes_keeps_every_record_written(micropython: str,
                                                        tmp_path: Path) -> None:
    ring = str(tmp_path / "ring")
    written = -1
    for round_ in range(8):
        proc = subprocess.Popen([micropython, "-c", WRITER % ring], env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.15 + 0.05 * round_)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        lines = out.split()
        if lines:  # (a round killed while it still loads writes nothing)
            written = int(lines[-1])
    out = subprocess.run([micropython, "-X", "heapsize=8m", "-c", READER % ring], env=_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    seqs = result["seqs"]
    assert len(seqs) > 50
    assert result["ok"], "a record came back with the wrong content"
    # Every round resumes after the last record on flash: a contiguous run, no holes,
    # no duplicates, and it reaches the last record the writer said it had written.
    assert seqs == list(range(len(seqs)))
    assert written > 0 and seqs[-1] >= written
