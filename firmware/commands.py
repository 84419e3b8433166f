# Downlink commands: verified, applied once, acknowledged. Loaded only when a command
# arrives and dropped afterwards (``Tracker.on_message``): commands are rare, and the
# heap they need is better spent on buffered fixes between them.

import json

import policy
from protocol import cose, frames


def handle(tracker, payload):
    """Verify a downlink payload and carry out the command it holds, once."""
    try:
        mac, inner = cose.unwrap(payload, frames.MAX_FRAME_BYTES)
        if tracker.key is not None and (mac is None or mac.kid != tracker.device
                                        or not mac.verify(tracker.key)):
            return  # not from our gateway: ignore, never act on it
        cmd = frames.decode_command(inner)
    except ValueError:
        return
    cid = cmd["cid"]
    if cid <= tracker.state.get("cid", 0):
        return  # a replay or a duplicate delivery: already handled
    tracker.state["cid"] = cid
    tracker.save_state()
    if cmd["exp"] and tracker.board.time() > cmd["exp"]:
        return ack(tracker, cid, "expired")
    kind = cmd["kind"]
    if kind == "set_config":
        set_config(tracker, cid, cmd["args"]["config"])
    elif kind == "locate":
        tracker.report_next = True  # the next fix goes out whatever the policy says
        ack(tracker, cid, "ok")
    elif kind == "status":
        tracker.record_status()
        ack(tracker, cid, "ok")
    elif kind == "reboot":
        ack(tracker, cid, "ok")
        tracker.ring.flush()
        tracker.board.reset()
    else:
        ack(tracker, cid, "unsupported", "%s is not supported by this firmware" % kind)


def set_config(tracker, cid, changes):
    reporting = json.loads(json.dumps(tracker.cfg.get("reporting", policy.DEFAULTS)))
    for name, value in changes.items():
        parts = name.split(".")
        if len(parts) == 2 and parts[0] in ("moving", "stopped"):
            reporting[parts[0]][parts[1]] = value
        elif name == "moving_kmh":
            reporting[name] = value
        else:
            return ack(tracker, cid, "rejected", "%s: not a setting this firmware has" % name)
    errors = policy.check(reporting)
    if errors:
        return ack(tracker, cid, "rejected", "; ".join(errors))
    tracker.cfg["reporting"] = reporting
    tracker.policy.config = reporting
    tracker.save_config()
    ack(tracker, cid, "ok")


def ack(tracker, cid, result, reason=""):
    frame = {"type": "command_ack", "t": tracker.board.time(), "cid": cid, "result": result}
    if reason and result != "ok":
        frame["reason"] = reason[:200]
    tracker.record_frame(frame)
