#!/usr/bin/env bash
# The test command (README): builds .venv once with ag2-otel and its dev extras, then runs pytest (the whole suite
# unless told otherwise).
#   scripts/test.sh [pytest args]
#   VENV=dir                                    another venv (created if missing)
#   AG2_REQ='ag2==0.9.1.post0'                  the AG2 classic distribution to test (default: the one already in
#                                               the venv, else autogen>=0.9,<1.0 as the dev extra says)
#   MLFLOW_REQ='mlflow==3.1.4 sqlalchemy<2.1'   the MLflow to test, e.g. 'mlflow-tracing==3.17.2' (default: the one
#                                               already in the venv, else full mlflow>=3.1,<4)
# What is already in the venv is kept (never a second distribution of `autogen` on top of the one there).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"

# name==version of what the venv already has, or nothing
present() {
  "$PY" - "$1" <<'EOF'
import importlib.metadata as md, re, sys

def version(name):
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None

def key(v):
    return tuple(int(p) for p in re.findall(r"\d+", v)[:3])

if sys.argv[1] == "ag2":  # AG2 classic under any of its names (ag2>=1 and pyautogen 0.10 are not classic)
    for name, low, high in (("autogen", (0,), (1,)), ("ag2", (0,), (1,)), ("pyautogen", (0, 3), (0, 10))):
        v = version(name)
        if v and low <= key(v) < high:
            print(f"{name}=={v}")
            break
else:  # MLflow: full, skinny or tracing-only
    for name in ("mlflow", "mlflow-skinny", "mlflow-tracing"):
        if v := version(name):
            print(f"{name}=={v}")
            break
EOF
}

AG2_REQ=${AG2_REQ:-$(present ag2)}
MLFLOW_REQ=${MLFLOW_REQ:-$(present mlflow)}
if [ -z "$AG2_REQ" ] && [ -z "$MLFLOW_REQ" ]; then
  # a new venv: exactly the README's set-up
  "$PY" -m pip install -q --disable-pip-version-check -e ".[dev]"
else
  read -ra ag2 <<<"${AG2_REQ:-autogen>=0.9,<1.0}"
  read -ra mlf <<<"${MLFLOW_REQ:-mlflow>=3.1,<4}"
  "$PY" -m pip install -q --disable-pip-version-check -e ".[test]" "${ag2[@]}" "${mlf[@]}"
fi
# tests/test_postgres_store.py starts Debian's PostgreSQL server itself (tests/postgres.py); a fresh machine may have
# only the client: install the server package, non-interactive and quiet (root with apt-get only)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
exec "$PY" -m pytest "$@"
