"""Fences files: every shape, the spatial index, active hours, and every loading error.

A malformed file must fail whole, with a ``FenceError`` that names the file, the
feature (index and id) and the field, so the fix is obvious.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from tracks import circle, collection, corridor, fences, lat_lon, rectangle, write

from fieldtrack.gateway.errors import FenceError
from fieldtrack.gateway.fences.index import FenceIndex, _bounds_deg
from fieldtrack.gateway.fences.loader import hours_from, load
from fieldtrack.gateway.fences.model import KINDS

EXAMPLE = Path(__file__).resolve().parents[1] / "gateway" / "fences.example.geojson"
BERLIN = ZoneInfo("Europe/Berlin")


def inside_by(index: FenceIndex, fid: str, north_m: float, east_m: float) -> float:
    return index.by_id[fid].signed_distance(*lat_lon(north_m, east_m))


# --- shapes ------------------------------------------------------------------------


def test_a_circle_is_a_point_with_radius_m() -> None:
    index = fences(circle("c", 0, 0, 100))
    # The local frame is exact to 0.2 % and the circle a 64-gon: 0.3 m on 100 m.
    assert inside_by(index, "c", 0, 0) == pytest.approx(100, abs=0.3)
    assert inside_by(index, "c", 0, 150) == pytest.approx(-50, abs=0.3)
    assert inside_by(index, "c", 70, 0) == pytest.approx(30, abs=0.3)


def test_a_polygon_hole_is_outside_the_fence() -> None:
    outer = rectangle("p", 0, 0, 300, 300)
    hole = rectangle("x", 100, 100, 200, 200)["geometry"]["coordinates"][0][::-1]
    outer["geometry"]["coordinates"].append(hole)
    index = fences(outer)
    assert inside_by(index, "p", 50, 150) == pytest.approx(50, abs=0.3)
    assert inside_by(index, "p", 150, 150) == pytest.approx(-50, abs=0.3)  # in the hole


def test_a_multipolygon_is_one_fence_of_several_parts() -> None:
    a = rectangle("a", 0, 0, 100, 100)["geometry"]["coordinates"]
    b = rectangle("b", 0, 500, 100, 600)["geometry"]["coordinates"]
    index = fences({"type": "Feature", "properties": {"id": "m", "kind": "no-go"},
                    "geometry": {"type": "MultiPolygon", "coordinates": [a, b]}})
    assert inside_by(index, "m", 50, 550) == pytest.approx(50, abs=0.3)
    assert inside_by(index, "m", 50, 300) == pytest.approx(-200, abs=0.5)


def test_a_corridor_is_a_line_with_width_m_and_round_ends() -> None:
    index = fences(corridor("road", [(0, 0), (0, 1000)], 30))
    assert inside_by(index, "road", 10, 500) == pytest.approx(5, abs=0.1)
    assert inside_by(index, "road", 25, 500) == pytest.approx(-10, abs=0.1)
    assert inside_by(index, "road", 0, 1010) == pytest.approx(5, abs=0.1)  # round cap


def test_properties_are_read_with_their_defaults() -> None:
    index = fences(
        circle("a", 0, 0, 50, name="ACME", kind="customer", speed_limit_kmh=30,
               groups=["vans", "techs"], margin_m=8, dwell_s=120,
               active_hours={"tz": "Europe/Berlin", "mon-fri": "07:00-18:00"}),
        circle("b", 0, 0, 50))
    a, b = index.by_id["a"], index.by_id["b"]
    assert (a.name, a.kind, a.speed_limit_kmh, a.groups, a.margin_m, a.dwell_s) \
        == ("ACME", "customer", 30, frozenset({"vans", "techs"}), 8.0, 120)
    assert (b.name, b.kind, b.speed_limit_kmh, b.groups, b.margin_m, b.dwell_s, b.hours) \
        == ("b", "site", None, frozenset(), None, None, None)


def test_the_index_offers_only_the_fences_around_a_fix() -> None:
    grid = [circle("f%d-%d" % (i, j), i * 500, j * 500, 100)
            for i in range(20) for j in range(20)]
    index = fences(*grid)
    assert [f.id for f in index.near(*lat_lon(1000, 1500))] == ["f2-3"]
    assert index.near(*lat_lon(1250, 1250)) == []
    assert sorted(f.id for f in index.along(lat_lon(0, -200), lat_lon(0, 1200))) \
        == ["f0-0", "f0-1", "f0-2"]


def test_the_example_fences_file_loads() -> None:
    index = load(EXAMPLE)
    assert sorted({f.kind for f in index.fences}) == sorted(KINDS)
    assert {f.geometry.geom_type for f in index.fences} == {"Polygon", "MultiPolygon"}


# --- active hours ------------------------------------------------------------------


def local(text: str, tz: ZoneInfo = BERLIN) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=tz).timestamp())


HOURS = {"tz": "Europe/Berlin", "mon-fri": "07:00-12:00, 13:00-18:00", "sat": "08:00-24:00",
         "sun": "10:00-11:00"}


@pytest.mark.parametrize(("when", "active"), [
    ("2026-01-05 07:00", True),  # Monday, start included
    ("2026-01-05 06:59", False),
    ("2026-01-05 12:30", False),  # the lunch break
    ("2026-01-05 17:59", True),
    ("2026-01-05 18:00", False),  # end excluded
    ("2026-01-10 23:59", True),  # Saturday until midnight
    ("2026-01-11 10:30", True),  # Sunday
    ("2026-07-06 07:30", True),  # summer time: still local 07:30
    ("2026-03-29 07:30", False),  # a Sunday, the day the clocks go forward
])
def test_active_hours_follow_the_local_clock(when: str, active: bool) -> None:
    hours = hours_from(HOURS, "test")
    assert hours.active(local(when)) is active


def test_a_day_range_may_wrap_round_the_week() -> None:
    hours = hours_from({"tz": "UTC", "fri-mon": "00:00-24:00"}, "test")
    utc = ZoneInfo("UTC")
    days = [hours.active(local("2026-01-%02d 12:00" % d, utc)) for d in range(5, 12)]
    assert days == [True, False, False, False, True, True, True]  # Mon .. Sun


# --- loading errors ----------------------------------------------------------------


def one(**props: Any) -> dict[str, Any]:
    return collection(circle("a", 0, 0, 50, **props))


def with_geometry(geometry: Any, **props: Any) -> dict[str, Any]:
    return collection({"type": "Feature", "geometry": geometry,
                       "properties": {"id": "a", **props}})


BOWTIE = {"type": "Polygon", "coordinates": [[[13.40, 52.52], [13.41, 52.53], [13.41, 52.52],
                                              [13.40, 52.53], [13.40, 52.52]]]}


@pytest.mark.parametrize(("doc", "where", "says"), [
    ({"type": "Feature"}, "", "expected a GeoJSON FeatureCollection"),
    ({"type": "FeatureCollection", "features": {}}, "", "'features' must be a list"),
    (collection(circle("a", 0, 0, 50), {"type": "Feature", "geometry": None,
                                        "properties": {"name": "no id"}}),
     "feature 1", "properties.id: every fence needs an id"),
    (collection(circle("a", 0, 0, 50), circle("b", 0, 0, 50), circle("a", 0, 0, 9)),
     "feature 2", "id 'a' is used twice"),
    (collection({"type": "Polygon"}), "feature 0", "expected a Feature"),
    (one(kind="customers"), "feature 0 (id a)", "properties.kind: 'customers' is not one of"),
    (with_geometry(None), "feature 0 (id a)", "geometry: missing"),
    (with_geometry({"type": "Point", "coordinates": [13.4, 52.5]}), "feature 0 (id a)",
     "properties.radius_m: a circle needs a radius in metres"),
    (with_geometry({"type": "Point", "coordinates": [13.4, 52.5]}, radius_m=0),
     "feature 0 (id a)", "properties.radius_m"),
    (with_geometry({"type": "LineString", "coordinates": [[13.4, 52.5], [13.5, 52.5]]}),
     "feature 0 (id a)", "properties.width_m: a corridor needs a width in metres"),
    (with_geometry(BOWTIE), "feature 0 (id a)", "geometry: the polygon is not valid (Self-"),
    (with_geometry({"type": "Polygon", "coordinates": [[[13.4, 52.5], [13.5, 52.5]]]}),
     "feature 0 (id a)", "geometry: "),
    (with_geometry({"type": "Point", "coordinates": [52.5, 213.4]}, radius_m=5),
     "feature 0 (id a)", "geometry: coordinates are [longitude, latitude] in degrees"),
    (with_geometry({"type": "MultiPoint", "coordinates": [[13.4, 52.5]]}), "feature 0 (id a)",
     "geometry: MultiPoint is not a fence shape"),
    (one(speed_limit_kmh="30"), "feature 0 (id a)",
     "properties.speed_limit_kmh: expected a non-negative number, got '30'"),
    (one(margin_m=-1), "feature 0 (id a)", "properties.margin_m"),
    (one(groups=["vans", 7]), "feature 0 (id a)", "properties.groups"),
    (one(active_hours={"tz": "Europe/Berlim", "mon-fri": "07:00-18:00"}), "feature 0 (id a)",
     "properties.active_hours.tz: unknown time zone 'Europe/Berlim'"),
    (one(active_hours={"mon-fri": "07:00-18:00"}), "feature 0 (id a)",
     "active hours need a 'tz'"),
    (one(active_hours={"tz": "UTC", "mon-fry": "07:00-18:00"}), "feature 0 (id a)",
     "properties.active_hours: 'mon-fry' is not a day or range like 'mon-fri'"),
    (one(active_hours={"tz": "UTC", "mon-fri": "7h-18h"}), "feature 0 (id a)",
     "properties.active_hours.mon-fri: '7h-18h' is not like '07:00-18:00'"),
    (one(active_hours={"tz": "UTC", "sat": "22:00-06:00"}), "feature 0 (id a)",
     "properties.active_hours.sat: '22:00-06:00' ends before it starts"),
])
def test_a_malformed_fences_file_names_file_feature_and_field(
    tmp_path: Path, doc: Any, where: str, says: str,
) -> None:
    path = write(tmp_path / "fences.geojson", doc)
    with pytest.raises(FenceError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith("%s: %s" % (path, where))
    assert says in message


def test_bad_json_is_reported_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "fences.geojson"
    path.write_text(json.dumps(one(), indent=1).replace('"radius_m"', "radius_m"))
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1)
                if "radius_m" in row)
    with pytest.raises(FenceError, match=r"fences\.geojson: line %d column \d+: not valid "
                                         r"JSON: Expecting property name" % line):
        load(path)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FenceError, match="nowhere.geojson: no such file"):
        load(tmp_path / "nowhere.geojson")


def test_the_index_answers_as_a_check_of_every_box_would() -> None:
    """The grid, the occupancy map and the fast "clear" answer agree with every box."""
    import random

    rng = random.Random(4)
    grid = [circle("g%d" % i, rng.uniform(-3000, 3000), rng.uniform(-3000, 3000),
                   rng.uniform(10, 80)) for i in range(3000)]
    index = fences(*grid)
    boxes = {f.id: _bounds_deg(f) for f in index.fences}

    def meets(box: tuple[float, float, float, float], lat0: float, lon0: float,
              lat1: float, lon1: float) -> bool:
        return (box[0] <= max(lon0, lon1) and min(lon0, lon1) <= box[2]
                and box[1] <= max(lat0, lat1) and min(lat0, lat1) <= box[3])

    clear = 0
    for _ in range(3000):
        lat0, lon0 = lat_lon(rng.uniform(-3200, 3200), rng.uniform(-3200, 3200))
        lat1, lon1 = lat_lon(*(rng.uniform(-3200, 3200) for _ in range(2)))
        if rng.random() < 0.8:  # mostly short segments, as between fixes
            lat1, lon1 = lat0 + rng.uniform(-1e-3, 1e-3), lon0 + rng.uniform(-1e-3, 1e-3)
        lat0, lon0, lat1, lon1 = (round(v, 7) for v in (lat0, lon0, lat1, lon1))
        near = sorted(f for f, b in boxes.items() if meets(b, lat1, lon1, lat1, lon1))
        along = sorted(f for f, b in boxes.items() if meets(b, lat0, lon0, lat1, lon1))
        assert sorted(f.id for f in index.near(lat1, lon1)) == near
        assert sorted(f.id for f in index.along((lat0, lon0), (lat1, lon1))) == along
        got = index.near_along(lat1, lon1, (lat0, lon0))
        assert (sorted(f.id for f in got[0]), sorted(f.id for f in got[1])) == (near, along)
        if index.clear_e7(*(round(v * 1e7) for v in (lat0, lon0, lat1, lon1))):
            clear += 1
            assert along == []
    assert clear > 300  # and it does say "clear" for short segments in the gaps
