"""``fieldtrack report``: exact figures in every format, day boundaries, errors, the page.

One store holds a known day in Berlin (UTC+1 in March): van-1 with three trips (the last
one starts at 23:30 and ends after midnight), two stops, an idle period, a visit with
its fence events, a speeding episode and two check-ins; van-2 with fixes only, so its
distance comes from the positions. The HTML page is opened in headless Chromium when
/usr/bin/chromium exists.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import subprocess
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import date
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fieldtrack.gateway.derive.identity import key_seq
from fieldtrack.gateway.store import registry
from fieldtrack.gateway.store.sqlite import Batch, Store, event_data_json
from fieldtrack.tools.report.command import render_csv, report
from fieldtrack.tools.report.days import build
from fieldtrack.tools.report.map_svg import PALETTE, nice_length
from fieldtrack.tools.report.model import DeviceRows, Event, Fix, parse_day
from fieldtrack.tools.report.reader import read_day

DAY = "2025-03-01"
TZ = "Europe/Berlin"
START = 1740783600  # 2025-03-01T00:00:00+01:00
CHROMIUM = Path("/usr/bin/chromium")
DEPOT = (525367000, 133975000)  # 1e-7 degrees
ACME = (525222480, 134153460)


def at(h: int, m: int = 0, s: int = 0) -> int:
    """Unix seconds of a local time on the report day (h may pass 24)."""
    return START + h * 3600 + m * 60 + s


def fix(device: str, seq: int, t: int, lat: int, lon: int, spd: int, ign: int = 1,
        flagged: str = "") -> tuple[Any, ...]:
    # POSITION_COLUMNS: device boot seq t ms lat lon spd hdg alt acc sats fix ign buf mock
    # flagged received
    return (device, 1, seq, t, 0, lat, lon, spd, 90, 40, 5, 10, 2, ign, 0, 0, flagged,
            t * 1000 + 500)


def derived(device: str, t: int, what: str, where: tuple[int, int] | None = None,
            **data: Any) -> tuple[Any, ...]:
    # EVENT_COLUMNS: device boot seq t kind lat lon acc data received ms key judged;
    # derived: boot -1, keyed by kind, fence and time, judged at their own time here
    lat, lon = where if where else (None, None)
    key = "%s/%s/%d.000" % (what, data.get("fence", ""), t)
    return (device, -1, key_seq(key), t, what, lat, lon, None, event_data_json(data), t * 1000,
            0, key, t)


def between(a: tuple[int, int], b: tuple[int, int], f: float) -> tuple[int, int]:
    return round(a[0] + (b[0] - a[0]) * f), round(a[1] + (b[1] - a[1]) * f)


def van1_fixes() -> list[tuple[Any, ...]]:
    rows = []
    seq = iter(range(1, 1000))
    for i in range(7):  # 08:00-08:30, depot -> halfway
        rows.append(fix("van-1", next(seq), at(8, 5 * i), *between(DEPOT, ACME, i / 12), 40))
    half = between(DEPOT, ACME, 0.5)
    rows.append(fix("van-1", next(seq), at(8, 35), *half, 0))  # idling, ignition on
    rows.append(fix("van-1", next(seq), at(8, 40), *half, 0, ign=0))  # ignition off
    speeds = {at(9, 20): 62, at(9, 21): 70, at(9, 22): 45}
    for i, t in enumerate([at(9, 15), at(9, 20), at(9, 21), at(9, 22), at(9, 30), at(9, 45)]):
        rows.append(fix("van-1", next(seq), t, *between(half, ACME, i / 5), speeds.get(t, 40)))
    rows.append(fix("van-1", next(seq), at(9, 50), *ACME, 0, ign=0))
    rows.append(fix("van-1", next(seq), at(9, 55), 525000000, 133000000, 0,
                    flagged="accuracy"))  # far off and flagged: neither drawn nor measured
    rows.append(fix("van-1", next(seq), at(23, 30), *between(ACME, DEPOT, 0.2), 50))
    rows.append(fix("van-1", next(seq), at(23, 45), *between(ACME, DEPOT, 0.6), 50))
    rows.append(fix("van-1", next(seq), at(24, 10), *DEPOT, 30))  # the next day
    return rows


def van2_fixes() -> list[tuple[Any, ...]]:
    lat, lon = 525100000, 134000000
    rows = []
    for i in range(11):  # 10 steps of 0.001 degrees north, 10 s apart: 40 km/h
        rows.append(fix("van-2", i + 1, at(14, 0, 10 * i), lat + 10000 * i, lon, 40))
    for i in range(3):  # parked: jitter of a few metres is not distance
        rows.append(fix("van-2", 20 + i, at(14, 5 + i), lat + 100000 + 20 * (i % 2), lon, 0))
    return rows


def van1_events() -> list[tuple[Any, ...]]:
    acme = {"fence": "acme", "name": "ACME GmbH", "kind": "customer"}
    half = between(DEPOT, ACME, 0.5)
    return [
        # the previous day's last trip ends after midnight: it is not this day's
        derived("van-1", at(-1, 50), "trip_start", DEPOT),
        derived("van-1", at(0, 10), "trip_end", DEPOT, start=at(-1, 50), distance_m=999,
                duration_s=1200, max_kmh=40, avg_kmh=3.0, ended_by="stop"),
        derived("van-1", at(8), "trip_start", DEPOT),
        derived("van-1", at(8, 30), "trip_end", half, start=at(8), distance_m=12000,
                duration_s=1800, max_kmh=70, avg_kmh=24.0, ended_by="stop"),
        derived("van-1", at(8, 30), "stop", half, since=at(8, 30)),
        derived("van-1", at(8, 30), "idle", half, since=at(8, 30), seconds=300),
        derived("van-1", at(9, 15), "trip_start", half),
        derived("van-1", at(9, 20), "overspeed", between(half, ACME, 0.2), limit_kmh=50,
                max_kmh=62, seconds=20),
        derived("van-1", at(9, 45), "trip_end", ACME, start=at(9, 15), distance_m=8000,
                duration_s=1800, max_kmh=95, avg_kmh=16.0, ended_by="stop"),
        derived("van-1", at(9, 45), "stop", ACME, since=at(9, 45)),
        derived("van-1", at(9, 46), "geofence_enter", ACME, **acme),
        derived("van-1", at(9, 56), "geofence_dwell", ACME, fence="acme", since=at(9, 46),
                seconds=600),
        derived("van-1", at(11), "geofence_exit", ACME, **acme, since=at(9, 46)),
        derived("van-1", at(11), "visit", ACME, fence="acme", site="acme", name="ACME GmbH",
                arrive=at(9, 46), leave=at(11), duration_s=4440),
        derived("van-1", at(23, 30), "trip_start", ACME),
        derived("van-1", at(24, 20), "trip_end", DEPOT, start=at(23, 30), distance_m=30000,
                duration_s=3000, max_kmh=110, avg_kmh=36.0, ended_by="stop"),
        derived("van-1", at(24, 20), "stop", DEPOT, since=at(24, 20)),  # the next day's
    ]


def attendance(seq: int, t: int, kind: str, accepted: bool, reason: str,
               distance: float) -> tuple[Any, ...]:
    # device boot seq kind site t lat lon acc accepted reason distance_m
    return ("van-1", 1, seq, kind, "acme", t, ACME[0], ACME[1], 8, int(accepted), reason,
            distance)


FENCES = {"type": "FeatureCollection", "features": [
    {"type": "Feature", "properties": {"id": "acme", "name": "ACME GmbH", "kind": "customer",
                                       "radius_m": 60},
     "geometry": {"type": "Point", "coordinates": [13.415346, 52.522248]}},
    {"type": "Feature", "properties": {"id": "depot", "name": "Depot Nord", "kind": "depot"},
     "geometry": {"type": "Polygon", "coordinates": [[
         [13.3965, 52.5362], [13.3988, 52.5362], [13.3990, 52.5372], [13.3965, 52.5373],
         [13.3965, 52.5362]]]}},
    {"type": "Feature", "properties": {"id": "yard", "name": "Yard (with a hole)",
                                       "kind": "no-go"},
     "geometry": {"type": "Polygon", "coordinates": [
         [[13.404, 52.528], [13.410, 52.528], [13.410, 52.531], [13.404, 52.531],
          [13.404, 52.528]],
         [[13.406, 52.529], [13.406, 52.530], [13.408, 52.530], [13.408, 52.529],
          [13.406, 52.529]]]}},
]}


@pytest.fixture
def store_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "fieldtrack.db"
    store = Store(path)
    registry.add(store, "van-1", name="Van One")
    store.commit(Batch(
        positions=van1_fixes() + van2_fixes(),
        events=van1_events() + [
            ("van-1", 1, 7, at(9, 0), "sos", None, None, None, "{}", at(9) * 1000, 0, None, None),
        ],
        visits=[("van-1", "acme", at(9, 46), at(11), 4440, *ACME),
                ("van-1", "acme", at(-20), at(-19), 3600, *ACME)],  # the day before
        attendance=[attendance(1, at(9, 50), "check_in", True, "ok", 35.2),
                    attendance(2, at(11, 2), "check_out", False, "outside_site", -80.5),
                    attendance(3, at(30), "check_in", True, "ok", 12.0)],  # the next day
    ))
    store.close()
    yield path


@pytest.fixture
def fences_path(tmp_path: Path) -> Path:
    path = tmp_path / "fences.geojson"
    path.write_text(json.dumps(FENCES), encoding="utf-8")
    return path


def run(store_path: Path, *args: str) -> Result:
    return CliRunner().invoke(report, ["--store", str(store_path), *args])


def ok(store_path: Path, *args: str) -> str:
    result = run(store_path, *args)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes.decode("utf-8")  # .stdout turns CSV's CRLF into LF


def sections(text: str) -> dict[str, list[dict[str, str]]]:
    """The report's CSV: header rows start with "table", data rows with their table."""
    out: dict[str, list[dict[str, str]]] = {}
    header: list[str] = []
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        if row[0] == "table":
            header = row
            continue
        out.setdefault(row[0], []).append(dict(zip(header[1:], row[1:], strict=True)))
    return out


# --- the figures ----------------------------------------------------------------------


def test_csv_has_the_exact_figures_of_the_day(store_path: Path, fences_path: Path) -> None:
    text = ok(store_path, "--day", DAY, "--tz", TZ, "--fences", str(fences_path),
              "--format", "csv")
    rows = sections(text)
    assert rows["summary"] == [
        {"device": "van-1", "name": "Van One", "distance_m": "50000", "distance_from": "trips",
         "driving_s": "6600", "trips": "3", "stops": "2", "stop_s": "52200", "idle_s": "600",
         "visits": "1", "geofence_events": "3", "overspeeds": "1", "max_kmh": "110",
         "checks_accepted": "1", "checks_rejected": "1",
         "first_fix": "2025-03-01T08:00:00+01:00", "last_fix": "2025-03-01T23:45:00+01:00"},
        {"device": "van-2", "name": "", "distance_m": "1112", "distance_from": "positions",
         "driving_s": "100", "trips": "0", "stops": "0", "stop_s": "0", "idle_s": "0",
         "visits": "0", "geofence_events": "0", "overspeeds": "0", "max_kmh": "40",
         "checks_accepted": "0", "checks_rejected": "0",
         "first_fix": "2025-03-01T14:00:00+01:00", "last_fix": "2025-03-01T14:07:00+01:00"},
    ]
    assert [(r["start"], r["end"], r["distance_m"], r["duration_s"], r["max_kmh"],
             r["avg_kmh"]) for r in rows["trip"]] == [
        ("2025-03-01T08:00:00+01:00", "2025-03-01T08:30:00+01:00", "12000", "1800", "70",
         "24.0"),
        ("2025-03-01T09:15:00+01:00", "2025-03-01T09:45:00+01:00", "8000", "1800", "95", "16.0"),
        ("2025-03-01T23:30:00+01:00", "2025-03-02T00:20:00+01:00", "30000", "3000", "110",
         "36.0"),
    ]
    # A stop lasts until the next trip; the idle period until the ignition went off.
    assert [(r["number"], r["since"], r["until"], r["duration_s"]) for r in rows["stop"]] == [
        ("1", "2025-03-01T08:30:00+01:00", "2025-03-01T09:15:00+01:00", "2700"),
        ("2", "2025-03-01T09:45:00+01:00", "2025-03-01T23:30:00+01:00", "49500"),
    ]
    assert rows["stop"][1]["lat"] == "52.5222480" and rows["stop"][1]["lon"] == "13.4153460"
    assert [(r["since"], r["until"], r["duration_s"]) for r in rows["idle"]] == [
        ("2025-03-01T08:30:00+01:00", "2025-03-01T08:40:00+01:00", "600")]
    assert rows["visit"] == [
        {"device": "van-1", "site": "acme", "name": "ACME GmbH",
         "arrive": "2025-03-01T09:46:00+01:00", "leave": "2025-03-01T11:00:00+01:00",
         "duration_s": "4440"}]
    assert [(r["time"][11:19], r["event"], r["fence"], r["name"], r["kind"])
            for r in rows["geofence"]] == [
        ("09:46:00", "enter", "acme", "ACME GmbH", "customer"),
        ("09:56:00", "dwell", "acme", "ACME GmbH", "customer"),  # named by the fences file
        ("11:00:00", "exit", "acme", "ACME GmbH", "customer"),
    ]
    # The event fires 20 s in; the fixes tell the whole episode and its top speed.
    assert [(r["time"], r["duration_s"], r["limit_kmh"], r["max_kmh"])
            for r in rows["overspeed"]] == [("2025-03-01T09:20:00+01:00", "120", "50", "70")]
    assert [(r["time"][11:19], r["check"], r["site"], r["accepted"], r["reason"],
             r["distance_m"]) for r in rows["attendance"]] == [
        ("09:50:00", "check_in", "acme", "true", "ok", "35.2"),
        ("11:02:00", "check_out", "acme", "false", "outside_site", "-80.5"),
    ]


def test_csv_writes_every_section_even_when_empty(store_path: Path) -> None:
    text = ok(store_path, "--day", DAY, "--tz", TZ, "--device", "van-2", "--format", "csv")
    headers = [row[:2] for row in csv.reader(io.StringIO(text)) if row and row[0] == "table"]
    assert headers == [["table", "device"]] * 8
    rows = sections(text)
    assert list(rows) == ["summary"] and rows["summary"][0]["device"] == "van-2"
    assert text.count("\r\n\r\n") == 7  # one empty line between sections


def test_table_aligns_columns_and_shows_local_times(store_path: Path,
                                                    fences_path: Path) -> None:
    text = ok(store_path, "--day", DAY, "--tz", TZ, "--fences", str(fences_path))
    lines = text.splitlines()
    assert lines[0] == "fieldtrack day report: Saturday 2025-03-01 (Europe/Berlin)"
    trips = lines[lines.index("Trips") + 1:lines.index("Trips") + 6]
    assert trips == [
        "  device  start     end           duration     km  max km/h  avg km/h",
        "  ------  --------  ------------  --------  -----  --------  --------",
        "  van-1   08:00:00  08:30:00       0:30:00  12.00        70      24.0",
        "  van-1   09:15:00  09:45:00       0:30:00   8.00        95      16.0",
        "  van-1   23:30:00  00:20:00 +1d   0:50:00  30.00       110      36.0",
    ]
    summary = lines[lines.index("Summary") + 1:lines.index("Summary") + 5]
    assert [line.split()[:6] for line in summary[2:]] == [
        ["van-1", "Van", "One", "50.00", "trips", "1:50:00"],
        ["van-2", "-", "1.11", "positions", "0:01:40", "0"],
    ]
    assert len({len(line) for line in summary[:2]}) == 1  # header and rule line up
    assert "  none" not in lines[lines.index("Visits") + 1]
    assert "from positions: no trip that day" in text


def test_the_day_is_local_a_trip_at_23_30_belongs_to_it(tmp_path: Path) -> None:
    path = tmp_path / "night.db"
    store = Store(path)
    t0 = 1740889800  # 2025-03-01T23:30:00-05:00 = 2025-03-02T04:30:00Z
    store.commit(Batch(
        positions=[fix("night-van", 1, t0, 407000000, -740000000, 40),
                   fix("night-van", 2, t0 + 1200, 407100000, -740000000, 40)],
        events=[derived("night-van", t0 + 1800, "trip_end", None, start=t0, distance_m=4321,
                        duration_s=1800, max_kmh=60, avg_kmh=8.6)]))
    store.close()

    def trips(day: str, tz: str) -> list[str]:
        return [r["start"] for r in sections(ok(path, "--day", day, "--tz", tz, "--format",
                                                "csv")).get("trip", [])]

    assert trips("2025-03-01", "America/New_York") == ["2025-03-01T23:30:00-05:00"]
    assert trips("2025-03-02", "America/New_York") == []
    assert trips("2025-03-02", "UTC") == ["2025-03-02T04:30:00+00:00"]
    assert trips("2025-03-01", "UTC") == []


def test_a_day_when_the_clocks_change_is_23_hours() -> None:
    day = parse_day("2025-03-09", "America/New_York")
    assert day.end - day.start == 23 * 3600
    assert parse_day("yesterday", "UTC", today=date(2025, 3, 1)).date == date(2025, 2, 28)


def test_stops_still_going_are_cut_at_now(store_path: Path) -> None:
    day = parse_day(DAY, TZ)
    store = Store(store_path)
    try:
        rows = read_day(store, day, ["van-1"])
    finally:
        store.close()
    result = build(day, rows, now=at(12))
    assert [(s.since, s.until) for s in result.devices[0].stops] == [
        (at(8, 30), at(9, 15)), (at(9, 45), at(12))]


def test_a_stop_reported_again_after_a_short_move_is_not_counted_twice() -> None:
    # A van stops at 10:00, shuffles 100 m at 10:20 (no trip) and stands again: the
    # gateway reports a second stop at 10:21; both last until the trip at 11:00. The
    # idling it reports twice, the same way.
    day = parse_day(DAY, TZ)
    events = [Event(at(10), "stop", *ACME, {"since": at(10)}),
              Event(at(10, 21), "stop", *ACME, {"since": at(10, 21)}),
              Event(at(10), "idle", *ACME, {"since": at(10), "seconds": 300}),
              Event(at(10, 21), "idle", *ACME, {"since": at(10, 21), "seconds": 300}),
              Event(at(11), "trip_start", *ACME, {})]
    fixes = [Fix(at(10, m), *ACME, 0, 5, True) for m in range(0, 60, 5)]
    result = build(day, [DeviceRows("van-1", fixes=fixes, events=events)])
    van = result.devices[0]
    assert [(s.since, s.until) for s in van.stops] == [(at(10), at(10, 21)),
                                                      (at(10, 21), at(11))]
    assert van.stop_s == 3600
    assert [(s.since, s.until) for s in van.idles] == [(at(10), at(10, 21)),
                                                      (at(10, 21), at(11))]


def test_an_empty_day_says_so_and_exits_0(store_path: Path) -> None:
    result = run(store_path, "--day", "2025-03-05", "--tz", TZ)
    assert result.exit_code == 0, result.output
    assert ("No activity on Wednesday 2025-03-05 (Europe/Berlin): no positions or events "
            "that day.") in result.stdout
    assert "the store's positions run from 2025-03-01 08:00 CET to 2025-03-02 00:10 CET" \
        in result.stderr


def test_an_empty_day_as_html_says_so(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    ok(store_path, "--day", "2025-03-05", "--output", str(out))
    page = out.read_text(encoding="utf-8")
    assert 'id="no-activity"' in page and "<svg" not in page


@pytest.mark.parametrize(("args", "option"), [
    (["--day", "2025-02-30"], "--day"),
    (["--day", "1.3.2025"], "--day"),
    (["--day", DAY, "--device", "van-9"], "--device"),
    (["--day", DAY, "--tz", "Mars/Olympus"], "--tz"),
    (["--day", DAY, "--fences", "no-such-fences.geojson"], "--fences"),
    ([], "--day"),
])
def test_a_bad_option_exits_2_naming_it(store_path: Path, args: list[str],
                                        option: str) -> None:
    result = run(store_path, *args)
    assert result.exit_code == 2
    assert option in result.output
    assert "Traceback" not in result.output


def test_a_missing_store_exits_2(tmp_path: Path) -> None:
    result = run(tmp_path / "nope.db", "--day", DAY)
    assert result.exit_code == 2 and "--store" in result.output


def test_nice_scale_bar_lengths() -> None:
    assert [nice_length(m) for m in (0.9, 1, 3.7, 180, 999, 1000, 4999)] == [
        0.5, 1, 2, 100, 500, 1000, 2000]


def test_csv_report_is_the_same_from_the_library(store_path: Path) -> None:
    day = parse_day(DAY, TZ)
    store = Store(store_path)
    try:
        text = render_csv(build(day, read_day(store, day)))
    finally:
        store.close()
    assert text == ok(store_path, "--day", DAY, "--tz", TZ, "--format", "csv")


# --- the HTML page ----------------------------------------------------------------------


class Elements(HTMLParser):
    """Every element's tag and attributes, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {k: v or "" for k, v in attrs}))

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [a for t, a in self.found
                if t == tag and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())]


def elements(text: str) -> Elements:
    parser = Elements()
    parser.feed(text)
    return parser


@pytest.fixture
def page(store_path: Path, fences_path: Path, tmp_path: Path) -> Path:
    out = tmp_path / "day.html"
    ok(store_path, "--day", DAY, "--tz", TZ, "--fences", str(fences_path), "-o", str(out))
    return out


def test_html_is_self_contained(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert "src=" not in text and "<link" not in text and "@import" not in text
    doc = elements(text)
    assert len(doc.all("path", class_="track")) == 2
    assert [a["data-fence"] for a in doc.all("g", class_="fence")] == ["acme", "depot", "yard"]
    assert len(doc.all("circle", r="8")) == 2  # the two stops
    # The fence with a hole is one even-odd path of two rings.
    yard = text[text.index('data-fence="yard"'):]
    assert yard[:yard.index("</g>")].count("Z") == 2 and 'fill-rule="evenodd"' in yard


def chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--force-color-profile=srgb", "--hide-scrollbars",
         "--user-data-dir=%s" % profile, *args],
        capture_output=True, timeout=180, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """A minimal PNG decoder (8-bit RGB or RGBA, not interlaced): width, height, rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    rows = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 255
        elif kind == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i:i + 3]) for r in rows for i in range(0, stride, bpp)]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package)")
def test_html_renders_in_headless_chromium(page: Path, tmp_path: Path) -> None:
    url = page.resolve().as_uri()
    dom = chromium("--dump-dom", url, tmp_path=tmp_path)
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    doc = elements(dom.stdout.decode("utf-8"))
    assert len(doc.all("svg", class_="map")) == 1
    tracks = doc.all("path", class_="track")
    assert len(tracks) == 2 and all(t["d"].startswith("M") and "L" in t["d"] for t in tracks)
    assert {a["id"] for a in doc.all("table")} == {
        "table-summary", "table-trip", "table-stop", "table-idle", "table-visit",
        "table-geofence", "table-overspeed", "table-attendance"}
    assert len(doc.all("g", class_="scale-bar")) == 1
    assert len(doc.all("g", class_="north-arrow")) == 1

    shot = tmp_path / "day.png"
    run_shot = chromium("--screenshot=%s" % shot, "--window-size=1200,1600", url,
                        tmp_path=tmp_path)
    assert run_shot.returncode == 0 and shot.exists(), run_shot.stderr.decode(
        errors="replace")[-2000:]
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 1600)
    counts = Counter(pixels)
    assert len(counts) > 50  # text, tables, tracks and fences: not a blank page

    def near(colour: str) -> int:
        want = bytes.fromhex(colour[1:])
        return sum(n for p, n in counts.items()
                   if all(abs(a - b) <= 12 for a, b in zip(p, want, strict=True)))

    assert near(PALETTE[0]) > 200  # van-1's track (and its stop markers)
    assert near(PALETTE[1]) > 50  # van-2's shorter track
