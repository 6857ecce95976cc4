#!/usr/bin/env bash
# node-postgres (pg) and postgres.js through pgshard in transaction pooling, workers = 1 and
# pool_size = 2, 20 client connections at a time (tests/drivers/node/test.js has the cases):
# pg's named queries ({name, text, values}) from 20 clients, their transactions and errors;
# postgres.js in its default mode (named prepared statements, pipelining) with max: 20,
# sql.begin transactions, 2000 concurrent queries and queries with thousands of parameters.
# Statements must be prepared again on each server connection (pgshard_% in
# pg_prepared_statements on both backends), and the primary must never see more than
# pool_size backends of the test's own user. Then node-postgres in session pooling (tests/drivers/node/pid.js):
# its processID (BackendKeyData) is the server's pid, as pg_backend_pid() and a
# NotificationResponse say, and a cancel with that key works.
#
# Uses the node and npm on PATH; installs Debian's nodejs and npm only when they are missing
# (as root). The pinned packages (tests/drivers/node/package-lock.json) are installed with
# `npm ci` in a copy under $PGS_WORK, so the source tree stays untouched.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_driver_node
APP=$W/app
rm -rf "$W"
mkdir -p "$APP"

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  [[ $(id -u) -eq 0 ]] || pgs_fail "${missing[*]} missing and not root: install them (scripts/deps.sh does)"
  pgs_log "installing ${missing[*]} with apt"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    pgs_fail "apt-get install ${missing[*]} failed"
fi
pgs_log "node $(node --version) ($(command -v node)), npm $(npm --version 2>/dev/null) ($(command -v npm))"

cp "$PGS_SRC/tests/drivers/node/package.json" "$PGS_SRC/tests/drivers/node/package-lock.json" \
  "$PGS_SRC/tests/drivers/node/test.js" "$APP/"
if ! (cd "$APP" && npm ci --no-audit --no-fund --loglevel=error >"$W/npm-ci.log" 2>&1); then
  tail -n 30 "$W/npm-ci.log" >&2
  pgs_fail "npm ci failed (log: $W/npm-ci.log)"
fi
pgs_log "npm ci: installed $(cd "$APP" && npm ls --depth=0 2>/dev/null | tail -n +2 | tr -d '\n')"

# A role of its own: the backends test.js counts are then this proxy's alone, not those of a
# test running beside it on the shared cluster or of one whose backends are still exiting.
NODE_USER=pgs_node_driver
pgs_cluster psql 0 -- -q -c "DROP ROLE IF EXISTS $NODE_USER" \
  -c "CREATE ROLE $NODE_USER LOGIN SUPERUSER PASSWORD '$PGS_PASSWORD'" || pgs_fail "creating role $NODE_USER"
pgs_on_exit "\"$PGS_CLUSTER_SH\" psql \"$PGS_CLUSTER_DIR\" 0 -- -q -c 'DROP OWNED BY $NODE_USER' -c 'DROP ROLE IF EXISTS $NODE_USER' >/dev/null 2>&1"
pgs_start_proxy node workers=1 pool_size=2 pool_mode=transaction query_wait_timeout=60 \
  "[user.$NODE_USER]" "password=$PGS_PASSWORD"

rc=0
(
  cd "$APP"
  PGS_PROXY_PORT=$PGS_PROXY_PORT PGS_PRIMARY_PORT=$PGS_SHARD0_PRIMARY_PORT PGS_SOCKDIR=$PGS_SOCKDIR \
    PGS_SUPERUSER=${PGS_SUPERUSER:-postgres} PGS_USER=$NODE_USER PGS_PASSWORD=$PGS_PASSWORD PGS_DB=$PGS_DB \
    timeout 180 node test.js
) | tee "$W/node.out" || rc=$?

read -r _ passed failed < <(grep '^RESULT ' "$W/node.out" || echo "RESULT 0 1")
grep -q '^RESULT ' "$W/node.out" || echo "FAIL node test.js ended without a result (exit $rc)"
if ((rc != 0 && failed == 0)); then
  echo "FAIL node test.js exited $rc"
  failed=$((failed + 1))
fi

pgs_check_stopped node

# Session pooling: the driver's backend pid is the server's (tests/drivers/node/pid.js).
cp "$PGS_SRC/tests/drivers/node/pid.js" "$APP/"
pgs_start_proxy nodesess workers=2 pool_size=4 pool_mode=session
rc=0
(
  cd "$APP"
  PGS_PROXY_PORT=$PGS_PROXY_PORT PGS_USER=$PGS_USER PGS_PASSWORD=$PGS_PASSWORD PGS_DB=$PGS_DB \
    timeout 60 node --no-deprecation pid.js
) | tee "$W/pid.out" || rc=$?
read -r _ p2 f2 < <(grep '^RESULT ' "$W/pid.out" || echo "RESULT 0 1")
grep -q '^RESULT ' "$W/pid.out" || echo "FAIL node pid.js ended without a result (exit $rc)"
((rc == 0 || f2 > 0)) || { echo "FAIL node pid.js exited $rc"; f2=$((f2 + 1)); }
passed=$((passed + p2))
failed=$((failed + f2))
pgs_check_stopped nodesess

echo "$passed passed, $failed failed"
((failed == 0)) || exit 1
