#!/usr/bin/env bash
# Sets everything up and runs the booking demo against $SOLEIL_DATABASE_URL
# (default: a local database `soleil_demo`, created when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export SOLEIL_DATABASE_URL=${SOLEIL_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/soleil_demo}
exec .venv/bin/soleil-runner demo "$@"
