"""The ``console`` command: a serial terminal for a tracker (``terminal`` is the loop).

May import: errors only; gnss reuses ``terminal.open_port``.
"""
