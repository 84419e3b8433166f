"""The gateway refuses to start on a cbor2 its decoder cannot use, and says why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fieldtrack.gateway.dependencies import CBOR2_MIN, cbor2_problem, version_tuple


@pytest.mark.parametrize("version", ["5.6.0", "5.9.0", "6.0.1", "6.1.0", "6.1.0rc1"])
def test_cbor2_older_than_the_decoder_needs_is_a_problem(version: str) -> None:
    problem = cbor2_problem(version)
    assert version in problem and "pip install 'cbor2>=6.1.1'" in problem


@pytest.mark.parametrize("version", ["6.1.1", "6.3.0", "7.0", "10.0.0"])
def test_cbor2_new_enough_is_fine(version: str) -> None:
    assert cbor2_problem(version) == ""


def test_missing_cbor2_says_what_to_install() -> None:
    assert "not installed" in cbor2_problem(None)


def test_version_tuple_reads_the_release_numbers() -> None:
    assert version_tuple("6.1.0rc1") == (6, 1, 0)
    assert version_tuple("6.3.0.post2") == (6, 3, 0)
    assert CBOR2_MIN == version_tuple("6.1.1")


def test_the_installed_cbor2_is_new_enough() -> None:
    from importlib import metadata

    assert cbor2_problem(metadata.version("cbor2")) == ""


def test_the_gateway_refuses_to_start_on_an_old_cbor2(tmp_path: Path) -> None:
    """An environment whose cbor2 metadata says 5.9.0 (found first on the path)."""
    site = tmp_path / "site"
    info = site / "cbor2-5.9.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cbor2\nVersion: 5.9.0\n")
    config = tmp_path / "gateway.toml"
    config.write_text('[store]\npath = "%s"\n[http]\nenabled = false\n' % (tmp_path / "s.db"))
    code = "import sys; from fieldtrack.tools.cli import main; sys.exit(main())"
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, "-c", code, "gateway", "run", "-c", str(config)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0
    assert "cbor2 5.9.0 is installed" in done.stderr and ">= 6.1.1" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "s.db").exists()  # nothing started
