"""The ``flash`` and ``provision`` commands: firmware onto a board, a device's identity into it.

Steps are data (``steps``), run by ``run``; ``plan`` and ``provision`` build them.
May import: boards, protocol (topics), gateway.store.
"""
