#!/usr/bin/env bash
# Soleil next to its peers with ../shared/bench's driver, then the ratio table.
#
#   benchmarks/peers.sh                                   # procrastinate pgqueuer chancy soleil
#   PEERS="pgqueuer soleil" SKIP_PGBENCH=1 benchmarks/peers.sh
#
# Results go to $RESULTS_DIR (default /tmp/peer-bench-results: ../shared is not ours
# to write, even where the file system would let us). Other knobs: see run_peers.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH=${BENCH:-$(cd .. && pwd)/shared/bench}
[[ -x "$BENCH/run_peers.sh" ]] || BENCH=/work/shared/bench
export RESULTS_DIR=${RESULTS_DIR:-/tmp/peer-bench-results}
export PEERS=${PEERS:-"procrastinate pgqueuer chancy soleil"}
ADAPTER_PATH=benchmarks EXTRA_PIP="-e ." "$BENCH/run_peers.sh"
latest=$(ls -1d "$RESULTS_DIR"/*/ | sort | tail -1)
.venv/bin/python -m benchmarks.ratios "$latest"
