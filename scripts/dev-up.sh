#!/usr/bin/env bash
# Brings up the whole local cluster and prints every endpoint: 2 shards (PostgreSQL 15
# primary + streaming replica each), a 3-master Redis Cluster, 2 API nodes and HAProxy.
# Installs missing system packages first. Arguments go to `strata dev up`
# (e.g. --detach; see `strata dev up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --quiet --bins
exec target/debug/strata dev up "$@"
