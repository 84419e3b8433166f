"""fieldtrack: GPS trackers and phones -> MQTT -> clean, trustworthy field data."""

__version__ = "0.1.0"
