#!/usr/bin/env bash
# Brings up the whole local cluster and prints every endpoint: 2 shards (PostgreSQL 15
# primary + streaming replica each), a 3-master Redis Cluster, 2 API nodes and HAProxy.
# Installs missing system packages first. `--release` runs optimized binaries (what the
# benchmarks use); every other argument goes to `strata dev up` (e.g. --detach; see
# `strata dev up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
profile=debug
args=()
for arg in "$@"; do
  if [ "$arg" = "--release" ]; then profile=release; else args+=("$arg"); fi
done
if [ "$profile" = release ]; then
  cargo build --quiet --release --bins
else
  cargo build --quiet --bins
fi
exec "target/$profile/strata" dev up "${args[@]}"
