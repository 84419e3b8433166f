"""fieldtrack wire protocol v1: frames, their CBOR encoding, and frame authentication.

The modules imported by the firmware (``cbor``, ``frames``, ``cose``, ``errors``,
``topics``) are written in the subset of Python that runs unchanged on CPython and on
MicroPython. ``fast`` is the gateway's CPython-only path on top of ``cbor2``.
"""
