#!/usr/bin/env bash
# Change-driver failover benchmark (release build, issue [8]): real etcd (3 members),
# two control-plane replicas (lease TTL 2 s), probers in 3 regions, 2 HTTP PoPs. A
# drain ladder's leader is SIGKILLed as its first rung bakes; the figure is the time
# from the kill to the new leader resuming the same step (its analysis of rung 1, from
# the event log), against the goal lease TTL + 1 s. Each trial checks the rung was
# neither repeated nor skipped.
#   scripts/bench-change-failover.sh [--trials 10] [--json]
#
# MERIDIAN_BENCH_PROFILE=dev builds and runs debug binaries instead: only to check
# that the bench runs, never for figures.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${MERIDIAN_BENCH_PROFILE:-release}
case "$PROFILE" in
  release) DIR=release ;;
  dev) DIR=debug ;;
  *) echo "bench-change-failover: MERIDIAN_BENCH_PROFILE must be release or dev" >&2; exit 2 ;;
esac
bash scripts/setup.sh
cargo build --profile "$PROFILE" -p meridian-control-plane -p meridianctl -p meridian-prober -p meridian-tests \
    --bin meridian-control-plane --bin meridianctl --bin meridian-prober --bin change_failover_bench
exec "target/$DIR/change_failover_bench" "$@"
