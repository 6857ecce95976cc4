#!/bin/bash
# A shard's streaming replica (postgres:15, run as the postgres user): the first time,
# copies the primary with pg_basebackup -R (which writes primary_conninfo and
# standby.signal), then runs PostgreSQL as a hot standby with the arguments it was given
# (a hot standby needs max_prepared_transactions and the like at least as high as the
# primary's, so compose passes the primary's).
set -euo pipefail
: "${PRIMARY_HOST:?}" "${REPLICATION_PASSWORD:?}" "${PGDATA:?}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  # The primary accepts TCP connections only once its initialization is over.
  until pg_isready -q -h "$PRIMARY_HOST" -p 5432; do
    echo "replica: waiting for $PRIMARY_HOST"
    sleep 1
  done
  rm -rf "$PGDATA"
  PGPASSWORD=$REPLICATION_PASSWORD pg_basebackup -h "$PRIMARY_HOST" -p 5432 -U replicator \
    -D "$PGDATA" -X stream -R -c fast
  chmod 0700 "$PGDATA"
fi
exec postgres -c hot_standby=on "$@"
