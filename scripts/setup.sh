#!/usr/bin/env bash
# Installs everything Soleil's development and tests need on a fresh Debian
# machine: PostgreSQL 15 (started if it is down), systemd-analyze, the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[[ -x /usr/lib/postgresql/15/bin/initdb ]] || need_apt+=(postgresql-15 postgresql-contrib-15)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if (( ${#need_apt[@]} )); then
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing packages: ${need_apt[*]} (install them with apt-get as root)" >&2
    exit 1
  fi
fi

# The local server the tests use (trust auth on 127.0.0.1:5432, as on this machine kind).
if ! /usr/lib/postgresql/15/bin/pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql/15/main ]]; then
    pg_ctlcluster --skip-systemctl-redirect 15 main start
  fi
  for _ in $(seq 1 60); do
    /usr/lib/postgresql/15/bin/pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 0.5
  done
fi

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'
echo "setup done: .venv ready, PostgreSQL answering on 127.0.0.1:5432"
