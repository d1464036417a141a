#!/usr/bin/env bash
# Installs what Strata's local cluster and tests need on a Debian machine, and nothing
# that is already there: PostgreSQL 15 server and client, Redis (server and redis-cli),
# HAProxy, nftables, Prometheus with the Postgres and Redis exporters; schemathesis and
# kubernetes-validate from PyPI. Without root (or sudo) it prints the exact command to run instead.
set -euo pipefail

PG_BIN="${STRATA_PG_BIN:-/usr/lib/postgresql/15/bin}"
missing=()
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_basebackup" ] || missing+=(postgresql-15)
command -v psql >/dev/null || missing+=(postgresql-client-15)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v haproxy >/dev/null || missing+=(haproxy)
# The kernel balancer next to HAProxy: an nftables rule.
command -v nft >/dev/null || missing+=(nftables)
# Monitoring of the local cluster: Prometheus (with promtool) and its exporters.
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-postgres-exporter >/dev/null || missing+=(prometheus-postgres-exporter)
command -v prometheus-redis-exporter >/dev/null || missing+=(prometheus-redis-exporter)

if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed; install Rust from https://rustup.rs and run again" >&2
  exit 1
fi

# schemathesis (PyPI) checks the API against its OpenAPI description in the tests.
SCHEMATHESIS_VERSION=4.32.5
if ! schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "installing: schemathesis $SCHEMATHESIS_VERSION (pip)" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "schemathesis==$SCHEMATHESIS_VERSION" \
    || { echo "error: could not install schemathesis; run: python3 -m pip install schemathesis==$SCHEMATHESIS_VERSION" >&2; exit 1; }
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

# kubernetes-validate (PyPI) checks the Kubernetes manifests against the Kubernetes
# schemas it carries (no cluster, no network) in the tests.
KUBERNETES_VALIDATE_VERSION=1.37.0
if ! kubernetes-validate --version 2>/dev/null | grep -q "$KUBERNETES_VALIDATE_VERSION"; then
  echo "installing: kubernetes-validate $KUBERNETES_VALIDATE_VERSION (pip)" >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    || { echo "error: could not install kubernetes-validate; run: python3 -m pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2; exit 1; }
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "installing: ${missing[*]}" >&2
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo)
else
  echo "error: missing packages; run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
# The Debian packages start system-wide services we do not use; stop them so their
# default ports stay free. The local cluster runs its own instances.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  "${sudo[@]}" systemctl disable --now redis-server haproxy prometheus \
    prometheus-node-exporter prometheus-postgres-exporter prometheus-redis-exporter >/dev/null 2>&1 || true
fi
