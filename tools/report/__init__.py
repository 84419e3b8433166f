"""The ``report`` command: a day's work per device as a table, CSV or HTML with a map.

``reader`` reads the store, ``days`` computes, ``model`` holds, ``map_svg`` draws.
May import: gateway (store, fences, geo, derive.motion config) and export.
"""
