#!/usr/bin/env bash
# `make run`: the gateway on embedded defaults against a local Mosquitto, with three demo
# vans publishing signed frames so that positions arrive at once. Ctrl-C stops it cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
    echo "run: no broker on 127.0.0.1:1883, starting a local Mosquitto"
    conf=$(mktemp)
    printf 'listener 1883 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\n' > "$conf"
    mosquitto -d -c "$conf"
    sleep 0.5
fi
exec .venv/bin/fieldtrack gateway run --sample-publisher "$@"
