#!/usr/bin/env bash
# A real Apache Airflow 3 for the Airflow retraining backend's integration tests
# (tests/airflow_server.py): its own venv at ${TOOLS:-.tools}/airflow, so that Airflow's ~130
# dependencies never meet the project's .venv. Idempotent: a stamp file holds the installed pins,
# and a rerun with the same pins returns at once.
set -euo pipefail

AIRFLOW_VERSION=3.3.2
# Airflow's own constraints file cannot be fetched here (PyPI only), so the dependencies that
# Airflow leaves open-ended and that its servers lean on hardest are pinned to the versions the
# resolver picked when this pin was verified (api-server, scheduler, dag-processor, a task run).
PINS=(
  "apache-airflow==$AIRFLOW_VERSION"
  apache-airflow-providers-common-compat==1.23.0
  apache-airflow-providers-common-io==1.11.0
  apache-airflow-providers-common-sql==2.4.0
  apache-airflow-providers-smtp==3.2.0
  apache-airflow-providers-standard==1.21.0
  SQLAlchemy==2.1.9
  alembic==1.20.1
  aiosqlite==0.22.1
  fastapi==0.136.3
  starlette==1.10.0
  uvicorn==0.55.0
  pydantic==2.14.4
  cadwyn==7.0.0
  httpx==0.29.0
  structlog==26.1.0
  msgspec==0.23.0
  pendulum==3.3.0
)

cd "$(dirname "$0")/../.."
TOOLS=${TOOLS:-.tools}
PYTHON=${PYTHON:-python3}
VENV="$TOOLS/airflow"
STAMP="$VENV/.installed"
WANT="${PINS[*]}"
start=$(date +%s.%N)

elapsed() { awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

if [ -x "$VENV/bin/airflow" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
  echo "airflow $AIRFLOW_VERSION is up to date in $VENV ($(elapsed) s)"
  exit 0
fi

echo "installing apache-airflow==$AIRFLOW_VERSION into $VENV (a minute or two the first time)"
rm -f "$STAMP"
"$PYTHON" -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] < (3, 14)))' || {
  echo "Airflow $AIRFLOW_VERSION needs Python 3.10-3.13; set PYTHON to one" >&2; exit 1; }
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/pip" install --quiet --disable-pip-version-check "${PINS[@]}"
"$VENV/bin/pip" check --disable-pip-version-check

# Smoke test: the CLI imports and reports the pinned version.
probe_home=$(mktemp -d)
got=$(AIRFLOW_HOME="$probe_home" "$VENV/bin/airflow" version 2>/dev/null | tail -n 1) || true
rm -rf "$probe_home"
if [ "$got" != "$AIRFLOW_VERSION" ]; then
  echo "airflow version reported '$got', expected $AIRFLOW_VERSION" >&2; exit 1
fi
echo "$WANT" > "$STAMP"
echo "airflow $AIRFLOW_VERSION installed in $VENV ($(elapsed) s)"
