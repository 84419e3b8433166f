"""``fieldtrack demo``: broker, gateway and five simulated vans, with a live view.

A thin command line over ``fieldtrack.tools.demo.runner``. The view redraws the terminal once
a second from the store; with ``--no-view`` (or when stdout is not a terminal) the
gateway's JSON log lines and one line per stored event go to stderr instead.
"""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from types import FrameType

import click

from fieldtrack.tools.demo import runner as lib
from fieldtrack.tools.errors import FieldtrackError
from fieldtrack.tools.simulate.errors import SimulateError
from fieldtrack.tools.simulate.mqtt import parse_broker

CLEAR = "\x1b[H\x1b[2J"


class DemoCommandError(FieldtrackError):
    """A demo that cannot start: no broker, no mosquitto, an unusable directory."""


@click.command("demo")
@click.option("--broker", help="Use the broker at HOST:PORT (default: 127.0.0.1:1883, "
                               "where the demo starts Mosquitto if nothing listens).")
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="Keep the store, fences file and logs here, and reuse them next time "
                   "(default: a temporary directory, removed at the end).")
@click.option("--vans", type=click.IntRange(1, 50), default=5, show_default=True)
@click.option("--speedup", type=click.FloatRange(0.1, 1000), default=10.0, show_default=True,
              help="Simulated seconds per second: the vans replay the recent past this much "
                   "faster until they catch up with the present.")
@click.option("--duration", type=click.FloatRange(0, min_open=True),
              help="Stop after this many seconds (default: at Ctrl-C).")
@click.option("--no-view", is_flag=True, help="Log lines on stderr instead of the live view.")
@click.option("--seed", type=int, default=1, show_default=True)
def demo(broker: str | None, directory: str | None, vans: int, speedup: float,
         duration: float | None, no_view: bool, seed: int) -> None:
    """Run a local fleet: Mosquitto, the gateway and simulated vans visiting customers.

    The live view shows each van's newest position, speed and state and the newest
    events (geofences, visits, trips), read from the gateway's store every second.
    Ctrl-C stops everything cleanly.
    """
    try:
        options = lib.DemoOptions(broker=parse_broker(broker) if broker else None,
                                  directory=Path(directory) if directory else None, vans=vans,
                                  speedup=speedup, duration=duration, seed=seed)
    except SimulateError as exc:
        raise DemoCommandError(str(exc)) from None
    view = not no_view and sys.stdout.isatty()
    session = lib.Demo(options)
    lib.setup_logging(session.directory if view else None)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            session.start()
        except (lib.DemoError, SimulateError) as exc:
            raise DemoCommandError(str(exc)) from None
        _watch(session, stop, duration, view)
    finally:
        try:
            result = session.stop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    where = "kept in %s" % result.directory if result.kept else "removed with the demo directory"
    click.echo("demo: stopped; %d frames published, %d positions and %d events stored, %d "
               "rejected (%s)" % (result.published_frames, result.positions, result.events,
                                  result.rejects, where), err=True)


def _watch(session: lib.Demo, stop: threading.Event, duration: float | None,
           view: bool) -> None:
    """Until Ctrl-C or the duration: redraw the view, or log each new event."""
    deadline = time.monotonic() + duration if duration is not None else None
    last_event = 0
    with closing(lib.open_reader(session.db_path)) as db:
        while not stop.is_set():
            if view:
                snap = session.snapshot(db)
                width = shutil.get_terminal_size((100, 30)).columns
                sys.stdout.write(CLEAR + lib.render(snap, session.header(), session.sim_now(),
                                                    width))
                sys.stdout.flush()
            else:
                snap = session.snapshot(db, after_event=last_event)
                for event_id, t, device, kind, text in snap.events:
                    lib.log.info("%s %s at %s%s", device, kind, lib.clock_text(t),
                                 ": " + text if text else "")
                    last_event = event_id
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0 or stop.wait(left):
                break
