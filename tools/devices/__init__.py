"""The ``devices`` command: the device registry (add, list, disable, enable, rotate keys).

May import: gateway.store.
"""
