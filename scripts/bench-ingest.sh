#!/usr/bin/env bash
# Probe-result ingest benchmark: builds the control plane, meridianctl and the bench
# binary in release mode, then streams synthetic results over real gRPC into one
# meridian-control-plane replica and prints throughput, ack latency, CPU and RSS.
#
# Arguments go to the bench binary; see `scripts/bench-ingest.sh --help`. Examples:
#   scripts/bench-ingest.sh
#   scripts/bench-ingest.sh --streams 3 --batch 500 --json
set -euo pipefail
cd "$(dirname "$0")/.."

# Name every binary: `--bin ingest_bench` alone would filter the other packages'
# binaries out of the build, leaving the bench to run stale (or no) daemons.
cargo build --release -p meridian-control-plane -p meridianctl -p meridian-tests \
    --bin meridian-control-plane --bin meridianctl --bin ingest_bench
exec target/release/ingest_bench "$@"
