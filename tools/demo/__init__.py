"""The ``demo`` command: broker, gateway and simulated vans in one process, with a live view.

May import: gateway, simulate, and the gateway command's sink builder.
"""
