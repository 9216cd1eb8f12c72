#!/usr/bin/env bash
# Plan fan-out benchmark: 1,000 agents (by default) hold WatchPlan streams on one
# release-built meridian-control-plane; each operator drain/undrain publishes a new
# plan, and we time until the last agent has received and ACKed it.
#
# --transport mtls (the default, the production setup: each agent presents its own
# certificate on its own connection, roles enforced) or --transport plaintext (no TLS,
# `[auth] mode = "off"`; --per-connection N multiplexes N agents per connection, as
# the figures before mTLS were taken with 50). The output names the transport.
#   scripts/bench-fanout.sh [--agents 1000] [--rounds 5] [--transport mtls|plaintext] [--json]
#
# MERIDIAN_BENCH_PROFILE=dev builds and runs debug binaries instead: only to check
# that the bench runs, never for figures.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${MERIDIAN_BENCH_PROFILE:-release}
case "$PROFILE" in
  release) DIR=release ;;
  dev) DIR=debug ;;
  *) echo "bench-fanout: MERIDIAN_BENCH_PROFILE must be release or dev" >&2; exit 2 ;;
esac
cargo build --profile "$PROFILE" -p meridian-control-plane -p meridianctl -p meridian-tests \
    --bin meridian-control-plane --bin meridianctl --bin fanout_bench
# One connection per agent: the bench and the control plane it starts each hold one
# file per agent. Raise the soft limit to the hard one (the bench says so if that is
# still too low).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "target/$DIR/fanout_bench" "$@"
