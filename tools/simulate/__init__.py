"""The ``simulate`` command: a fleet of virtual trackers that drive and publish like the firmware.

``fleet`` is the event heap; legs, grid and gpx make routes; tracker, signer and mqtt send.
May import: protocol, gateway.store (registration), and the firmware's reporting policy.
"""
