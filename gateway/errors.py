"""Errors the gateway reports to a user, importable without the geometry libraries.

The MQTT process and the command line catch them; the modules that raise them may
import heavy libraries (shapely) that those two need not load.
"""


class FenceError(Exception):
    """A fence file that cannot be used; the message names the file, feature and field."""
