"""The ``command`` command: queue downlink commands for devices, list and cancel them.

May import: gateway.store, gateway.config.
"""
