'use strict';
// node-postgres through pgshard over two shards: the tenant key as a Bind parameter of
// unnamed and named statements, and a transaction. Run by tests/integration/t_sharding.sh
// with: node keys.js PORT USER PASSWORD DB TENANT... (node_modules from tests/drivers/node).
// Prints "sum TENANT FORMAT VALUE" lines for the script to compare, then "RESULT ok".
const pg = require('pg');

async function main() {
  const [port, user, password, database, ...tenants] = process.argv.slice(2);
  const client = new pg.Client({ host: '127.0.0.1', port: Number(port), user, password, database });
  await client.connect();
  for (const t of tenants) {
    const text = '/* pgshard: target=primary */ SELECT coalesce(sum(amount), 0)::int AS s FROM orders WHERE tenant_id = $1';
    let r = await client.query(text, [t]);
    console.log(`sum ${t} unnamed ${r.rows[0].s}`);
    r = await client.query({ name: 'sum_by_tenant', text, values: [t] });
    console.log(`sum ${t} named ${r.rows[0].s}`);
    await client.query('INSERT INTO orders (tenant_id, id, amount) VALUES ($1, 60, 1)', [t]);
    await client.query('BEGIN');
    await client.query('INSERT INTO orders (tenant_id, id, amount) VALUES ($1, 61, 1)', [t]);
    await client.query({ name: 'upd61', text: 'UPDATE orders SET amount = 2 WHERE tenant_id = $1 AND id = 61', values: [t] });
    await client.query('COMMIT');
  }
  await client.end();
  console.log('RESULT ok');
}

main().catch((e) => {
  console.log(`FAIL ${e.code || ''} ${e.message}`);
  process.exit(1);
});
