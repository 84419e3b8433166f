"""Store: the durable log, the device registry and the derive state (STORE.md).

``sqlite`` is the embedded backend; ``registry`` manages devices and keys; ``commands``
is the downlink command queue.
May import: protocol (topics, errors) and errors only: every other stage imports the store.
"""
