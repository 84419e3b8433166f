"""The antenna placement checks: PASS, WARN or FAIL, each with its value and threshold.

Pure functions of the values a ``GnssMonitor`` keeps, so each threshold can be judged
(and tested) without a receiver stream.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from fieldtrack.tools.gnss.nmea_fields import FixType

MIN_USED = 6          # satellites used in the fix; WARN from MIN_USED_WARN
MIN_USED_WARN = 4
CN0_GOOD = 35.0       # dB-Hz, median of the best CN0_BEST satellites; WARN from CN0_WARN
CN0_WARN = 30.0
CN0_BEST = 4
HDOP_MAX = 2.0        # must hold for HDOP_HOLD seconds; above HDOP_WARN is a FAIL
HDOP_HOLD = 30.0
HDOP_WARN = 5.0


class Verdict(Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    value: str
    threshold: str


def worst(checks: Iterable[Check]) -> Verdict:
    """The worst verdict of the checks (PASS when there are none)."""
    verdicts = {c.verdict for c in checks}
    return next((v for v in (Verdict.FAIL, Verdict.WARN) if v in verdicts), Verdict.PASS)


def check_fix(fix: FixType, note: str) -> Check:
    verdict = (Verdict.PASS if fix.is_3d else
               Verdict.WARN if fix is FixType.FIX_2D else Verdict.FAIL)
    value = fix.value + (" (%s)" % note if note else "")
    return Check("fix", verdict, value, "3D fix (WARN 2D)")


def check_used(used: int) -> Check:
    verdict = (Verdict.PASS if used >= MIN_USED else
               Verdict.WARN if used >= MIN_USED_WARN else Verdict.FAIL)
    return Check("satellites used", verdict, str(used),
                 ">= %d (WARN %d-%d)" % (MIN_USED, MIN_USED_WARN, MIN_USED - 1))


def check_signal(cn0: list[int]) -> Check:
    """``cn0``: tracked navigation satellites' C/N0, strongest first."""
    name = "C/N0 median of best %d" % CN0_BEST
    threshold = ">= %.0f dB-Hz (WARN >= %.0f)" % (CN0_GOOD, CN0_WARN)
    best = cn0[:CN0_BEST]
    if len(best) < CN0_BEST:
        return Check(name, Verdict.FAIL, "%d satellites heard" % len(best), threshold)
    median = statistics.median(best)
    verdict = (Verdict.PASS if median >= CN0_GOOD else
               Verdict.WARN if median >= CN0_WARN else Verdict.FAIL)
    return Check(name, verdict, "%.1f dB-Hz" % median, threshold)


def check_hdop(fix: FixType, hdop: float | None, held: float) -> Check:
    """``held``: seconds HDOP has stayed at or below HDOP_MAX, with a fix."""
    threshold = "<= %.1f for %.0f s (FAIL > %.0f)" % (HDOP_MAX, HDOP_HOLD, HDOP_WARN)
    if fix is FixType.NONE or hdop is None:
        return Check("HDOP", Verdict.FAIL, "no fix", threshold)
    if hdop > HDOP_MAX:
        verdict = Verdict.FAIL if hdop > HDOP_WARN else Verdict.WARN
        return Check("HDOP", verdict, "%.2f" % hdop, threshold)
    verdict = Verdict.PASS if held >= HDOP_HOLD else Verdict.WARN
    return Check("HDOP", verdict, "%.2f, held %.0f s" % (hdop, held), threshold)


def check_dropouts(first_fix_t: float | None, last_t: float | None, dropouts: int,
                   downgrades: int) -> Check:
    """Fixes lost, and 3D fixes fallen back to 2D, since the first fix."""
    threshold = "no fix lost after the first (WARN 3D->2D)"
    if first_fix_t is None:
        return Check("fix dropouts", Verdict.FAIL, "no fix yet", threshold)
    span = (last_t or 0.0) - first_fix_t
    value = "%d lost, %d to 2D in %.0f s" % (dropouts, downgrades, span)
    verdict = (Verdict.FAIL if dropouts else
               Verdict.WARN if downgrades else Verdict.PASS)
    return Check("fix dropouts", verdict, value, threshold)
