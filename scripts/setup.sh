#!/usr/bin/env bash
# Installs what Meridian needs to build, run and test on Debian, idempotently.
# Run as root (or with sudo available). Already-installed packages are skipped, so a
# second run does nothing and needs no network.
set -euo pipefail

# Build: protoc and the well-known protobuf types (apt does not pull in libprotobuf-dev).
# Tests: real etcd (server and etcdctl), dig, curl for the admin endpoints, flock(1)
# (util-linux) to hold the embedded store lock from another process.
# The Anycast agent: GoBGP's API protos (build), gobgpd/gobgp and bird2 (tests).
PACKAGES=(protobuf-compiler libprotobuf-dev etcd-server etcd-client bind9-dnsutils curl ca-certificates util-linux
  golang-github-osrg-gobgp-dev gobgpd bird2)
# `--bench` adds what the benchmarks compare against: dnsperf, knot and gdnsd.
if [[ "${1:-}" == "--bench" ]]; then
  PACKAGES+=(dnsperf knot gdnsd)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "setup: need root to install: apt-get install -y ${missing[*]}" >&2
    echo "setup: re-run as root, or install those packages and run again" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # Debian's etcd-server package may start a system etcd on 2379; our tests and the
  # local stack use their own ports, so it is harmless, but stop it (and a system BIRD or
  # gobgpd the bird2/gobgpd packages may start) where systemd runs.
  if command -v systemctl >/dev/null 2>&1; then
    for svc in etcd knot gdnsd bird gobgpd; do
      if systemctl is-active --quiet "$svc" 2>/dev/null; then "${SUDO[@]}" systemctl stop "$svc" || true; fi
    done
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo (Rust 1.89 or newer) is required: install it with rustup (https://rustup.rs)" >&2
  exit 1
fi
for tool in protoc etcd etcdctl dig; do
  command -v "$tool" >/dev/null 2>&1 || { echo "setup: $tool still missing after install" >&2; exit 1; }
done
echo "setup: ok (protoc $(protoc --version | cut -d' ' -f2), $(etcd --version | head -1))"
