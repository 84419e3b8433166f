"""Bytes on the wire per GPS fix: protocol v1 frames, OwnTracks JSON and Teltonika Codec 8;
then what the gateway's receipts cost on the downlink per fix.

Run from the repository root:

    .venv/bin/python benchmarks/frame_sizes.py

Every row encodes the same 600 fixes of the city track (100 minutes of a delivery van,
one fix every 10 s). Sizes are MQTT payload bytes: the MQTT fixed header and topic are
left out of every row alike. The script prints a Markdown table, checks the size targets
of protocol v1 and exits with status 1 if one of them fails. The receipts table counts
whole MQTT 3.1.1 PUBLISH packets (fixed header, topic, packet id for QoS 1) instead,
because a receipt is small enough that its header is a large part of its cost.
"""

import hashlib
import json
import os
import random
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.city_track import city_track  # noqa: E402
from protocol import cose, fast, frames, topics  # noqa: E402

N_FIXES = 600
SEED = 7
BOOT = 3  # a device that has rebooted a few times
SEQ0 = 1200  # a device that has been reporting for a few hours since that boot
SEQ_BIG = 70_000  # past 65535: the sequence number needs a 4-byte CBOR integer
HIGH_ALT_M = 500  # the same track in an upland city (altitude >= 256 m)
KID = "van-0012"
KEY = hashlib.sha256(b"fieldtrack benchmark device key").digest()  # 32 bytes

TARGET_POSITION_MAX = 32  # bytes, one position frame, worst fix of the track
TARGET_BATCH60_MEAN = 12  # bytes per fix, lossless batches of 60


# --- protocol v1 frames ---------------------------------------------------------


def position_frames(fixes: list[dict], seq0: int = SEQ0, boot: int = BOOT) -> list[dict]:
    """One position frame per fix; the sequence number counts records."""
    return [dict(fix, type="position", boot=boot, seq=seq0 + i) for i, fix in enumerate(fixes)]


def batch_frames(
    fixes: list[dict], size: int, res: int = 1, seq0: int = SEQ0, boot: int = BOOT
) -> list[dict]:
    """Consecutive batches of ``size`` fixes; a batch's seq is that of its first fix."""
    return [
        {
            "type": "batch",
            "boot": boot,
            "seq": seq0 + i,
            "res": res,
            "fixes": fixes[i : i + size],
        }
        for i in range(0, len(fixes), size)
    ]


def encode_all(frame_list: list[dict]) -> list[bytes]:
    """Encode with the pure codec and check that the cbor2 path gives the same bytes."""
    out = []
    for frame in frame_list:
        data = frames.encode(frame)
        if fast.encode(frame) != data:
            raise AssertionError("pure codec and cbor2 path disagree on a %s frame" % frame["type"])
        out.append(data)
    return out


def check_round_trip(frame: dict, data: bytes) -> None:
    """A lossless frame decodes to its fixes; a res > 1 batch to within res/2 per coordinate."""
    back = frames.decode(data)
    if frame["type"] == "position":
        for name in frame:
            if back[name] != frame[name]:
                raise AssertionError("position field %s does not round-trip" % name)
        return
    res = frame["res"]
    for sent, got in zip(frame["fixes"], back["fixes"], strict=True):
        for name, value in sent.items():
            if name in ("lat", "lon"):
                if abs(got[name] - value) * 2 > res:
                    raise AssertionError("%s off by more than res/2" % name)
            elif got[name] != value:
                raise AssertionError("batch field %s does not round-trip" % name)


# --- OwnTracks JSON ---------------------------------------------------------------
#
# Fields and rules from the OwnTracks JSON booklet (_type=location): lat/lon are JSON
# numbers in degrees, tst is Unix seconds, vel is km/h, cog degrees, alt and acc whole
# metres, batt percent, tid a short tracker id; acc, alt, cog and vel are left out when
# they are zero, and a missing "t" means an automatic location update. The apps write
# compact JSON (no blanks after "," and ":"), which is what separators=(",", ":") gives.

OWNTRACKS_TID = "12"  # the default tid is the last two characters of the topic
OWNTRACKS_BATT = 87  # a phone in a cradle; the city track has no battery level


def owntracks_location(
    fix: dict, extended: bool = False, jitter: random.Random | None = None
) -> dict:
    """The OwnTracks location message of a fix.

    ``jitter`` adds the sub-1e-7-degree part that a phone's location double carries
    (the apps write the platform's double as it is, not rounded), so that the
    coordinates are printed with all their digits rather than at most 7 decimals.
    ``extended`` adds the extended-data fields bs, conn and created_at.
    """
    lat = fix["lat"] / 1e7
    lon = fix["lon"] / 1e7
    if jitter is not None:
        lat += jitter.uniform(-5e-8, 5e-8)
        lon += jitter.uniform(-5e-8, 5e-8)
    msg: dict = {"_type": "location"}
    if fix["acc"]:
        msg["acc"] = fix["acc"]
    if fix["alt"]:
        msg["alt"] = fix["alt"]
    msg["batt"] = OWNTRACKS_BATT
    if extended:
        msg["bs"] = 2  # charging
    if fix["hdg"]:
        msg["cog"] = fix["hdg"]
    if extended:
        msg["conn"] = "m"  # mobile data
        msg["created_at"] = fix["t"] + 1
    msg["lat"] = lat
    msg["lon"] = lon
    msg["tid"] = OWNTRACKS_TID
    msg["tst"] = fix["t"]
    if fix["spd"]:
        msg["vel"] = fix["spd"]
    return msg


def owntracks_payloads(
    fixes: list[dict], extended: bool = False, jitter: random.Random | None = None
) -> list[bytes]:
    return [
        json.dumps(owntracks_location(f, extended, jitter), separators=(",", ":")).encode()
        for f in fixes
    ]


# --- Teltonika Codec 8 --------------------------------------------------------------
#
# Layout from the Teltonika Codec 8 documentation. A TCP packet is: preamble (4 zero
# bytes), data field length (4), codec id 0x08 (1), number of records (1), the AVL
# records, number of records again (1), CRC-16/IBM of codec id..second count (4).
# One AVL record: timestamp in ms (8), priority (1), GPS element (15: longitude 4,
# latitude 4 in 1e-7 degrees, altitude 2, angle 2, satellites 1, speed 2 km/h) and the
# IO element: event IO id (1), total IO count (1), then the 1-, 2-, 4- and 8-byte IO
# groups, each a count (1) followed by (id 1, value) pairs. We send two 1-byte IOs,
# ignition (AVL id 239) and movement (AVL id 240), as the smallest useful IO set; a
# device with a stock configuration sends more (voltages, GSM signal, ...).

AVL_IGNITION = 239
AVL_MOVEMENT = 240


def crc16_ibm(data: bytes) -> int:
    """CRC-16/IBM (ARC): reflected polynomial 0xA001, initial value 0."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def codec8_record(fix: dict) -> bytes:
    gps = struct.pack(
        ">iihHBH", fix["lon"], fix["lat"], fix["alt"], fix["hdg"], fix["sats"], fix["spd"]
    )
    ios = [(AVL_IGNITION, int(fix["ign"])), (AVL_MOVEMENT, int(fix["spd"] > 0))]
    io = struct.pack(">BBB", 0, len(ios), len(ios))  # event id 0: periodic record
    for avl_id, value in ios:
        io += struct.pack(">BB", avl_id, value)
    io += struct.pack(">BBB", 0, 0, 0)  # no 2-, 4- or 8-byte IOs
    return struct.pack(">QB", fix["t"] * 1000, 0) + gps + io


def codec8_packet(fixes: list[dict]) -> bytes:
    body = bytes([0x08, len(fixes)]) + b"".join(codec8_record(f) for f in fixes)
    body += bytes([len(fixes)])
    return bytes(4) + struct.pack(">I", len(body)) + body + struct.pack(">I", crc16_ibm(body))


def chunks(seq: list, size: int) -> list[list]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


# --- table ----------------------------------------------------------------------------


def stats(payloads: list[bytes], fixes_per_payload: list[int]) -> dict:
    sizes = [len(p) for p in payloads]
    return {
        "frames": len(sizes),
        "frame_mean": sum(sizes) / len(sizes),
        "frame_max": max(sizes),
        "fix_mean": sum(sizes) / sum(fixes_per_payload),
        "fix_max": max(s / n for s, n in zip(sizes, fixes_per_payload, strict=True)),
    }


def measure(fixes: list[dict]) -> list[tuple[str, dict]]:
    rows: list[tuple[str, dict]] = []

    def add(label: str, payloads: list[bytes], per: list[int]) -> None:
        rows.append((label, stats(payloads, per)))

    ones = [1] * len(fixes)
    pos = position_frames(fixes)
    pos_bytes = encode_all(pos)
    for frame, data in zip(pos, pos_bytes, strict=True):
        check_round_trip(frame, data)
    add("v1 `position`, seq from %d" % SEQ0, pos_bytes, ones)
    add(
        "v1 `position`, seq from %d (> 65535)" % SEQ_BIG,
        encode_all(position_frames(fixes, seq0=SEQ_BIG)),
        ones,
    )
    # The city track is at ~40 m; from 256 m up an altitude takes 3 CBOR bytes, not 2.
    high = [dict(f, alt=f["alt"] + HIGH_ALT_M) for f in fixes]
    add(
        "v1 `position`, seq from %d, track %d m higher" % (SEQ0, HIGH_ALT_M),
        encode_all(position_frames(high)),
        ones,
    )
    batch60_lossless: list[bytes] = []
    for size in (10, 60):
        for res in (1, 10):
            bf = batch_frames(fixes, size, res)
            data = encode_all(bf)
            for frame, d in zip(bf, data, strict=True):
                check_round_trip(frame, d)
            what = "lossless" if res == 1 else "res=%d, 1e-6 deg" % res
            add("v1 `batch` of %d, %s" % (size, what), data, [len(f["fixes"]) for f in bf])
            if size == 60 and res == 1:
                batch60_lossless = data
    add(
        "v1 `position` + COSE_Mac0",
        [cose.sign(p, KEY, KID) for p in pos_bytes],
        ones,
    )
    add(
        "v1 `batch` of 60, lossless + COSE_Mac0",
        [cose.sign(p, KEY, KID) for p in batch60_lossless],
        [60] * len(batch60_lossless),
    )
    add("OwnTracks `location`, lat/lon at 1e-7 deg", owntracks_payloads(fixes), ones)
    add(
        "OwnTracks `location`, unrounded lat/lon",
        owntracks_payloads(fixes, jitter=random.Random(SEED)),
        ones,
    )
    add(
        "OwnTracks `location`, unrounded + extended data",
        owntracks_payloads(fixes, extended=True, jitter=random.Random(SEED)),
        ones,
    )
    add("Teltonika Codec 8, 1 record/packet", [codec8_packet([f]) for f in fixes], ones)
    packets = [codec8_packet(c) for c in chunks(fixes, 60)]
    add("Teltonika Codec 8, 60 records/packet", packets, [60] * len(packets))
    return rows


# --- receipts (downlink) ----------------------------------------------------------------


def publish_bytes(topic: str, payload: bytes, qos: int) -> int:
    """Size of an MQTT 3.1.1 PUBLISH: fixed header, topic with its length, packet id, payload."""
    remaining = 2 + len(topic.encode()) + (2 if qos else 0) + len(payload)
    length_bytes = 1 if remaining < 128 else 2 if remaining < 16384 else 3
    return 1 + length_bytes + remaining


def receipt(boot: int, seq: int, n: int) -> bytes:
    return fast.encode({"type": "receipt", "boot": boot, "seq": seq, "n": n})


def receipt_rows(fixes: list[dict]) -> list[tuple[str, float, float, float]]:
    """(what, receipt payload bytes, receipt PUBLISH bytes per fix, uplink PUBLISH bytes
    per fix) for live reporting and for draining a backlog, on the same fixes."""
    down = topics.downlink(KID)
    up = topics.uplink(KID)
    rows = []
    for label, size, window in (("live, one position frame per fix", 1, 1),
                                ("backlog, 60-fix batches, one receipt per batch", 60, 1),
                                ("backlog, 60-fix batches, 4 per commit (merged)", 60, 4)):
        if size == 1:
            sent = [cose.sign(fast.encode(f), KEY, KID) for f in position_frames(fixes)]
        else:
            sent = [cose.sign(fast.encode(f), KEY, KID) for f in batch_frames(fixes, size)]
        per_receipt = size * window
        runs = [(SEQ0 + i, min(per_receipt, len(fixes) - i))
                for i in range(0, len(fixes), per_receipt)]
        for signed in (False, True):
            payloads = [receipt(BOOT, seq, n) for seq, n in runs]
            if signed:
                payloads = [cose.sign(p, KEY, KID) for p in payloads]
            rows.append((
                "%s, %s" % (label, "signed" if signed else "unsigned"),
                sum(len(p) for p in payloads) / len(payloads),
                sum(publish_bytes(down, p, 0) for p in payloads) / len(fixes),
                sum(publish_bytes(up, p, 1) for p in sent) / len(fixes),
            ))
    return rows


def receipt_markdown(rows: list[tuple[str, float, float, float]]) -> str:
    lines = [
        "| Receipts (QoS 0 on %s) | Receipt payload bytes | Downlink bytes/fix | "
        "Uplink bytes/fix (signed, QoS 1) |" % topics.downlink(KID),
        "|---|--:|--:|--:|",
    ]
    for label, payload, down, up in rows:
        lines.append("| %s | %.1f | %.2f | %.2f |" % (label, payload, down, up))
    return "\n".join(lines)


def markdown(rows: list[tuple[str, dict]]) -> str:
    lines = [
        "| Encoding | Payloads | Bytes/payload mean | max | Bytes/fix mean | max |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for label, s in rows:
        lines.append(
            "| %s | %d | %.1f | %d | %.2f | %.2f |"
            % (label, s["frames"], s["frame_mean"], s["frame_max"], s["fix_mean"], s["fix_max"])
        )
    return "\n".join(lines)


def main() -> int:
    fixes = city_track(n=N_FIXES, seed=SEED)
    rows = measure(fixes)
    by = dict(rows)
    print(
        "Frame sizes on the city track: %d fixes, seed %d, one fix every 10 s" % (len(fixes), SEED)
    )
    print(
        "(boot %d, seq from %d; COSE kid %r, 32-byte key; MQTT header and topic excluded)"
        % (BOOT, SEQ0, KID)
    )
    print()
    print(markdown(rows))
    print()
    sample = owntracks_payloads(fixes[100:101], jitter=random.Random(SEED))[0].decode()
    print("OwnTracks sample (unrounded): %s" % sample)
    spaced = sum(len(json.dumps(owntracks_location(f))) for f in fixes) / len(fixes)
    print(
        'OwnTracks at 1e-7 with json.dumps default separators (", ", ": "): %.1f bytes/fix' % spaced
    )
    print(
        "Codec 8 record: %d bytes; packet overhead: %d bytes"
        % (
            len(codec8_record(fixes[0])),
            len(codec8_packet([fixes[0]])) - len(codec8_record(fixes[0])),
        )
    )
    print()
    single = by["v1 `position`, seq from %d" % SEQ0]
    big = by["v1 `position`, seq from %d (> 65535)" % SEQ_BIG]
    b60 = by["v1 `batch` of 60, lossless"]
    checks = [
        (
            "single position <= %d bytes (max)" % TARGET_POSITION_MAX,
            single["frame_max"] <= TARGET_POSITION_MAX,
            "max %d bytes" % single["frame_max"],
        ),
        (
            "60-batch lossless <= %d bytes/fix (mean)" % TARGET_BATCH60_MEAN,
            b60["fix_mean"] <= TARGET_BATCH60_MEAN,
            "mean %.2f bytes/fix" % b60["fix_mean"],
        ),
    ]
    ok = True
    for name, passed, got in checks:
        print("%s  %s: %s" % ("PASS" if passed else "FAIL", name, got))
        ok = ok and passed
    high = by["v1 `position`, seq from %d, track %d m higher" % (SEQ0, HIGH_ALT_M)]
    for what, row in (("with seq > 65535", big), ("on the track %d m higher" % HIGH_ALT_M, high)):
        print(
            "NOTE  %s a position frame is %d bytes max (%+d)%s"
            % (
                what,
                row["frame_max"],
                row["frame_max"] - single["frame_max"],
                " -- over the target" if row["frame_max"] > TARGET_POSITION_MAX else "",
            )
        )
    print()
    print("Receipts: MQTT 3.1.1 PUBLISH packets, header and topic included (device id %r)"
          % KID)
    print()
    print(receipt_markdown(receipt_rows(fixes)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
