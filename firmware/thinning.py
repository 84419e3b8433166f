# Room in a full journal (``ringbuf.RingBuffer.append`` loads this only then): the oldest
# segments are thinned, one per turn, oldest first, so that a long outage keeps an evenly
# thinned track instead of losing a contiguous stretch. Events, status and acks stay
# (ignition on/off among them), as do fixes where the ignition flag changed; of the other
# fixes every second one goes. When a pass reaches the newest segment it starts again at
# the oldest (every 4th, then 8th, ... fix). Only when thinning frees nothing is the
# oldest segment dropped (``dropped``).

from protocol.cbor import loads

FIX = 0  # the first item of a stored fix row (app.FIX)
IGN = 4  # the ignition bit of a fix's flags (protocol.schema.FLAG_BITS)


def make_room(ring):
    """Thin the next sealed segment (or drop the oldest when thinning frees nothing)."""
    if ring.first >= ring.last:  # nothing sealed yet: seal what is being written
        ring.last += 1
        ring.last_n = ring.last_size = 0
    tried = 0
    while tried < ring.last - ring.first:
        if ring.thin_seg < ring.first or ring.thin_seg >= ring.last:
            ring.thin_seg = ring.first  # a new pass, from the oldest
        n = ring.thin_seg
        ring.thin_seg += 1
        freed = thin(ring, n)
        tried += 1
        if freed:
            ring.thinned += freed
            ring.count -= freed
            ring._save_state()
            return
    n = ring.first
    lost = ring._count_of(n)
    ring.dropped += lost
    ring.count -= lost
    ring._remove(n)
    ring.first += 1
    if ring.done[0] < ring.first:
        ring.done = (ring.first, 0)
    if ring.cursor[0] < ring.first:
        ring.cursor = (ring.first, 0)
    ring._save_state()


def thin(ring, n):
    """Rewrite segment ``n`` without every second plain fix; returns how many went."""
    out = bytearray()
    fixes = 0
    removed = 0
    prev_ign = None
    # the places that point into this segment, old offset -> new
    marks = [place[1] for place in (ring.cursor, ring.done) if place[0] == n]
    moved = {}
    for b, s, r, end in ring._records(n):
        keep = True
        if r[1] == FIX:  # r is the CBOR of [FIX, fields..., flags]
            ign = loads(r, 4096, 4, False, ())[-1] & IGN
            keep = fixes % 2 == 0 or (prev_ign is not None and ign != prev_ign)
            prev_ign = ign
            fixes += 1
        if keep:
            out.extend(ring.encode(b, s, r))
        else:
            removed += 1
        if end in marks:
            moved[end] = len(out)
    if removed:
        ring.rewrite(n, out, moved)
    return removed
