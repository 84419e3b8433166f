# The ESP32 board layer: the only module that touches machine and network. Pins and
# the link type come from the board profile copied into config.json by the
# provisioning tool (hardware/boards/*.toml).
import gc
import time

import machine
import network


class Esp32Board:
    def __init__(self, cfg):
        pins = cfg["pins"]
        self.cfg = cfg
        self.uart = machine.UART(pins.get("gnss_uart", 1), baudrate=pins.get("gnss_baud", 9600),
                                 tx=pins["gnss_tx"], rx=pins["gnss_rx"], rxbuf=2048)
        ign = pins.get("ignition")
        self.ign = machine.Pin(ign, machine.Pin.IN) if ign is not None else None
        self.ign_active_low = bool(pins.get("ignition_active_low", True))
        self.batt = self._adc(pins.get("battery_adc"))
        self.supply = self._adc(pins.get("supply_adc"))
        self.batt_ratio = pins.get("battery_divider_x1000", 2000)
        self.supply_ratio = pins.get("supply_divider_x1000", 11000)
        sos = pins.get("sos")
        self.sos_pin = machine.Pin(sos, machine.Pin.IN, machine.Pin.PULL_UP) if sos is not None \
            else None
        self.led = machine.Pin(pins["led"], machine.Pin.OUT) if "led" in pins else None
        self.led_on = 0 if pins.get("led_active_low") else 1
        self.wdt = machine.WDT(timeout=cfg.get("watchdog_ms", 30000))
        self.rtc = machine.RTC()
        self.started = time.ticks_ms()
        self.net = None
        self.link = cfg.get("net", {})

    def _adc(self, pin):
        if pin is None:
            return None
        adc = machine.ADC(machine.Pin(pin))
        adc.atten(machine.ADC.ATTN_11DB)
        return adc

    def gnss_readinto(self, buf):
        """Bytes waiting on the GNSS UART into ``buf`` (reused: no allocation per read)."""
        n = self.uart.any()
        if not n:
            return 0
        return self.uart.readinto(buf, min(n, len(buf))) or 0

    def ignition(self):
        if self.ign is None:
            return None
        level = self.ign.value()
        return level == 0 if self.ign_active_low else level == 1

    def sos(self):
        return self.sos_pin is not None and self.sos_pin.value() == 0

    def time(self):
        return time.time() + 946684800  # the port's epoch is 2000-01-01

    def set_time(self, t):
        if abs(self.time() - t) > 2:
            tm = time.gmtime(t - 946684800)
            self.rtc.datetime((tm[0], tm[1], tm[2], tm[6], tm[3], tm[4], tm[5], 0))

    def network_up(self):
        kind = self.link.get("type", "wifi")
        if self.net is None:
            if kind == "wifi":
                self.net = network.WLAN(network.STA_IF)
                self.net.active(True)
                self.net.connect(self.link["ssid"], self.link.get("password", ""))
            else:
                self._modem_power_on()
                uart = machine.UART(self.link.get("modem_uart", 2),
                                    baudrate=self.link.get("modem_baud", 115200),
                                    tx=self.link["modem_tx"], rx=self.link["modem_rx"])
                self._dial(uart)
                self.net = network.PPP(uart)
                self.net.active(True)
                self.net.connect()
        return bool(self.net.isconnected())

    def _modem_power_on(self):
        """Press the modem's power key as its hardware design asks (profile timings)."""
        pin = self.link.get("modem_pwrkey")
        if pin is None:
            return
        level = self.link.get("modem_pwrkey_press_level", 0)
        key = machine.Pin(pin, machine.Pin.OUT, value=1 - level)
        time.sleep_ms(100)
        key.value(level)
        time.sleep_ms(self.link.get("modem_pwrkey_on_ms", 500))
        key.value(1 - level)
        time.sleep_ms(self.link.get("modem_boot_ms", 8000))  # until it answers AT commands

    def _dial(self, uart):
        """Put the modem in data mode on the configured APN (3GPP TS 27.007 commands)."""
        for cmd in ("AT", "ATE0", 'AT+CGDCONT=1,"IP","%s"' % self.link.get("apn", ""),
                    "ATD*99#"):
            uart.write(cmd + "\r")
            time.sleep_ms(1000)
            uart.read()  # the modem's answer; PPP negotiation takes over after CONNECT

    def uptime_s(self):
        return time.ticks_diff(time.ticks_ms(), self.started) // 1000

    def reset(self):
        machine.reset()

    def reset_cause(self):
        return machine.reset_cause()

    def _mv(self, adc, ratio_x1000):
        if adc is None:
            return 0
        return adc.read_uv() // 1000 * ratio_x1000 // 1000

    def battery_mv(self):
        return self._mv(self.batt, self.batt_ratio)

    def supply_mv(self):
        return self._mv(self.supply, self.supply_ratio)

    def heap_free(self):
        return gc.mem_free()

    def feed_watchdog(self):
        self.wdt.feed()

    def idle(self):
        if self.led is not None:
            up = self.net is not None and self.net.isconnected()
            self.led.value(self.led_on if up else 1 - self.led_on)
        time.sleep_ms(20)
