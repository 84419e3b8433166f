#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian with Python 3.11: system services the tests and
# `make run` need, and a .venv with fieldtrack and its dev tools. Fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_passwd >/dev/null 2>&1 || missing+=(mosquitto-clients)
[ -x /usr/bin/victoria-metrics ] || missing+=(victoria-metrics)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing fieldtrack and its dev tools into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    touch "$stamp"
fi

# mypy cannot follow the editable install's import hook: give it a tree of links that
# mirrors the package layout.
mkdir -p build/typecheck/fieldtrack
ln -sfn ../../../fieldtrack/__init__.py build/typecheck/fieldtrack/__init__.py
ln -sfn ../../../fieldtrack/py.typed build/typecheck/fieldtrack/py.typed
for pkg in protocol gateway tools; do
    ln -sfn "../../../$pkg" "build/typecheck/fieldtrack/$pkg"
done
