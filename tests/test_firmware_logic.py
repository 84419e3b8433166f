"""Firmware logic tests, run under CPython and under the real MicroPython binary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "firmware"
MODULES = sorted(p.stem for p in HERE.glob("*_tests.py"))


def _path() -> str:
    return ":".join([str(HERE), str(ROOT / "firmware"), str(ROOT)])


@pytest.mark.parametrize("module", MODULES)
def test_firmware_logic_under_micropython(micropython: str, module: str) -> None:
    env = dict(os.environ, MICROPYPATH=".frozen:" + _path())
    proc = subprocess.run([micropython, "-X", "heapsize=2m", str(HERE / "runner.py"), module],
                          capture_output=True, text=True, timeout=300, env=env, cwd=HERE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}
    assert result["passed"], "no test ran in " + module


@pytest.mark.parametrize("module", MODULES)
def test_firmware_logic_under_cpython(module: str) -> None:
    env = dict(os.environ, PYTHONPATH=_path())
    proc = subprocess.run([sys.executable, str(HERE / "runner.py"), module],
                          capture_output=True, text=True, timeout=300, env=env, cwd=HERE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}
    assert result["passed"]
