# NMEA 0183 for the tracker: bytes from the GNSS UART in, one fix per cycle out.
#
# Coordinates never become floats: "ddmm.mmmm" is turned into an integer in 1e-7
# degrees with integer arithmetic, because the ESP32 port's single-precision floats
# would lose metres. Any talker (GP, GN, GL, GA, GB, BD, GQ) is accepted; RMC, GGA,
# GSA, GNS, VTG and ZDA are understood. Bad checksums, partial lines and binary
# protocol bytes are skipped without losing sync: a line starts at '$' and ends at
# '\n', and anything else is dropped.

MAX_LINE = 100  # NMEA says 82; some receivers are generous, none send 100
_DAYS_BEFORE_MONTH = (0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334)


def checksum_ok(line):
    """True for '$...*hh' whose XOR checksum matches (the sentence body is ASCII)."""
    star = line.find(b"*")
    if star < 1 or len(line) < star + 3 or line[0] != 0x24:  # '$'
        return False
    c = 0
    for b in line[1:star]:
        c ^= b
    try:
        return c == int(line[star + 1:star + 3], 16)
    except ValueError:
        return False


def _decimal(text, scale):
    """'12.345' with scale 3 -> 12345, without floats; None when empty or not a number."""
    if not text:
        return None
    neg = text[0] == 45  # '-'
    if neg:
        text = text[1:]
    dot = text.find(b".")
    if dot < 0:
        whole, frac = text, b""
    else:
        whole, frac = text[:dot], text[dot + 1:]
    if not (whole or frac) or (whole and not whole.isdigit()) or (frac and not frac.isdigit()):
        return None
    v = int(whole) if whole else 0
    digits = frac[:scale]
    v = v * 10 ** scale + (int(digits) * 10 ** (scale - len(digits)) if digits else 0)
    # round half up on the first dropped digit
    if len(frac) > scale and frac[scale] >= 0x35:
        v += 1
    return -v if neg else v


def coordinate(text, hemi):
    """'3747.0873', 'S' -> -377847883 (1e-7 degrees), exact to the last digit given."""
    dot = text.find(b".")
    if dot < 3 or hemi not in (b"N", b"S", b"E", b"W"):
        return None
    deg_digits = dot - 2
    try:
        deg = int(text[:deg_digits])
    except ValueError:
        return None
    frac = text[dot + 1:]
    if not text[deg_digits:dot].isdigit() or (frac and not frac.isdigit()):
        return None
    # minutes as an integer scaled by 10^len(frac); degrees = minutes / 60
    scale = 10 ** len(frac)
    minutes = int(text[deg_digits:dot] + frac) if frac else int(text[deg_digits:dot])
    if minutes >= 60 * scale:
        return None
    num = minutes * 10_000_000
    den = 60 * scale
    v = deg * 10_000_000 + (2 * num + den) // (2 * den)
    limit = 900_000_000 if hemi in (b"N", b"S") else 1_800_000_000
    if v > limit:
        return None
    return -v if hemi in (b"S", b"W") else v


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (integers only)."""
    leap = (y % 4 == 0 and y % 100 != 0) or y % 400 == 0
    days = (y - 1970) * 365 + ((y - 1969) // 4) - ((y - 1901) // 100) + ((y - 1601) // 400)
    return days + _DAYS_BEFORE_MONTH[m - 1] + (1 if leap and m > 2 else 0) + d - 1


def _hms(text):
    """'030719.250' -> (seconds of the day, milliseconds) or None."""
    if len(text) < 6 or not text[:6].isdigit():
        return None
    h, mi, s = int(text[0:2]), int(text[2:4]), int(text[4:6])
    if h > 23 or mi > 59 or s > 60:
        return None
    ms = 0
    if len(text) > 7 and text[6] == 0x2E:
        ms = _decimal(b"0" + text[6:], 3)
        if ms is None or ms >= 1000:
            return None
    return h * 3600 + mi * 60 + s, ms


class Fix:
    """One navigation cycle: what the receiver said about one instant."""

    def __init__(self):
        self.sod = None  # seconds of the UTC day
        self.ms = 0
        self.day = None  # days since 1970 (from RMC or ZDA)
        self.lat = None  # 1e-7 degrees
        self.lon = None
        self.valid = False  # RMC status A / GGA quality > 0
        self.speed_mmps = None  # millimetres per second
        self.course_cdeg = None  # 1/100 degree
        self.alt_dm = None  # decimetres above mean sea level
        self.sats = None
        self.hdop_x10 = None
        self.mode = 0  # 0 unknown, 1 no fix, 2 2D, 3 3D (GSA)
        self.quality = None  # GGA fix quality

    def time(self):
        """Unix seconds, or None without a date."""
        if self.day is None or self.sod is None:
            return None
        return self.day * 86400 + self.sod

    def fix_type(self):
        """The protocol's fix type: 0 none, 1 2D, 2 3D, 3 differential."""
        if not self.valid or self.lat is None:
            return 0
        if self.quality in (2, 4, 5):
            return 3
        if self.mode == 2:
            return 1
        return 2

    def speed_kmh(self):
        return 0 if self.speed_mmps is None else (self.speed_mmps * 36 + 5000) // 10000

    def heading(self):
        return 0 if self.course_cdeg is None else ((self.course_cdeg + 50) // 100) % 360


def _knots_to_mmps(text):
    k = _decimal(text, 3)  # thousandths of a knot
    return None if k is None else (k * 1852 + 1800) // 3600  # 1 kn = 1852 m / 3600 s


def _kmh_to_mmps(text):
    k = _decimal(text, 3)
    return None if k is None else (k * 1000 + 1800) // 3600


class Parser:
    """Feed bytes; collect the completed fixes from ``fixes`` (or a callback)."""

    def __init__(self, on_fix=None):
        self.buf = bytearray()
        self.cur = Fix()
        self.on_fix = on_fix
        self.fixes = []
        self.bad_checksums = 0
        self.sentences = 0
        self.last_day = None

    def feed(self, data):
        buf = self.buf  # one line buffer, emptied in place: no allocation per sentence
        for b in data:
            if b == 0x24:  # '$' always starts a new sentence: resync on garbage
                buf[:] = b"$"
            elif b == 0x0A:
                if buf:
                    self.line(bytes(buf).rstrip(b"\r"))
                buf[:] = b""
            elif buf:
                if 32 <= b < 127 or b == 0x0D:
                    buf.append(b)
                    if len(buf) > MAX_LINE:
                        buf[:] = b""
                else:  # binary protocol bytes inside a line: not NMEA
                    buf[:] = b""

    def line(self, line):
        if not checksum_ok(line):
            self.bad_checksums += 1
            return
        fields = line[1:line.find(b"*")].split(b",")
        kind = fields[0][-3:] if len(fields[0]) == 5 else b""
        if len(fields[0]) != 5:
            return
        self.sentences += 1
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, fields)

    def _time(self, text):
        """Start a new cycle when the time of day moves on."""
        hms = _hms(text)
        if hms is None:
            return False
        sod, ms = hms
        if self.cur.sod is not None and (sod, ms) != (self.cur.sod, self.cur.ms):
            self.flush()
        self.cur.sod, self.cur.ms = sod, ms
        if self.cur.day is None and self.last_day is not None:
            self.cur.day = self.last_day
        return True

    def flush(self):
        """The cycle is over: hand on its fix (if it has a time) and start afresh."""
        fix = self.cur
        self.cur = Fix()
        if fix.day is not None:
            self.last_day = fix.day
        if fix.sod is None:
            return
        if self.on_fix is not None:
            self.on_fix(fix)
        else:
            self.fixes.append(fix)

    def _position(self, lat, ns, lon, ew):
        la = coordinate(lat, ns)
        lo = coordinate(lon, ew)
        if la is not None and lo is not None:
            self.cur.lat, self.cur.lon = la, lo


def _rmc(p, f):
    if len(f) < 10 or not p._time(f[1]):
        return
    fix = p.cur
    fix.valid = f[2] == b"A"
    if fix.valid:
        p._position(f[3], f[4], f[5], f[6])
        sp = _knots_to_mmps(f[7])
        if sp is not None:
            fix.speed_mmps = sp
        co = _decimal(f[8], 2)
        if co is not None:
            fix.course_cdeg = co
    d = f[9]
    if len(d) == 6 and d.isdigit():
        yy = int(d[4:6])
        fix.day = days_from_civil(2000 + yy if yy < 80 else 1900 + yy, int(d[2:4]), int(d[0:2]))


def _gga(p, f):
    if len(f) < 10 or not p._time(f[1]):
        return
    fix = p.cur
    q = _decimal(f[6], 0)
    fix.quality = q
    if q:
        fix.valid = True
        p._position(f[2], f[3], f[4], f[5])
    s = _decimal(f[7], 0)
    if s is not None:
        fix.sats = s
    h = _decimal(f[8], 1)
    if h is not None:
        fix.hdop_x10 = h
    a = _decimal(f[9], 1)
    if a is not None and q:
        fix.alt_dm = a


def _gns(p, f):
    if len(f) < 10 or not p._time(f[1]):
        return
    fix = p.cur
    mode = f[6]
    if mode and mode[:1] in (b"A", b"D", b"P", b"R", b"F"):
        fix.valid = True
        p._position(f[2], f[3], f[4], f[5])
    s = _decimal(f[7], 0)
    if s is not None and fix.sats is None:
        fix.sats = s
    h = _decimal(f[8], 1)
    if h is not None and fix.hdop_x10 is None:
        fix.hdop_x10 = h
    a = _decimal(f[9], 1)
    if a is not None and fix.alt_dm is None and fix.valid:
        fix.alt_dm = a


def _gsa(p, f):
    if len(f) < 3:
        return
    m = _decimal(f[2], 0)
    if m in (1, 2, 3):
        p.cur.mode = m
    if len(f) > 16:
        h = _decimal(f[16], 1)
        if h is not None and p.cur.hdop_x10 is None:
            p.cur.hdop_x10 = h


def _vtg(p, f):
    if len(f) < 8:
        return
    co = _decimal(f[1], 2)
    if co is not None and p.cur.course_cdeg is None:
        p.cur.course_cdeg = co
    if p.cur.speed_mmps is None:
        sp = _kmh_to_mmps(f[7]) if f[7] else _knots_to_mmps(f[5])
        if sp is not None:
            p.cur.speed_mmps = sp


def _zda(p, f):
    if len(f) < 5 or not p._time(f[1]):
        return
    if f[2].isdigit() and f[3].isdigit() and len(f[4]) == 4 and f[4].isdigit():
        d, m, y = int(f[2]), int(f[3]), int(f[4])
        if 1 <= m <= 12 and 1 <= d <= 31:
            p.cur.day = days_from_civil(y, m, d)


_HANDLERS = {b"RMC": _rmc, b"GGA": _gga, b"GNS": _gns, b"GSA": _gsa, b"VTG": _vtg, b"ZDA": _zda}
