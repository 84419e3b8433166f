#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian with Python 3.11: the system services the tests and
# `make run` need, and a .venv with fieldtrack and its dev tools. Fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

PY=${PYTHON:-python3}
missing=()
have mosquitto && have mosquitto_passwd || missing+=(mosquitto)
have victoria-metrics || missing+=(victoria-metrics)
have chromium || missing+=(chromium)  # renders the HTML report in its test
if [ ! -x .venv/bin/python ] && ! "$PY" -c 'import ensurepip' 2>/dev/null; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi

# Reinstall only when pyproject.toml changed since the last successful install.
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing fieldtrack and its dev tools into .venv"
    log=.venv/pip-install.log
    if ! { .venv/bin/python -m pip install --upgrade pip \
           && .venv/bin/python -m pip install -e '.[dev]'; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "setup: pip install failed (log above, kept in $log)" >&2
        exit 1
    fi
    touch "$stamp"
fi
