# The checks of config.json that the tracker makes at boot (``app.check_config``).

import policy
from protocol import topics


def errors(cfg):
    """Errors as 'field: reason'; an empty list means the config can be used."""
    errors = []
    dev = cfg.get("device_id")
    try:
        topics.check_device_id(dev)
    except ValueError:
        errors.append("device_id: 1..32 of A-Z a-z 0-9 - _")
    key = cfg.get("key", "")
    if key:
        try:
            if len(bytes.fromhex(key)) < 16:
                errors.append("key: at least 16 bytes of hex")
        except ValueError:
            errors.append("key: hex digits")
    m = cfg.get("mqtt")
    if not isinstance(m, dict) or not isinstance(m.get("host"), str):
        errors.append("mqtt.host: the broker's host name")
    errors.extend(policy.check(cfg.get("reporting", policy.DEFAULTS)))
    buf = cfg.get("buffer", {})
    for name, low, high in (("capacity_records", 16, 10000000), ("segment_records", 8, 1024),
                            ("receipt_timeout_s", 1, 86400)):
        v = buf.get(name, low) if isinstance(buf, dict) else None
        if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
            errors.append("buffer.%s: a whole number %d..%d" % (name, low, high))
    return errors
