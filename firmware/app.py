# The tracker application: GNSS in, reporting policy, store and forward, MQTT out,
# commands back. It never imports machine or network: everything physical comes from
# a board object (board_esp32 on the device, board_sim on the unix port for tests).

import gc
import json
import os
import sys

import nmea
import policy
import ringbuf
from mqtt import MQTTClient, MQTTError
from protocol import cbor, fixes, frames, topics

FW_VERSION = "0.1.0"
MAX_BATCH = 60
FIX_BYTES = 256  # heap to batch one fix: its row, its deltas, its bytes
RESERVE_BYTES = 6144  # what a batch leaves free: a flash segment being read, signing
FIX, FRAME = 0, 1
BUF = 8  # the fix flag of a fix sent late (frames.FLAG_BITS)
WINDOW = 4  # frames sent and not yet covered by a receipt
ERA_BASE = 1 << 24  # a boot at or above this starts an era: the counter was lost
ERA_TOP = 1 << 31


def _read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def _write_json(path, value):
    """Write by rename over the old file, never removing it first: a crash at any
    point leaves the old content or the new."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
    if hasattr(os, "sync"):
        os.sync()
    os.rename(tmp, path)


def load_state(path):
    """The state file, or a new era when it is missing or unusable (erased, re-flashed,
    corrupt): boot is then a random value in [2^24, 2^31) that the next start increments,
    so the keys of this era do not collide with the lost ones."""
    state = _read_json(path, None)
    if isinstance(state, dict) and isinstance(state.get("boot"), int) \
            and 0 <= state["boot"] < 0xFFFFFFFF:
        if not isinstance(state.get("cid"), int):
            state["cid"] = 0
        return state
    era = ERA_BASE + int.from_bytes(os.urandom(4), "big") % (ERA_TOP - ERA_BASE)
    return {"boot": era - 1, "cid": 0}


def check_config(cfg):
    """Errors as 'field: reason'; an empty list means the config can be used.

    The checks run once, at boot: their code is loaded for the call and dropped after.
    """
    import config_check

    try:
        return config_check.errors(cfg)
    finally:
        sys.modules.pop("config_check", None)


def _collect_often():
    """Collect early and often: survivors then pack low in the heap instead of being
    scattered between garbage, which is what fails a small heap (fragmentation)."""
    gc.collect()
    gc.threshold(max(2048, gc.mem_free() // 4))


class Tracker:
    def __init__(self, board, cfg, data_dir):
        _collect_often()  # loading the full buffer from flash churns too
        self.board = board
        self.cfg = cfg
        self.dir = data_dir
        self.device = cfg["device_id"]
        self.key = bytes.fromhex(cfg["key"]) if cfg.get("key") else None
        state = load_state(data_dir + "/state.json")
        state["boot"] += 1  # every start is a new epoch: seq starts again at 0
        _write_json(data_dir + "/state.json", state)
        self.state = state
        self.boot = state["boot"]
        self.seq = 0
        self.policy = policy.Policy(cfg.get("reporting", policy.DEFAULTS))
        buf = cfg.get("buffer", {})
        self.ring = ringbuf.RingBuffer(data_dir + "/ring", buf.get("capacity_records", 30000),
                                       buf.get("segment_records", 128))
        self.receipt_timeout_s = buf.get("receipt_timeout_s", 30)
        self.parser = nmea.Parser(on_fix=self.on_fix)
        self.gnss_buf = bytearray(512)  # one UART read, reused
        m = cfg["mqtt"]
        self.mqtt = MQTTClient(self.device, m["host"], m.get("port", 1883),
                               user=m.get("user", self.device), password=m.get("password"),
                               keepalive=m.get("keepalive_s", 60),
                               will=(topics.presence(self.device), topics.OFFLINE, 1, True),
                               ssl=m.get("tls", False))
        self.mqtt.on_message = self.on_message
        self.mqtt.keep = False  # after a reconnect the ring resends, from flash
        self.window = []  # journal places after each frame sent and not yet passed by receipts
        self.progress_at = 0  # uptime of the last receipt that confirmed something new
        self.clock_known = False  # set by the first GNSS fix of this boot
        self.last_fix = None
        self.ignition = None
        self.next_status = 0
        self.retry_at = 0
        self.backoff_s = 1
        self.power_ok = True
        self.sos = False
        self.report_next = False  # the next fix is reported whatever the policy says
        self.next_check = 0
        self.record_event("boot", None, {"reason": board.reset_cause(), "fw": FW_VERSION})
        _collect_often()

    # --- records ---------------------------------------------------------------

    def _next_seq(self):
        if self.seq > 0xFFFF:  # keep frames small: a new epoch, as after a boot
            self.boot += 1
            self.state["boot"] = self.boot
            self.save_state()
            self.seq = 0
        seq = self.seq
        self.seq += 1
        return seq

    def record_fix(self, fix):
        seq = self._next_seq()
        items = [FIX] + [fix[name] for name, _, _ in frames.FIX_FIELDS]
        items.append(fixes.flags_of(fix))
        self.ring.append(self.boot, seq, cbor.dumps(items))
        self.policy.reported(fix)

    def record_frame(self, frame):
        frame["boot"] = self.boot
        frame["seq"] = self._next_seq()
        self.ring.append(self.boot, frame["seq"], cbor.dumps([FRAME, frames.encode(frame)]))

    def record_event(self, kind, fix, data=None):
        frame = {"type": "event", "t": self.board.time(), "kind": kind, "data": data or {}}
        if fix is not None:
            frame["lat"], frame["lon"], frame["acc"] = fix["lat"], fix["lon"], fix["acc"]
        self.record_frame(frame)

    # --- GNSS ------------------------------------------------------------------------

    def on_fix(self, nf):
        t = nf.time()
        if t is None or nf.fix_type() == 0 or nf.lat is None:
            return
        self.board.set_time(t)
        self.clock_known = True
        fix = {"t": t, "lat": nf.lat, "lon": nf.lon, "spd": nf.speed_kmh(),
               "hdg": nf.heading(), "alt": 0 if nf.alt_dm is None else nf.alt_dm // 10,
               "acc": 0 if nf.hdop_x10 is None else max(1, (nf.hdop_x10 * 25 + 50) // 100),
               "sats": nf.sats or 0, "fix": nf.fix_type(), "ign": False, "buf": False,
               "mock": False}
        ign = self.board.ignition()
        if ign is not None:
            fix["ign"] = ign
        changed = ign is not None and self.ignition is not None and ign != self.ignition
        if changed:
            self.record_event("ignition_on" if ign else "ignition_off", fix)
        self.ignition = ign
        self.last_fix = fix
        if self.policy.due(fix, ign, changed or self.report_next):
            self.report_next = False
            self.record_fix(fix)

    # --- link ------------------------------------------------------------------------

    def connect(self):
        if not self.board.network_up():
            return False
        try:
            self.mqtt.connect(clean_session=False)
            self.mqtt.subscribe(topics.downlink(self.device), 1)
            self.mqtt.publish(topics.presence(self.device), topics.ONLINE, qos=1, retain=True)
        except (OSError, MQTTError):
            self.mqtt.close()
            return False
        self.rewind()
        self.backoff_s = 1
        return True

    def rewind(self):
        """Send again from the oldest record no receipt covers."""
        self.ring.rewind()
        self.window = []
        self.progress_at = self.board.uptime_s()

    def _sign(self, payload):
        if not self.key:
            return payload
        from protocol import cose  # only a device with a key signs

        return cose.sign(payload, self.key, self.device)

    def send_next(self):
        """Publish the oldest unsent records, one batch or one frame, while the window
        of frames awaiting a receipt has room."""
        if len(self.window) >= WINDOW or not self.mqtt.connected():
            return
        if not self.ring.pending():
            return
        rows: list = []
        boot = seq = 0
        payload = None
        last_pos = None
        now = self.board.time()
        # A batch needs pieces of up to 1 KiB in one piece: collect first, so that free
        # memory is contiguous and mem_free() says what there is. Then smaller batches
        # when the heap is short: each fix costs about FIX_BYTES to batch.
        gc.collect()
        limit = max(1, min(MAX_BATCH, (gc.mem_free() - RESERVE_BYTES) // FIX_BYTES))
        records = self.ring.unsent()  # one record in RAM at a time
        try:
            for b, s, r, pos in records:
                item = cbor.loads(r, 4096, 4, False, ())
                if not rows:
                    boot, seq = b, s
                    if item[0] == FRAME:
                        payload = item[1]
                        last_pos = pos
                        break
                elif b != boot or s != seq + len(rows) or item[0] != FIX:
                    break
                del item[0]  # the fix row: FIX_FIELDS, then flags
                item[-1] = item[-1] | BUF if now - item[0] > 120 else item[-1] & ~BUF
                rows.append(item)
                last_pos = pos
                if len(rows) >= limit:
                    break
        finally:
            records.close()
        if last_pos is None:
            self.ring.skip_sent()
            return
        if payload is None:
            payload = frames.encode_batch(boot, seq, rows)
        rows = []
        self.mqtt.publish(topics.uplink(self.device), self._sign(payload), qos=1)
        self.ring.mark_sent(last_pos)  # PUBACK or not: sent, awaiting a receipt
        if not self.window:
            self.progress_at = self.board.uptime_s()
        self.window.append(last_pos)

    def on_receipt(self, frame):
        if self.ring.confirm(frame["boot"], frame["seq"], frame["n"]):
            self.progress_at = self.board.uptime_s()
            done = self.ring.done
            self.window = [w for w in self.window if w > done]

    def check_receipts(self, now):
        """No receipt progress for receipt_timeout_s while records are unconfirmed: the
        broker or the gateway lost them; send again from the oldest."""
        if self.ring.unconfirmed() and now - self.progress_at >= self.receipt_timeout_s:
            self.rewind()

    # --- commands --------------------------------------------------------------------

    def on_message(self, topic, payload):
        """A receipt or a command, checked; anything else is ignored, never answered."""
        try:
            frame = self._downlink(payload)
        except ValueError:
            return
        if frame["type"] == "receipt":
            self.on_receipt(frame)
            return
        import commands  # loaded for the command, dropped after it (see commands.py)

        try:
            commands.handle(self, frame)
        finally:
            sys.modules.pop("commands", None)

    def _downlink(self, payload):
        """The frame of a downlink payload; ValueError unless it is signed with our key
        (when we have one) and is a command or a receipt."""
        from protocol import cose

        mac, inner = cose.unwrap(payload, frames.MAX_FRAME_BYTES)
        if self.key is not None and (mac is None or mac.kid != self.device
                                     or not mac.verify(self.key)):
            raise ValueError("not from our gateway")
        return frames.decode_downlink(inner)

    def save_state(self):
        _write_json(self.dir + "/state.json", self.state)

    def save_config(self):
        _write_json(self.dir + "/config.json", self.cfg)

    def check_inputs(self):
        """Edges on the SOS input and the external supply: events, reported at once."""
        sos = self.board.sos()
        if sos and not self.sos:
            self.record_event("sos", self.last_fix)
            self.report_next = True
        self.sos = sos
        mv = self.board.supply_mv()
        threshold = self.cfg.get("power_lost_mv", 6000)
        if mv and self.power_ok and mv < threshold:
            self.power_ok = False
            self.record_event("power_lost", self.last_fix, {"mv": mv})
        elif not self.power_ok and mv >= threshold:
            self.power_ok = True
            self.record_event("power_restored", self.last_fix, {"mv": mv})

    def record_status(self):
        self.record_frame({"type": "status", "t": self.board.time(),
                           "batt_mv": self.board.battery_mv(),
                           "supply_mv": self.board.supply_mv(), "fw": FW_VERSION,
                           "buffered": self.ring.depth(), "dropped": self.ring.dropped,
                           "thinned": self.ring.thinned,
                           "uptime": self.board.uptime_s(),
                           "heap_free": self.board.heap_free()})

    # --- the loop ----------------------------------------------------------------------

    def step(self):
        """One turn: read the GNSS, keep the link, send, watch the time."""
        self.board.feed_watchdog()
        n = self.board.gnss_readinto(self.gnss_buf)
        if n:
            self.parser.feed(memoryview(self.gnss_buf)[:n])
        now = self.board.uptime_s()
        if not self.mqtt.connected():
            if now >= self.retry_at:
                if not self.connect():
                    self.retry_at = now + self.backoff_s
                    self.backoff_s = min(self.backoff_s * 2, 300)
        else:
            try:
                self.mqtt.poll()
                self.check_receipts(now)
                self.send_next()
            except (OSError, MQTTError):
                self.mqtt.close()
        if now >= self.next_check:
            self.next_check = now + 1
            self.check_inputs()
        if now >= self.next_status:
            self.next_status = now + self.cfg.get("status_period_s", 3600)
            self.record_status()

    def run(self):
        while True:
            self.step()
            self.board.idle()
