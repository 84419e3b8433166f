#!/usr/bin/env bash
# `make run`: the demo. A local Mosquitto (started on 127.0.0.1:1883 if nothing listens
# there, stopped at the end), the gateway on embedded defaults with a few demo sites as
# geofences, five simulated vans visiting them, and a live view of positions and events.
# Ctrl-C stops everything cleanly. Options pass through: scripts/run.sh --no-view.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/fieldtrack demo "$@"
