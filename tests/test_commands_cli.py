"""``fieldtrack command``: what it prints, and a clear error without a traceback for every
mistake, with nothing queued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fieldtrack.gateway.store.sqlite import Device, Store
from fieldtrack.tools.cli import main

SHA = "9f" * 32


@pytest.fixture
def config(tmp_path: Path) -> Path:
    store = Store(tmp_path / "fieldtrack.db")
    store.put_device(Device("van-1", "vans", bytes(32), True))
    store.put_device(Device("van-off", "vans", bytes(32), False))
    store.close()
    path = tmp_path / "gateway.toml"
    path.write_text('[store]\npath = "%s"\n' % (tmp_path / "fieldtrack.db"))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def queued(config: Path) -> int:
    store = Store(config.parent / "fieldtrack.db")
    try:
        return int(store.db.execute("SELECT COUNT(*) FROM commands").fetchone()[0])
    finally:
        store.close()


@pytest.mark.parametrize(("args", "words"), [
    (["send", "nobody", "locate"], "nobody: no such device"),
    (["send", "van-off", "locate"], "van-off is disabled"),
    (["send", "van-1", "dance"], "'dance' is not an action"),
    (["send", "van-1", "config"], "at least one KEY=VALUE"),
    (["send", "van-1", "config", "moving.min_period_s"], "a setting is KEY=VALUE"),
    (["send", "van-1", "config", "a=1", "a=2"], "a is given twice"),
    (["send", "van-1", "config", "x" * 65 + "=1"], "setting names: 1..64"),
    (["send", "van-1", "update", "https://fw.example/t.bin"], "update needs --sha256"),
    (["send", "van-1", "update", "https://fw.example/t.bin", "--sha256", "abc"],
     "64 hex digits"),
    (["send", "van-1", "update", "--sha256", SHA], "update takes one URL"),
    (["send", "van-1", "locate", "--sha256", SHA], "belong to update"),
    (["send", "van-1", "locate", "now"], "locate takes no arguments"),
    (["send", "van-1", "reboot", "--ttl", "0"], "needs an expiry"),
    (["send", "van-1", "locate", "--ttl", "2d"], "more than 24 h"),
    (["send", "van-1", "locate", "--ttl", "soon"], "--ttl 'soon'"),
    (["cancel", "van-1", "7"], "van-1 has no command 7"),
])
def test_a_mistake_is_a_clear_error_and_queues_nothing(
        capsys: pytest.CaptureFixture[str], config: Path, args: list[str], words: str) -> None:
    rc, out, err = run(capsys, "command", "-c", str(config), *args)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and words in err, err
    assert "Traceback" not in err
    assert queued(config) == 0


def test_a_store_that_is_not_there_or_a_bad_config_file_is_named(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    toml = tmp_path / "other.toml"
    toml.write_text('[store]\npath = "%s"\n' % (tmp_path / "none.db"))
    rc, _, err = run(capsys, "command", "-c", str(toml), "list")
    assert rc == 2 and "none.db: no such store" in err
    toml.write_text("[store]\npaht = 'x'\n")
    rc, _, err = run(capsys, "command", "-c", str(toml), "list")
    assert rc == 2 and "paht" in err and "Traceback" not in err


def test_send_prints_the_cid_list_shows_it_and_cancel_stops_it(
        capsys: pytest.CaptureFixture[str], config: Path) -> None:
    c = ["command", "-c", str(config)]
    assert run(capsys, *c, "send", "van-1", "locate")[:2] == (0, "1\n")
    rc, out, err = run(capsys, *c, "send", "van-1", "update", "https://fw.example/t.bin",
                       "--sha256", SHA.upper(), "--version", "1.4", "--ttl", "10m")
    assert (rc, out) == (0, "2\n") and "fw_update queued as cid 2" in err
    rc, out, _ = run(capsys, *c, "list", "--json")
    rows = json.loads(out)
    assert [(r["cid"], r["kind"], r["state"]) for r in rows] == [
        (2, "fw_update", "queued"), (1, "locate", "queued")]
    assert rows[0]["args"] == {"url": "https://fw.example/t.bin", "sha256": SHA,
                               "version": "1.4"}
    assert rows[0]["exp"] - rows[0]["created_ms"] // 1000 in (599, 600)
    assert run(capsys, *c, "cancel", "van-1", "1")[0] == 0
    rc, _, err = run(capsys, *c, "cancel", "van-1", "1")
    assert rc == 2 and "cid 1 is cancelled already" in err
    rc, out, _ = run(capsys, *c, "list", "van-1")
    assert "cancelled" in out.splitlines()[2] and "queued" in out.splitlines()[1]


def test_wait_without_an_answer_says_so_and_fails(capsys: pytest.CaptureFixture[str],
                                                  config: Path) -> None:
    rc, out, err = run(capsys, "command", "-c", str(config), "send", "van-1", "status",
                       "--wait", "0.5")
    assert (rc, out) == (1, "1\n")
    assert "no answer to cid 1 within 0.5 s (state queued" in err and "Traceback" not in err
