'use strict';
// node-postgres (pg) and postgres.js (postgres) through pgshard in transaction pooling with
// workers = 1 and pool_size = 2, 20 client connections at a time: both drivers use named
// prepared statements, which pgshard must prepare again ("pgshard_<hash>") on whichever
// server connection a client lands on. Run by tests/integration/t_driver_node.sh, which
// starts the proxy and passes:
//   PGS_PROXY_PORT   the proxy           PGS_PRIMARY_PORT, PGS_SOCKDIR, PGS_SUPERUSER
//   PGS_USER, PGS_PASSWORD, PGS_DB       straight to the primary as the superuser (socket)
//   PGS_KNOWN_BUGS=1 also run the cases listed in KNOWN_BUGS (none today)
// Prints one line per check and, last, "RESULT <passed> <failed>" for the shell script.
const fs = require('fs');
const path = require('path');
const pg = require('pg');
const postgres = require('postgres');

const version = (pkg) => JSON.parse(fs.readFileSync(path.join(__dirname, 'node_modules', pkg, 'package.json'))).version;

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const PORT = Number(env('PGS_PROXY_PORT'));
const USER = env('PGS_USER');
const PASSWORD = env('PGS_PASSWORD');
const DB = env('PGS_DB');
const SOCKDIR = env('PGS_SOCKDIR');
const PRIMARY_PORT = Number(env('PGS_PRIMARY_PORT'));
const SUPERUSER = process.env.PGS_SUPERUSER || 'postgres';
const KNOWN_BUGS_ON = process.env.PGS_KNOWN_BUGS === '1';
const N = 20;
const POOL_SIZE = 2;
const T = 't_drv_node';

const proxyConf = { host: '127.0.0.1', port: PORT, user: USER, password: PASSWORD, database: DB,
  connectionTimeoutMillis: 10000 };
const superConf = { host: SOCKDIR, port: PRIMARY_PORT, user: SUPERUSER, database: DB };

let passed = 0;
let failed = 0;
function report(ok, name, detail) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${detail}`);
}

class Check extends Error {}
function eq(expected, actual, what) {
  const e = JSON.stringify(expected);
  const a = JSON.stringify(actual);
  if (e !== a) throw new Check(`${what}: expected ${e}, got ${a}`);
}
function check(cond, what) {
  if (!cond) throw new Check(what);
}
async function expectError(promise, code, what) {
  try {
    await promise;
  } catch (e) {
    eq(code, e.code, `${what}: SQLSTATE`);
    return e;
  }
  throw new Check(`${what}: no error`);
}
const withTimeout = (p, ms, what) => Promise.race([p,
  new Promise((_, rej) => setTimeout(() => rej(new Check(`${what}: no answer within ${ms / 1000} s (hang)`)), ms).unref())]);

async function superQuery(text, values) {
  const c = new pg.Client(superConf);
  await c.connect();
  try {
    return await c.query(text, values);
  } finally {
    await c.end();
  }
}

// Samples the backends of USER on the primary (all of them the proxy's: every direct
// connection here is the superuser's).
class Monitor {
  constructor() { this.max = 0; this.samples = 0; this.error = null; this.stopped = false; }
  async start() {
    this.client = new pg.Client(superConf);
    await this.client.connect();
    this.loop = (async () => {
      while (!this.stopped) {
        try {
          const r = await this.client.query(
            "select count(*)::int as n from pg_stat_activity where usename = $1 and backend_type = 'client backend'", [USER]);
          this.max = Math.max(this.max, r.rows[0].n);
          this.samples++;
        } catch (e) {
          this.error = e;
          return;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
  }
  async stop() {
    this.stopped = true;
    await this.loop;
    await this.client.end();
  }
}

async function pgClients(n) {
  return Promise.all(Array.from({ length: n }, async () => {
    const c = new pg.Client(proxyConf);
    await c.connect();
    return c;
  }));
}

// ------------------------------------------------------------------------ node-postgres

const Q1 = 'select $1::int * 2 as d, $2::text || \'!\' as s, pg_backend_pid() as pid';

async function pgNamedQueries() {
  const clients = await pgClients(N);
  const iters = 20;
  try {
    const pids = await Promise.all(clients.map(async (c, tid) => {
      const seen = new Set();
      for (let i = 0; i < iters; i++) {
        const r = await c.query({ name: 'q1', text: Q1, values: [i, `c${tid}`] });
        eq([{ d: 2 * i, s: `c${tid}!` }], r.rows.map(({ d, s }) => ({ d, s })), 'named query q1');
        seen.add(r.rows[0].pid);
        // A second name for other text, and the same text under another name.
        const r2 = await c.query({ name: 'q2', text: 'select $1::text as t, $2::int[] as a', values: [`x${i}`, [i, tid]] });
        eq([{ t: `x${i}`, a: [i, tid] }], r2.rows, 'named query q2');
        const r3 = await c.query({ name: `q1_${tid % 3}`, text: Q1, values: [i, 'z'] });
        eq(2 * i, r3.rows[0].d, 'same text under a second name');
        seen.add(r3.rows[0].pid);
      }
      return seen;
    }));
    const all = new Set();
    pids.forEach((s) => s.forEach((p) => all.add(p)));
    eq(POOL_SIZE, all.size, 'backends the 20 clients\' named queries ran on');
    const multi = pids.filter((s) => s.size > 1).length;
    check(multi > 0, 'no client ran its named query on more than one backend');
    return `${N} clients x ${iters * 3} named executions; ${multi}/${N} clients ran q1 on both backends`;
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
}

async function pgPreparedEverywhere() {
  // a holds one server in its transaction, so b gets the other; both must hold q1's text
  // under one pgshard_% name, and no client-chosen name may reach a server.
  const [a, b] = await pgClients(2);
  const seen = {};
  try {
    for (const c of [a, b]) {
      await c.query('begin');
      const r = await c.query({ name: 'ps', text: 'select pg_backend_pid() as pid, name, statement from pg_prepared_statements' });
      for (const row of r.rows) (seen[row.pid] ||= []).push(row);
      if (!r.rows.length) seen[(await c.query('select pg_backend_pid() as pid')).rows[0].pid] = [];
    }
    await a.query('commit');
    await b.query('commit');
    eq(POOL_SIZE, Object.keys(seen).length, 'two clients in open transactions are on two backends');
    const q1names = new Set();
    for (const [pid, rows] of Object.entries(seen)) {
      eq([], rows.filter((r) => !r.name.startsWith('pgshard_')).map((r) => r.name), `names on backend ${pid} that are not pgshard_%`);
      const mine = rows.filter((r) => r.statement === Q1);
      eq(1, mine.length, `backend ${pid}: statements with q1's text`);
      q1names.add(mine[0].name);
    }
    eq(1, q1names.size, 'q1\'s server name on the two backends');
    const r = await a.query({ name: 'list', text: "select name from pg_prepared_statements where name like 'pgshard_%'" });
    check(r.rows.length > 0, "select name from pg_prepared_statements where name like 'pgshard_%' returned no rows");
    return `q1 is ${[...q1names][0]} on backends ${Object.keys(seen).join(', ')}; ${r.rows.length} pgshard_% rows`;
  } finally {
    await a.end();
    await b.end();
  }
}

async function pgTransactions() {
  const clients = await pgClients(N);
  const iters = 8;
  try {
    await Promise.all(clients.map(async (c, tid) => {
      for (let i = 0; i < iters; i++) {
        await c.query('begin');
        const pid = (await c.query({ name: 'pid', text: 'select pg_backend_pid() as pid' })).rows[0].pid;
        await c.query({ name: 'ins', text: `insert into ${T} (client, i, v) values ($1, $2, $3)`, values: [tid, i, `v${i}`] });
        const r = await c.query({ name: 'cnt', text: `select count(*)::int as n from ${T} where client = $1`, values: [tid] });
        eq(i + 1, r.rows[0].n, 'count inside the transaction');
        eq(pid, (await c.query({ name: 'pid', text: 'select pg_backend_pid() as pid' })).rows[0].pid, 'one backend per transaction');
        await c.query('commit');
        // One that rolls back leaves nothing.
        await c.query('begin');
        await c.query({ name: 'ins', text: `insert into ${T} (client, i, v) values ($1, $2, $3)`, values: [tid, 1000 + i, 'gone'] });
        await c.query('rollback');
        const after = await c.query({ name: 'cnt', text: `select count(*)::int as n from ${T} where client = $1`, values: [tid] });
        eq(i + 1, after.rows[0].n, 'count after a rolled-back transaction');
      }
    }));
    const r = await superQuery(`select count(*)::int as n, count(distinct client)::int as c from ${T} where i < 1000`);
    eq({ n: N * iters, c: N }, r.rows[0], 'committed rows on the primary');
    return `${N} clients x ${iters} committed + ${iters} rolled-back transactions of named statements`;
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
}

async function pgErrors() {
  const clients = await pgClients(N);
  try {
    await Promise.all(clients.map(async (c, tid) => {
      for (let i = 0; i < 5; i++) {
        await expectError(c.query({ name: 'div', text: 'select 10 / $1::int as q', values: [0] }), '22012', 'division by zero');
        eq([{ q: 10 }], (await c.query({ name: 'div', text: 'select 10 / $1::int as q', values: [1] })).rows, 'same named query after its error');
        await expectError(c.query({ name: `bad${i}`, text: 'selec 1' }), '42601', 'syntax error in Parse');
        eq([{ x: tid }], (await c.query({ name: 'x', text: 'select $1::int as x', values: [tid] })).rows, 'after a failed Parse');
        await c.query('begin');
        await expectError(c.query({ name: 'dup', text: `insert into ${T} (client, i, v) values ($1, 0, 'dup')`, values: [tid] }), '23505', 'unique violation');
        await expectError(c.query({ name: 'x', text: 'select $1::int as x', values: [1] }), '25P02', 'in a failed transaction');
        await c.query('rollback');
        eq([{ x: i }], (await c.query({ name: 'x', text: 'select $1::int as x', values: [i] })).rows, 'after rollback');
      }
    }));
    return `${N} clients x 5 rounds of runtime error, failed Parse, failed transaction`;
  } finally {
    await Promise.all(clients.map((c) => c.end()));
  }
}

// ------------------------------------------------------------------------ postgres.js

function pjs(extra = {}) {
  return postgres({ host: '127.0.0.1', port: PORT, user: USER, password: PASSWORD, database: DB,
    max: N, idle_timeout: 0, connect_timeout: 10, onnotice: () => {}, ...extra });
}

async function pjsConcurrent() {
  const sql = pjs({ connection: { application_name: 'drv_node_pjs' } });
  try {
    const n = 1000;
    const rows = await Promise.all(Array.from({ length: n }, (_, i) =>
      sql`select ${i}::int as i, ${'v' + i}::text as v, pg_backend_pid() as pid`.then((r) => r[0])));
    rows.forEach((r, i) => eq({ i, v: `v${i}` }, { i: r.i, v: r.v }, 'concurrent query result'));
    eq(POOL_SIZE, new Set(rows.map((r) => r.pid)).size, 'backends the queries ran on');
    const app = await sql`select current_setting('application_name') as a`;
    eq('drv_node_pjs', app[0].a, 'application_name from the startup packet');
    // Same queries again: now every connection has them prepared (client side).
    const again = await Promise.all(Array.from({ length: n }, (_, i) => sql`select ${i}::int as i, ${'v' + i}::text as v, pg_backend_pid() as pid`));
    again.forEach((r, i) => eq(i, r[0].i, 'second round'));
    return `${2 * n} concurrent prepared queries over ${N} connections (max: ${N})`;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function pjsTransactions() {
  const sql = pjs();
  try {
    const iters = 5;
    await Promise.all(Array.from({ length: N }, async (_, tid) => {
      const client = 100 + tid;
      for (let i = 0; i < iters; i++) {
        const res = await sql.begin(async (tx) => {
          await tx`insert into ${tx(T)} (client, i, v) values (${client}, ${i}, ${'b' + i})`;
          const [{ n }] = await tx`select count(*)::int as n from ${tx(T)} where client = ${client}`;
          const [{ p1 }] = await tx`select pg_backend_pid() as p1`;
          const [{ p2 }] = await tx`select pg_backend_pid() as p2`;
          eq(p1, p2, 'one backend per transaction');
          return n;
        });
        eq(i + 1, res, 'count inside sql.begin');
        // A transaction that throws rolls back.
        const err = await sql.begin(async (tx) => {
          await tx`insert into ${tx(T)} (client, i, v) values (${client}, ${1000 + i}, 'gone')`;
          throw new Error('rollback please');
        }).catch((e) => e);
        eq('rollback please', err.message, 'error thrown in sql.begin');
        // An SQL error inside a transaction rolls it back.
        await expectError(sql.begin(async (tx) => {
          await tx`insert into ${tx(T)} (client, i, v) values (${client}, ${2000 + i}, 'gone')`;
          await tx`insert into ${tx(T)} (client, i, v) values (${client}, 0, 'dup')`;
        }), '23505', 'unique violation in sql.begin');
        // Savepoints.
        await sql.begin(async (tx) => {
          await tx.savepoint(async (sp) => {
            await sp`insert into ${sp(T)} (client, i, v) values (${client}, ${3000 + i}, 'gone')`;
            throw new Error('to the savepoint');
          }).catch(() => {});
          const [{ n }] = await tx`select count(*)::int as n from ${tx(T)} where client = ${client}`;
          eq(i + 1, n, 'count after rollback to savepoint');
        });
      }
    }));
    const r = await superQuery(`select count(*)::int as n from ${T} where client between 100 and 199`);
    eq(N * iters, r.rows[0].n, 'rows committed by sql.begin');
    return `${N} x ${iters} x (commit, thrown error, SQL error, savepoint) with sql.begin`;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function pjsManyParams() {
  const sql = pjs();
  try {
    const n = 2000;
    const vals = Array.from({ length: n }, (_, i) => i * 7 - 3);
    const text = `select array[${vals.map((_, i) => `$${i + 1}::int`).join(', ')}] as a`;
    const [{ a }] = await sql.unsafe(text, vals, { prepare: true });
    eq(vals, a, `${n} parameters`);
    const rows = Array.from({ length: 400 }, (_, i) => ({ client: 500, i, v: `m${i}` }));
    await sql`insert into ${sql(T)} ${sql(rows, 'client', 'i', 'v')}`;
    const back = await sql`select i, v from ${sql(T)} where client = 500 and i in ${sql(rows.map((r) => r.i))} order by i`;
    eq(rows.map(({ i, v }) => ({ i, v })), back.map(({ i, v }) => ({ i, v })), '1200-parameter insert read back with a 400-value IN list');
    await Promise.all(Array.from({ length: N }, async (_, k) => {
      const [{ a: got }] = await sql.unsafe(text, vals.map((v) => v + k), { prepare: true });
      eq(vals.map((v) => v + k), got, `${n} parameters from connection ${k}`);
    }));
    return `${n}-parameter query from ${N} connections; 1200-parameter insert; 400-value IN`;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

async function pjsErrors() {
  const sql = pjs();
  try {
    await Promise.all(Array.from({ length: N }, async (_, k) => {
      for (let i = 0; i < 5; i++) {
        await expectError(sql`select 1 / ${0}::int as q`, '22012', 'division by zero');
        eq(1, (await sql`select 1 / ${1}::int as q`)[0].q, 'same query after its error');
        await expectError(sql`select ${'x'}::int as q`, '22P02', 'bad parameter');
        await expectError(sql.unsafe('selec 1', [], { prepare: true }), '42601', 'syntax error');
        eq(k, (await sql`select ${k}::int as k`)[0].k, 'after errors');
      }
    }));
    return `${N} x 5 rounds of errors, each followed by a good query`;
  } finally {
    await sql.end({ timeout: 5 });
  }
}

// Cases that fail because of a known proxy bug (run only with PGS_KNOWN_BUGS=1): name ->
// { fn, why }. None today.
const KNOWN_BUGS = [];

const CASES = [
  ['pg: named queries from 20 clients', pgNamedQueries],
  ['pg: the same statement prepared as pgshard_% on every server connection', pgPreparedEverywhere],
  ['pg: transactions of named statements (commit, rollback)', pgTransactions],
  ['pg: errors then recovery', pgErrors],
  ['postgres.js: many concurrent pipelined queries, max 20', pjsConcurrent],
  ['postgres.js: sql.begin transactions', pjsTransactions],
  ['postgres.js: many parameters', pjsManyParams],
  ['postgres.js: errors then recovery', pjsErrors],
];

async function main() {
  console.log(`node ${process.version}, pg ${version('pg')}, postgres.js ${version('postgres')}; proxy port ${PORT}`);
  await superQuery(`drop table if exists ${T}`);
  await superQuery(`create table ${T} (client int not null, i int not null, v text, primary key (client, i))`);
  await superQuery(`alter table ${T} owner to ${USER}`);
  const monitor = new Monitor();
  await monitor.start();
  const todo = CASES.map(([name, fn]) => [name, fn]);
  for (const { name, fn, why } of KNOWN_BUGS) {
    if (KNOWN_BUGS_ON) todo.push([`[known bug] ${name}`, fn]);
    else console.log(`known-bug (not run; PGS_KNOWN_BUGS=1 runs it) ${name}: ${why}`);
  }
  for (const [name, fn] of todo) {
    const t0 = Date.now();
    try {
      const detail = await withTimeout(fn(), 60000, name);
      report(true, name, `${detail} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (e) {
      report(false, name, e instanceof Check ? e.message : `${e.code || ''} ${e.stack}`);
    }
  }
  await monitor.stop();
  report(!monitor.error && monitor.samples > 0 && monitor.max <= POOL_SIZE, 'server connections <= pool_size',
    monitor.error ? `sampling failed: ${monitor.error.message}` : `at most ${monitor.max} backends of user ${USER} in ${monitor.samples} samples`);
  await superQuery(`drop table if exists ${T}`);
}

main().catch((e) => {
  report(false, 'test driver', e.stack);
}).finally(() => {
  console.log(`RESULT ${passed} ${failed}`);
  process.exit(failed ? 1 : 0);
});
