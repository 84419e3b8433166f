# A simulated board for the unix port: the GNSS UART is an NMEA file, the network is a
# flag file (present: coverage lost), ignition comes from a schedule. The application
# cannot tell it from an ESP32, which is the point.
import gc
import os
import time


class SimBoard:
    def __init__(self, nmea_path, data_dir, chunk=512, pace_ms=0, ignition=None):
        self.gnss = open(nmea_path, "rb")
        self.dir = data_dir
        self.chunk = chunk
        self.pace_ms = pace_ms
        self.t = 0
        self.started = time.ticks_ms()
        self.ignition_schedule = ignition  # [[unix_t, on], ...] or None
        self.eof = False

    def gnss_readinto(self, buf):
        n = self.gnss.readinto(memoryview(buf)[:self.chunk])
        if not n:
            self.eof = True
            return 0
        return n

    def ignition(self):
        if self.ignition_schedule is None:
            return None
        state = False
        for t, on in self.ignition_schedule:
            if self.t >= t:
                state = bool(on)
        return state

    def sos(self):
        try:
            os.stat(self.dir + "/sos.pressed")
            return True
        except OSError:
            return False

    def time(self):
        return self.t if self.t else int(time.time())

    def set_time(self, t):
        self.t = t

    def network_up(self):
        try:
            os.stat(self.dir + "/network.down")
            return False
        except OSError:
            return True

    def uptime_s(self):
        return time.ticks_diff(time.ticks_ms(), self.started) // 1000

    def reset(self):
        raise SystemExit("reboot requested")

    def reset_cause(self):
        return 0

    def battery_mv(self):
        return 4010

    def supply_mv(self):
        try:
            os.stat(self.dir + "/power.lost")
            return 3900  # only the backup battery
        except OSError:
            return 12600

    def heap_free(self):
        return gc.mem_free()

    def feed_watchdog(self):
        pass

    def idle(self):
        if self.pace_ms:
            time.sleep_ms(self.pace_ms)
