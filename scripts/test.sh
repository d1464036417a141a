#!/usr/bin/env bash
# Runs every test: unit tests, then the end-to-end binaries, each of which starts its own
# real cluster (Postgres primaries and replicas, Redis Cluster, nodes, HAProxy) on free
# loopback ports and stops it when it ends. Installs missing system packages first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The end-to-end tests start the node binary, which `cargo test` alone does not rebuild.
cargo build --bins
cargo test --workspace "$@"
