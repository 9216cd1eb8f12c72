#!/usr/bin/env bash
# Probe-result ingest benchmark: builds the control plane, meridianctl and the bench
# binary in release mode, then streams synthetic results over real gRPC into one
# meridian-control-plane replica and prints throughput, ack latency, CPU and RSS.
#
# --transport mtls (the default, the production setup: mutual TLS, a prober
# certificate per stream, roles enforced) or --transport plaintext (no TLS, the control
# plane with `[auth] mode = "off"`); run both to see what TLS and authorization cost.
# The output (and --json) names the transport.
#
# Arguments go to the bench binary; see `scripts/bench-ingest.sh --help`. Examples:
#   scripts/bench-ingest.sh
#   scripts/bench-ingest.sh --transport plaintext
#   scripts/bench-ingest.sh --streams 3 --batch 500 --json
#
# MERIDIAN_BENCH_PROFILE=dev builds and runs debug binaries instead: only to check
# that the bench runs, never for figures.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${MERIDIAN_BENCH_PROFILE:-release}
case "$PROFILE" in
  release) DIR=release ;;
  dev) DIR=debug ;;
  *) echo "bench-ingest: MERIDIAN_BENCH_PROFILE must be release or dev" >&2; exit 2 ;;
esac
# Name every binary: `--bin ingest_bench` alone would filter the other packages'
# binaries out of the build, leaving the bench to run stale (or no) daemons.
cargo build --profile "$PROFILE" -p meridian-control-plane -p meridianctl -p meridian-tests \
    --bin meridian-control-plane --bin meridianctl --bin ingest_bench
exec "target/$DIR/ingest_bench" "$@"
