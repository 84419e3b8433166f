"""The tracker under MicroPython: heap peak on a long drive, bundle size, parse speed.

Runs the real application (firmware/app.py) on the unix port, from the .mpy bundle,
with ``-X heapsize=96k`` first and then larger heaps until it completes, through an
hour of 1 Hz NMEA with the broker unreachable, so the flash buffer fills up and
starts dropping: the worst case for memory. Then
measures the time per NMEA sentence and the size of the .mpy bundle.

    .venv/bin/python benchmarks/firmware_memory.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
MICROPYTHON = str(Path(sys.executable).parent / "micropython")
HEAPS_K = (96, 112, 128, 144, 160, 192, 256)

PARSE = """
import time, nmea
data = open(%r, "rb").read()
best = None
for _ in range(5):
    p = nmea.Parser()
    t0 = time.ticks_us()
    p.feed(data)
    p.flush()
    dt = time.ticks_diff(time.ticks_us(), t0)
    best = dt if best is None or dt < best else best
print(best, p.sentences)
"""


def env(bundle: bool = False) -> dict[str, str]:
    """Source modules, or the compiled .mpy bundle as on the device (no compiler RAM)."""
    path = str(ROOT / "build" / "firmware") if bundle else "%s:%s" % (ROOT / "firmware", ROOT)
    return dict(os.environ, MICROPYPATH=".frozen:" + path)


def main() -> None:
    from test_firmware_e2e import write_drive

    subprocess.run(["make", "-s", "firmware"], cwd=ROOT, check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_drive(work / "drive.nmea", 3600)
        data = work / "flash"
        data.mkdir()
        every = {"min_period_s": 1, "max_period_s": 5, "min_distance_m": 5,
                 "min_angle_deg": 10, "min_speed_delta_kmh": 5}
        cfg = {"device_id": "van-mem", "key": "00" * 32,
               "mqtt": {"host": "127.0.0.1", "port": 9, "keepalive_s": 30},
               "reporting": {"moving": every, "stopped": every, "moving_kmh": 5},
               "buffer": {"block_records": 32, "max_segments": 16}, "sim_pace_ms": 0,
               "sim_stop_at_eof": True}
        (data / "config.json").write_text(json.dumps(cfg))
        runs = {}
        for heap in HEAPS_K:  # the smallest heap that completes the drive
            for leftover in ("ring", "state.json"):
                target = data / leftover
                if target.is_dir():
                    for f in target.iterdir():
                        f.unlink()
                    target.rmdir()
                elif target.exists():
                    target.unlink()
            started = time.monotonic()
            proc = subprocess.run(
                [MICROPYTHON, "-X", "heapsize=%dk" % heap, "-c", "import main_sim", str(data),
                 str(work / "drive.nmea"), "600"],
                capture_output=True, text=True, env=env(bundle=True), timeout=900)
            elapsed = time.monotonic() - started
            runs[heap] = "MemoryError" not in proc.stderr and proc.returncode == 0
            if runs[heap]:
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                break
        else:
            raise SystemExit("the tracker did not complete the drive with any heap tried")
        drive_bytes = (work / "drive.nmea").stat().st_size
        capture = ROOT.parent / "shared" / "corpus" / "gpsd" / "telit-he910.log"
        sample = capture if capture.exists() else work / "drive.nmea"
        out = subprocess.run([MICROPYTHON, "-c", PARSE % str(sample)], capture_output=True,
                             text=True, env=env(), timeout=300)
        us, sentences = (int(x) for x in out.stdout.split())
    bundle = sorted((ROOT / "build" / "firmware").rglob("*.mpy"))
    size = sum(p.stat().st_size for p in bundle)
    print("machine: %d cores, Python %s, %s" % (os.cpu_count() or 0, platform.python_version(),
                                                subprocess.run([MICROPYTHON, "-c",
                                                 "import sys; print(sys.version)"],
                                                 capture_output=True, text=True).stdout.strip()))
    print()
    print("| measure | value |")
    print("|---|---|")
    print("| drive | 3,600 fixes at 1 Hz (%d KiB of NMEA, %d sentences) |"
          % (drive_bytes // 1024, run["sentences"]))
    print("| heaps tried (`-X heapsize=`) | %s |" % ", ".join(
        "%d KiB %s" % (k, "ok" if ok else "MemoryError") for k, ok in runs.items()))
    print("| setting | .mpy bundle, broker unreachable, buffer 16 x 32 records (full) |")
    print("| records recorded / dropped when the buffer was full | %d / %d |"
          % (run["seq"], run["dropped"]))
    print("| live heap after the drive (`gc.mem_alloc()` after collect) | %d bytes (%.1f KiB) |"
          % (run["heap_live"], run["heap_live"] / 1024))
    print("| run time on the unix port | %.1f s |" % elapsed)
    print("| NMEA parse time | %.1f us per sentence (%s, best of 5) |"
          % (us / sentences, sample.name))
    print("| .mpy bundle (firmware + protocol codec) | %d files, %d bytes (%.1f KiB) |"
          % (len(bundle), size, size / 1024))


if __name__ == "__main__":
    main()
