"""The ``export`` command: stored positions and events as JSON lines, CSV, GeoJSON, GPX.

May import: gateway.store and gateway.sinks.feeds (the feeds' document shapes).
"""
