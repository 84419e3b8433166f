"""NMEA 0183 out of a raw receiver stream, and which constellation each satellite is in.

``NmeaFramer`` cuts sentences out of bytes that may interleave binary protocols (u-blox
UBX, SiRF) and line noise: a broken sentence costs that sentence only. ``classify`` maps
a talker or system id and a PRN to a constellation and its own satellite number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum

MAX_SENTENCE = 256    # NMEA says 82; proprietary sentences run longer


class Constellation(Enum):
    GPS = "GPS"
    GLONASS = "GLONASS"
    GALILEO = "Galileo"
    BEIDOU = "BeiDou"
    QZSS = "QZSS"
    NAVIC = "NavIC"
    SBAS = "SBAS"


ORDER = list(Constellation)
LETTER = {Constellation.GPS: "G", Constellation.GLONASS: "R", Constellation.GALILEO: "E",
          Constellation.BEIDOU: "C", Constellation.QZSS: "J", Constellation.NAVIC: "I",
          Constellation.SBAS: "S"}  # RINEX letters, as receivers' own tools show them
TALKERS = {"GP": Constellation.GPS, "GL": Constellation.GLONASS, "GA": Constellation.GALILEO,
           "GB": Constellation.BEIDOU, "BD": Constellation.BEIDOU, "GQ": Constellation.QZSS,
           "QZ": Constellation.QZSS, "GI": Constellation.NAVIC}
SYSTEM_IDS = {1: Constellation.GPS, 2: Constellation.GLONASS, 3: Constellation.GALILEO,
              4: Constellation.BEIDOU, 5: Constellation.QZSS, 6: Constellation.NAVIC}
# NMEA 4.10/4.11 signal IDs (the last GSV field), per constellation.
SIGNALS: dict[Constellation, dict[int, str]] = {
    Constellation.GPS: {1: "L1 C/A", 2: "L1 P(Y)", 3: "L1 M", 4: "L2 P(Y)", 5: "L2C-M",
                        6: "L2C-L", 7: "L5-I", 8: "L5-Q"},
    Constellation.SBAS: {1: "L1 C/A"},
    Constellation.GLONASS: {1: "G1 C/A", 2: "G1 P", 3: "G2 C/A", 4: "G2 P"},
    Constellation.GALILEO: {1: "E5a", 2: "E5b", 3: "E5 AltBOC", 4: "E6-A", 5: "E6-BC",
                            6: "E1-A", 7: "E1-BC"},
    Constellation.BEIDOU: {1: "B1I", 2: "B1Q", 3: "B1C", 4: "B1A", 5: "B2a", 6: "B2b",
                           7: "B2 a+b", 8: "B3I", 9: "B3Q", 10: "B3A", 11: "B2I", 12: "B2Q"},
    Constellation.QZSS: {1: "L1 C/A", 2: "L1C-D", 3: "L1C-P", 4: "L1S", 5: "L2C-M",
                         6: "L2C-L", 7: "L5-I", 8: "L5-Q", 9: "L6D", 10: "L6E"},
    Constellation.NAVIC: {1: "L5 SPS", 2: "S SPS", 3: "L5 RS", 4: "S RS", 5: "L1 SPS"},
}
# PRN ranges a GP/GN talker (or a GPS system ID) uses for other systems, and the offset
# that turns them into the system's own satellite number (SBAS: its PRN, 120-158).
_RANGES = ((1, 32, Constellation.GPS, 0), (33, 64, Constellation.SBAS, 87),
           (65, 96, Constellation.GLONASS, -64), (120, 158, Constellation.SBAS, 0),
           (193, 200, Constellation.QZSS, -192), (201, 263, Constellation.BEIDOU, -200),
           (301, 336, Constellation.GALILEO, -300), (401, 463, Constellation.BEIDOU, -400))
_OFFSETS = {Constellation.GLONASS: ((65, 96, -64),),
            Constellation.GALILEO: ((301, 336, -300),),
            Constellation.BEIDOU: ((201, 263, -200), (401, 463, -400)),
            Constellation.QZSS: ((193, 202, -192),)}


def classify(hint: Constellation | None, prn: int) -> tuple[Constellation, int]:
    """(constellation, satellite number) for a PRN as a talker or system ID reported it."""
    if hint is None or hint is Constellation.GPS:
        for low, high, system, offset in _RANGES:
            if low <= prn <= high:
                return system, prn + offset
        return hint or Constellation.GPS, prn
    for low, high, offset in _OFFSETS.get(hint, ()):
        if low <= prn <= high:
            return hint, prn + offset
    return hint, prn


@dataclass
class StreamStats:
    bytes: int = 0            # received
    sentences: int = 0        # with a valid checksum
    ignored: int = 0          # of those, types the monitor does not need
    malformed: int = 0        # of those, fields that do not parse
    bad_checksum: int = 0     # wrong or missing checksum: dropped
    partial: int = 0          # sentences cut short by noise or a new '$'
    noise_bytes: int = 0      # bytes outside any sentence (binary protocols, garbage)
    binary: dict[str, int] = field(default_factory=dict)  # protocol -> frame syncs seen


_SYNCS = {b"\xb5\x62": "u-blox UBX", b"\xa0\xa2": "SiRF binary"}
_RUN = re.compile(rb"\$[\x20-\x23\x25-\x7e]*")    # a '$' and printable ASCII up to any '$'
_STARTS_LIKE_NMEA = re.compile(rb"\$[A-Z][A-Z0-9]{3,5},")
_ENDS_IN_CHECKSUM = re.compile(rb"\*[0-9A-Fa-f]{2}\s*$")
CHECKSUMMED = re.compile(r"\$([^*$]*)\*([0-9A-Fa-f]{2})\s*$")


class NmeaFramer:
    """Cuts ``$...`` sentences out of a byte stream; everything else is counted, not kept."""

    def __init__(self, stats: StreamStats) -> None:
        self.stats = stats
        self._buf = bytearray()
        self._noise_tail = b""

    def feed(self, data: bytes) -> list[str]:
        self.stats.bytes += len(data)
        self._buf += data
        return self._scan(final=False)

    def flush(self) -> list[str]:
        """End of stream: a last sentence without its line end still counts."""
        return self._scan(final=True)

    def _noise(self, chunk: bytes) -> None:
        self.stats.noise_bytes += len(chunk.translate(None, b"\r\n \t"))
        joined = self._noise_tail + chunk
        for sync, name in _SYNCS.items():
            if sync in joined:
                self.stats.binary[name] = self.stats.binary.get(name, 0) + joined.count(sync)
        self._noise_tail = chunk[-1:]

    def _fragment(self, chunk: bytes) -> None:
        if _STARTS_LIKE_NMEA.match(chunk):
            self.stats.partial += 1
        else:
            self._noise(chunk)

    def _scan(self, final: bool) -> list[str]:
        out: list[str] = []
        buf, pos = self._buf, 0
        while True:
            start = buf.find(b"$", pos)
            if start < 0:
                self._noise(bytes(buf[pos:]))
                pos = len(buf)
                break
            if start > pos:
                self._noise(bytes(buf[pos:start]))
            run = _RUN.match(buf, start)
            end = run.end() if run else start + 1
            text = bytes(buf[start:end])
            if end == len(buf) and not final:
                if len(text) > MAX_SENTENCE:
                    self._fragment(text)
                    pos = end
                else:
                    pos = start  # wait for the rest of it
                break
            after = bytes(buf[end:end + 1])
            if (after in (b"\r", b"\n") or _ENDS_IN_CHECKSUM.search(text)) and len(
                    text) <= MAX_SENTENCE:
                out.append(text.decode("ascii").strip())
                self._noise_tail = b""
            else:
                self._fragment(text)
            pos = end
            if end == len(buf):
                break
        del buf[:pos]
        return out
