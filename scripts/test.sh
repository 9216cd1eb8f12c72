#!/usr/bin/env bash
# The whole test suite: setup, formatting, lints, build, every test (unit, property,
# the store conformance suite against the embedded store and real etcd clusters, and
# the end-to-end tests that start real Meridian processes).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build (binaries used by the end-to-end tests)"
cargo build --workspace --bins --locked
echo "== cargo test"
# Two test threads: the end-to-end tests start etcd clusters and several daemons
# each, and the machines are two shared cores.
cargo test --workspace --locked --no-fail-fast -- --test-threads 2
echo "== the README's run command, as a smoke test (comes up, DNS answers, stops)"
bash scripts/run-local.sh --smoke
