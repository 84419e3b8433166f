"""Installed libraries the gateway cannot work with, found before it starts.

pip installs what ``pyproject.toml`` asks for, but an environment built otherwise (a
distribution package, an old virtualenv, a pinned lock file) can hold an older cbor2.
``protocol/fast.py`` passes decoder options that cbor2 gained in 6.1
(``allow_duplicate_keys``) and relies on 6.1.1's fix for inputs over 4096 bytes (a
signed batch reaches 16 KiB); with an older cbor2 every frame would be rejected, so
the gateway refuses to start instead, saying what to install.
"""

from __future__ import annotations

import re
from importlib import metadata

CBOR2_MIN = (6, 1, 1)


class DependencyError(Exception):
    """An installed library is missing or too old; the message says what to install."""


def version_tuple(version: str) -> tuple[int, ...]:
    """The leading release numbers of a version string: "6.1.0rc1" -> (6, 1, 0)."""
    numbers = []
    for part in version.split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
        if match.end() != len(part):
            break
    return tuple(numbers)


def cbor2_problem(version: str | None) -> str:
    """Why this cbor2 version (None: not installed) cannot be used; "" when it can."""
    want = ".".join(map(str, CBOR2_MIN))
    if version is None:
        return "cbor2 is not installed; install it: pip install 'cbor2>=%s'" % want
    if version_tuple(version) < CBOR2_MIN:
        return ("cbor2 %s is installed, but the gateway's decoder needs cbor2 >= %s (with an "
                "older one every frame would be rejected); upgrade it: pip install "
                "'cbor2>=%s'" % (version, want, want))
    return ""


def check() -> None:
    """Raise ``DependencyError`` if the installed cbor2 cannot be used."""
    try:
        version: str | None = metadata.version("cbor2")
    except metadata.PackageNotFoundError:
        version = None
    problem = cbor2_problem(version)
    if problem:
        raise DependencyError(problem)
