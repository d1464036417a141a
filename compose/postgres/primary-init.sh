#!/bin/bash
# Runs once when a shard primary's data directory is created: the application role and
# database, and replication access for the shard's replicas.
set -euo pipefail
psql -v ON_ERROR_STOP=1 -U postgres <<SQL
CREATE ROLE strata LOGIN PASSWORD 'strata-dev';
GRANT pg_monitor TO strata;
CREATE DATABASE strata OWNER strata;
-- The cluster catalog (used on the hosts the shard map names for it: by default the
-- first shard's).
CREATE DATABASE strata_catalog OWNER strata;
SQL
echo "host replication postgres all scram-sha-256" >> "$PGDATA/pg_hba.conf"
echo "hot_standby_feedback = on" >> "$PGDATA/postgresql.conf"
