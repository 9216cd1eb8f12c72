#!/usr/bin/env bash
# Plan fan-out benchmark: 1,000 agents (by default) hold WatchPlan streams on one
# release-built meridian-control-plane; each operator drain/undrain publishes a new
# plan, and we time until the last agent has received and ACKed it.
#   scripts/bench-fanout.sh [--agents 1000] [--rounds 5] [--json]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p meridian-control-plane -p meridianctl -p meridian-tests \
    --bin meridian-control-plane --bin meridianctl --bin fanout_bench
exec target/release/fanout_bench "$@"
