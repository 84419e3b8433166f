"""Derive: what fixes mean. Fence transitions, trips, stops, visits, attendance.

Pure logic over stored positions and typed per-device state; ``engine`` runs it per batch.
May import: fences, geo, store (record types), errors. Never ingest or sinks.
"""
