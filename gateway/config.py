"""Gateway settings: one TOML file, checked key by key, with embedded defaults.

Every section is a dataclass; its fields are the only keys accepted. A mistake is
reported as ``file: [section] key: reason`` (with a suggestion for a misspelt key)
and never as a traceback. Secrets may come from the environment instead of the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fieldtrack.gateway.derive.attendance import AttendanceConfig
from fieldtrack.gateway.derive.fence_tracker import FenceConfig
from fieldtrack.gateway.derive.motion import MotionConfig
from fieldtrack.gateway.ingest.position_filter import ACTIONS, FilterConfig


class ConfigError(Exception):
    """A setting that cannot be used; the message names the file, key and reason."""


@dataclass(frozen=True)
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "fieldtrack-gateway"
    username: str = ""
    password: str = field(default="", repr=False)  # or FIELDTRACK_MQTT_PASSWORD
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 86400  # how long the broker queues for a stopped gateway
    tls: bool = False
    ca_file: str = ""
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0


@dataclass(frozen=True)
class StoreConfig:
    path: str = "fieldtrack.db"
    commit_interval_ms: int = 50  # acks wait at most this long for their commit
    commit_max_messages: int = 2000
    rejects_keep: int = 100_000
    rejects_per_device: int = 1000  # per uplink topic: one flooding device keeps only these
    busy_timeout_ms: int = 30_000  # a commit waits this long for another writer's lock
    min_free_mb: int = 256  # below this much free space, ingest pauses (nothing acked)


@dataclass(frozen=True)
class PipelineSettings:
    max_boot_lag: int = 3
    receipts: bool = True  # tell devices after each commit which records are settled
    receipt_delay_ms: int = 1000  # hold a device's receipts this long to merge them
    command_resend_s: float = 30.0  # an unacknowledged command goes out again this often


@dataclass(frozen=True)
class InfluxConfig:
    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    token: str = field(default="", repr=False)  # or FIELDTRACK_INFLUX_TOKEN
    org: str = "fieldtrack"
    bucket: str = "fieldtrack"
    batch_size: int = 5000
    timeout_s: float = 10.0
    retry_min_s: float = 1.0
    retry_max_s: float = 60.0


@dataclass(frozen=True)
class FeedsConfig:
    enabled: bool = True
    prefix: str = "fieldtrack"
    owntracks: bool = False
    owntracks_prefix: str = "owntracks/fieldtrack"
    dead_letter: bool = True
    # The feed publisher's own broker account; empty: the [mqtt] username and password.
    # A broker that sets the client id from the username needs it (see docker/mosquitto).
    username: str = ""
    password: str = field(default="", repr=False)  # or FIELDTRACK_FEEDS_PASSWORD


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True)
class EventsConfig:
    """Derived events: fences file, reorder window, offline detection."""

    enabled: bool = True
    # GeoJSON FeatureCollection, where `fieldtrack geofences import` puts it; loaded when
    # it appears, reloaded on change or SIGHUP; "" for none
    fences_file: str = "fences.geojson"
    reorder_window_s: int = 60
    reorder_hold_s: float = 30.0
    heartbeat_timeout_s: int = 900
    checkpoint_every_s: int = 3600  # derive state snapshots, per this much fix time
    rederive_delay_s: float = 2.0  # re-derive once late fixes stopped this long


@dataclass(frozen=True)
class GatewayConfig:
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    pipeline: PipelineSettings = field(default_factory=PipelineSettings)
    filters: FilterConfig = field(default_factory=FilterConfig)
    influx: InfluxConfig = field(default_factory=InfluxConfig)
    feeds: FeedsConfig = field(default_factory=FeedsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    events: EventsConfig = field(default_factory=EventsConfig)
    fences: FenceConfig = field(default_factory=FenceConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    attendance: AttendanceConfig = field(default_factory=AttendanceConfig)
    working_hours: dict[str, Any] = field(default_factory=dict)
    log_level: str = "info"


SECTIONS: dict[str, type] = {
    "mqtt": MqttConfig,
    "store": StoreConfig,
    "pipeline": PipelineSettings,
    "filters": FilterConfig,
    "influx": InfluxConfig,
    "feeds": FeedsConfig,
    "http": HttpConfig,
    "events": EventsConfig,
    "fences": FenceConfig,
    "motion": MotionConfig,
    "attendance": AttendanceConfig,
}
SECRETS_FROM_ENV = {
    ("mqtt", "password"): "FIELDTRACK_MQTT_PASSWORD",
    ("influx", "token"): "FIELDTRACK_INFLUX_TOKEN",
    ("feeds", "password"): "FIELDTRACK_FEEDS_PASSWORD",
}
_LOG_LEVELS = ("debug", "info", "warning", "error")
# Well below the tracker's receipt_timeout_s (30 s), after which it sends records again.
MAX_RECEIPT_DELAY_MS = 20_000


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1)
    if close:
        return " Did you mean %r?" % close[0]
    return " Valid keys: %s." % ", ".join(sorted(choices))


def _check_type(value: Any, default: Any, where: str) -> Any:
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) != (expected is bool) or not isinstance(value, expected):
        name = {bool: "true or false", int: "a whole number", float: "a number",
                str: "text in quotes"}[expected]
        raise ConfigError("%s: expected %s, got %r" % (where, name, value))
    if expected in (int, float) and value < 0:
        raise ConfigError("%s: must not be negative, got %r" % (where, value))
    return value


def _section(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError("%s: expected a table like [%s]" % (where, where.split("[")[-1]))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError("%s: unknown key %r.%s" % (where, key, _suggest(key, list(fields))))
        kwargs[key] = _check_type(value, getattr(defaults, key), "%s %s" % (where, key))
        if key.endswith("_action") and value not in ACTIONS:
            raise ConfigError("%s %s: %r is not one of %s"
                              % (where, key, value, ", ".join(ACTIONS)))
    return cls(**kwargs)


def parse(data: dict[str, Any], source: str = "<defaults>") -> GatewayConfig:
    """Check a parsed TOML document and build the config; env overrides secrets."""
    sections = {f.name: f for f in dataclasses.fields(GatewayConfig)}
    kwargs: dict[str, Any] = {}
    for name, values in data.items():
        if name not in sections:
            raise ConfigError("%s: unknown section or key %r.%s"
                              % (source, name, _suggest(name, list(sections))))
        if name == "working_hours":
            kwargs[name] = _working_hours(values, source)
            continue
        if name == "log_level":
            if values not in _LOG_LEVELS:
                raise ConfigError("%s: log_level: %r is not one of %s"
                                  % (source, values, ", ".join(_LOG_LEVELS)))
            kwargs[name] = values
            continue
        kwargs[name] = _section(SECTIONS[name], values, "%s: [%s]" % (source, name))
    config = GatewayConfig(**kwargs)
    for (section, key), env in SECRETS_FROM_ENV.items():
        if os.environ.get(env):
            sub = dataclasses.replace(getattr(config, section), **{key: os.environ[env]})
            config = dataclasses.replace(config, **{section: sub})
    if config.mqtt.port == 0 or config.mqtt.port > 65535:
        raise ConfigError("%s: [mqtt] port: %d is not a TCP port" % (source, config.mqtt.port))
    if config.store.rejects_per_device < 1:
        raise ConfigError("%s: [store] rejects_per_device: must be at least 1" % source)
    if config.pipeline.receipt_delay_ms > MAX_RECEIPT_DELAY_MS:
        raise ConfigError("%s: [pipeline] receipt_delay_ms: %d is too long: devices send "
                          "their records again after 30 s without a receipt; use at most %d"
                          % (source, config.pipeline.receipt_delay_ms, MAX_RECEIPT_DELAY_MS))
    if config.pipeline.command_resend_s < 1:
        raise ConfigError("%s: [pipeline] command_resend_s: must be at least 1 (a device "
                          "needs a moment to answer)" % source)
    if config.store.commit_max_messages < 1:
        raise ConfigError("%s: [store] commit_max_messages: must be at least 1" % source)
    return config


def _working_hours(values: Any, source: str) -> dict[str, Any]:
    """``[working_hours.vans]`` tables: ``tz`` plus day ranges, like a fence's active hours."""
    from fieldtrack.gateway.errors import FenceError
    from fieldtrack.gateway.fences.loader import hours_from

    if not isinstance(values, dict):
        raise ConfigError("%s: [working_hours]: expected tables like [working_hours.vans]"
                          % source)
    out = {}
    for group, spec in values.items():
        try:
            out[group] = hours_from(spec, "%s: [working_hours.%s]" % (source, group))
        except FenceError as exc:
            raise ConfigError(str(exc)) from None
    return out


def load(path: str | Path | None) -> GatewayConfig:
    """Read ``path`` (or use the embedded defaults when it is None)."""
    if path is None:
        return parse({})
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("%s: no such file" % p) from None
    except (OSError, UnicodeError) as exc:
        raise ConfigError("%s: cannot read it: %s" % (p, exc)) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("%s: not valid TOML: %s" % (p, exc)) from None
    return parse(data, str(p))
