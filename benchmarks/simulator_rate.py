"""Frames per second the fleet simulator sustains with 10,000 devices; its CPU and memory.

Run from the repository root:

    .venv/bin/python benchmarks/simulator_rate.py [--devices 10000] [--seconds 60]

The script starts its own Mosquitto on a free port (no persistence, nobody subscribed:
the broker acknowledges and drops), registers the devices in a fresh store so that
every frame is signed as in the field, and runs ``fieldtrack simulate`` as a child
process, twice:

- ``real time`` (speedup 1): the load that many vans put on a broker, and its cost;
- ``saturated`` (speedup 60): more frames due than one process can publish, so the
  simulation falls behind its clock and the rate it reaches is its ceiling. This run
  is repeated (``--rounds``); on a shared machine the best round is the one where the
  simulator had its core to itself, and CPU per frame is the steadier figure.

The child prints a progress line every 5 s; at each one the script samples the
child's CPU time and resident memory from /proc. Rates and CPU are taken over the
steady window up to the last sample: the start, when every device boots and publishes
its presence, boot event, status and first fix, is left out (the saturated runs from
their second sample, the real-time run from the first sample at which it has caught
up with its clock).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fieldtrack.tools.simulate.config import FleetConfig, device_ids  # noqa: E402
from fieldtrack.tools.simulate.register import register_devices  # noqa: E402

CLI = ("import sys\nfrom fieldtrack.tools.cli import cli, main\n"
       "from fieldtrack.tools.simulate.command import simulate\n"
       "if 'simulate' not in cli.commands:\n    cli.add_command(simulate)\n"
       "sys.exit(main())\n")
PROGRESS = re.compile(r"simulate: ([\d.]+) s: (\d+) messages acked .* simulated (-?\d+) s, "
                      r"([\d.]+) s behind")
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) in MB."""
    values = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def machine() -> str:
    model = platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next(ln.split(":", 1)[1].strip() for ln in info.splitlines()
                     if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return "%s, %d logical cores; Python %s; paho-mqtt %s" % (
        model, os.cpu_count() or 0, platform.python_version(), _version("paho-mqtt"))


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def start_broker(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = directory / "mosquitto.conf"
    conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n" % port)
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start on port %d" % port)


def run(name: str, devices: int, seconds: float, speedup: float, port: int, store: Path,
        broker_pid: int) -> dict[str, float | str]:
    args = [sys.executable, "-c", CLI, "simulate", "--devices", str(devices), "--duration",
            str(seconds), "--speedup", str(speedup), "--broker", "127.0.0.1:%d" % port,
            "--store", str(store)]
    started = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []  # wall, acked, simulator cpu, broker cpu, rss, sim s, lag
    ready = 0.0
    assert proc.stderr is not None
    for line in proc.stderr:
        if "devices ready in" in line:
            ready = float(line.split("ready in ")[1].split(" s")[0])
        m = PROGRESS.search(line)
        if m and proc.poll() is None:
            rss, _ = memory_mb(proc.pid)
            samples.append((float(m.group(1)), int(m.group(2)), cpu_s(proc.pid),
                            cpu_s(broker_pid), rss, int(m.group(3)), float(m.group(4))))
        if m is None and "devices ready" not in line and line.strip():
            print("  " + line.rstrip(), file=sys.stderr)
    usage = os.wait4(proc.pid, 0)[2]
    total_wall = time.monotonic() - started
    if len(samples) < 3:
        raise SystemExit("%s: too few progress samples (%d)" % (name, len(samples)))
    # Saturated runs never catch up; a real-time run's window starts once it has caught up
    # with the start-up burst (every device's presence, boot event, status and first fix).
    a = samples[1] if speedup > 1 else next((x for x in samples[1:-2] if x[6] <= 1.0),
                                            samples[1])
    b = samples[-1]
    window = b[0] - a[0]
    return {
        "name": name, "speedup": speedup, "window_s": window,
        "frames_per_s": (b[1] - a[1]) / window,
        "cpu_pct": 100 * (b[2] - a[2]) / window,
        "broker_cpu_pct": 100 * (b[3] - a[3]) / window,
        "rss_mb": b[4], "peak_rss_mb": usage.ru_maxrss / 1024,
        "sim_per_wall": (b[5] - a[5]) / window, "lag_s": b[6],
        "build_s": ready, "total_cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": total_wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--saturated-speedup", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3, help="saturated runs")
    opts = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        broker, port = start_broker(Path(tmp))
        try:
            store = Path(tmp) / "fieldtrack.db"
            t = time.monotonic()
            register_devices(store, device_ids(FleetConfig(devices=opts.devices)))
            registered = time.monotonic() - t
            runs = [("real time", 1.0)] + [("saturated, round %d" % (n + 1),
                                            opts.saturated_speedup) for n in range(opts.rounds)]
            results = [run(name, opts.devices, opts.seconds, speedup, port, store, broker.pid)
                       for name, speedup in runs]
        finally:
            broker.terminate()
            broker.wait(10)
    load_after = os.getloadavg()[0]
    print("Fleet simulator, %d devices, signed frames, QoS 1, one paho client, at most 1000 "
          "in flight; %s; %.0f s runs; load average before/after %.2f / %.2f"
          % (opts.devices, machine(), opts.seconds, load_before, load_after))
    print("Registering %d devices in a fresh store (one transaction): %.1f s"
          % (opts.devices, registered))
    print()
    print("| Run | Speedup | Frames/s | Simulated s per s | Behind at end, s | Simulator CPU "
          "| CPU per frame, us | Mosquitto CPU | RSS, MB | Peak RSS, MB | Start-up, s |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in results:
        r["us_per_frame"] = 1e6 * float(r["cpu_pct"]) / 100 / float(r["frames_per_s"])
        print("| %s | %g | %.0f | %.1f | %.0f | %.0f %% | %.0f | %.0f %% | %.0f | %.0f | %.1f |"
              % (r["name"], r["speedup"], r["frames_per_s"], r["sim_per_wall"], r["lag_s"],
                 r["cpu_pct"], r["us_per_frame"], r["broker_cpu_pct"], r["rss_mb"],
                 r["peak_rss_mb"], r["build_s"]))
    real, saturated = results[0], results[1:]
    best = max(saturated, key=lambda r: float(r["frames_per_s"]))
    cheapest = min(float(r["us_per_frame"]) for r in saturated)
    print()
    print("Ceiling: best saturated round %.0f frames/s; at the lowest CPU per frame (%.0f us) "
          "one full core would publish %.0f frames/s. Real time (%.0f frames/s) uses %.0f %% "
          "of the best round." % (float(best["frames_per_s"]), cheapest, 1e6 / cheapest,
                                  float(real["frames_per_s"]),
                                  100 * float(real["frames_per_s"]) / float(best["frames_per_s"])))


if __name__ == "__main__":
    main()
