#!/usr/bin/env bash
# End-to-end failover benchmark (release build): real etcd, 3 control-plane replicas,
# probers in 3 regions, 2 DNS agents, 5 simulated PoPs. Kills a PoP (10 trials, random
# 0-2 s pause first), measures with dig every 50 ms until no agent returns it, heals it
# and measures the time back to full weight; the same with the leader killed at the
# same moment; then a 5-minute flap test (10 % of connections refused).
#
# The stack runs the production setup, as the e2e harness starts it: mutual TLS with a
# per-run test CA and roles enforced; the report says "transport": "mtls".
#   scripts/bench-failover.sh [--trials 10] [--flap-seconds 300] [--json]
#
# MERIDIAN_BENCH_PROFILE=dev builds and runs debug binaries instead: only to check
# that the bench runs, never for figures.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${MERIDIAN_BENCH_PROFILE:-release}
case "$PROFILE" in
  release) DIR=release ;;
  dev) DIR=debug ;;
  *) echo "bench-failover: MERIDIAN_BENCH_PROFILE must be release or dev" >&2; exit 2 ;;
esac
bash scripts/setup.sh
cargo build --profile "$PROFILE" -p meridian-control-plane -p meridianctl -p meridian-prober -p meridian-dns-agent -p meridian-tests \
    -p meridian-anycast-agent \
    --bin meridian-control-plane --bin meridianctl --bin meridian-prober --bin meridian-dns-agent \
    --bin meridian-anycast-agent --bin sim_pops --bin failover_bench
exec "target/$DIR/failover_bench" "$@"
