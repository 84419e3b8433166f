# Batches as the tracker sends them: stored fix rows in, the codec's own bytes out.
from protocol import fixes, frames


def fix(i):
    return {"t": 1700000000 + i, "lat": 525200000 + 37 * i * i, "lon": 134050000 - 91 * i,
            "spd": 40 + i % 7, "hdg": (350 + 3 * i) % 360, "alt": 34 + i % 3, "acc": 5,
            "sats": 9, "fix": 2, "ign": i % 5 == 0, "buf": i < 3, "mock": False}


def test_rows_encode_to_the_same_bytes_as_fix_dicts():
    for n in (1, 2, 60):
        fs = [fix(i) for i in range(n)]
        rows = [fixes.fix_items(f) for f in fs]
        want = frames.encode({"type": "batch", "boot": 3, "seq": 77, "fixes": fs})
        assert frames.encode_batch(3, 77, rows) == want
        assert frames.decode(want)["fixes"] == fs


def test_a_bad_row_is_refused():
    row = fixes.fix_items(fix(0))
    row[1] = 900000001
    try:
        frames.encode_batch(1, 0, [row])
    except ValueError as e:
        assert "lat" in str(e)
    else:
        raise AssertionError("an out-of-range latitude was encoded")
