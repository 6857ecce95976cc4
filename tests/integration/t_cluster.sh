#!/usr/bin/env bash
# Checks the test cluster itself, so that a failing integration test can be blamed on pgshard
# and not on the harness: SCRAM and md5 logins work and are really enforced, every replica
# is in recovery and streaming, and a row written on a primary reaches its replicas.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

for ((k = 0; k < PGS_SHARDS; k++)); do
  pgs_log "shard $k"
  port_var=PGS_SHARD${k}_PRIMARY_PORT

  # app logs in over TCP with SCRAM, and a wrong password is refused (so it is not trust).
  pgs_assert_eq "app|app" "$(pgs_psql_node "$k" primary -c 'SELECT current_user, current_database()')" \
    "shard $k primary: app logs in over TCP"
  pgs_assert_eq "SCRAM-SHA-256" \
    "$(pgs_cluster psql "$k" -- -At -c "SELECT left(rolpassword, 13) FROM pg_authid WHERE rolname = 'app'")" \
    "shard $k: app's password is stored as SCRAM"
  if PGPASSWORD=wrong "$PGS_PGBIN/psql" -X -h "$PGS_HOST" -p "${!port_var}" \
    -U app -d app -c 'SELECT 1' >/dev/null 2>&1; then
    pgs_fail "shard $k primary accepted a wrong password"
  fi

  # md5user logs in through its md5 pg_hba line with an md5-stored password.
  pgs_assert_eq "md5user" \
    "$(PGPASSWORD=md5pw "$PGS_PGBIN/psql" -X -At -h "$PGS_HOST" -p "${!port_var}" -U md5user -d app \
      -c 'SELECT current_user')" "shard $k primary: md5user logs in"
  pgs_assert_eq "md5|md5" \
    "$(pgs_cluster psql "$k" -- -At -c "SELECT left(rolpassword, 3), (SELECT auth_method FROM pg_hba_file_rules
       WHERE 'md5user' = ANY(user_name)) FROM pg_authid WHERE rolname = 'md5user'")" \
    "shard $k: md5user is stored as md5 and matched by an md5 hba line"

  pgs_assert_eq "$PGS_REPLICAS" \
    "$(pgs_cluster psql "$k" -- -At -c "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")" \
    "shard $k: primary streams to $PGS_REPLICAS replica(s)"

  PGOPTIONS='-c client_min_messages=warning' pgs_psql_node "$k" primary -q -c 'DROP TABLE IF EXISTS t_cluster_probe' \
    -c 'CREATE TABLE t_cluster_probe (token text)'
  token="tok-$k-$RANDOM$RANDOM"
  pgs_psql_node "$k" primary -q -c "INSERT INTO t_cluster_probe VALUES ('$token')"

  for ((r = 1; r <= PGS_REPLICAS; r++)); do
    pgs_assert_eq "t" "$(pgs_psql_node "$k" "replica$r" -c 'SELECT pg_is_in_recovery()')" \
      "shard $k replica$r is in recovery"
    pgs_assert_eq "streaming" \
      "$(pgs_cluster psql "$k" "replica$r" -- -At -c 'SELECT status FROM pg_stat_wal_receiver')" \
      "shard $k replica$r WAL receiver is streaming"
    seen=""
    deadline=$((SECONDS + 5))
    while ((SECONDS <= deadline)); do
      seen=$(pgs_psql_node "$k" "replica$r" -c "SELECT token FROM t_cluster_probe WHERE token = '$token'" \
        2>/dev/null || true)
      [[ $seen == "$token" ]] && break
      sleep 0.1
    done
    pgs_assert_eq "$token" "$seen" "shard $k replica$r sees a row written on the primary within 5 s"
  done

  pgs_psql_node "$k" primary -q -c 'DROP TABLE t_cluster_probe'
done
pgs_log "cluster OK"
