"""The ``decode`` and ``encode`` commands: frames to and from JSON, hex and bytes.

May import: protocol.
"""
