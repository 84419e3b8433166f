# Runs under MicroPython (not CPython): times the pure codec, or measures its heap use.
# benchmarks/codec_speed.py starts it and reads the one JSON line it prints last.
#
#   micropython codec_bench.py speed POSITIONS BATCHES MIN_MS
#   micropython codec_bench.py heap BATCH
#   micropython codec_bench.py fit decode|encode BATCH
#
# POSITIONS and BATCHES hold frames, each as a 2-byte big-endian length and the frame's
# CBOR bytes; BATCH holds the CBOR bytes of one batch frame.
import gc
import json
import sys
import time

import micropython

from protocol import frames


def read_frames(path):
    with open(path, "rb") as f:
        data = f.read()
    out = []
    i = 0
    while i < len(data):
        n = (data[i] << 8) | data[i + 1]
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out


def run_pass(fn, items, reps):
    gc.collect()
    t0 = time.ticks_us()
    for _ in range(reps):
        for item in items:
            fn(item)
    return time.ticks_diff(time.ticks_us(), t0)


def per_call_us(fn, items, min_us):
    """Microseconds per call over enough passes to take at least min_us."""
    one = max(1, run_pass(fn, items, 1))  # also the warm-up pass
    reps = max(1, (min_us + one - 1) // one)
    return run_pass(fn, items, reps) / (reps * len(items))


def speed(pos_path, batch_path, min_ms):
    min_us = min_ms * 1000
    pos_bytes = read_frames(pos_path)
    batch_bytes = read_frames(batch_path)
    pos = [frames.decode(b) for b in pos_bytes]
    batches = [frames.decode(b) for b in batch_bytes]
    return {
        "position encode": per_call_us(frames.encode, pos, min_us),
        "position decode": per_call_us(frames.decode, pos_bytes, min_us),
        "batch60 encode": per_call_us(frames.encode, batches, min_us),
        "batch60 decode": per_call_us(frames.decode, batch_bytes, min_us),
    }


def heap_use(fn, arg):
    """Heap taken by one call, with the GC off so that nothing is freed behind our back."""
    gc.collect()
    before = gc.mem_alloc()
    free = gc.mem_free()
    peak0 = micropython.mem_peak()
    gc.disable()
    try:
        result = fn(arg)
        error = None
    except MemoryError:
        result = None
        error = "MemoryError"
    allocated = gc.mem_alloc() - before
    peak_delta = micropython.mem_peak() - peak0
    gc.enable()
    gc.collect()
    kept = gc.mem_alloc() - before
    del result
    gc.collect()
    return {
        "free_before": free,
        "allocated_gc_off": allocated,
        "mem_peak_delta": peak_delta,
        "kept": kept,
        "error": error,
    }


def block_size():
    """The GC's allocation unit: every reading of gc.mem_alloc() is a multiple of it."""
    size = 0
    keep = []
    for n in (1, 3, 7, 13, 29, 61):
        gc.collect()
        keep.append(bytearray(n))
        a = gc.mem_alloc()
        while a:
            size, a = a, size % a
    return size


def heap(batch_path):
    from protocol import cbor

    with open(batch_path, "rb") as f:
        data = f.read()
    gc.collect()
    report = {
        "heap_total": gc.mem_alloc() + gc.mem_free(),
        "used_after_import": gc.mem_alloc(),
        "gc_block": block_size(),
        "frame_bytes": len(data),
    }
    report["decode"] = heap_use(frames.decode, data)
    frame = frames.decode(data)
    report["n_fixes"] = len(frame["fixes"])
    report["encode"] = heap_use(frames.encode, frame)
    report["to_wire"] = heap_use(frames.to_wire, frame)
    items = frames.to_wire(frame)
    report["dumps"] = heap_use(cbor.dumps, items)
    return report


def fit(op, batch_path, times=20):
    """Run op ``times`` times with the GC on, as on a device; MemoryError ends the run."""
    with open(batch_path, "rb") as f:
        data = f.read()
    if op == "decode":
        for _ in range(times):
            frames.decode(data)
    else:
        frame = frames.decode(data)
        for _ in range(times):
            if frames.encode(frame) != data:
                raise AssertionError("the batch does not round-trip")
    return {"op": op, "ok": times}


def main():
    mode = sys.argv[1]
    if mode == "speed":
        result = speed(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "heap":
        result = heap(sys.argv[2])
    elif mode == "fit":
        result = fit(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit("unknown mode %r" % mode)
    print(json.dumps(result))


main()
