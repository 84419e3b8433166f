"""The fence stage's cost per fix in instructions, which a busy machine does not change.

Run from the repository root, under callgrind, counting only the timed loop:

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \\
        --callgrind-out-file=/tmp/fence.cg .venv/bin/python benchmarks/fence_instructions.py

callgrind prints "Collected : N": the instructions of ``fence_tracker.track`` over the
fixes (N / fixes = instructions per fix). Two versions of the fence code compared this
way differ by what they execute, not by what else ran. The city of ``fence_cost.py``
(10,000 fences by default), 50 vans with 100 untimed fixes each to warm their states
and 200 timed; the loop runs inside ``functools.reduce`` so that callgrind can count it
alone. Without valgrind it prints the CPU time and the events it derived.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fence_cost  # noqa: E402

from fieldtrack.gateway.derive import fence_tracker  # noqa: E402
from fieldtrack.gateway.fences.index import FenceIndex  # noqa: E402
from fieldtrack.gateway.fences.loader import parse  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--fences", type=int, default=10_000, help="city fences (default 10,000)")
    ap.add_argument("--fixes", type=int, default=200, help="timed fixes per van (default 200)")
    args = ap.parse_args()
    doc, centres, _ = fence_cost.fences_doc("city", args.fences)
    index = FenceIndex(parse(doc, "benchmark"))
    anchors = [(float(x), float(y), float(r)) for x, y, r in centres[:fence_cost.ANCHORS]]
    tracks = fence_cost.device_tracks(50, 100 + args.fixes, anchors, seed=2)
    cfg = fence_tracker.FenceConfig()
    states = fence_cost.warm_states(index, fence_cost.interleave(tracks, 0, 100), 50, cfg)
    timed = fence_cost.interleave(tracks, 100, 100 + args.fixes)
    track = fence_tracker.track
    events: list[Any] = []

    def step(n: int, item: tuple[int, dict[str, Any]]) -> int:
        events.extend(track(states[item[0]], item[1], fence_cost.GROUP, index, cfg))
        return n + 1

    t0 = time.process_time()
    n = functools.reduce(step, timed, 0)
    cpu = time.process_time() - t0
    print("%d fixes, %d events, %.2f us CPU per fix" % (n, len(events), cpu / n * 1e6))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
