"""``fieldtrack geofences``: import, list and test, and their errors (exit 2, no traceback)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tracks import circle, collection, lat_lon, rectangle, write

from fieldtrack.gateway.config import EventsConfig, GatewayConfig, StoreConfig
from fieldtrack.gateway.ingest.worker import Worker
from fieldtrack.tools.errors import FieldtrackError
from fieldtrack.tools.geofences.command import GeofencesError, geofences

EXAMPLE = Path(__file__).resolve().parents[1] / "gateway" / "fences.example.geojson"
FENCES = collection(
    rectangle("yard", 0, 0, 100, 100, kind="depot", name="Main yard"),
    circle("acme", 0, 400, 60, kind="customer", name="ACME", groups=["vans", "techs"]),
    circle("school", 0, 160, 40, kind="speed-zone", speed_limit_kmh=30,
           active_hours={"tz": "Europe/Berlin", "mon-fri": "07:00-17:00"}),
)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(geofences, [str(a) for a in args])


def failure(*args: str | Path) -> GeofencesError:
    """The error a command raises; ``fieldtrack``'s main prints it as ``error: ...``."""
    result = CliRunner().invoke(geofences, [str(a) for a in args], standalone_mode=False)
    assert isinstance(result.exception, GeofencesError), result.output
    return result.exception


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_import_checks_the_file_copies_it_and_counts_each_kind(in_tmp: Path) -> None:
    result = run("import", EXAMPLE)
    assert result.exit_code == 0, result.output
    assert (in_tmp / "fences.geojson").read_bytes() == EXAMPLE.read_bytes()
    assert result.output.splitlines() == [
        "%s: 7 fences" % EXAMPLE,
        "  site        1",
        "  customer    2",
        "  depot       1",
        "  no-go       1",
        "  speed-zone  1",
        "  work-area   1",
        "copied to fences.geojson (a running gateway reloads it within seconds)",
    ]


def test_a_gateway_with_default_settings_loads_what_import_without_c_wrote(
    in_tmp: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # Started before the fences exist, it says so loudly and runs without them; the
    # file `import` writes with no -c is the one it reads, as soon as it appears.
    config = GatewayConfig(store=StoreConfig(path=str(in_tmp / "store.db")))
    with caplog.at_level(logging.INFO, logger="fieldtrack.gateway"):
        worker = Worker(config)
        try:
            assert worker.engine is not None and len(worker.engine.index) == 0
            assert any(r.levelno == logging.WARNING and r.getMessage().startswith(
                "NO GEOFENCES: %s does not exist" % (in_tmp / "fences.geojson"))
                for r in caplog.records)
            assert run("import", EXAMPLE).exit_code == 0
            worker.reload_fences(requested=False)  # as its loop does, every few seconds
            assert len(worker.engine.index) == 7
        finally:
            worker.store.close()
    assert "loaded 7 geofences from fences.geojson" in caplog.messages


def test_a_gateway_told_of_no_fences_file_warns(
    in_tmp: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    config = GatewayConfig(store=StoreConfig(path=str(in_tmp / "store.db")),
                           events=EventsConfig(fences_file=""))
    with caplog.at_level(logging.WARNING, logger="fieldtrack.gateway"):
        Worker(config).store.close()
    assert [m for m in caplog.messages if m.startswith("NO GEOFENCES: [events] fences_file "
                                                      "is empty")]


def test_import_goes_to_the_fences_file_of_the_gateway_config(in_tmp: Path) -> None:
    (in_tmp / "fences").mkdir()
    (in_tmp / "gateway.toml").write_text('[events]\nfences_file = "fences/live.geojson"\n')
    result = run("--config", "gateway.toml", "import", EXAMPLE)
    assert result.exit_code == 0, result.output
    assert (in_tmp / "fences" / "live.geojson").read_bytes() == EXAMPLE.read_bytes()
    to = run("--config", "gateway.toml", "import", EXAMPLE, "--to", "other.geojson")
    assert to.exit_code == 0 and (in_tmp / "other.geojson").exists()


def test_a_bad_file_is_not_imported_and_the_installed_one_stays(in_tmp: Path) -> None:
    installed = write(in_tmp / "fences.geojson", FENCES).read_bytes()
    bad = collection(circle("a", 0, 0, 50), circle("a", 0, 10, 50))
    write(in_tmp / "new.geojson", bad)
    error = failure("import", "new.geojson")
    assert str(error) == "new.geojson: feature 1: id 'a' is used twice"
    assert isinstance(error, FieldtrackError) and error.exit_code == 2
    assert (in_tmp / "fences.geojson").read_bytes() == installed
    assert sorted(p.name for p in in_tmp.iterdir()) == ["fences.geojson", "new.geojson"]


def test_a_user_error_exits_2_with_the_message_and_no_traceback(in_tmp: Path) -> None:
    result = run("import", "missing.geojson")
    assert result.exit_code == 2
    assert "missing.geojson: no such file" in result.output
    assert "Traceback" not in result.output


def test_import_into_a_folder_that_does_not_exist_says_so(in_tmp: Path) -> None:
    error = failure("import", EXAMPLE, "--to", "nowhere/fences.geojson")
    assert str(error).startswith("nowhere/fences.geojson: cannot write there")


def test_list_shows_id_name_kind_limit_groups_and_area(in_tmp: Path) -> None:
    write(in_tmp / "fences.geojson", FENCES)
    result = run("list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["id", "name", "kind", "speed", "limit", "groups", "area", "m²"]
    rows = [line.split() for line in lines[1:]]
    assert [row[:-1] for row in rows] == [
        ["yard", "Main", "yard", "depot", "-", "all"],
        ["acme", "ACME", "customer", "-", "techs,vans"],
        ["school", "school", "speed-zone", "30", "km/h", "all"],
    ]
    # Areas in the fence's local frame (about 0.2 % off the sphere's).
    areas = [int(row[-1]) for row in rows]
    assert areas == pytest.approx([10_000, 11_310, 5_027], rel=0.005)


def test_list_reads_the_file_given(tmp_path: Path) -> None:
    result = run("list", EXAMPLE)
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.output.splitlines()[1:]] == [
        "depot-nord", "acme", "baeckerei-koch", "charite", "quarry", "school-street",
        "a100-works"]


def test_test_says_which_fences_hold_a_point_and_how_far_each_boundary_is(
    in_tmp: Path,
) -> None:
    write(in_tmp / "fences.geojson", FENCES)
    lat, lon = lat_lon(0, 380)  # in ACME, 20 m from its centre
    result = run("test", "%.7f" % lat, "%.7f" % lon, "--time", "2026-01-05T10:00+01:00")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:2] == ["%.7f, %.7f at 2026-01-05T10:00:00+01:00" % (lat, lon),
                         "inside: acme"]
    table = [line.split() for line in lines[2:]]
    assert table[0] == ["fence", "kind", "distance", "m"]
    assert [(row[0], row[1], row[3]) for row in table[1:]] == [
        ("acme", "customer", "inside"), ("school", "speed-zone", "outside"),
        ("yard", "depot", "outside")]
    assert [float(row[2]) for row in table[1:]] == pytest.approx([40, -180, -280], abs=0.5)


def test_test_respects_groups_and_active_hours(in_tmp: Path) -> None:
    write(in_tmp / "fences.geojson", FENCES)
    lat, lon = lat_lon(0, 160)  # in the school zone (and 200 m from ACME's centre)
    late = run("test", lat, lon, "--time", "2026-01-05T17:30+01:00", "--within", "150")
    assert late.exit_code == 0, late.output
    assert late.output.splitlines()[1] == "inside: none"
    assert "inside, outside its active hours" in late.output
    phones = run("test", lat, lon, "--time", "2026-01-05T09:00+01:00", "--group", "phones")
    assert phones.output.splitlines()[1] == "inside: school"
    assert "not for group phones (only techs, vans)" in phones.output


def test_test_takes_southern_and_western_coordinates(tmp_path: Path) -> None:
    far = write(tmp_path / "sydney.geojson", collection({
        "type": "Feature", "properties": {"id": "opera", "radius_m": 100},
        "geometry": {"type": "Point", "coordinates": [151.2153, -33.8568]}}))
    result = run("test", "-33.8568", "151.2153", far, "--time", "2026-01-05T09:00")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:2] == [
        "-33.8568000, 151.2153000 at 2026-01-05T09:00:00+00:00", "inside: opera"]


@pytest.mark.parametrize(("args", "message"), [
    (["test", "152", "13.4"], "LAT 152.0 is not a latitude (-90..90); did you swap LAT and LON?"),
    (["test", "52.5", "213.4"], "LON 213.4 is not a longitude (-180..180)"),
    (["test", "52.5", "13.4", "--time", "monday"],
     "--time: 'monday' is not an ISO 8601 time like 2026-01-05T09:00+01:00"),
    (["list"], "fences.geojson: no such file"),
    (["--config", "gateway.toml", "list"], "gateway.toml: no such file"),
])
def test_bad_arguments_are_user_errors(in_tmp: Path, args: list[str], message: str) -> None:
    assert str(failure(*args)) == message
