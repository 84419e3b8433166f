"""The ``gnss`` command: watch a receiver over serial or from a capture, with antenna checks.

``nmea_stream`` frames sentences, ``nmea_fields`` reads them, ``sky`` and ``checks`` judge.
May import: console.terminal (the serial port).
"""
