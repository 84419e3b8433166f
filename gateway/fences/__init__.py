"""Geofences: the fence model, the spatial index and the GeoJSON loader.

Pure geometry with shapely: ``model`` is one fence, ``index`` finds the candidates for a fix,
``loader`` reads GeoJSON.
May import: geo and errors only.
"""
