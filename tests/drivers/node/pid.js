'use strict';
// node-postgres through pgshard in session pooling: the backend pid the driver got in
// BackendKeyData (client.processID) is the server's own, as on PostgreSQL, so it equals
// pg_backend_pid() and the pid of a NotificationResponse the client sends itself; a cancel
// through the driver (pg.Client#cancel, which uses that key) stops the client's query.
// Run by tests/integration/t_driver_node.sh with PGS_PROXY_PORT (a session-pooling proxy),
// PGS_USER, PGS_PASSWORD, PGS_DB. Prints one line per check and "RESULT <passed> <failed>".
const pg = require('pg');

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const cfg = {host: '127.0.0.1', port: Number(env('PGS_PROXY_PORT')), user: env('PGS_USER'),
  password: env('PGS_PASSWORD'), database: env('PGS_DB')};
let passed = 0;
let failed = 0;
const check = (ok, name, detail) => {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${detail}`);
};

async function main() {
  const clients = [];
  for (let i = 0; i < 3; i++) {
    const c = new pg.Client(cfg);
    await c.connect();
    clients.push(c);
  }
  const pids = [];
  for (const c of clients) {
    const {rows} = await c.query('SELECT pg_backend_pid() AS pid');
    pids.push(rows[0].pid);
    check(c.processID === rows[0].pid, 'processID is pg_backend_pid()',
        `BackendKeyData ${c.processID}, pg_backend_pid() ${rows[0].pid}`);
  }
  check(new Set(pids).size === pids.length, 'three clients, three backends', pids.join(' '));

  const c = clients[0];
  const got = new Promise((resolve) => c.on('notification', resolve));
  await c.query('LISTEN pid_test');
  await c.query("NOTIFY pid_test, 'self'");
  const n = await Promise.race([got, new Promise((r) => setTimeout(() => r(null), 5000))]);
  check(n && n.processId === c.processID, 'NotificationResponse pid is processID',
      n ? `notification from ${n.processId}, processID ${c.processID}` : 'no notification within 5 s');

  const t0 = Date.now();
  const slow = clients[1].query('SELECT pg_sleep(10)').then(() => null, (e) => e);
  await new Promise((r) => setTimeout(r, 300));
  await new pg.Client(cfg).cancel(clients[1], clients[1]._getActiveQuery());
  const err = await slow;
  check(err && err.code === '57014' && Date.now() - t0 < 5000, 'a cancel with that key stops the query',
      err ? `${err.code} after ${Date.now() - t0} ms` : 'the query ran to its end');

  for (const x of clients) await x.end();
}

main().catch((e) => {
  failed++;
  console.log(`FAIL pid.js: ${e.stack || e}`);
}).finally(() => console.log(`RESULT ${passed} ${failed}`));
