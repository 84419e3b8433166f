"""The tracker under MicroPython: heap peak on a long drive, bundle size, parse speed.

Runs the real application (firmware/app.py) on the unix port, from the .mpy bundle,
with ``-X heapsize=96k`` first and then larger heaps until it completes (then 4 KiB
less at a time, for the smallest heap), in two scenarios: an hour of 1 Hz NMEA with
the broker unreachable, so the flash buffer fills up and starts dropping; and a new
boot on that full buffer with the broker (a real Mosquitto) reachable, which drains it
in signed batch frames while the drive goes on; a subscriber beside it answers every
frame with a signed receipt at once (the gateway's part, without its store), so that
the tracker deletes what it sent. Then measures the time per NMEA
sentence and the size of the .mpy bundle.

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
from collections.abc import Callable
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


def _clear(data: Path) -> None:
    for leftover in ("ring", "state.json"):
        target = data / leftover
        if target.is_dir():
            for f in target.iterdir():
                f.unlink()
            target.rmdir()
        elif target.exists():
            target.unlink()


def _track(data: Path, drive: Path, heap_k: int,
           cfg: dict[str, object]) -> tuple[bool, dict[str, int], str]:
    """One run of the tracker from the bundle; (completed, summary, last error line)."""
    (data / "config.json").write_text(json.dumps(cfg))
    proc = subprocess.run(
        [MICROPYTHON, "-X", "heapsize=%dk" % heap_k, "-c", "import main_sim", str(data),
         str(drive), "600"], capture_output=True, text=True, env=env(bundle=True), timeout=900,
        cwd=data.parent)  # not the repository: "" on sys.path would find protocol/*.py there
    ok = "MemoryError" not in proc.stderr and proc.returncode == 0
    summary = json.loads(proc.stdout.strip().splitlines()[-1]) if ok else {}
    return ok, summary, (proc.stderr.strip().splitlines() or [""])[-1]


def _scenario(name: str, attempt: Callable[[int], tuple[bool, dict[str, int], str]]) -> dict:
    """Heaps of HEAPS_K until one completes, then 4 KiB less at a time: the smallest."""
    runs: dict[int, bool] = {}
    run: dict[str, int] = {}
    for heap in HEAPS_K:
        ok, summary, _ = attempt(heap)
        runs[heap] = ok
        if ok:
            run = summary
            break
    else:
        raise SystemExit("%s: the tracker did not complete with any heap tried" % name)
    smallest = heap
    while smallest > 32:
        ok, _, _ = attempt(smallest - 4)
        if not ok:
            break
        smallest -= 4
    return {"runs": runs, "run": run, "smallest": smallest}


class ReceiptEcho:
    """Answers each uplink frame of ``device`` with a signed receipt for its keys."""

    def __init__(self, port: int, device: str, key: bytes) -> None:
        import cbor2
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from fieldtrack.protocol import cose, fast, topics

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            _, inner = cose.unwrap(msg.payload, 16384)
            frame = fast.decode(inner)
            n = len(frame["fixes"]) if frame["type"] == "batch" else 1
            receipt = cbor2.dumps([6, frame["boot"], frame["seq"], n])
            client.publish(topics.downlink(device), cose.sign(receipt, key, device), qos=0)

        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="receipt-echo")
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topics.uplink(device), 1)
        self.client.on_message = on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def main() -> None:
    from conftest import Broker
    from test_firmware_e2e import write_drive

    subprocess.run(["make", "-s", "firmware"], cwd=ROOT, check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        drive = work / "drive.nmea"
        write_drive(drive, 3600)
        data = work / "flash"
        data.mkdir()
        every = {"min_period_s": 1, "max_period_s": 5, "min_distance_m": 5,
                 "min_angle_deg": 10, "min_speed_delta_kmh": 5}
        cfg: dict[str, object] = {
            "device_id": "van-mem", "key": "00" * 32,
            "mqtt": {"host": "127.0.0.1", "port": 9, "keepalive_s": 30},
            "reporting": {"moving": every, "stopped": every, "moving_kmh": 5},
            "buffer": {"capacity_records": 512, "segment_records": 32}, "sim_pace_ms": 0,
            "sim_stop_at_eof": True}

        def offline(heap: int) -> tuple[bool, dict[str, int], str]:
            _clear(data)
            return _track(data, drive, heap, cfg)

        started = time.monotonic()
        down = _scenario("broker unreachable", offline)
        elapsed = time.monotonic() - started
        # The link comes back: a new boot finds the buffer full and drains it in batch
        # frames, signed, through a real Mosquitto, while the drive goes on.
        broker = Broker(work / "mosquitto", persistence=False)
        broker.start()
        echo = ReceiptEcho(broker.port, "van-mem", bytes(32))
        try:
            online_cfg = dict(cfg, sim_stop_at_eof=False,
                              mqtt={"host": "127.0.0.1", "port": broker.port, "keepalive_s": 30})

            def drain(heap: int) -> tuple[bool, dict[str, int], str]:
                _clear(data)
                filled, _, why = _track(data, drive, 1024, cfg)
                if not filled:
                    raise SystemExit("filling the buffer failed: " + why)
                ok, summary, why = _track(data, drive, heap, online_cfg)
                return ok and summary.get("left") == 0, summary, why

            up = _scenario("broker reachable", drain)
        finally:
            echo.close()
            broker.kill()
        run = down["run"]
        runs = down["runs"]
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
    print("| broker unreachable, heaps tried (`-X heapsize=`) | %s |" % ", ".join(
        "%d KiB %s" % (k, "ok" if ok else "MemoryError") for k, ok in runs.items()))
    print("| broker unreachable, smallest heap that completes | %d KiB |" % down["smallest"])
    print("| setting | .mpy bundle, journal of 512 records in files of 32 (full), signed "
          "frames, receipts |")
    print("| records recorded / thinned / dropped when the journal was full | %d / %d / %d |"
          % (run["seq"], run.get("thinned", 0), run["dropped"]))
    print("| broker reachable (drain the full buffer in batches), heaps tried | %s |" % ", ".join(
        "%d KiB %s" % (k, "ok" if ok else "MemoryError") for k, ok in up["runs"].items()))
    print("| broker reachable, smallest heap that drains it all | %d KiB |" % up["smallest"])
    print("| live heap after the drive (`gc.mem_alloc()` after collect) | %d bytes (%.1f KiB) |"
          % (run["heap_live"], run["heap_live"] / 1024))
    print("| live heap after the drain | %d bytes (%.1f KiB) |"
          % (up["run"]["heap_live"], up["run"]["heap_live"] / 1024))
    print("| run time on the unix port (unreachable, all heaps tried) | %.1f s |" % elapsed)
    print("| NMEA parse time | %.1f us per sentence (%s, best of 5) |"
          % (us / sentences, sample.name))
    print("| .mpy bundle (firmware + protocol codec) | %d files, %d bytes (%.1f KiB) |"
          % (len(bundle), size, size / 1024))


if __name__ == "__main__":
    main()
