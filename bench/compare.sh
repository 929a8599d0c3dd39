#!/usr/bin/env bash
# The side-by-side session behind docs/benchmarks.md: Conveyor's bench, BullMQ for Node, every Python
# peer, then BullMQ for Node and Conveyor again, with load averages recorded between the steps.
# The peer and Node scripts are not copied here; they are run from $SHARED (default ../shared/bench).
# usage: bench/compare.sh [LOG_DIR]      (about 45 minutes; the first peer run also builds venvs)
set -uo pipefail
repo="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
shared="${SHARED:-$repo/../shared/bench}"
logs="${1:-${TMPDIR:-/tmp}/conveyor-bench-session-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$logs"
step() { echo "== $(date -u +%H:%M:%S) $1 | $(uptime)" | tee -a "$logs/session.log"; }

cd "$repo"
make -s .venv/.installed-test
step "conveyor (before)"
.venv/bin/python -m bench.run --out "$logs/conveyor-before.json" >"$logs/conveyor-before.md" 2>"$logs/conveyor-before.err"
step "bullmq-node (before)"
"$shared/node/run.sh" >"$logs/node-before.jsonl" 2>"$logs/node-before.err"
step "python peers"
"$shared/peers/run.sh" >"$logs/peers.md" 2>"$logs/peers.err"
step "bullmq-node (after)"
"$shared/node/run.sh" >"$logs/node-after.jsonl" 2>"$logs/node-after.err"
step "conveyor (after)"
.venv/bin/python -m bench.run --out "$logs/conveyor-after.json" >"$logs/conveyor-after.md" 2>"$logs/conveyor-after.err"
step "done"
