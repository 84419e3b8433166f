"""``fieldtrack gateway run``: the gateway service, from a TOML file or defaults."""

from __future__ import annotations

import signal
from types import FrameType

import click

from fieldtrack.gateway import logs, metrics
from fieldtrack.gateway.config import ConfigError, GatewayConfig, load
from fieldtrack.gateway.dependencies import DependencyError
from fieldtrack.gateway.errors import FenceError
from fieldtrack.gateway.service import Gateway, PipelineError
from fieldtrack.gateway.store.sqlite import StoreError
from fieldtrack.tools.errors import FieldtrackError


class GatewayCommandError(FieldtrackError):
    """A gateway that cannot start: bad configuration, store or port."""


def build_sinks(cfg: GatewayConfig) -> list[object]:
    sinks: list[object] = []
    if cfg.influx.enabled:
        from fieldtrack.gateway.sinks.influx import InfluxSink

        sinks.append(InfluxSink(cfg.influx))
    if cfg.feeds.enabled:
        from fieldtrack.gateway.sinks.feeds import FeedSink

        sinks.append(FeedSink(cfg.mqtt, cfg.feeds))
    return sinks


@click.group("gateway")
def gateway() -> None:
    """Run the gateway service."""


@gateway.command("run")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="gateway.toml (see gateway/gateway.example.toml); defaults if omitted.")
@click.option("--sample-publisher", is_flag=True,
              help="Also run three simulated vans publishing signed frames (for a first "
                   "look; `fieldtrack demo` is the full demo).")
def run(config_path: str | None, sample_publisher: bool) -> None:
    """Subscribe, validate, store exactly once, forward. SIGTERM/SIGINT stop cleanly."""
    try:
        cfg = load(config_path)
        logs.setup(cfg.log_level)
        gw = Gateway(cfg, sinks=build_sinks(cfg))
    except (ConfigError, StoreError, FenceError, PipelineError, DependencyError) as exc:
        raise GatewayCommandError(str(exc)) from None
    if cfg.http.enabled:
        try:
            metrics.serve(cfg.http.host, cfg.http.port, gw.problem)
        except OSError as exc:
            gw.close()
            raise GatewayCommandError(
                "[http] %s:%d: cannot listen (%s); set another port or enabled = false"
                % (cfg.http.host, cfg.http.port, exc.strerror)
            ) from None
    publisher = None
    if sample_publisher:
        from fieldtrack.tools.simulate.background import sample_fleet
        from fieldtrack.tools.simulate.errors import SimulateError

        try:
            publisher = sample_fleet(cfg.mqtt.host, cfg.mqtt.port, cfg.store.path)
            publisher.start()
        except SimulateError as exc:
            gw.close()
            raise GatewayCommandError("--sample-publisher: %s" % exc) from None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        gw.stop()

    signal.signal(signal.SIGHUP, lambda signum, frame: gw.reload_fences())
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        gw.run()
    except PipelineError as exc:
        raise GatewayCommandError(str(exc)) from None
    if publisher is not None:
        publisher.stop()
