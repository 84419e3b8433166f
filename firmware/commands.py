# Downlink commands: verified, applied once, acknowledged. Loaded only when a command
# arrives and dropped afterwards (``Tracker.on_message``): commands are rare, and the
# heap they need is better spent on buffered fixes between them.

import json

import policy

CHANGES_STATE = ("set_config", "reboot", "fw_update")
FRESH_S = 86400  # a command may be valid for at most a day ahead of the device's clock


def handle(tracker, cmd):
    """Carry out a verified command (``Tracker.on_message`` checked its MAC) once, and
    only while it is fresh: a captured command cannot be replayed later, not even after
    a reset that lost the memory of executed cids."""
    cid = cmd["cid"]
    if cid <= tracker.state.get("cid", 0):
        return  # a replay or a duplicate delivery: already handled
    kind = cmd["kind"]
    exp = cmd["exp"]
    if exp or kind in CHANGES_STATE:
        if not tracker.clock_known:  # judged once the clock is set: not remembered yet
            return ack(tracker, cid, "failed", "no clock yet (no GNSS fix since boot): "
                       "send the command again once the device reports positions")
    tracker.state["cid"] = cid
    tracker.save_state()
    now = tracker.board.time()
    if not exp and kind in CHANGES_STATE:
        return ack(tracker, cid, "rejected", "%s needs an expiry (exp), at most 24 h ahead"
                   % kind)
    if exp and now > exp:
        return ack(tracker, cid, "expired")
    if exp > now + FRESH_S:
        return ack(tracker, cid, "rejected", "exp is more than 24 h ahead of the device's "
                   "clock: give a nearer expiry")
    if kind == "set_config":
        set_config(tracker, cid, cmd["args"]["config"])
    elif kind == "locate":
        tracker.report_next = True  # the next fix goes out whatever the policy says
        ack(tracker, cid, "ok")
    elif kind == "status":
        tracker.record_status()
        ack(tracker, cid, "ok")
    elif kind == "reboot":
        ack(tracker, cid, "ok")  # on flash already, like every record
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
