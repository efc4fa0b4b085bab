#!/usr/bin/env bash
# The whole test suite (the README's test command). Creates and drops its own databases.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x .venv/bin/pytest ]] || scripts/setup.sh
exec .venv/bin/pytest -q "$@"
