# Boot entry on the ESP32: load config.json, then run the tracker. Three crashes in a
# row within a few minutes of boot put the device in safe mode: no tracker, just the
# REPL over USB, so a technician can reflash or fix the config.
import gc
import json
import os
import sys
import time

SAFE_FILE = "crashes.json"


def _crashes():
    try:
        with open(SAFE_FILE) as f:
            return json.load(f)
    except (OSError, ValueError):
        return 0


def _set_crashes(n):
    with open(SAFE_FILE, "w") as f:
        json.dump(n, f)


def main():
    crashes = _crashes()
    if crashes >= 3:
        print("fieldtrack: safe mode after %d crashes; delete %s to leave it" % (crashes, SAFE_FILE))
        return
    _set_crashes(crashes + 1)
    gc.threshold(4096)  # collect while the code loads: it then packs without holes
    from app import Tracker, check_config
    from board_esp32 import Esp32Board

    with open("config.json") as f:
        cfg = json.load(f)
    errors = check_config(cfg)
    if errors:
        print("fieldtrack: config.json: " + "; ".join(errors))
        return
    try:
        os.mkdir("data")
    except OSError:
        pass
    board = Esp32Board(cfg)
    tracker = Tracker(board, cfg, "data")
    started = time.ticks_ms()
    while True:
        tracker.step()
        board.idle()
        if crashes and time.ticks_diff(time.ticks_ms(), started) > 300_000:
            _set_crashes(0)  # five minutes up: this boot is healthy
            crashes = 0


try:
    main()
except Exception as e:  # noqa: BLE001 -- log, then reset: every record is on flash already
    sys.print_exception(e)
    time.sleep(5)
    import machine

    machine.reset()
