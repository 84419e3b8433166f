"""The ``geofences`` command: import, list and test fences.

May import: gateway.fences and gateway.config.
"""
