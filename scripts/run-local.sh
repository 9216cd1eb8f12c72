#!/usr/bin/env bash
# Brings up a local Meridian: today the control plane on the embedded store (later
# issues add probers, simulated PoPs and a DNS agent). Ctrl-C stops it cleanly.
#
#   bash scripts/run-local.sh                          # embedded store in .local/data
#   MERIDIAN_ETCD_ENDPOINTS=http://127.0.0.1:2379 bash scripts/run-local.sh   # real etcd
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
cargo build --bins --quiet

GRPC_ADDR=${MERIDIAN_GRPC_ADDR:-127.0.0.1:7400}
ADMIN_ADDR=${MERIDIAN_ADMIN_ADDR:-127.0.0.1:7401}
DATA_DIR=${MERIDIAN_DATA_DIR:-.local/data}
mkdir -p .local

./target/debug/meridian-control-plane \
  --replica-id local-1 --grpc-addr "$GRPC_ADDR" --admin-addr "$ADMIN_ADDR" \
  --data-dir "$DATA_DIR" >.local/control-plane.log 2>&1 &
CP=$!
trap 'kill -TERM $CP 2>/dev/null; wait $CP 2>/dev/null; echo "stopped."' EXIT INT TERM

for _ in $(seq 1 100); do
  if ./target/debug/meridianctl -e "http://$GRPC_ADDR" status >/dev/null 2>&1; then break; fi
  if ! kill -0 $CP 2>/dev/null; then echo "control plane exited; log:"; cat .local/control-plane.log; exit 1; fi
  sleep 0.2
done

./target/debug/meridianctl -e "http://$GRPC_ADDR" status || true
STORE="embedded store in $DATA_DIR"
[[ -n "${MERIDIAN_ETCD_ENDPOINTS:-}" ]] && STORE="etcd at $MERIDIAN_ETCD_ENDPOINTS"
cat <<TXT

Meridian is running:
  control plane  gRPC http://$GRPC_ADDR, admin http://$ADMIN_ADDR ($STORE)
  logs           .local/control-plane.log

Try:
  ./target/debug/meridianctl -e http://$GRPC_ADDR status
  ./target/debug/meridianctl -e http://$GRPC_ADDR status -o json
  curl -s http://$ADMIN_ADDR/ready; curl -s http://$ADMIN_ADDR/metrics | grep meridian_

Ctrl-C stops everything.
TXT
wait $CP
