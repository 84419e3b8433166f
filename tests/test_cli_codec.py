"""``fieldtrack decode`` / ``encode`` and the CLI's error contract (exit 2, no traceback)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from fieldtrack.tools.cli import main

VECTORS = json.loads(
    (Path(__file__).resolve().parents[1] / "protocol" / "vectors" / "v1.json").read_text()
)
FIRST = VECTORS["valid"][0]
SIGNED = VECTORS["signed"][0]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_decode_hex_prints_the_frame_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", FIRST["hex"])
    assert code == 0
    assert json.loads(out)["frame"] == FIRST["frame"]


def test_decode_base64_and_file_give_the_same_frame(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    raw = bytes.fromhex(FIRST["hex"])
    path = tmp_path / "frame.bin"
    path.write_bytes(raw)
    _, b64, _ = run(capsys, "decode", base64.b64encode(raw).decode())
    _, from_file, _ = run(capsys, "decode", str(path))
    assert json.loads(b64) == json.loads(from_file)


def test_decode_checks_a_signed_frame_with_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    _, good, _ = run(capsys, "decode", SIGNED["hex"], "--key", SIGNED["key"])
    _, bad, _ = run(capsys, "decode", SIGNED["hex"], "--key", "00" * 32)
    assert json.loads(good)["mac"] == "valid"
    assert json.loads(bad)["mac"] == "INVALID"
    assert json.loads(good)["kid"] == SIGNED["kid"]


def test_encode_json_gives_the_vector_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "encode", json.dumps(FIRST["frame"]))
    assert code == 0 and out.strip() == FIRST["hex"]


def test_encode_and_sign_gives_the_signed_vector(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    frame = [v for v in VECTORS["valid"] if v["hex"] == SIGNED["payload"]][0]["frame"]
    path = tmp_path / "frame.json"
    path.write_text(json.dumps(frame))
    _, out, _ = run(capsys, "encode", str(path), "--key", SIGNED["key"], "--kid", SIGNED["kid"])
    assert out.strip() == SIGNED["hex"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["decode", "zz-not-data"], "neither hex nor base64"),
        (["decode", FIRST["hex"] + "00"], "trailing_bytes"),
        (["decode", FIRST["hex"], "--key", "xyz"], "--key"),
        (["encode", "{not json"], "line 1 column 2"),
        (["encode", '{"type": "position"}'], "field boot"),
        (["encode", '{"type": "teleport"}'], "unknown frame type"),
        (["encode", json.dumps(FIRST["frame"]), "--key", "00" * 32], "--kid"),
    ],
)
def test_user_mistakes_exit_2_with_a_message_and_no_traceback(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2
    assert message in err
    assert err.startswith("error: ")
    assert "Traceback" not in err + out


def test_version_and_help_on_every_level(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version")[0] == 0
    for args in (["--help"], ["decode", "--help"], ["encode", "--help"],
                 ["gateway", "--help"], ["gateway", "run", "--help"]):
        code, out, _ = run(capsys, *args)
        assert code == 0 and "Usage:" in out


def test_gateway_bad_config_names_file_key_and_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[mqtt]\nprot = 1883\n")
    code, _, err = run(capsys, "gateway", "run", "-c", str(path))
    assert code == 2
    assert str(path) in err and "[mqtt]" in err and "'prot'" in err and "'port'" in err
    path.write_text("[filters]\nteleport_action = 'explode'\n")
    code, _, err = run(capsys, "gateway", "run", "-c", str(path))
    assert code == 2 and "teleport_action" in err and "drop" in err
    path.write_text("[store\n")
    code, _, err = run(capsys, "gateway", "run", "-c", str(path))
    assert code == 2 and "not valid TOML" in err
    code, _, err = run(capsys, "gateway", "run", "-c", str(tmp_path / "missing.toml"))
    assert code == 2 and "no such file" in err
