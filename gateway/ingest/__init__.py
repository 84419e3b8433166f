"""Ingest: a frame from the broker to a committed batch, in pipeline order.

``worker`` is the pipeline process; ``authenticate`` checks topic, MAC and sequence,
``position_filter`` judges fixes, ``pipeline`` ties them together into a store batch,
``receipts`` tells devices after each commit which of their records it settled,
``downlink`` sends and re-sends the queued commands until their ack or expiry.
May import: protocol, store, derive, sinks (dead letters), fences, geo, config, errors.
"""
