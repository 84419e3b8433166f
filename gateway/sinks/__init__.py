"""Sinks: committed data out of the store, each with its own persistent cursor.

``outbox`` reads forward from the store; ``influx`` writes InfluxDB, ``feeds`` the MQTT feeds.
May import: store, config, protocol (topics), errors. Never ingest or derive.
"""
