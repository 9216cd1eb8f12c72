#!/usr/bin/env bash
# End-to-end failover benchmark (release build): real etcd, 3 control-plane replicas,
# probers in 3 regions, 2 DNS agents, 5 simulated PoPs. Kills a PoP (20 trials, random
# 0-2 s pause first), measures with dig every 50 ms until no agent returns it (and
# until its anycast route leaves the upstream router), heals it and measures the time
# back to full weight; the same with the leader killed at the same moment; the same
# with the PoP silent instead of killed (connections accepted, never answered: every
# health check times out); then a flap test of 5 minutes per share of connections
# refused (10 %, then 20 %; the flapper is healed and back UP between shares).
#
# The stack runs the production setup, as the e2e harness starts it: mutual TLS with a
# per-run test CA and roles enforced; the report says "transport": "mtls".
#   scripts/bench-failover.sh [--trials 20] [--flap-seconds 300] [--flap-shares 0.1,0.2]
#                             [--no-leader-kill] [--no-silent] [--probe-interval 500ms] [--json]
# --flap-seconds is per share (0 skips the flap test).
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
