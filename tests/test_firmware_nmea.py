"""The firmware's NMEA parser, under the real MicroPython, agrees with gpsd.

For every TPV fix gpsd decoded from each capture in the reference corpus, the
firmware's fix for the same instant must match: time exactly, latitude and longitude
within 1e-7 degrees, speed and course within the protocol's rounding (1 km/h, 1°).
Captures in a binary protocol (SiRF, UBX) have no NMEA fixes to compare: there the
parser must only survive the bytes.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "micropython" / "nmea_fixes.py"
CORPUS = ROOT.parent / "shared" / "corpus" / "gpsd"
CAPTURES = sorted(p.name for p in CORPUS.glob("*.log")) if CORPUS.is_dir() else []
AGREEMENT: dict[str, str] = {}

sys.path.insert(0, str(ROOT / "firmware"))
import nmea  # noqa: E402


def gpsd_fixes(chk: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """The last (most complete) TPV report for each instant with a 2D/3D fix."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for line in chk.read_text(errors="replace").splitlines():
        if not line.startswith('{"class":"TPV"'):
            continue
        tpv = json.loads(line)
        if "time" not in tpv or tpv.get("mode", 0) < 2 or "lat" not in tpv:
            continue
        when = datetime.datetime.fromisoformat(tpv["time"].replace("Z", "+00:00"))
        out[(int(when.timestamp()), when.microsecond // 1000)] = tpv
    return out


def firmware_fixes(micropython: str, capture: Path) -> tuple[dict[tuple[int, int], list[Any]],
                                                             dict[str, int]]:
    env = dict(os.environ, MICROPYPATH=".frozen:" + str(ROOT / "firmware"))
    proc = subprocess.run([micropython, "-X", "heapsize=256k", str(SCRIPT), str(capture)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    stats = lines.pop()
    return {(f[0], f[1]): f for f in lines if f[0] is not None}, stats


def _angle(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


@pytest.mark.skipif(not CAPTURES, reason="the reference corpus (../shared/corpus/gpsd) is absent")
@pytest.mark.parametrize("name", CAPTURES)
def test_firmware_fix_agrees_with_gpsd(micropython: str, name: str) -> None:
    capture = CORPUS / name
    expected = gpsd_fixes(CORPUS / (name + ".chk"))
    got, stats = firmware_fixes(micropython, capture)
    nmea_positions = sum(1 for f in got.values() if f[2] is not None)
    if expected and nmea_positions == 0:
        AGREEMENT[name] = "binary protocol capture: %d gpsd fixes, no NMEA (survived)" % len(
            expected)
        return
    wrong = []
    for key, tpv in expected.items():
        fix = got.get(key)
        if fix is None or fix[2] is None:
            wrong.append("%s: no firmware fix" % tpv["time"])
            continue
        if abs(fix[2] - tpv["lat"] * 1e7) > 1 or abs(fix[3] - tpv["lon"] * 1e7) > 1:
            wrong.append("%s: position %s,%s vs %s,%s" % (tpv["time"], fix[2], fix[3],
                                                          tpv["lat"], tpv["lon"]))
        if "speed" in tpv and abs(fix[4] - tpv["speed"] * 3.6) > 0.5 + 1e-9:
            wrong.append("%s: speed %s km/h vs %s m/s" % (tpv["time"], fix[4], tpv["speed"]))
        if "track" in tpv and fix[5] is not None and _angle(fix[5], tpv["track"]) > 0.5 + 1e-9:
            wrong.append("%s: course %s vs %s" % (tpv["time"], fix[5], tpv["track"]))
    AGREEMENT[name] = "%d/%d gpsd fixes matched (%d sentences, %d bad checksums skipped)" % (
        len(expected) - len(wrong), len(expected), stats["sentences"], stats["bad_checksums"])
    assert not wrong, "\n".join(wrong[:10])


def test_binary_and_garbage_never_break_sync() -> None:
    good = b"$GPRMC,030719.000,A,3747.0873,S,17518.8938,E,0.69,181.39,311214,,,A*7D\r\n"
    noise = bytes(range(256)) + b"$GPGGA,0307" + b"\xb5\x62\x01\x07" + b"$$$\n"
    p = nmea.Parser()
    p.feed(noise + good + noise[:50] + good.replace(b"0719", b"0720").replace(b"7D", b"7C"))
    p.flush()
    assert [f.lat for f in p.fixes] == [-377847883]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_are_survived(data: bytes) -> None:
    p = nmea.Parser()
    p.feed(data)
    p.flush()
    for fix in p.fixes:
        assert fix.lat is None or -900_000_000 <= fix.lat <= 900_000_000


@pytest.mark.parametrize(
    ("text", "hemi", "expected"),
    [(b"3747.0873", b"S", -377847883), (b"17518.8938", b"E", 1753148967),
     (b"4807.038", b"N", 481173000), (b"01131.000", b"W", -115166667),
     (b"0000.00001", b"N", 2), (b"8959.9999999", b"N", 900000000), (b"4760.5", b"N", None),
     (b"12.5", b"N", None), (b"4807.038", b"X", None)],
)
def test_coordinates_are_exact_integers(text: bytes, hemi: bytes, expected: int | None) -> None:
    assert nmea.coordinate(text, hemi) == expected


def test_days_from_civil_matches_the_calendar() -> None:
    for day in range(0, 40000, 37):
        d = datetime.date(1970, 1, 1) + datetime.timedelta(days=day)
        assert nmea.days_from_civil(d.year, d.month, d.day) == day

