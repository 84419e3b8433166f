"""``fieldtrack export``: every format parsed back, with exact values and time filters."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fieldtrack.gateway.store import registry
from fieldtrack.gateway.store.sqlite import Batch, Store
from fieldtrack.tools.export import writer as lib
from fieldtrack.tools.export.command import export

T0 = 1740816930  # 2025-03-01T08:15:30Z
GPX = "{http://www.topografix.com/GPX/1/1}"


def position(device: str, seq: int, t: int, ms: int, lat: int, lon: int, *, alt: int = 38,
             acc: int = 5, flagged: str = "") -> tuple[Any, ...]:
    # POSITION_COLUMNS: device boot seq t ms lat lon spd hdg alt acc sats fix ign buf mock
    # flagged received
    return (device, 1, seq, t, ms, lat, lon, 42, 270, alt, acc, 11, 2, 1, 0, 0, flagged,
            (T0 + 60) * 1000 + seq)


def event(device: str, seq: int, t: int, kind: str, lat: int | None, lon: int | None,
          data: str = "{}") -> tuple[Any, ...]:
    # EVENT_COLUMNS: device boot seq t kind lat lon acc data received ms key judged
    return (device, 1, seq, t, kind, lat, lon, None if lat is None else 8, data,
            (T0 + 60) * 1000 + seq, 0, None, None)


@pytest.fixture
def store_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "fieldtrack.db"
    store = Store(path)
    registry.add(store, "van-2", group="north")
    store.commit(Batch(
        positions=[
            position("van-2", 1, T0 + 5, 0, 0, 0, acc=0),
            position("van-1", 1, T0 + 10, 250, 525200123, 134050456, flagged="accuracy,past"),
            position("van-1", 2, T0, 0, -1, -1800000000, alt=-12),  # buffered: arrives late
            position("van-1", 3, T0 + 10, 0, 525200000, 134050000),  # same second, earlier
        ],
        events=[
            event("van-1", 10, T0 + 20, "boot", None, None, '{"fw":"1.2"}'),
            event("van-1", 11, T0 + 1, "sos", 525200123, 134050456),
            event("van-2", 12, T0 + 2, "check_in", -338688000, 1512093000,
                  '{"site":"depot <&>"}'),
        ],
    ))
    store.close()
    yield path


def run(store_path: Path, kind: str, *args: str) -> Result:
    return CliRunner().invoke(export, [kind, "--store", str(store_path), *args])


def exported(store_path: Path, kind: str, *args: str) -> str:
    result = run(store_path, kind, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


def jsonl(store_path: Path, kind: str, *args: str) -> list[dict[str, Any]]:
    text = exported(store_path, kind, "--format", "jsonl", *args)
    return [json.loads(line) for line in text.splitlines()]


def seqs(store_path: Path, kind: str, *args: str) -> list[int]:
    return [doc["seq"] for doc in jsonl(store_path, kind, *args)]


# --- positions -------------------------------------------------------------------------


def test_positions_jsonl_are_the_feed_documents_in_fix_time_order(store_path: Path) -> None:
    docs = jsonl(store_path, "positions")
    assert [(d["device"], d["seq"]) for d in docs] == [
        ("van-1", 2), ("van-1", 3), ("van-1", 1), ("van-2", 1)]
    assert docs[2] == {
        "device": "van-1", "group": "default", "boot": 1, "seq": 1,
        "time": "2025-03-01T08:15:40.250Z", "lat": 52.5200123, "lon": 13.4050456,
        "speed_kmh": 42, "heading": 270, "alt_m": 38, "accuracy_m": 5, "sats": 11,
        "fix": "3d", "ignition": True, "buffered": False, "mock": False,
        "flagged": ["accuracy", "past"], "received": "2025-03-01T08:16:30.001Z",
    }
    assert docs[3]["group"] == "north" and docs[3]["accuracy_m"] is None


def test_positions_csv_has_seven_decimal_degrees(store_path: Path) -> None:
    text = exported(store_path, "positions", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["seq"] for r in rows] == ["2", "3", "1", "1"]
    assert (rows[0]["lat"], rows[0]["lon"], rows[0]["alt_m"]) == (
        "-0.0000001", "-180.0000000", "-12")
    assert (rows[1]["lat"], rows[1]["lon"]) == ("52.5200000", "13.4050000")
    assert rows[2]["time"] == "2025-03-01T08:15:40.250Z"
    assert rows[2]["flagged"] == "accuracy,past" and rows[2]["ignition"] == "true"
    assert rows[3]["accuracy_m"] == "" and rows[3]["group"] == "north"
    assert list(rows[0]) == list(lib.POSITION_CSV)


def test_positions_geojson_is_a_collection_of_points(store_path: Path) -> None:
    doc = json.loads(exported(store_path, "positions", "--format", "geojson"))
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 4
    feature = doc["features"][2]
    assert feature["type"] == "Feature"
    assert feature["geometry"] == {"type": "Point", "coordinates": [13.4050456, 52.5200123]}
    props = feature["properties"]
    assert (props["device"], props["seq"], props["time"]) == (
        "van-1", 1, "2025-03-01T08:15:40.250Z")
    assert "lat" not in props and "lon" not in props


def test_positions_gpx_has_a_track_per_device(store_path: Path) -> None:
    root = ET.fromstring(exported(store_path, "positions", "--format", "gpx"))
    assert root.tag == GPX + "gpx" and root.get("version") == "1.1"
    tracks = root.findall(GPX + "trk")
    assert [t.findtext(GPX + "name") for t in tracks] == ["van-1", "van-2"]
    points = tracks[0].findall("%strkseg/%strkpt" % (GPX, GPX))
    assert [(p.get("lat"), p.get("lon")) for p in points] == [
        ("-0.0000001", "-180.0000000"), ("52.5200000", "13.4050000"),
        ("52.5200123", "13.4050456")]
    assert [p.findtext(GPX + "time") for p in points] == [
        "2025-03-01T08:15:30.000Z", "2025-03-01T08:15:40.000Z", "2025-03-01T08:15:40.250Z"]
    assert [p.findtext(GPX + "ele") for p in points] == ["-12", "38", "38"]
    assert [child.tag[len(GPX):] for child in points[0]] == ["ele", "time", "fix", "sat"]


def test_an_empty_export_is_still_a_valid_document(store_path: Path) -> None:
    args = ("--since", str(T0 + 1000))
    assert exported(store_path, "positions", *args) == ""
    assert json.loads(exported(store_path, "positions", "--format", "geojson", *args)) == {
        "type": "FeatureCollection", "features": []}
    root = ET.fromstring(exported(store_path, "positions", "--format", "gpx", *args))
    assert root.findall(GPX + "trk") == []


# --- events ----------------------------------------------------------------------------


def test_events_jsonl_include_events_without_a_position(store_path: Path) -> None:
    docs = jsonl(store_path, "events")
    assert [(d["device"], d["kind"]) for d in docs] == [
        ("van-1", "sos"), ("van-1", "boot"), ("van-2", "check_in")]
    assert docs[1] == {"device": "van-1", "group": "default", "boot": 1, "seq": 10,
                       "key": "1/10", "revision": 0, "retracted": False,
                       "time": "2025-03-01T08:15:50.000Z", "kind": "boot",
                       "data": {"fw": "1.2"}, "received": "2025-03-01T08:16:30.010Z"}
    assert (docs[2]["lat"], docs[2]["lon"], docs[2]["accuracy_m"]) == (
        -33.8688, 151.2093, 8)


def test_events_csv_has_the_data_as_json(store_path: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(exported(store_path, "events", "--format", "csv"))))
    assert [r["kind"] for r in rows] == ["sos", "boot", "check_in"]
    assert (rows[1]["lat"], rows[1]["lon"], rows[1]["accuracy_m"]) == ("", "", "")
    assert json.loads(rows[1]["data"]) == {"fw": "1.2"}
    assert (rows[2]["lat"], rows[2]["lon"]) == ("-33.8688000", "151.2093000")


def test_events_geojson_leaves_out_events_without_a_position(store_path: Path) -> None:
    result = run(store_path, "events", "--format", "geojson")
    doc = json.loads(result.stdout)
    assert [f["properties"]["kind"] for f in doc["features"]] == ["sos", "check_in"]
    assert doc["features"][1]["geometry"]["coordinates"] == [151.2093, -33.8688]
    assert "left out 1 event without a position" in result.stderr


def test_events_gpx_are_waypoints_named_by_kind(store_path: Path) -> None:
    root = ET.fromstring(exported(store_path, "events", "--format", "gpx"))
    points = root.findall(GPX + "wpt")
    assert [(w.findtext(GPX + "name"), w.findtext(GPX + "desc")) for w in points] == [
        ("sos", "van-1"), ("check_in", "van-2")]
    assert (points[1].get("lat"), points[1].get("lon")) == ("-33.8688000", "151.2093000")
    assert points[1].findtext(GPX + "time") == "2025-03-01T08:15:32.000Z"
    assert json.loads(points[1].findtext(GPX + "cmt") or "") == {"site": "depot <&>"}


# --- filters ---------------------------------------------------------------------------


def test_device_filter(store_path: Path) -> None:
    assert {d["device"] for d in jsonl(store_path, "positions", "--device", "van-2")} == {
        "van-2"}
    assert len(jsonl(store_path, "positions", "--device", "van-1", "--device", "van-2")) == 4


def test_since_is_inclusive_and_until_exclusive_to_the_millisecond(store_path: Path) -> None:
    # van-1 fixes: seq 2 at T0, seq 3 at T0+10.000, seq 1 at T0+10.250; van-2 at T0+5.
    assert seqs(store_path, "positions", "--device", "van-1", "--since",
                "%d.25" % (T0 + 10)) == [1]
    assert seqs(store_path, "positions", "--device", "van-1", "--since",
                "%d.251" % (T0 + 10)) == []
    assert seqs(store_path, "positions", "--device", "van-1", "--until",
                "%d.25" % (T0 + 10)) == [2, 3]
    assert seqs(store_path, "positions", "--device", "van-1", "--since", str(T0),
                "--until", str(T0 + 10)) == [2]


@pytest.mark.parametrize("since, until", [
    ("2025-03-01T08:15:35Z", "2025-03-01T08:15:40.250Z"),
    ("2025-03-01T08:15:35", "2025-03-01T08:15:40.250"),  # no zone: UTC
    ("2025-03-01T09:15:35+01:00", "2025-03-01T03:15:40.250-05:00"),
    (str(T0 + 5), "%d.250" % (T0 + 10)),
])
def test_times_are_iso_8601_or_unix_seconds(store_path: Path, since: str, until: str) -> None:
    docs = jsonl(store_path, "positions", "--since", since, "--until", until)
    assert [(d["device"], d["seq"]) for d in docs] == [("van-1", 3), ("van-2", 1)]


def test_event_times_filter_too(store_path: Path) -> None:
    assert seqs(store_path, "events", "--since", str(T0 + 2), "--until", str(T0 + 20)) == [12]


@pytest.mark.parametrize("text, ms", [
    ("0", 0),
    ("1740816930", T0 * 1000),
    ("1740816930.5", T0 * 1000 + 500),
    ("2025-03-01", (T0 - 8 * 3600 - 15 * 60 - 30) * 1000),
    ("2025-03-01T08:15:30.123Z", T0 * 1000 + 123),
    ("2025-03-01 08:15:30", T0 * 1000),
])
def test_parse_time(text: str, ms: int) -> None:
    assert lib.parse_time(text, "--since") == ms


# --- mistakes --------------------------------------------------------------------------


def assert_user_error(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.lower().startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("option", ["--since", "--until"])
def test_a_bad_time_names_the_option(store_path: Path, option: str) -> None:
    result = run(store_path, "positions", option, "yesterday")
    assert_user_error(result, "%s: 'yesterday' is not a time: give ISO 8601" % option)


def test_an_empty_time_range_is_refused(store_path: Path) -> None:
    result = run(store_path, "positions", "--since", str(T0 + 5), "--until", str(T0))
    assert_user_error(result, "--since must be before --until")


def test_an_unknown_device_is_refused_with_a_suggestion(store_path: Path) -> None:
    assert_user_error(run(store_path, "events", "--device", "van-3"),
                      "--device: van-3: no such device")
    assert "did you mean van-2?" in run(store_path, "events", "--device", "van-3").stderr


def test_a_missing_store_is_refused_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    assert_user_error(run(missing, "positions"), "typo.db: no such store")
    assert not missing.exists()


def test_a_bad_format_is_a_usage_error(store_path: Path) -> None:
    result = run(store_path, "positions", "--format", "kml")
    assert result.exit_code == 2 and "Traceback" not in result.output


# --- output ----------------------------------------------------------------------------


def test_output_file_format_follows_its_suffix(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "day.gpx"
    result = run(store_path, "positions", "--output", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert "exported 4 positions of 2 devices as gpx to %s" % out in result.stderr
    assert len(ET.parse(out).getroot().findall(GPX + "trk")) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_failed_export_leaves_no_file(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    assert run(store_path, "positions", "--device", "nobody", "-o", str(out)).exit_code == 2
    assert not out.exists() and not (tmp_path / "out.csv.partial").exists()


@pytest.mark.parametrize("fmt", lib.FORMATS)
def test_rows_are_written_as_they_are_read(store_path: Path, fmt: str) -> None:
    store = Store(store_path)
    out = io.StringIO()
    sizes: list[int] = []

    def rows() -> Iterator[Any]:
        for row in lib.positions(store, lib.Query()):
            sizes.append(len(out.getvalue()))
            yield row

    try:
        summary = lib.WRITERS["positions", fmt](rows(), out)
    finally:
        store.close()
    assert summary == lib.Summary(written=4, skipped=0, devices=2)
    assert sizes == sorted(set(sizes))  # each row was written before the next was read
