#!/usr/bin/env bash
# DNS benchmark: dnsperf against meridian-dns-agent (fed by a real control plane that
# publishes new plans several times a second while the run lasts), then the same
# query file against knotd serving an equivalent static zone and gdnsd serving an
# equivalent DYNA (multifo) record. Every server runs on its own loopback port with
# configs generated in a temporary directory; nothing touches the system services.
#
#   scripts/bench-dns.sh [--duration 20] [--keep] [--no-build]
#
# --no-build uses the release binaries already in target/release.
#
# Needs: dnsperf, knotd, gdnsd (apt-get install -y dnsperf knot gdnsd).
# Prints one line per server (QPS, average/max latency, lost queries, rcodes), the
# number of plans published during the agent's run, and the ratio agent/gdnsd.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=20
KEEP=0
BUILD=1
while (($#)); do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-build) BUILD=0; shift ;;
    *) echo "usage: $0 [--duration SECONDS] [--keep] [--no-build]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh --bench
for tool in dnsperf knotd gdnsd; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "bench-dns: $tool is missing: apt-get install -y dnsperf knot gdnsd" >&2
    exit 1
  fi
done

if ((BUILD)); then
  echo "== building release binaries"
  cargo build --release -q -p meridian-dns-agent -p meridian-control-plane -p meridianctl
fi
BIN=target/release
for b in meridian-dns-agent meridian-control-plane meridianctl; do
  [[ -x $BIN/$b ]] || { echo "bench-dns: $BIN/$b is missing: run without --no-build" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/meridian-bench-dns.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if ((KEEP)); then echo "bench-dns: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# A free port on 127.0.0.1 for both TCP and UDP (random, checked against ss).
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    if ! ss -Htuln "sport = :$p" | grep -q .; then
      echo "$p"
      return
    fi
  done
}

wait_dns() { # port
  for _ in $(seq 1 100); do
    if dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short example.net SOA >/dev/null 2>&1 &&
       [[ -n $(dig @127.0.0.1 -p "$1" +time=1 +tries=1 +short www.example.net A) ]]; then
      return 0
    fi
    sleep 0.1
  done
  echo "bench-dns: nothing answers www.example.net on port $1" >&2
  return 1
}

CP_GRPC=$(free_port); CP_ADMIN=$(free_port); AGENT_DNS=$(free_port); AGENT_ADMIN=$(free_port)
KNOT_DNS=$(free_port); GDNSD_DNS=$(free_port); GDNSD_CTL=$(free_port)
CP="http://127.0.0.1:$CP_GRPC"

echo "== control plane on $CP_GRPC (embedded store)"
"$BIN/meridian-control-plane" --replica-id bench --grpc-addr "127.0.0.1:$CP_GRPC" \
  --admin-addr "127.0.0.1:$CP_ADMIN" --data-dir "$WORK/cp-data" >"$WORK/cp.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  "$BIN/meridianctl" -e "$CP" --timeout 1s status >/dev/null 2>&1 && break
  sleep 0.1
done

# The same shape as the e2e test: clients on 127.0.0.0/8 (dnsperf's source) are
# region `lo`, served by iad1 (127.0.0.23); eu spills over fra1 and ams1.
cat >"$WORK/topology.toml" <<'EOF'
[policy]
target_utilisation = 0.8
dns_ttl_seconds = 15

[[pops]]
id = "fra1"
capacity = 100
ipv4 = ["127.0.0.21"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.21:9"

[[pops]]
id = "ams1"
capacity = 100
ipv4 = ["127.0.0.22"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.22:9"

[[pops]]
id = "iad1"
capacity = 100
ipv4 = ["127.0.0.23"]
[[pops.endpoints]]
name = "tcp"
kind = "tcp"
address = "127.0.0.23:9"

[[regions]]
id = "eu"
demand = 100
client_prefixes = ["10.1.0.0/16"]
latency_hints = { fra1 = "10ms", ams1 = "15ms", iad1 = "90ms" }

[[regions]]
id = "lo"
demand = 30
client_prefixes = ["127.0.0.0/8"]
latency_hints = { iad1 = "10ms", fra1 = "90ms", ams1 = "95ms" }
EOF
"$BIN/meridianctl" -e "$CP" apply -f "$WORK/topology.toml" >/dev/null

ZONE_TOML='
[[zones]]
origin = "example.net."
ns = ["ns1"]
soa_rname = "hostmaster.example.net."
soa_minimum = 30
ttl = 300

[[zones.steered]]
name = "www"
answers = 1

[[zones.records]]
name = "ns1"
type = "A"
value = "127.0.0.53"
'
cat >"$WORK/agent.toml" <<EOF
agent_id = "bench-dns"
dns_addr = "127.0.0.1:$AGENT_DNS"
admin_addr = "127.0.0.1:$AGENT_ADMIN"
control_plane = ["$CP"]
state_dir = "$WORK/agent-state"
$ZONE_TOML
EOF
echo "== meridian-dns-agent on $AGENT_DNS"
MERIDIAN_LOG=warn "$BIN/meridian-dns-agent" --config "$WORK/agent.toml" >"$WORK/agent.log" 2>&1 &
PIDS+=($!)
wait_dns "$AGENT_DNS"

echo "== knotd on $KNOT_DNS"
mkdir -p "$WORK/knot"
cat >"$WORK/knot/example.net.zone" <<'EOF'
$ORIGIN example.net.
$TTL 300
@    SOA ns1 hostmaster 1 3600 600 604800 30
@    NS  ns1
ns1  A   127.0.0.53
www  15  A 127.0.0.23
EOF
cat >"$WORK/knot/knot.conf" <<EOF
server:
    listen: 127.0.0.1@$KNOT_DNS
    rundir: "$WORK/knot"
log:
  - target: stderr
    any: warning
database:
    storage: "$WORK/knot/db"
zone:
  - domain: example.net
    storage: "$WORK/knot"
    file: example.net.zone
EOF
knotd -c "$WORK/knot/knot.conf" >"$WORK/knot.log" 2>&1 &
PIDS+=($!)
wait_dns "$KNOT_DNS"

echo "== gdnsd on $GDNSD_DNS (DYNA multifo)"
mkdir -p "$WORK/gdnsd/zones" "$WORK/gdnsd/run" "$WORK/gdnsd/state"
cat >"$WORK/gdnsd/config" <<EOF
options => {
  listen => [ 127.0.0.1:$GDNSD_DNS ]
  run_dir => $WORK/gdnsd/run
  state_dir => $WORK/gdnsd/state
}
plugins => {
  multifo => {
    service_types => up
    www => { iad1 => 127.0.0.23 }
  }
}
EOF
cat >"$WORK/gdnsd/zones/example.net" <<'EOF'
$TTL 300
@    SOA ns1 hostmaster 1 3600 600 604800 30
@    NS  ns1
ns1  A   127.0.0.53
www  15  DYNA multifo!www
EOF
gdnsd -c "$WORK/gdnsd" start >"$WORK/gdnsd.log" 2>&1 &
PIDS+=($!)
wait_dns "$GDNSD_DNS"

# One query file for all three: the steered name (and a little zone data).
for _ in $(seq 1 98); do echo "www.example.net A"; done >"$WORK/queries.txt"
echo "example.net SOA" >>"$WORK/queries.txt"
echo "nope.example.net A" >>"$WORK/queries.txt"

run_dnsperf() { # name port
  dnsperf -s 127.0.0.1 -p "$2" -d "$WORK/queries.txt" -c 4 -T 1 -q 200 -l "$DURATION" >"$WORK/dnsperf-$1.txt" 2>&1
}

summary() { # name
  local f="$WORK/dnsperf-$1.txt"
  local qps lost sent avg max rcodes
  sent=$(awk '/Queries sent:/ {print $3}' "$f")
  lost=$(awk '/Queries lost:/ {print $3}' "$f")
  qps=$(awk '/Queries per second:/ {print $4}' "$f")
  avg=$(awk '/Average Latency/ {print $4}' "$f")
  max=$(awk '/Average Latency/ {gsub(/[(),]/, ""); print $8}' "$f")
  rcodes=$(awk -F: '/Response codes:/ {print $2}' "$f" | xargs)
  printf "%-22s %12s qps  avg %9ss  max %9ss  sent %9s  lost %6s  rcodes %s\n" \
    "$1" "$qps" "$avg" "$max" "$sent" "$lost" "$rcodes"
}

echo "== dnsperf -c 4 -T 1 -q 200 -l $DURATION against the agent, steady plan"
run_dnsperf meridian-dns-agent-steady "$AGENT_DNS"
echo "== the same against the agent while the control plane publishes plans (drain/undrain loop)"
V_BEFORE=$("$BIN/meridianctl" -e "$CP" plan -o json | sed -n 's/.*"version": *\([0-9]*\).*/\1/p' | head -1)
(
  end=$((SECONDS + DURATION))
  n=0
  while ((SECONDS < end)); do
    if ((n % 2 == 0)); then
      "$BIN/meridianctl" -e "$CP" --timeout 2s drain ams1 --reason bench >/dev/null 2>&1 || true
    else
      "$BIN/meridianctl" -e "$CP" --timeout 2s undrain ams1 --reason bench >/dev/null 2>&1 || true
    fi
    n=$((n + 1))
    sleep 0.15
  done
) &
CHURN=$!
run_dnsperf meridian-dns-agent "$AGENT_DNS"
wait "$CHURN" || true
V_AFTER=$("$BIN/meridianctl" -e "$CP" plan -o json | sed -n 's/.*"version": *\([0-9]*\).*/\1/p' | head -1)
APPLIED=$(curl -s "http://127.0.0.1:$AGENT_ADMIN/metrics" | awk '/^meridian_dns_plans_received_total\{outcome="applied"\}/ {print $2}')

echo "== dnsperf against knotd (static zone)"
run_dnsperf knotd "$KNOT_DNS"
echo "== dnsperf against gdnsd (DYNA multifo)"
run_dnsperf gdnsd-multifo "$GDNSD_DNS"

echo
echo "== results ($(nproc) cores shared by client and server; the churn loop's meridianctl"
echo "   processes and the control plane's publishing share them too)"
summary meridian-dns-agent-steady
summary meridian-dns-agent
summary knotd
summary gdnsd-multifo
echo "plans published during the agent's run: $((V_AFTER - V_BEFORE)) (v$V_BEFORE -> v$V_AFTER); applied by the agent since start: ${APPLIED:-?}"
agent_qps=$(awk '/Queries per second:/ {print $4}' "$WORK/dnsperf-meridian-dns-agent.txt")
gdnsd_qps=$(awk '/Queries per second:/ {print $4}' "$WORK/dnsperf-gdnsd-multifo.txt")
knot_qps=$(awk '/Queries per second:/ {print $4}' "$WORK/dnsperf-knotd.txt")
steady_qps=$(awk '/Queries per second:/ {print $4}' "$WORK/dnsperf-meridian-dns-agent-steady.txt")
awk -v a="$agent_qps" -v s="$steady_qps" -v g="$gdnsd_qps" -v k="$knot_qps" \
  'BEGIN { printf "ratio agent/gdnsd-multifo: %.2f under churn, %.2f steady   agent/knotd: %.2f under churn\n", a / g, s / g, a / k }'
