"""The pure codec passes the same vectors under the real MicroPython binary."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "micropython" / "check_codec.py"
VECTORS = json.loads((ROOT / "protocol" / "vectors" / "v1.json").read_text())


def run(micropython: str, *args: str) -> dict[str, object]:
    env = dict(os.environ, MICROPYPATH=".frozen:" + str(ROOT))
    proc = subprocess.run(
        [micropython, "-X", "heapsize=4m", str(SCRIPT), *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_vectors_pass_under_micropython(micropython: str) -> None:
    result = run(micropython, str(ROOT / "protocol" / "vectors" / "v1.json"))
    assert result["failures"] == []
    counts = {k: len(VECTORS[k]) for k in ("valid", "invalid", "signed")}
    counts["downlink"] = len(VECTORS["valid"])
    assert result["checked"] == counts


# What a tracker runs for each downlink message: the signed receipt of the vectors is
# verified and decoded without loading the codec of the frames a tracker never receives.
TRACKER_DOWNLINK = """
import sys
from protocol import cose, frames
mac, inner = cose.unwrap(bytes.fromhex(%r), frames.MAX_FRAME_BYTES)
r = frames.decode_downlink(inner)
print(mac.verify(bytes.fromhex(%r)), r["type"], r["boot"], r["seq"], r["n"], len(r),
      "protocol.frames_other" in sys.modules)
"""


def test_tracker_decodes_a_signed_receipt_without_the_other_frames(micropython: str) -> None:
    vector = next(v for v in VECTORS["signed"] if v["name"].startswith("signed receipt"))
    env = dict(os.environ, MICROPYPATH=".frozen:" + str(ROOT))
    script = TRACKER_DOWNLINK % (vector["hex"], vector["key"])
    proc = subprocess.run([micropython, "-X", "heapsize=256k", "-c", script],
                          capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "receipt", "3", "1207", "1", "5", "False"]


def test_appendix_a_passes_under_micropython(micropython: str, corpus_dir: Path) -> None:
    appendix = corpus_dir / "cbor" / "appendix_a.json"
    result = run(micropython, str(ROOT / "protocol" / "vectors" / "v1.json"), str(appendix))
    assert result["failures"] == []
    bignums = ("c249010000000000000000", "c349010000000000000000")
    expected = [e for e in json.loads(appendix.read_text())
                if "decoded" in e and e["hex"] not in bignums]
    assert result["appendix"] == len(expected)


def test_micropython_is_really_micropython(micropython: str) -> None:
    proc = subprocess.run([micropython, "-c", "import sys; print(sys.implementation.name)"],
                          capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == "micropython"


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
