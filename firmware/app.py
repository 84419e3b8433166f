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


def _read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def _write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
    try:
        os.remove(path)
    except OSError:
        pass
    os.rename(tmp, path)


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
        state = _read_json(data_dir + "/state.json", {"boot": 0, "cid": 0})
        state["boot"] += 1  # every start is a new epoch: seq starts again at 0
        _write_json(data_dir + "/state.json", state)
        self.state = state
        self.boot = state["boot"]
        self.seq = 0
        self.policy = policy.Policy(cfg.get("reporting", policy.DEFAULTS))
        buf = cfg.get("buffer", {})
        self.ring = ringbuf.RingBuffer(data_dir + "/ring", buf.get("block_records", 32),
                                       buf.get("max_segments", 256))
        self.parser = nmea.Parser(on_fix=self.on_fix)
        self.gnss_buf = bytearray(512)  # one UART read, reused
        m = cfg["mqtt"]
        self.mqtt = MQTTClient(self.device, m["host"], m.get("port", 1883),
                               user=m.get("user", self.device), password=m.get("password"),
                               keepalive=m.get("keepalive_s", 60),
                               will=(topics.presence(self.device), topics.OFFLINE, 1, True),
                               ssl=m.get("tls", False))
        self.mqtt.on_ack = self.on_ack
        self.mqtt.on_message = self.on_message
        self.in_flight = None  # (packet id, boot, last seq) of the one batch awaiting PUBACK
        self.last_fix = None
        self.ignition = None
        self.next_status = 0
        self.retry_at = 0
        self.backoff_s = 1
        self.sent_records = 0
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
        self.in_flight = None
        self.backoff_s = 1
        return True

    def _sign(self, payload):
        if not self.key:
            return payload
        from protocol import cose  # only a device with a key signs

        return cose.sign(payload, self.key, self.device)

    def send_next(self):
        """Publish the oldest unsent records: one batch or one frame, one at a time."""
        if self.in_flight is not None or not self.mqtt.connected():
            return
        if not self.ring.pending():
            return
        rows: list = []
        boot = seq = 0
        payload = None
        now = self.board.time()
        # A batch needs pieces of up to 1 KiB in one piece: collect first, so that free
        # memory is contiguous and mem_free() says what there is. Then smaller batches
        # when the heap is short: each fix costs about FIX_BYTES to batch.
        gc.collect()
        limit = max(1, min(MAX_BATCH, (gc.mem_free() - RESERVE_BYTES) // FIX_BYTES))
        for b, s, r in self.ring.records():  # one flash segment in RAM at a time
            item = cbor.loads(r, 4096, 4, False, ())
            if not rows:
                boot, seq = b, s
                if item[0] == FRAME:
                    payload = item[1]
                    break
            elif b != boot or s != seq + len(rows) or item[0] != FIX:
                break
            del item[0]  # the fix row: FIX_FIELDS, then flags
            item[-1] = item[-1] | BUF if now - item[0] > 120 else item[-1] & ~BUF
            rows.append(item)
            if len(rows) >= limit:
                break
        if payload is None:
            if not rows:
                return
            payload = frames.encode_batch(boot, seq, rows)
        last = seq + len(rows) - 1 if rows else seq
        rows = []
        pid = self.mqtt.publish(topics.uplink(self.device), self._sign(payload), qos=1)
        self.in_flight = (pid, boot, last)

    def on_ack(self, pid):
        if self.in_flight is not None and self.in_flight[0] == pid:
            _, boot, last = self.in_flight
            self.ring.ack(boot, last)
            self.sent_records = last
            self.in_flight = None

    # --- commands --------------------------------------------------------------------

    def on_message(self, topic, payload):
        import commands  # loaded for the command, dropped after it (see commands.py)

        try:
            commands.handle(self, payload)
        finally:
            sys.modules.pop("commands", None)

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
            self.ring.flush()  # running on the backup battery: get RAM onto flash now
        elif not self.power_ok and mv >= threshold:
            self.power_ok = True
            self.record_event("power_restored", self.last_fix, {"mv": mv})

    def record_status(self):
        self.record_frame({"type": "status", "t": self.board.time(),
                           "batt_mv": self.board.battery_mv(),
                           "supply_mv": self.board.supply_mv(), "fw": FW_VERSION,
                           "buffered": self.ring.depth(), "dropped": self.ring.dropped,
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
                self.send_next()
            except (OSError, MQTTError):
                self.mqtt.close()
                self.in_flight = None
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
