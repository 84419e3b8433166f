"""``fieldtrack gnss monitor``: the model on real receiver captures, the CLI, a real pty.

Expected values were read off the captures by hand: the last complete GSV cycle of each
constellation (satellites in view), the last GSA block (used), the first epoch with a
3D fix (time to first fix). Synthetic sentences cover what the captures do not.
"""

from __future__ import annotations

import errno
import functools
import os
import random
import re
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from fieldtrack.tools.cli import cli, main
from fieldtrack.tools.gnss.checks import Verdict
from fieldtrack.tools.gnss.command import bar, capture_bytes, gnss
from fieldtrack.tools.gnss.monitor import GnssMonitor
from fieldtrack.tools.gnss.nmea_fields import FixType
from fieldtrack.tools.gnss.nmea_stream import Constellation, classify

if "gnss" not in cli.commands:  # cli.py registers it; until it does, the tests do
    cli.add_command(gnss)

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "gpsd"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(),
                                  reason="the reference corpus (../shared/corpus/gpsd) is absent")
G, R, E, C, J, S = (Constellation.GPS, Constellation.GLONASS, Constellation.GALILEO,
                    Constellation.BEIDOU, Constellation.QZSS, Constellation.SBAS)


def capture(name: str) -> GnssMonitor:
    monitor = GnssMonitor()
    monitor.feed_bytes(capture_bytes(str(CORPUS / name)))
    monitor.end()
    return monitor


def views(monitor: GnssMonitor) -> dict[Constellation, tuple[int, int]]:
    """Constellation -> (used, in view)."""
    return {v.constellation: (v.used, v.in_view) for v in monitor.constellations()}


def verdicts(monitor: GnssMonitor) -> dict[str, Verdict]:
    return {c.name: c.verdict for c in monitor.checks()}


def nmea(body: str) -> bytes:
    """``body`` (between '$' and '*') as a sentence with its checksum and line end."""
    checksum = functools.reduce(lambda a, b: a ^ b, body.encode(), 0)
    return b"$%s*%02X\r\n" % (body.encode(), checksum)


def epoch(second: int, quality: int = 1, hdop: float = 0.9, mode: int = 3) -> bytes:
    """One 1 Hz epoch: GGA, a GSA with 6 GPS satellites, and RMC."""
    hhmmss = "1200%02d.00" % second if second < 60 else "12%02d%02d.00" % divmod(second, 60)
    fix = quality > 0
    return (nmea("GPGGA,%s,4807.038,N,01131.000,E,%d,06,%.1f,545.4,M,46.9,M,,"
                 % (hhmmss, quality, hdop) if fix else "GPGGA,%s,,,,,0,00,99.9,,M,,M,," % hhmmss)
            + nmea("GPGSA,A,%d,%s,,,,,,,1.8,%.1f,1.5" % (
                mode if fix else 1, "04,05,09,12,24,25" if fix else ",,,,,", hdop))
            + nmea("GPRMC,%s,%s,4807.038,N,01131.000,E,000.0,,230394,,,A"
                   % (hhmmss, "A" if fix else "V")))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- the model on captures ----------------------------------------------------------------

@needs_corpus
def test_ublox_m9n_four_constellations_and_sbas() -> None:
    m = capture("ublox-neo-m9n-nmea.log")
    assert views(m) == {G: (6, 13), R: (7, 10), E: (5, 10), C: (5, 7), S: (2, 3)}
    assert m.satellites_used == 25
    assert m.fix_type is FixType.DGPS
    assert (m.hdop, m.pdop, m.vdop) == (0.56, 1.05, 0.88)
    assert m.latitude == pytest.approx(38 + 6.63006 / 60)
    assert m.longitude == pytest.approx(-(122 + 37.61538 / 60))
    assert (m.utc_date, m.utc_time) == ("2020-07-11", "22:38:45.00")
    assert m.clock == pytest.approx(60.0)
    signals = {v.constellation: v.signals for v in m.constellations()}
    assert signals[E] == ("E1-BC",) and signals[C] == ("B1I",)


@needs_corpus
def test_ublox_m9n_passes_every_antenna_check() -> None:
    m = capture("ublox-neo-m9n-nmea.log")
    assert m.fixed_at_start and m.ttff == 0.0
    # best four non-SBAS C/N0: 44 (R04), 44 (C32), 43 (C27), 42 (G29)
    assert m.best_cn0()[:4] == [44, 44, 43, 42]
    assert m.hdop_held == pytest.approx(60.0)
    assert set(verdicts(m).values()) == {Verdict.PASS}


@needs_corpus
def test_quectel_l76k_5hz_gps_glonass_beidou() -> None:
    m = capture("quectel-l76k-nmea.log")
    assert views(m) == {G: (9, 12), R: (2, 10), C: (3, 3)}
    assert m.satellites_used == 14
    assert m.fix_type is FixType.FIX_3D
    assert m.epoch_interval == pytest.approx(0.2)
    assert m.clock == pytest.approx(30.0)      # 05:52:34.000 to 05:53:04.000
    assert m.fixed_at_start


@needs_corpus
def test_telit_he910_time_to_first_fix_counts_epochs_without_a_clock() -> None:
    m = capture("telit-he910.log")
    # 37 epochs of "$GPGGA,,,,,,0" before the first one with a time, which is a 3D fix
    assert m.clockless_epochs == 37
    assert m.ttff == pytest.approx(37.0) and m.ttff_estimated and not m.fixed_at_start
    assert views(m) == {G: (5, 7)}
    assert m.hdop == 1.75 and m.dropouts == 0
    assert verdicts(m)["satellites used"] is Verdict.WARN   # 5 used


@needs_corpus
def test_quectel_eg25_ttff_in_receiver_time_and_two_dropouts() -> None:
    m = capture("quectel-eg25-g.log")
    # first epoch 19:14:34.96, first 3D fix 19:15:03.01; fix lost at 19:15:18 and 19:15:26.98
    assert m.ttff == pytest.approx(28.05) and not m.ttff_estimated
    assert m.dropouts == 2
    assert verdicts(m)["fix dropouts"] is Verdict.FAIL
    # BeiDou only in Quectel's proprietary $PQGSV (system ID 4)
    assert views(m)[C] == (0, 15)


@needs_corpus
def test_bu353_glonass_loses_its_fix() -> None:
    m = capture("bu353-glonass.log")
    assert views(m) == {G: (0, 12), R: (0, 10)}
    assert m.fix_type is FixType.NONE and m.dropouts == 1
    assert verdicts(m)["fix"] is Verdict.FAIL
    assert m.satellites_used == 0


@needs_corpus
def test_fuzzy_nmea_rtk_fix_without_satellite_sentences() -> None:
    m = capture("nmea-fuzzy-cases.log")
    assert m.fix_type is FixType.RTK_FIXED
    assert m.satellites_used == 19               # from GGA: no GSA in this capture
    assert m.constellations() == []
    assert m.latitude == pytest.approx(41 + 34.50180291 / 60)
    assert m.stats.sentences == 28 and m.stats.bad_checksum == 0
    # 13:28:29.9 to 13:39:00.0 is a gap in the capture: HDOP has held only since
    assert m.hdop_held == pytest.approx(0.9)
    assert verdicts(m)["HDOP"] is Verdict.WARN


@needs_corpus
@pytest.mark.parametrize("name, protocol", [("bu303-nofix.log", "SiRF binary"),
                                            ("ublox-neo-m8n.log", "u-blox UBX")])
def test_binary_only_capture_is_survived_and_named(name: str, protocol: str) -> None:
    m = capture(name)
    assert m.stats.sentences == 0 and m.epochs == 0
    assert m.stats.binary[protocol] > 10
    assert m.stats.noise_bytes > 3000
    assert set(verdicts(m).values()) == {Verdict.FAIL}


@needs_corpus
def test_garbage_at_the_start_and_a_cut_last_line_cost_only_themselves() -> None:
    m = capture("ublox-8.log")
    # line 1 is 142 bytes of garbage ending in a whole $GNRMC; the last line is cut short
    assert m.stats.noise_bytes == 142
    assert m.stats.bad_checksum == 1
    assert m.stats.sentences == 1008
    assert views(m)[G] == (8, 13)


@needs_corpus
def test_garmin_demo_mode_is_not_a_fix() -> None:
    m = capture("garmin-geko201.log")
    assert m.fix_type is FixType.NONE and "simulated" in m.fix_note
    assert m.stats.bad_checksum == 1             # "$GPBOD,,T,,M,,*": no checksum digits


@needs_corpus
def test_feeding_in_random_pieces_changes_nothing() -> None:
    data = capture_bytes(str(CORPUS / "unicore-um621.log"))
    whole = GnssMonitor()
    whole.feed_bytes(data)
    whole.end()
    pieces, rng, i = GnssMonitor(), random.Random(7), 0
    while i < len(data):
        n = rng.randint(1, 80)
        pieces.feed_bytes(data[i:i + n])
        i += n
    pieces.end()
    assert pieces.stats == whole.stats
    assert pieces.satellites() == whole.satellites()
    assert pieces.checks() == whole.checks()


# -- the model on synthetic sentences -----------------------------------------------------

def test_binary_and_garbage_between_sentences_do_not_lose_sync() -> None:
    good = nmea("GPGGA,120000.00,4807.038,N,01131.000,E,1,06,0.9,545.4,M,46.9,M,,")
    noise = b"\xb5\x62\x01\x07$\x00\xff$GPG" + b"\x00" * 5 + b"$GPRMC,12000"  # cut short
    m = GnssMonitor()
    m.feed_bytes(noise + good + b"\xa0\xa2\x00" + good.replace(b"*", b"0*", 1) + good)
    m.end()
    assert m.stats.sentences == 2
    assert m.stats.bad_checksum == 1
    assert m.stats.partial == 1
    assert m.stats.binary == {"u-blox UBX": 1, "SiRF binary": 1}


def test_sentence_without_checksum_is_rejected() -> None:
    m = GnssMonitor()
    assert not m.feed_sentence("$GPGGA,120000.00,4807.038,N,01131.000,E,1,06,0.9,545.4,M,,M,,")
    assert m.stats.bad_checksum == 1


@pytest.mark.parametrize("hint, prn, expected", [
    (None, 12, (G, 12)), (G, 44, (S, 131)), (None, 70, (R, 6)), (R, 82, (R, 18)),
    (C, 208, (C, 8)), (None, 405, (C, 5)), (None, 312, (E, 12)), (J, 193, (J, 1)),
    (None, 195, (J, 3)), (E, 33, (E, 33)), (G, 133, (S, 133)),
])
def test_classify_maps_nmea_numbers_to_systems(hint: Constellation | None, prn: int,
                                               expected: tuple[Constellation, int]) -> None:
    assert classify(hint, prn) == expected


def test_multi_signal_satellite_counts_once_with_its_best_signal() -> None:
    m = GnssMonitor()
    m.feed_bytes(nmea("GPGSV,1,1,02,05,40,100,30,07,20,200,25,1")
                 + nmea("GPGSV,1,1,01,05,40,100,41,8"))
    sats = m.satellites()
    assert [s.number for s in sats] == [5, 7]
    sat5 = sats[0]
    assert (sat5.number, sat5.cn0, sat5.signals) == (5, 41, ("L1 C/A", "L5-Q"))
    assert views(m) == {G: (0, 2)}


def test_gsv_cycle_with_a_missing_part_is_dropped() -> None:
    m = GnssMonitor()
    m.feed_bytes(nmea("GPGSV,3,1,09,01,40,100,30,02,40,100,30,03,40,100,30,04,40,100,30")
                 + nmea("GPGSV,3,3,09,09,40,100,30"))
    assert m.satellites() == []


def test_hdop_must_hold_30_seconds() -> None:
    m = GnssMonitor()
    m.feed_bytes(b"".join(epoch(s) for s in range(30)))
    m.end()
    assert m.hdop_held == 29 and verdicts(m)["HDOP"] is Verdict.WARN
    m.feed_bytes(epoch(30))
    m.end()
    assert verdicts(m)["HDOP"] is Verdict.PASS
    m.feed_bytes(epoch(31, hdop=2.5) + epoch(32))
    m.end()
    assert m.hdop_held == 0 and verdicts(m)["HDOP"] is Verdict.WARN


def test_lost_fix_is_a_dropout_and_ttff_is_first_3d_epoch() -> None:
    m = GnssMonitor()
    m.feed_bytes(epoch(0, quality=0) + epoch(1, quality=0) + epoch(2, mode=2) + epoch(3)
                 + epoch(4, quality=0) + epoch(5))
    m.end()
    assert m.ttff == 3.0 and not m.fixed_at_start
    assert (m.dropouts, m.downgrades) == (1, 0)
    assert verdicts(m)["fix dropouts"] is Verdict.FAIL


def test_live_ttff_uses_the_callers_clock() -> None:
    m = GnssMonitor()
    for second, at in ((0, 0.4), (1, 1.4), (2, 2.4)):
        m.feed_bytes(epoch(second, quality=0 if second < 2 else 1), at=at)
    m.end()
    assert m.wall_clock and m.ttff == pytest.approx(2.4)


def test_bar_scale() -> None:
    assert bar(50, ascii_only=True) == "#" * 10
    assert bar(25, ascii_only=True) == "#####....."
    assert bar(None, ascii_only=True) == ".........."
    assert bar(27) == "█████▍    "


# -- the command line ---------------------------------------------------------------------

@needs_corpus
def test_cli_file_once_prints_the_final_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "gnss", "monitor", "--file",
                       str(CORPUS / "ublox-neo-m9n-nmea.log"), "--once")
    assert code == 0
    assert "\x1b[" not in out
    assert re.search(r"^GPS\s+6\s+13\s+L1 C/A\s+42 41 39 37 35 27$", out, re.M)
    assert re.search(r"^SBAS\s+2\s+3\s", out, re.M)
    assert "Fix         3D DGPS" in out
    assert "Antenna placement: PASS" in out
    assert re.search(r"PASS\s+C/N0 median of best 4\s+43.5 dB-Hz", out)


@needs_corpus
def test_cli_file_once_on_binary_capture_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "gnss", "monitor", "--file",
                       str(CORPUS / "ublox-neo-m8n.log"), "--once")
    assert code == 0
    assert "Antenna placement: FAIL" in out
    assert "only binary: u-blox UBX" in out


@needs_corpus
def test_cli_ttff_line_for_a_cold_start(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "gnss", "monitor", "--file", str(CORPUS / "telit-he910.log"),
                    "--once")
    assert "TTFF        37.0 s (receiver time; 37 epochs before the receiver had a clock" in out


def test_cli_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "gnss", "monitor", "--file", str(tmp_path / "none.log"), "--once")
    assert code == 2 and err.startswith("error: ") and "none.log: cannot read it" in err


def test_cli_needs_a_port_or_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "gnss", "monitor", "--once")
    assert code == 2 and "--port PORT" in err and "--file LOG" in err


def test_cli_nonexistent_port_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "gnss", "monitor", "--port", "/dev/ttyFIELDTRACK-NONE", "--once")
    assert code == 2 and out == ""
    assert "error: /dev/ttyFIELDTRACK-NONE: no such serial port" in err
    assert "Traceback" not in err


def test_cli_port_without_permission_gives_dialout_advice(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = tmp_path / "ttyLOCKED"
    port.touch()
    port.chmod(0)
    if os.geteuid() == 0:  # root opens it anyway: have the open fail as it would for a user
        def refuse(self: serial.Serial) -> None:
            raise PermissionError(errno.EACCES, "Permission denied", str(port))
        monkeypatch.setattr(serial.Serial, "open", refuse)
    code, _, err = run(capsys, "gnss", "monitor", "--port", str(port), "--once")
    assert code == 2
    assert "%s: permission denied" % port in err
    assert "sudo usermod -aG dialout $USER" in err and "log out and in again" in err


# -- a real pseudo-terminal ---------------------------------------------------------------

def feed_pty(master: int, slave: int, data: bytes, epoch_pause: float) -> threading.Thread:
    """A thread that plays ``data`` into the pty once its slave side has been opened."""
    def play() -> None:
        deadline = time.monotonic() + 10
        # pyserial's open puts the line in raw mode, then flushes its input: wait for both
        while termios.tcgetattr(slave)[3] & termios.ICANON and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        for line in data.splitlines(keepends=True):
            if b"RMC," in line or b"GGA," in line[:8]:
                time.sleep(epoch_pause)
            os.write(master, line)
    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, int, str]]:
    master, slave = os.openpty()
    yield master, slave, os.ttyname(slave)
    os.close(master)
    os.close(slave)


@needs_corpus
def test_monitor_reads_a_receiver_on_a_pty(capsys: pytest.CaptureFixture[str],
                                           pty_pair: tuple[int, int, str]) -> None:
    master, slave, path = pty_pair
    writer = feed_pty(master, slave, capture_bytes(str(CORPUS / "ublox-neo-m9n-nmea.log")),
                      epoch_pause=0.005)
    code, out, err = run(capsys, "gnss", "monitor", "--port", path, "--baud", "38400",
                         "--once", "--idle", "2.5", "--duration", "60")
    writer.join(5)
    assert code == 0, err
    assert "GNSS monitor: %s  (61 epochs" % path in out
    assert re.search(r"^GLONASS\s+7\s+10\s", out, re.M)
    assert "Used        25" in out
    assert "the receiver already had a fix when the stream began" in out
    # live, HDOP is held over wall-clock time: a second of replay is not the 30 s needed
    assert re.search(r"WARN\s+HDOP\s+0.56, held [0-9] s", out)
    assert "Antenna placement: WARN" in out


@needs_corpus
def test_monitor_on_a_pty_times_the_first_fix_by_the_wall_clock(
        capsys: pytest.CaptureFixture[str], pty_pair: tuple[int, int, str]) -> None:
    master, slave, path = pty_pair
    data = capture_bytes(str(CORPUS / "telit-he910.log"))
    data = data[:data.index(b"$GPGGA,105203")]  # 37 epochs without a fix, 11 with
    writer = feed_pty(master, slave, data, epoch_pause=0.02)
    code, out, _ = run(capsys, "gnss", "monitor", "--port", path, "--once", "--idle", "2.5")
    writer.join(5)
    assert code == 0
    ttff = re.search(r"^TTFF\s+([\d.]+) s \(wall clock\)$", out, re.M)
    assert ttff, out
    # 37 epochs x 20 ms of pauses at least, plus the writer's start-up wait
    assert 0.7 < float(ttff.group(1)) < 10
    assert "Fix         3D" in out
