#!/usr/bin/env bash
# The test command (README): builds .venv once with ag2-otel and its dev extras, then runs the whole suite.
#   scripts/test.sh [pytest args]      VENV=dir and AG2_VERSION=x.y.z select another venv / AG2 release
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[dev]" ${AG2_VERSION:+"ag2==$AG2_VERSION"}
exec "$VENV/bin/python" -m pytest "$@"
