"""The device registry (``gateway/store/registry.py``) and ``fieldtrack devices``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fieldtrack.gateway.store import registry
from fieldtrack.gateway.store.registry import ImportFileError, RegistryError
from fieldtrack.gateway.store.sqlite import Device, Store
from fieldtrack.tools.devices.command import devices

KEY_HEX = "00112233445566778899aabbccddeeff" * 2


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "fieldtrack.db"


@pytest.fixture
def store(store_path: Path) -> Iterator[Store]:
    s = Store(store_path)
    yield s
    s.close()


def registered(store_path: Path) -> dict[str, Device]:
    s = Store(store_path)
    try:
        return s.devices()
    finally:
        s.close()


def key_hex(store_path: Path, device_id: str) -> str:
    key = registered(store_path)[device_id].key
    assert key is not None
    return key.hex()


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- library ---------------------------------------------------------------------------


def test_add_registers_an_enabled_device_with_a_new_32_byte_key(store: Store) -> None:
    key = registry.add(store, "van-12", group="north", name="Plate AB 123")
    assert key is not None and len(key) == 32
    assert store.devices()["van-12"] == Device("van-12", "north", key, True, "Plate AB 123")


def test_add_gives_every_device_its_own_key(store: Store) -> None:
    assert registry.add(store, "van-1") != registry.add(store, "van-2")


def test_add_without_key_registers_a_keyless_device(store: Store) -> None:
    assert registry.add(store, "phone-1", with_key=False) is None
    device = store.devices()["phone-1"]
    assert device.key is None and device.group == "default" and device.enabled


def test_add_refuses_an_id_already_registered_and_keeps_the_old_key(store: Store) -> None:
    key = registry.add(store, "van-1")
    version = store.registry_version()
    with pytest.raises(RegistryError, match="van-1 is already registered"):
        registry.add(store, "van-1", group="other")
    assert store.devices()["van-1"].key == key
    assert store.devices()["van-1"].group == "default"
    assert store.registry_version() == version


@pytest.mark.parametrize("device_id", ["", "van 1", "van/1", "x" * 33, "vän"])
def test_add_refuses_an_invalid_device_id(store: Store, device_id: str) -> None:
    with pytest.raises(RegistryError, match="device id"):
        registry.add(store, device_id)
    assert store.devices() == {}


def test_add_refuses_a_group_that_is_not_a_plain_name(store: Store) -> None:
    with pytest.raises(RegistryError, match="group: 'north vans'"):
        registry.add(store, "van-1", group="north vans")


def test_add_refuses_a_name_with_a_line_break(store: Store) -> None:
    with pytest.raises(RegistryError, match="name: .*control characters"):
        registry.add(store, "van-1", name="two\nlines")


def test_every_change_bumps_the_registry_version(store: Store) -> None:
    versions = [store.registry_version()]
    registry.add(store, "van-1")
    versions.append(store.registry_version())
    registry.set_enabled(store, "van-1", False)
    versions.append(store.registry_version())
    registry.rotate_key(store, "van-1")
    versions.append(store.registry_version())
    registry.set_enabled(store, "van-1", True)
    versions.append(store.registry_version())
    assert versions == [0, 1, 2, 3, 4]


def test_setting_the_state_a_device_already_has_changes_nothing(store: Store) -> None:
    registry.add(store, "van-1")
    version = store.registry_version()
    assert registry.set_enabled(store, "van-1", True) is False
    assert store.registry_version() == version


def test_disable_and_enable_flip_the_enabled_flag(store: Store) -> None:
    registry.add(store, "van-1")
    assert registry.set_enabled(store, "van-1", False) is True
    assert store.devices()["van-1"].enabled is False
    assert registry.set_enabled(store, "van-1", True) is True
    assert store.devices()["van-1"].enabled is True


def test_an_unknown_device_is_named_with_a_suggestion(store: Store) -> None:
    registry.add(store, "van-12")
    with pytest.raises(RegistryError, match=r"no device van-13 is registered \(did you mean "
                                            r"van-12\?\)"):
        registry.set_enabled(store, "van-13", False)
    with pytest.raises(RegistryError, match="no device van-13"):
        registry.rotate_key(store, "van-13")


def test_rotate_key_replaces_the_key_and_returns_the_new_one(store: Store) -> None:
    old = registry.add(store, "van-1")
    new = registry.rotate_key(store, "van-1")
    assert new != old and len(new) == 32
    assert store.devices()["van-1"].key == new


def test_list_devices_is_sorted_by_id(store: Store) -> None:
    for device_id in ("van-2", "car-9", "van-10"):
        registry.add(store, device_id)
    assert [d.id for d in registry.list_devices(store)] == ["car-9", "van-10", "van-2"]


def test_a_failed_change_leaves_no_transaction_open(store: Store) -> None:
    with pytest.raises(RegistryError):
        registry.rotate_key(store, "nobody")
    assert not store.db.in_transaction
    registry.add(store, "van-1")  # the connection is still usable


# --- import ----------------------------------------------------------------------------

GOOD_TOML = """\
# the north fleet
[[device]]
id = "van-10"
group = "north"
name = "Van ten"
key = "%s"

[[device]]
id = "van-11"
enabled = false

[[device]]
id = "phone-3"
group = "field"
""" % KEY_HEX


def test_import_toml_adds_every_device_with_its_fields(store: Store, tmp_path: Path) -> None:
    result = registry.import_file(store, write(tmp_path, "fleet.toml", GOOD_TOML))
    assert result.added == ["van-10", "van-11", "phone-3"]
    assert result.keys == {} and result.keyless == ["van-11", "phone-3"]
    found = store.devices()
    assert found["van-10"].key == bytes.fromhex(KEY_HEX)
    assert (found["van-10"].group, found["van-10"].name) == ("north", "Van ten")
    assert found["van-11"].enabled is False and found["van-11"].group == "default"
    assert found["phone-3"].key is None and found["phone-3"].enabled is True


def test_import_generates_keys_only_where_the_file_gives_none(
    store: Store, tmp_path: Path
) -> None:
    result = registry.import_file(store, write(tmp_path, "fleet.toml", GOOD_TOML),
                                  generate_keys=True)
    assert sorted(result.keys) == ["phone-3", "van-11"] and result.keyless == []
    found = store.devices()
    assert found["van-11"].key == result.keys["van-11"] and len(result.keys["van-11"]) == 32
    assert found["van-10"].key == bytes.fromhex(KEY_HEX)


def test_import_is_one_change_of_the_registry(store: Store, tmp_path: Path) -> None:
    registry.import_file(store, write(tmp_path, "fleet.toml", GOOD_TOML))
    assert store.registry_version() == 1


def test_import_csv_adds_every_device(store: Store, tmp_path: Path) -> None:
    text = ("id,group,name,key,enabled\r\n"
            'van-20,north,"Smith, J.",%s,yes\r\n'
            "van-21,,,,false\r\n"
            "\r\n"
            "van-22,south,,,\r\n" % KEY_HEX)
    result = registry.import_file(store, write(tmp_path, "fleet.csv", text))
    assert result.added == ["van-20", "van-21", "van-22"]
    found = store.devices()
    assert found["van-20"].name == "Smith, J." and found["van-20"].key == bytes.fromhex(KEY_HEX)
    assert found["van-21"].group == "default" and found["van-21"].enabled is False
    assert found["van-22"].group == "south" and found["van-22"].enabled is True


def test_import_csv_columns_may_come_in_any_order_and_be_left_out(
    store: Store, tmp_path: Path
) -> None:
    registry.import_file(store, write(tmp_path, "fleet.csv", "name,id\nVan,van-1\n"))
    assert store.devices()["van-1"].name == "Van"


BAD_TOML = """\
[[device]]
id = "van-10"

[[device]]
id = "van 11"
key = "abcd"

[[device]]
id = "van-1"
grup = "north"
enabled = "maybe"

[[device]]
name = "no id"

[[device]]
id = "van-10"
"""


def test_a_bad_toml_file_reports_every_problem_by_line_and_writes_nothing(
    store: Store, tmp_path: Path
) -> None:
    registry.add(store, "van-1")
    version = store.registry_version()
    path = write(tmp_path, "fleet.toml", BAD_TOML)
    with pytest.raises(ImportFileError) as caught:
        registry.import_file(store, path, generate_keys=True)
    f = str(path)
    assert caught.value.problems == [
        f + ":5: id: 'van 11': a device id is 1..32 letters, digits, '-' and '_'",
        f + ":6: key: 2 bytes: give 32 bytes as 64 hex digits (16..64 bytes accepted)",
        f + ":9: id: van-1 is already registered: remove the row (use rotate-key or "
            "enable/disable to change it)",
        f + ":10: grup: unknown field (did you mean group? fields: id, group, name, key, "
            "enabled)",
        f + ":11: enabled: 'maybe': expected true or false",
        f + ":13: id: missing: every device needs an id",
        f + ":17: id: van-10 is also at line 2: list each id once",
    ]
    assert str(caught.value).startswith(f + ": nothing imported: 7 problems")
    assert sorted(store.devices()) == ["van-1"]
    assert store.registry_version() == version


def test_a_bad_csv_file_reports_every_problem_by_line_and_writes_nothing(
    store: Store, tmp_path: Path
) -> None:
    text = ("id,group,name,key,enabled\n"
            "van-20,north,,,\n"
            "van-21,,,zz,no\n"
            "van-22,bad group,,,\n"
            "van-23,,,,\n"
            "van-20,,,,\n"
            "van-24,,\n")
    path = write(tmp_path, "fleet.csv", text)
    with pytest.raises(ImportFileError) as caught:
        registry.import_file(store, path)
    f = str(path)
    assert caught.value.problems == [
        f + ":3: key: expected hex digits (0-9, a-f), two per byte",
        f + ":4: group: 'bad group': a group is 1..32 letters, digits, '-' and '_'",
        f + ":6: id: van-20 is also at line 2: list each id once",
        f + ":7: row: 3 fields, the header has 5",
    ]
    assert store.devices() == {} and store.registry_version() == 0


def test_a_csv_header_with_an_unknown_column_suggests_the_right_one(
    store: Store, tmp_path: Path
) -> None:
    path = write(tmp_path, "fleet.csv", "id,grp\nvan-1,north\n")
    with pytest.raises(RegistryError, match=r"fleet.csv:1: grp: unknown column \(did you mean "
                                            r"group\?"):
        registry.import_file(store, path)


def test_a_toml_syntax_error_names_the_file_and_line(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path, "fleet.toml", '[[device]]\nid = "van-1\n')
    with pytest.raises(RegistryError, match=r"fleet.toml: not valid TOML: .*line 2"):
        registry.import_file(store, path)


@pytest.mark.parametrize("name, text, message", [
    ("fleet.json", "[]", "expected a .toml or .csv file"),
    ("fleet.csv", "id,group\n", "no devices in the file"),
    ("fleet.toml", "", "no devices in the file"),
])
def test_an_import_file_without_devices_is_refused(
    store: Store, tmp_path: Path, name: str, text: str, message: str
) -> None:
    with pytest.raises(RegistryError, match=message):
        registry.import_file(store, write(tmp_path, name, text))


def test_a_missing_import_file_is_named(store: Store, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="nope.toml: cannot read the file"):
        registry.import_file(store, tmp_path / "nope.toml")


# --- command line ----------------------------------------------------------------------


def run(store_path: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    prefix = [] if env else ["--store", str(store_path)]
    return CliRunner().invoke(devices, [*prefix, *args], env=env)


def assert_user_error(result: Result, message: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.lower().startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not a crash


def test_cli_add_prints_the_key_once_on_stdout_and_warns(store_path: Path) -> None:
    result = run(store_path, "add", "van-12", "--group", "north", "--name", "AB 123")
    assert result.exit_code == 0, result.output
    key = key_hex(store_path, "van-12")
    assert result.stdout == key + "\n"
    assert result.output.count(key) == 1
    assert "shown this once" in result.stderr


def test_cli_add_no_key_prints_no_key(store_path: Path) -> None:
    result = run(store_path, "add", "phone-1", "--no-key")
    assert result.exit_code == 0 and result.stdout == ""
    assert "no key" in result.stderr
    assert registered(store_path)["phone-1"].key is None


def test_cli_add_of_a_registered_id_is_a_user_error(store_path: Path) -> None:
    run(store_path, "add", "van-1")
    assert_user_error(run(store_path, "add", "van-1"), "van-1 is already registered")


def test_cli_add_of_a_bad_id_is_a_user_error(store_path: Path) -> None:
    assert_user_error(run(store_path, "add", "van 1"), "device id: 'van 1'")


def test_cli_list_never_shows_a_key(store_path: Path) -> None:
    run(store_path, "add", "van-1", "--name", "Van one")
    run(store_path, "add", "phone-1", "--no-key")
    key = key_hex(store_path, "van-1")
    table = run(store_path, "list")
    as_json = run(store_path, "list", "--format", "json")
    for result in (table, as_json):
        assert result.exit_code == 0
        assert key not in result.output.lower()
    assert table.stdout.splitlines() == [
        "ID       GROUP    ENABLED  KEY  NAME",
        "phone-1  default  yes      no",
        "van-1    default  yes      yes  Van one",
    ]
    assert json.loads(as_json.stdout) == [
        {"id": "phone-1", "group": "default", "name": "", "enabled": True, "has_key": False},
        {"id": "van-1", "group": "default", "name": "Van one", "enabled": True,
         "has_key": True},
    ]


def test_cli_list_of_a_missing_store_is_a_user_error_and_creates_nothing(
    store_path: Path,
) -> None:
    assert_user_error(run(store_path, "list"), "no such store")
    assert not store_path.exists()


def test_cli_disable_and_enable(store_path: Path) -> None:
    run(store_path, "add", "van-1")
    assert run(store_path, "disable", "van-1").exit_code == 0
    assert registered(store_path)["van-1"].enabled is False
    again = run(store_path, "disable", "van-1")
    assert again.exit_code == 0 and "already disabled" in again.stderr
    assert run(store_path, "enable", "van-1").exit_code == 0
    assert registered(store_path)["van-1"].enabled is True


def test_cli_enable_of_an_unknown_device_is_a_user_error(store_path: Path) -> None:
    run(store_path, "add", "van-12")
    assert_user_error(run(store_path, "enable", "van-13"), "did you mean van-12?")


def test_cli_rotate_key_prints_the_new_key_once(store_path: Path) -> None:
    old = run(store_path, "add", "van-1").stdout.strip()
    result = run(store_path, "rotate-key", "van-1")
    assert result.exit_code == 0
    key = key_hex(store_path, "van-1")
    assert result.stdout == key + "\n" and key != old


def test_cli_import_prints_generated_keys_only(store_path: Path, tmp_path: Path) -> None:
    result = run(store_path, "import", str(write(tmp_path, "fleet.toml", GOOD_TOML)),
                 "--generate-keys")
    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == [
        "phone-3 " + key_hex(store_path, "phone-3"), "van-11 " + key_hex(store_path, "van-11")]
    assert KEY_HEX not in result.output  # the key the file gave is not repeated
    assert "imported 3 devices" in result.stderr


def test_cli_import_of_a_bad_file_lists_every_problem(store_path: Path, tmp_path: Path) -> None:
    path = write(tmp_path, "fleet.toml", BAD_TOML)
    result = run(store_path, "import", str(path))
    assert_user_error(result, "nothing imported: 6 problems")
    assert "%s:5: id:" % path in result.stderr and "%s:17: id:" % path in result.stderr
    assert registered(store_path) == {}


def test_cli_store_comes_from_the_environment(store_path: Path) -> None:
    result = run(store_path, "add", "van-1", env={"FIELDTRACK_STORE": str(store_path)})
    assert result.exit_code == 0
    assert "van-1" in registered(store_path)
