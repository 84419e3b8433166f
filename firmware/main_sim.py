# Run the tracker on the unix port: micropython main_sim.py DATA_DIR NMEA_FILE [SECONDS]
# DATA_DIR holds config.json (as written by the provisioning tool) and the flash files.
# With SECONDS, it stops after that long once the NMEA file is exhausted and the buffer
# is empty (or the time is up), printing a JSON summary line.
import gc

gc.threshold(4096)  # collect while the code loads: it then packs without holes
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from app import Tracker, check_config  # noqa: E402
from board_sim import SimBoard  # noqa: E402


def main():
    data_dir, nmea_path = sys.argv[1], sys.argv[2]
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    with open(data_dir + "/config.json") as f:
        cfg = json.load(f)
    errors = check_config(cfg)
    if errors:
        print("config.json: " + "; ".join(errors))
        sys.exit(2)
    board = SimBoard(nmea_path, data_dir, cfg.get("sim_chunk", 512), cfg.get("sim_pace_ms", 1),
                     cfg.get("sim_ignition"))
    tracker = Tracker(board, cfg, data_dir)
    deadline = time.ticks_add(time.ticks_ms(), seconds * 1000) if seconds else None
    trace = cfg.get("sim_trace")  # print each record's key once it is on flash
    made = tracker.seq
    if trace:
        print("made", tracker.boot, made)
    while True:
        tracker.step()
        if trace and tracker.seq != made:
            made = tracker.seq
            print("made", tracker.boot, made)  # records boot, 0 .. made - 1 are on flash
        board.idle()
        if board.eof and cfg.get("sim_stop_at_eof"):
            break
        if deadline is not None:
            done = board.eof and not tracker.ring.peek(1)
            if done or time.ticks_diff(deadline, time.ticks_ms()) < 0:
                break
    tracker.mqtt.disconnect()
    summary = {"boot": tracker.boot, "seq": tracker.seq, "dropped": tracker.ring.dropped,
               "thinned": tracker.ring.thinned, "left": tracker.ring.left(),
               "sentences": tracker.parser.sentences}
    gc.collect()
    summary["heap_live"] = gc.mem_alloc()
    print(json.dumps(summary))


main()
