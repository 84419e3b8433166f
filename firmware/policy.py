# When to report a fix: Teltonika-style acquisition parameters, in integers.
#
# A fix is reported when the minimum period has passed AND it differs enough from the
# last reported one (distance, heading change, speed change), or when the maximum
# period (heartbeat) is up, or at once on an event (ignition change, SOS, power loss).
# Two profiles: "moving" and "stopped"; ignition (if wired) or speed decides which.
# Distances use an equirectangular approximation in integer arithmetic: exact to
# well under 1 % over the few hundred metres the thresholds care about.

# Each setting name is spelled once: on MicroPython every long string literal is an
# object of its own on the heap.
_KEYS = ("min_period_s", "max_period_s", "min_distance_m", "min_angle_deg",
         "min_speed_delta_kmh")
MIN_PERIOD, MAX_PERIOD, MIN_DISTANCE, MIN_ANGLE, MIN_SPEED_DELTA = _KEYS
DEFAULTS = {
    "moving": dict(zip(_KEYS, (10, 60, 50, 15, 10))),
    "stopped": dict(zip(_KEYS, (60, 900, 100, 0, 0))),
    "moving_kmh": 5,
}
# round(4096 * cos(d)) for d = 0..90 degrees: the device needs no float maths.
COS_4096 = (4096, 4095, 4094, 4090, 4086, 4080, 4074, 4065, 4056, 4046, 4034, 4021, 4006,
    3991, 3974, 3956, 3937, 3917, 3896, 3873, 3849, 3824, 3798, 3770, 3742, 3712, 3681,
    3650, 3617, 3582, 3547, 3511, 3474, 3435, 3396, 3355, 3314, 3271, 3228, 3183, 3138,
    3091, 3044, 2996, 2946, 2896, 2845, 2793, 2741, 2687, 2633, 2578, 2522, 2465, 2408,
    2349, 2290, 2231, 2171, 2110, 2048, 1986, 1923, 1860, 1796, 1731, 1666, 1600, 1534,
    1468, 1401, 1334, 1266, 1198, 1129, 1060, 991, 921, 852, 782, 711, 641, 570, 499, 428,
    357, 286, 214, 143, 71, 0)


def distance_m(lat1, lon1, lat2, lon2):
    """Approximate metres between two points in 1e-7 degrees (integers only).

    One unit of latitude is 11.132 mm; longitude shrinks with cos(latitude).
    """
    mid = abs(lat1 + lat2) // 20_000_000  # whole degrees of the mean latitude
    c = COS_4096[min(mid, 90)]
    dy = (lat2 - lat1) * 11132 // 1000  # millimetres
    dx = (lon2 - lon1) * 11132 * c // (1000 * 4096)
    return _isqrt(dx * dx + dy * dy) // 1000


def _isqrt(n):
    if n <= 0:
        return 0
    x = n
    y = (x + 1) // 2
    while y < x:
        x = y
        y = (x + n // x) // 2
    return x


def angle_delta(a, b):
    d = (a - b) % 360
    return 360 - d if d > 180 else d


def check(config):
    """Validate a reporting config; returns a list of 'field: reason' (empty when good)."""
    errors = []
    for profile in ("moving", "stopped"):
        p = config.get(profile)
        if not isinstance(p, dict):
            errors.append("%s: expected a table of %s" % (profile, ", ".join(_KEYS)))
            continue
        for key in _KEYS:
            v = p.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > 86400:
                errors.append("%s.%s: a whole number 0..86400" % (profile, key))
        if not errors and p[MIN_PERIOD] < 1:
            errors.append("%s.min_period_s: at least 1" % profile)
        if not errors and p[MAX_PERIOD] < p[MIN_PERIOD]:
            errors.append("%s.max_period_s: not below min_period_s" % profile)
    mk = config.get("moving_kmh")
    if not isinstance(mk, int) or isinstance(mk, bool) or not 0 <= mk <= 100:
        errors.append("moving_kmh: a whole number 0..100")
    return errors


class Policy:
    """Decides, fix by fix, whether to report; remembers the last reported fix."""

    def __init__(self, config=None):
        self.config = config or DEFAULTS
        self.last = None  # (t, lat, lon, spd, hdg) of the last reported fix

    def profile(self, fix, ignition):
        if ignition is not None:
            name = "moving" if ignition else "stopped"
        else:
            name = "moving" if fix["spd"] >= self.config["moving_kmh"] else "stopped"
        return self.config[name]

    def due(self, fix, ignition=None, event=False):
        """True when ``fix`` (a dict with t, lat, lon, spd, hdg) should be reported."""
        last = self.last
        if event or last is None:
            return True
        p = self.profile(fix, ignition)
        dt = fix["t"] - last[0]
        if dt < 0:
            return False
        if dt >= p[MAX_PERIOD]:
            return True
        if dt < p[MIN_PERIOD]:
            return False
        if p[MIN_DISTANCE] and distance_m(last[1], last[2], fix["lat"], fix["lon"]) \
                >= p[MIN_DISTANCE]:
            return True
        if p[MIN_ANGLE] and fix["spd"] >= self.config["moving_kmh"] \
                and angle_delta(fix["hdg"], last[4]) >= p[MIN_ANGLE]:
            return True
        if p[MIN_SPEED_DELTA] and abs(fix["spd"] - last[3]) >= p[MIN_SPEED_DELTA]:
            return True
        return False

    def reported(self, fix):
        self.last = (fix["t"], fix["lat"], fix["lon"], fix["spd"], fix["hdg"])
