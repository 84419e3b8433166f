# Runs under MicroPython: checks the pure codec against the shared vectors (and, if
# given, RFC 8949 Appendix A) and prints one JSON line: {"checked": ..., "failures": [...]}.
import json
import sys

from protocol import cbor, cose, frames, jsonform
from protocol.errors import FrameError

DOWNLINK_TYPES = ("command", "receipt")  # what frames.decode_downlink takes
failures = []
checked = {"valid": 0, "invalid": 0, "signed": 0, "downlink": 0}
with open(sys.argv[1]) as f:
    vectors = json.load(f)

for v in vectors["valid"]:
    frame = jsonform.from_json(v["frame"])
    try:
        if frames.encode(frame).hex() != v["hex"]:
            failures.append("encode " + v["name"])
        if jsonform.to_json(frames.decode(bytes.fromhex(v["hex"]))) != v["frame"]:
            failures.append("decode " + v["name"])
    except Exception as e:
        failures.append("raised %s: %r" % (v["name"], e))
    checked["valid"] += 1
    # The tracker's one entry point for its downlink topic: commands and receipts only.
    try:
        got = frames.decode_downlink(bytes.fromhex(v["hex"]))
        if v["frame"]["type"] not in DOWNLINK_TYPES:
            failures.append("decode_downlink accepted " + v["name"])
        elif jsonform.to_json(got) != v["frame"]:
            failures.append("decode_downlink " + v["name"])
    except FrameError as e:
        if v["frame"]["type"] in DOWNLINK_TYPES or e.code != "unknown_frame_type":
            failures.append("decode_downlink %s: %s" % (v["name"], e.code))
    checked["downlink"] += 1

for v in vectors["invalid"]:
    try:
        frames.decode(bytes.fromhex(v["hex"]))
        failures.append("accepted " + v["name"])
    except FrameError as e:
        if e.code != v["error"]:
            failures.append("%s: %s instead of %s" % (v["name"], e.code, v["error"]))
    except Exception as e:
        failures.append("raised %s: %r" % (v["name"], e))
    checked["invalid"] += 1

for v in vectors["signed"]:
    key = bytes.fromhex(v["key"])
    if cose.sign(bytes.fromhex(v["payload"]), key, v["kid"]).hex() != v["hex"]:
        failures.append("sign " + v["name"])
    mac, payload = cose.unwrap(bytes.fromhex(v["hex"]), frames.MAX_FRAME_BYTES)
    if not mac.verify(key) or mac.verify(bytes(32)) or payload.hex() != v["payload"]:
        failures.append("verify " + v["name"])
    checked["signed"] += 1

appendix = 0
if len(sys.argv) > 2:
    # Only examples whose value JSON can express; diagnostic ones are checked on CPython.
    with open(sys.argv[2]) as f:
        examples = json.load(f)
    for ex in examples:
        if "decoded" not in ex or ex["hex"] in ("c249010000000000000000", "c349010000000000000000"):
            continue
        data = bytes.fromhex(ex["hex"])
        try:
            got = cbor.loads(data, allow_indefinite=True)
        except Exception as e:
            failures.append("appendix %s raised %r" % (ex["hex"], e))
            continue
        if got != ex["decoded"] or type(got) is not type(ex["decoded"]):
            failures.append("appendix %s decoded %r" % (ex["hex"], got))
        if ex["roundtrip"] and cbor.dumps(ex["decoded"]) != data:
            failures.append("appendix %s encoded %s" % (ex["hex"], cbor.dumps(ex["decoded"]).hex()))
        appendix += 1

print(json.dumps({"checked": checked, "failures": failures, "appendix": appendix}))
