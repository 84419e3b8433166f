"""The store file itself: what is refused at start, and who may read it."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from fieldtrack.gateway.store.sqlite import Device, Store, StoreError
from fieldtrack.tools.cli import main


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_empty_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "fieldtrack.db"
    path.write_bytes(b"")
    with pytest.raises(StoreError, match="empty") as info:
        Store(path)
    assert str(path) in str(info.value)
    assert path.stat().st_size == 0  # left as it was, not turned into a store


def test_a_file_that_is_not_sqlite_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "fieldtrack.db"
    path.write_text("[mqtt]\nhost = 'x'\n")  # e.g. the config given as the store
    with pytest.raises(StoreError, match="not an SQLite database") as info:
        Store(path)
    assert str(path) in str(info.value)


def test_another_programs_sqlite_database_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (text TEXT)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a fieldtrack store") as info:
        Store(path)
    assert str(path) in str(info.value)
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert tables == {"notes"}  # nothing of ours written into it


def test_a_new_store_and_its_wal_are_private(tmp_path: Path) -> None:
    path = tmp_path / "fieldtrack.db"
    store = Store(path)
    try:
        store.put_device(Device("van-1", "vans", bytes(32), True))
        assert mode(path) == 0o600
        assert mode(Path(str(path) + "-wal")) == 0o600
        assert mode(Path(str(path) + "-shm")) == 0o600
    finally:
        store.close()
    assert Store(path).devices()["van-1"].key == bytes(32)  # and it opens again
    assert not list(tmp_path.glob("*.new-*"))  # no temporary file left behind


def test_the_gateway_refuses_an_empty_store_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "fieldtrack.db"
    store.write_bytes(b"")
    config = tmp_path / "gateway.toml"
    config.write_text('[store]\npath = "%s"\n[http]\nenabled = false\n' % store)
    assert main(["gateway", "run", "-c", str(config)]) != 0
    err = capsys.readouterr().err
    assert str(store) in err and "empty" in err and "Traceback" not in err


def test_a_store_damaged_inside_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "fieldtrack.db"
    store = Store(path)
    store.close()
    data = bytearray(path.read_bytes())
    for i in range(100, len(data), 7):  # pages garbled behind an intact header
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as err:
        Store(path)
    assert str(path) in str(err.value) and "restore it from a backup" in str(err.value)
    assert path.read_bytes() == bytes(data)  # left as it was, for whoever repairs it
