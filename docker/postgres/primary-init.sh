#!/bin/bash
# Runs once, when the postgres:15 image initializes a shard's primary (from
# /docker-entrypoint-initdb.d, as the postgres user, against the init-time server).
# Makes what pgshard and the replica need; the replicas copy all of it with pg_basebackup.
set -euo pipefail

# The replica's pg_basebackup and its streaming connection. The image's pg_hba.conf
# ends with "host all all all scram-sha-256", which does not cover replication.
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"

psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres <<-SQL
	CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD '${REPLICATION_PASSWORD}';
	-- pgshard's clients and its monitor log in as app (docker/pgshard.ini, [user.app]).
	CREATE ROLE app LOGIN PASSWORD 'app';
	CREATE DATABASE app OWNER app;
SQL

# The tables docker/pgshard.ini lists, on every shard.
psql -v ON_ERROR_STOP=1 -U app -d app <<-SQL
	CREATE TABLE orders (tenant_id bigint NOT NULL, id bigint NOT NULL, amount numeric NOT NULL,
	                     PRIMARY KEY (tenant_id, id));
	CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
	INSERT INTO countries VALUES ('DE', 'Germany'), ('FR', 'France'), ('NL', 'Netherlands');
SQL

# The shard map's catalog lives on shard 0's primary (catalog_dsn in docker/pgshard.ini).
if [ "${PGSHARD_CATALOG:-no}" = yes ]; then
  psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres <<-SQL
	CREATE ROLE pgshard LOGIN PASSWORD 'pgshard';
	CREATE DATABASE pgshard_catalog OWNER pgshard;
SQL
fi
