#!/bin/bash
# A shard replica: on first start, clone the primary with pg_basebackup (streaming WAL,
# its own replication slot, standby.signal written by -R), then run as a hot standby.
set -euo pipefail
export PGPASSWORD=strata-dev
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -h "$PRIMARY_HOST" -U postgres; do sleep 1; done
  pg_basebackup -h "$PRIMARY_HOST" -U postgres -D "$PGDATA" -X stream -c fast -R -C -S "$SLOT"
  chmod 700 "$PGDATA"
fi
exec postgres
