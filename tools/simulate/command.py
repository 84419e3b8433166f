"""``fieldtrack simulate``: a fleet of virtual vans publishing real frames to a broker.

A thin command line over the simulator (``fieldtrack.tools.simulate.fleet`` and its ``sim_*``
modules). Progress goes to stderr every few seconds; at the end one JSON line of totals
goes to stdout, and with ``--summary`` a JSON file with what every device published
(the records the store should hold).
"""

from __future__ import annotations

import gc
import json
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import click

from fieldtrack.tools.errors import FieldtrackError
from fieldtrack.tools.simulate.clock import SimClock
from fieldtrack.tools.simulate.config import FleetConfig, device_ids
from fieldtrack.tools.simulate.errors import SimulateError
from fieldtrack.tools.simulate.fleet import Fleet
from fieldtrack.tools.simulate.gpx import load_gpx
from fieldtrack.tools.simulate.mqtt import MqttRunner, RunStats, parse_broker
from fieldtrack.tools.simulate.register import register_devices


class SimulateCommandError(FieldtrackError):
    """A simulation that cannot start: a bad route, store, option or broker."""


class SimulateIncomplete(FieldtrackError):
    """The broker did not acknowledge everything: not the user's mistake."""

    exit_code = 1


def _progress(stats: RunStats) -> None:
    rate = stats.acked / stats.wall_s if stats.wall_s else 0.0
    click.echo("simulate: %.1f s: %d messages acked (%.0f/s), %d in flight, simulated %.0f s, "
               "%.1f s behind, CPU %.0f %%"
               % (stats.wall_s, stats.acked, rate, stats.unacked, stats.sim_s, stats.lag_s,
                  100 * stats.cpu_s / stats.wall_s if stats.wall_s else 0), err=True)


@click.command("simulate")
@click.option("-n", "--devices", type=click.IntRange(1, 100_000), default=10, show_default=True,
              help="How many vans.")
@click.option("--broker", default="127.0.0.1:1883", show_default=True,
              help="The MQTT broker, as HOST:PORT or mqtt://HOST:PORT.")
@click.option("--duration", type=click.FloatRange(0, min_open=True),
              help="Stop after this many (wall clock) seconds; default: at Ctrl-C.")
@click.option("--route", type=click.Path(exists=True, dir_okay=False),
              help="A GPX track every van drives, back and forth (default: a street grid "
                   "with customer visits).")
@click.option("--store", "store_path", type=click.Path(dir_okay=False),
              help="The gateway's store: register the devices there (once, group 'sim') and "
                   "sign their frames with their keys. Without it frames are unsigned.")
@click.option("--gaps", is_flag=True,
              help="Coverage gaps: records are buffered and sent later as batch frames.")
@click.option("--reboots", is_flag=True,
              help="Trackers reboot now and then: boot counter + 1, sequence from 0.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="The same seed drives the same routes.")
@click.option("--speedup", type=click.FloatRange(0.01), default=1.0, show_default=True,
              help="Simulated seconds per wall second. Fix times replay the recent past "
                   "and never run ahead of the clock.")
@click.option("--prefix", default="sim", show_default=True,
              help="Device ids are PREFIX-001, PREFIX-002, ...")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write a JSON summary with per-device counts here ('-': stdout).")
@click.option("--max-inflight", type=click.IntRange(1, 65_535), default=1000,
              show_default=True, help="Messages published but not yet acknowledged, at most.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def simulate(devices: int, broker: str, duration: float | None, route: str | None,
             store_path: str | None, gaps: bool, reboots: bool, seed: int, speedup: float,
             prefix: str, summary_path: str | None, max_inflight: int, quiet: bool) -> None:
    """Simulate a fleet of vans publishing signed protocol frames over MQTT.

    Each van drives (a street grid with customer visits, or the --route track),
    reports what the firmware's reporting policy picks, and publishes at QoS 1.
    Ctrl-C stops it: buffers are sent, every frame acknowledged, then a summary.
    """
    try:
        host, port = parse_broker(broker)
        cfg = FleetConfig(devices=devices, prefix=prefix, seed=seed, gaps=gaps,
                              reboots=reboots, route=load_gpx(route) if route else None)
        ids = device_ids(cfg)
        keys: dict[str, bytes | None] = {}
        if store_path:
            keys, added = register_devices(store_path, ids, group=cfg.group)
            if added:
                from fieldtrack.gateway.ingest.worker import REGISTRY_POLL_S

                click.echo("simulate: registered %d new devices in %s; waiting %.0f s for a "
                           "running gateway to load them" % (added, store_path,
                                                             REGISTRY_POLL_S + 1), err=True)
                time.sleep(REGISTRY_POLL_S + 1)
        clock = SimClock(speedup, duration)
        built = time.monotonic()
        fleet = Fleet.build(cfg, clock.now(), keys)
        # Thousands of long-lived devices: keep the cyclic GC from walking them again and
        # again (they are never cyclic garbage); a sixth less CPU per frame at 10,000.
        gc.collect()
        gc.freeze()
        if not quiet:
            click.echo("simulate: %d devices ready in %.1f s; publishing to %s:%d%s"
                       % (devices, time.monotonic() - built, host, port,
                          " (signed)" if any(keys.values()) else " (unsigned)"), err=True)
        runner = MqttRunner(fleet, host, port, clock, max_inflight=max_inflight)
        runner.connect()
    except SimulateError as exc:
        raise SimulateCommandError(str(exc)) from None
    stats = _run(runner, duration, None if quiet else _progress)
    summary: dict[str, Any] = {"broker": "%s:%d" % (host, port), "speedup": speedup,
                               "seed": seed, "run": stats.as_dict()}
    summary.update(fleet.summary())
    per_device = summary.pop("per_device")
    click.echo(json.dumps(summary, separators=(",", ":")))
    if summary_path:
        text = json.dumps(dict(summary, per_device=per_device), indent=1) + "\n"
        if summary_path == "-":
            sys.stdout.write(text)
        else:
            with open(summary_path, "w") as f:
                f.write(text)
    if stats.unacked:
        raise SimulateIncomplete("%d messages were not acknowledged by the broker at %s:%d; "
                                 "the summary counts them as published"
                                 % (stats.unacked, host, port))


def _run(runner: MqttRunner, duration: float | None, progress: Any) -> RunStats:
    """Run in this thread; SIGINT and SIGTERM ask for a clean stop."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return runner.run(stop, duration, progress)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
