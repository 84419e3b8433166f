"""A reproducible city-driving track: one fix every 10 s, as a van reports it.

A van drives a street grid (blocks of 80-250 m, turns at junctions), accelerates
to 30-50 km/h, stops at lights and for deliveries, and its receiver adds GNSS
noise (a slowly wandering offset of ~2 m, like a u-blox M8's 2.5 m CEP). The
output is fix dicts in the protocol's units, so every size benchmark sees the same
data.
"""

import math
import random

EARTH_M_PER_DEG = 111_320.0


def city_track(
    n: int = 600, seed: int = 7, start_t: int = 1_767_261_600, period_s: int = 10
) -> list[dict]:
    """``n`` fixes of a van in a city (default: Berlin, 100 minutes at 10 s)."""
    rng = random.Random(seed)
    lat0, lon0 = 52.5200, 13.4050
    x = y = 0.0  # metres east / north of the start
    heading = 90.0
    speed = 0.0  # m/s
    target = 13.0
    block_left = rng.uniform(80, 250)
    stop_left = 0.0
    noise_e = noise_n = 0.0
    alt = 38.0
    fixes = []
    t = start_t
    dt = 1.0  # simulate at 1 Hz, report every period_s
    for step in range(n * period_s):
        if stop_left > 0:
            stop_left -= dt
            speed = 0.0
        else:
            accel = 1.5 if speed < target else -2.0
            speed = (
                max(0.0, min(target, speed + accel * dt)) if abs(speed - target) > 0.5 else target
            )
            dist = speed * dt
            x += dist * math.sin(math.radians(heading))
            y += dist * math.cos(math.radians(heading))
            block_left -= dist
            if block_left <= 0:
                block_left = rng.uniform(80, 250)
                r = rng.random()
                if r < 0.3:
                    stop_left = rng.uniform(5, 40)  # red light
                elif r < 0.36:
                    stop_left = rng.uniform(120, 600)  # delivery
                if r < 0.5:
                    heading = (heading + rng.choice((90, -90))) % 360
                target = rng.uniform(8.3, 13.9)
        heading_noise = rng.gauss(0, 2.0) if speed > 0 else 0.0
        noise_e = 0.9 * noise_e + rng.gauss(0, 0.6)
        noise_n = 0.9 * noise_n + rng.gauss(0, 0.6)
        alt += rng.gauss(0, 0.3)
        if step % period_s == 0:
            lat = lat0 + (y + noise_n) / EARTH_M_PER_DEG
            lon = lon0 + (x + noise_e) / (EARTH_M_PER_DEG * math.cos(math.radians(lat0)))
            fixes.append(
                {
                    "t": t,
                    "lat": round(lat * 1e7),
                    "lon": round(lon * 1e7),
                    "spd": round(speed * 3.6),
                    "hdg": round(heading + heading_noise) % 360,
                    "alt": round(alt),
                    "acc": rng.choice((2, 2, 3, 3, 3, 4)),
                    "sats": rng.choice((9, 10, 11, 11, 12, 12, 13)),
                    "fix": 2,
                    "ign": True,
                    "buf": False,
                    "mock": False,
                }
            )
            t += period_s
    return fixes
