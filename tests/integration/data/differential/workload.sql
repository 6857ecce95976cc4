-- The workload of tests/integration/t_differential.py: every statement runs through pgshard
-- (3 shards; users, orders and order_items sharded by tenant_id, tenants omnisharded,
-- audit_log unlisted so on shard 0) and against the plain database `ref`, in file order, each
-- side on one autocommit connection; the rows (sorted unless the statement ends in a top-level
-- ORDER BY), the command status, or the SQLSTATE of a failure must be the same.
--
-- Format: a statement ends with ';' at the end of a line (so no line inside a statement may
-- end with ';'). Lines `-- @NAME [ARG]` just before a statement are its directives:
--   @params EXPR     run with these bind parameters (a Python tuple or list; Decimal, date,
--                    datetime, timedelta and utc may be used) as a server-prepared statement
--                    (psycopg's prepare=True); %s, %t and %b are psycopg's placeholders (auto,
--                    text, binary), a literal % must be written %%
--   @unprepared      with @params: the unnamed statement instead of a named one
--   @binary          binary results (also sends a statement without parameters through the
--                    extended protocol)
--   @refused STATE   runs only through pgshard and must fail with SQLSTATE STATE
--   @proxy-only      runs only through pgshard and must succeed (around refusals)
-- A line `-- KNOWN: why` just before a statement skips it: a pgshard bug that was reported
-- (PGS_DIFF_KNOWN=1 runs it anyway). A KNOWN statement is written the way it must behave once
-- fixed: compared with ref, or @refused where one shard cannot give PostgreSQL's answer.
-- Other `--` lines are comments.
--
-- The tenants are 1..57, -5, 4294967297 and 9000000000000000001; each has users 1..3 or
-- more, orders 1..4 or more, and at least line 1 of each order (see generate() in the
-- test). With the default map over 3 shards they sit on:
--   shard 0: 2 10 11 12 15 17 18 20 25 26 27 31 33 34 39 40 46 47 56 57 4294967297
--   shard 1: -5 5 8 13 19 21 24 28 30 32 37 38 48 52 55 9000000000000000001
--   shard 2: 1 3 4 6 7 9 14 16 22 23 29 35 36 41 42 43 44 45 49 50 51 53 54
-- The test checks every IN list against the map (one shard in a compared statement, more
-- than one in a refused one).

-- == point reads ============================================================================
SELECT * FROM users WHERE tenant_id = 1 AND id = 1;
SELECT name, email FROM users WHERE tenant_id = 2 AND id = 2;
SELECT * FROM orders WHERE tenant_id = 5 AND id = 3;
SELECT * FROM order_items WHERE tenant_id = 8 AND order_id = 1 AND line = 1;
SELECT * FROM users WHERE tenant_id = -5 AND id = 1;
SELECT * FROM users WHERE tenant_id = 4294967297 AND id = 2;
SELECT * FROM orders WHERE tenant_id = 9000000000000000001 AND id = 1;
SELECT * FROM users WHERE tenant_id = '17' AND id = 3;
SELECT * FROM users WHERE id = 2 AND tenant_id = 18;
SELECT * FROM users u WHERE u.tenant_id = 19 AND u.id = 1;
SELECT * FROM public.orders WHERE tenant_id = 20 AND id = 2;
SELECT count(*) FROM users WHERE tenant_id = 21;
SELECT * FROM users WHERE tenant_id = 22 AND id = 999;
SELECT id, status FROM orders WHERE tenant_id = 23 AND status = 'paid';
SELECT * FROM users WHERE tenant_id = 57;
SELECT * FROM orders WHERE tenant_id = 24;
SELECT * FROM order_items WHERE tenant_id = 25 AND order_id = 2;
SELECT email FROM users WHERE tenant_id = 26 AND email LIKE '%@t26.example';
SELECT id, amount FROM orders WHERE tenant_id = 27 AND amount BETWEEN 100 AND 2500;
SELECT id FROM users WHERE tenant_id = 28 AND created >= DATE '2023-06-01';
SELECT id, created FROM orders WHERE tenant_id = 29 AND created < TIMESTAMPTZ '2024-03-01 00:00:00+00';
SELECT id, name FROM users WHERE tenant_id = 30 AND name ILIKE 'a%';
SELECT * FROM orders WHERE tenant_id = 31 AND status <> 'cancelled' AND user_id = 1;
SELECT tenant_id, id FROM users WHERE tenant_id = 999999;
SELECT 1 AS one FROM users WHERE tenant_id = 32 AND id = 1;
SELECT id, amount::text, status FROM orders WHERE tenant_id = 33 AND (status = 'new' OR status = 'paid');

-- == ways of writing the key ================================================================
SELECT * FROM users WHERE tenant_id = '1'::bigint AND id = 1;
SELECT * FROM users WHERE tenant_id = 3::int AND id = 1;
SELECT * FROM users WHERE tenant_id = ' 7 ' AND id = 1;
SELECT * FROM users WHERE tenant_id = '+7' AND id = 2;
SELECT * FROM users WHERE tenant_id = 007 AND id = 3;
SELECT * FROM users WHERE tenant_id = $$5$$ AND id = 1;
SELECT * FROM users WHERE tenant_id = E'8' AND id = 1;
SELECT * FROM users WHERE users.tenant_id = 5 AND id = 2;
SELECT * FROM users WHERE "tenant_id" = 13 AND id = 1;
SELECT * FROM users WHERE TENANT_ID = 13 AND ID = 2;
SELECT * FROM users WHERE (tenant_id) = 19 AND id = 1;
SELECT * FROM users WHERE 24 = tenant_id AND id = 1;
SELECT * FROM users WHERE tenant_id = 9 AND (id = 1 OR id = 2);
SELECT * FROM users WHERE tenant_id = 1 AND tenant_id = 2;
SELECT * FROM users WHERE tenant_id = -5 AND id = 2;
SELECT * FROM users WHERE tenant_id = '-5' AND id = 3;
SELECT count(*) FROM users WHERE tenant_id = ANY('{1,3}');
SELECT count(*) FROM users WHERE tenant_id = ANY(ARRAY[2, 10, 4294967297]);
SELECT count(*) FROM orders WHERE tenant_id = ANY('{-5,9000000000000000001}'::bigint[]);
SELECT * FROM orders WHERE tenant_id = 1 AND id = 1 AND EXISTS (SELECT 1 FROM order_items i WHERE i.tenant_id = 1 AND i.order_id = orders.id);
SELECT * FROM users WHERE tenant_id = 9223372036854775807;
SELECT * FROM users WHERE tenant_id = -9223372036854775808;

-- == ORDER BY / LIMIT within one tenant =====================================================
SELECT id, amount FROM orders WHERE tenant_id = 3 ORDER BY amount DESC, id LIMIT 3;
SELECT * FROM users WHERE tenant_id = 4 ORDER BY created, id;
SELECT * FROM orders WHERE tenant_id = 6 ORDER BY created DESC, id LIMIT 2 OFFSET 1;
SELECT sku, qty FROM order_items WHERE tenant_id = 7 ORDER BY order_id, line;
SELECT DISTINCT status FROM orders WHERE tenant_id = 9 ORDER BY status;
SELECT id FROM orders WHERE tenant_id = 10 AND amount > 100 ORDER BY id FETCH FIRST 5 ROWS ONLY;
SELECT id, name FROM users WHERE tenant_id = -5 ORDER BY name DESC, id;
SELECT id, amount FROM orders WHERE tenant_id = 4294967297 ORDER BY amount, id LIMIT 4;
SELECT order_id, line, price FROM order_items WHERE tenant_id = 9000000000000000001 ORDER BY price DESC, order_id, line;
SELECT id, user_id FROM orders WHERE tenant_id = 34 ORDER BY user_id, id DESC;
SELECT * FROM order_items WHERE tenant_id = 35 ORDER BY qty * price DESC, order_id, line LIMIT 1;
SELECT id, email FROM users WHERE tenant_id = 36 ORDER BY 2;
SELECT id FROM orders WHERE tenant_id = 37 ORDER BY id LIMIT 0;
SELECT id, created FROM orders WHERE tenant_id = 38 ORDER BY created NULLS FIRST, id OFFSET 2;
SELECT id, lower(name) AS n FROM users WHERE tenant_id = 39 ORDER BY n, id;

-- == joins of sharded tables on tenant_id, with the key given ===============================
SELECT u.name, o.id, o.amount FROM users u JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id WHERE u.tenant_id = 11 ORDER BY o.id;
SELECT o.id, sum(i.qty * i.price) AS total FROM orders o JOIN order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id WHERE o.tenant_id = 12 GROUP BY o.id ORDER BY o.id;
SELECT u.id, count(o.id) FROM users u LEFT JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id WHERE u.tenant_id = 13 GROUP BY u.id ORDER BY u.id;
SELECT u.name, o.status, i.sku, i.qty FROM users u JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id JOIN order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id WHERE u.tenant_id = 14 AND o.id <= 3;
SELECT o.id, u.email FROM orders o, users u WHERE o.tenant_id = 15 AND u.tenant_id = 15 AND u.id = o.user_id ORDER BY o.id;
SELECT * FROM users WHERE tenant_id = 16 AND id IN (SELECT user_id FROM orders WHERE tenant_id = 16 AND status IN ('new', 'paid')) ORDER BY id;
SELECT u.id FROM users u WHERE u.tenant_id = 17 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = u.tenant_id AND o.user_id = u.id) ORDER BY u.id;
WITH big AS (SELECT * FROM orders WHERE tenant_id = 18 AND amount > 1000) SELECT count(*), coalesce(sum(amount), 0) FROM big;
SELECT count(*), coalesce(sum(amount), 0) FROM (SELECT * FROM orders WHERE tenant_id = 18 AND amount > 1000) big;
SELECT t.name, t.plan, u.name FROM tenants t JOIN users u ON u.tenant_id = t.id WHERE u.tenant_id = 19 ORDER BY u.id;
SELECT o.id, t.region FROM orders o JOIN tenants t ON t.id = o.tenant_id WHERE o.tenant_id = 20 AND o.id < 4 ORDER BY o.id;
SELECT i.sku, sum(i.qty) FROM order_items i JOIN orders o USING (tenant_id) WHERE o.tenant_id = 21 AND o.id = i.order_id AND o.status <> 'cancelled' GROUP BY i.sku ORDER BY i.sku;
SELECT u.id, u.name, (SELECT max(amount) FROM orders o WHERE o.tenant_id = 22 AND o.user_id = u.id) AS biggest FROM users u WHERE u.tenant_id = 22 ORDER BY u.id;
SELECT o.id, i.line FROM orders o LEFT JOIN order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id AND i.qty > 3 WHERE o.tenant_id = 23;
SELECT u.email FROM users u JOIN orders o ON (u.tenant_id, u.id) = (o.tenant_id, o.user_id) WHERE u.tenant_id = -5 AND o.id = 1;
SELECT o.id, x.n FROM orders o CROSS JOIN LATERAL (SELECT count(*) AS n FROM order_items i WHERE i.tenant_id = o.tenant_id AND i.order_id = o.id) x WHERE o.tenant_id = 9000000000000000001 ORDER BY o.id;
SELECT u.id FROM users u WHERE u.tenant_id = 40 INTERSECT SELECT o.user_id FROM orders o WHERE o.tenant_id = 40 ORDER BY 1;
SELECT id, 'user' AS kind FROM users WHERE tenant_id = 41 UNION ALL SELECT id, 'order' FROM orders WHERE tenant_id = 41 ORDER BY kind, id;

-- == joins, subqueries, CTEs and set operations: every table reference keyed to one shard ===
-- pgshard ties each key condition to the table reference it names and follows key
-- equalities (WHERE and inner join ON both ways, an outer join's ON into its nullable side,
-- a subquery's inner.tenant_id = outer.tenant_id inwards); these run on one shard.
SELECT u.id, u.name, o.id, o.amount FROM users u JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id WHERE u.tenant_id = 42 ORDER BY o.id;
SELECT o.id, i.line, i.sku FROM orders o JOIN order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id WHERE i.tenant_id = 43 ORDER BY o.id, i.line;
SELECT o.id, count(i.line) FROM orders o LEFT JOIN order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id WHERE o.tenant_id = 44 GROUP BY o.id ORDER BY o.id;
SELECT u.id, o.id FROM orders o RIGHT JOIN users u ON o.tenant_id = u.tenant_id AND o.user_id = u.id WHERE u.tenant_id = 45 ORDER BY u.id, o.id;
SELECT a.id, b.id FROM users a JOIN users b ON b.tenant_id = a.tenant_id AND b.id = a.id + 1 WHERE a.tenant_id = 46 ORDER BY a.id;
SELECT a.id, a.name, b.name FROM users a, users b WHERE a.tenant_id = 46 AND b.tenant_id = 47 AND a.id = b.id ORDER BY a.id;
SELECT o.id FROM orders o WHERE o.tenant_id = 48 AND EXISTS (SELECT 1 FROM order_items i WHERE i.tenant_id = o.tenant_id AND i.order_id = o.id AND i.qty > 2) ORDER BY o.id;
SELECT id FROM users WHERE tenant_id = 49 AND NOT EXISTS (SELECT 1 FROM orders WHERE tenant_id = users.tenant_id AND user_id = users.id) ORDER BY id;
SELECT id, amount FROM orders WHERE tenant_id = 50 AND user_id IN (SELECT id FROM users WHERE tenant_id = 50 AND id <= 2) ORDER BY id;
SELECT u.id, (SELECT count(*) FROM orders o WHERE o.tenant_id = u.tenant_id AND o.user_id = u.id) AS n FROM users u WHERE u.tenant_id = 51 ORDER BY u.id;
WITH t AS (SELECT user_id, sum(amount) AS total FROM orders WHERE tenant_id = 52 GROUP BY user_id) SELECT u.name, t.total FROM t JOIN users u ON u.id = t.user_id AND u.tenant_id = 52 ORDER BY u.name;
WITH o AS (SELECT * FROM orders WHERE tenant_id = 53), i AS (SELECT * FROM order_items WHERE tenant_id = 53) SELECT o.id, count(i.line) FROM o LEFT JOIN i ON i.order_id = o.id GROUP BY o.id ORDER BY o.id;
SELECT s.user_id, s.n FROM (SELECT user_id, count(*) AS n FROM orders WHERE tenant_id = 54 GROUP BY user_id) s ORDER BY s.user_id;
SELECT u.name, s.total FROM users u JOIN (SELECT user_id, sum(amount) AS total FROM orders WHERE tenant_id = 55 GROUP BY user_id) s ON s.user_id = u.id WHERE u.tenant_id = 55 ORDER BY u.name;
SELECT 'u' AS k, id FROM users WHERE tenant_id = 56 UNION ALL SELECT 'o', id FROM orders WHERE tenant_id = 56 ORDER BY k, id;
SELECT tenant_id, id, name FROM users WHERE tenant_id = 2 AND id = 1 UNION SELECT tenant_id, id, name FROM users WHERE tenant_id = 57 AND id = 1 ORDER BY tenant_id;
SELECT id FROM users WHERE tenant_id = 3 EXCEPT SELECT user_id FROM orders WHERE tenant_id = 3 ORDER BY 1;
SELECT t.plan, u.name, o.id FROM tenants t JOIN users u ON u.tenant_id = t.id JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id WHERE u.tenant_id = 35 ORDER BY o.id;
SELECT o.id, t.region FROM orders o JOIN tenants t ON t.id = o.tenant_id WHERE tenant_id = 34 ORDER BY o.id;
SELECT o.tenant_id, o.id, count(i.line) FROM orders o JOIN order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id WHERE o.tenant_id IN (31, 33) AND o.id = 1 GROUP BY o.tenant_id, o.id ORDER BY o.tenant_id;
SELECT u.id, last.id FROM users u CROSS JOIN LATERAL (SELECT id FROM orders WHERE tenant_id = u.tenant_id AND user_id = u.id ORDER BY id DESC LIMIT 1) last WHERE u.tenant_id = 29 ORDER BY u.id;
SELECT id FROM users u WHERE u.tenant_id = 27 AND EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = u.tenant_id AND o.user_id = u.id AND EXISTS (SELECT 1 FROM order_items i WHERE i.tenant_id = o.tenant_id AND i.order_id = o.id)) ORDER BY id;
SELECT u.id, o.id FROM users u JOIN orders o ON o.tenant_id = 24 AND u.tenant_id = 24 AND o.user_id = u.id ORDER BY o.id;
SELECT count(*) FROM public.orders JOIN public.users ON users.tenant_id = orders.tenant_id AND users.id = orders.user_id WHERE public.orders.tenant_id = 20;
SELECT u.name, o.id, i.sku FROM users u JOIN orders o USING (tenant_id) JOIN order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id WHERE u.tenant_id = 10 AND o.user_id = u.id ORDER BY o.id, i.line;
-- @params (32, 2)
SELECT u.name, o.id FROM users u JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id WHERE u.tenant_id = %s AND o.id <= %s ORDER BY o.id;
-- @params (30, 28)
SELECT count(*) FROM users u, orders o WHERE u.tenant_id = %s AND o.tenant_id = %s AND o.user_id = u.id;
-- @params ([40, 46],)
SELECT u.tenant_id, count(o.id) FROM users u LEFT JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id WHERE u.tenant_id = ANY(%s) GROUP BY u.tenant_id ORDER BY u.tenant_id;
UPDATE orders o SET status = 'shipped' FROM users u WHERE o.tenant_id = 39 AND u.tenant_id = o.tenant_id AND u.id = o.user_id AND u.id = 2 RETURNING o.id, o.status;
DELETE FROM order_items i USING orders o WHERE o.tenant_id = 38 AND i.tenant_id = o.tenant_id AND i.order_id = o.id AND o.id = 2 RETURNING i.line;
UPDATE orders SET amount = amount + 1 WHERE tenant_id = 37 AND user_id IN (SELECT id FROM users WHERE tenant_id = 37 AND id = 1) RETURNING id, amount;
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (36, 400, (SELECT min(id) FROM users WHERE tenant_id = 36), 3.00, 'new', '2024-07-10 00:00:00+00') RETURNING id, user_id;
WITH moved AS (UPDATE orders SET status = 'paid' WHERE tenant_id = 26 AND id = 2 RETURNING id, status) SELECT * FROM moved;
SELECT o.id, o.user_id FROM orders o WHERE o.tenant_id = 26 ORDER BY o.id;

-- == IN lists whose tenants sit on one shard ================================================
SELECT tenant_id, count(*) FROM users WHERE tenant_id IN (2, 10, 11) GROUP BY tenant_id ORDER BY tenant_id;
SELECT tenant_id, id, amount FROM orders WHERE tenant_id IN (5, 8) AND id = 1 ORDER BY tenant_id;
SELECT tenant_id, name FROM users WHERE tenant_id IN (-5, 9000000000000000001) AND id = 2 ORDER BY tenant_id;
SELECT count(*) FROM order_items WHERE tenant_id IN (1, 3, 4, 6, 7);
SELECT * FROM users WHERE tenant_id IN (42) AND id = 1;
SELECT tenant_id, id FROM users WHERE tenant_id IN ('43', '44') AND id < 3 ORDER BY tenant_id, id;
SELECT tenant_id, sum(amount) FROM orders WHERE tenant_id IN (12, 15, 17, 4294967297) GROUP BY tenant_id ORDER BY tenant_id;
/* pgshard: tenant=13 */ SELECT o.tenant_id, o.id, u.name FROM orders o JOIN users u ON u.tenant_id = o.tenant_id AND u.id = o.user_id WHERE o.tenant_id IN (13, 19) AND o.id = 2 ORDER BY o.tenant_id;
SELECT tenant_id, status, count(*) FROM orders WHERE tenant_id IN (45, 49, 50) GROUP BY tenant_id, status;
SELECT * FROM users WHERE tenant_id IN (21, 24, 28) AND id = 3;

-- == aggregates within a tenant =============================================================
SELECT count(*), sum(amount), min(amount), max(amount), round(avg(amount), 4) FROM orders WHERE tenant_id = 16;
SELECT status, count(*), sum(amount) FROM orders WHERE tenant_id = 17 GROUP BY status ORDER BY status;
SELECT user_id, count(*) FROM orders WHERE tenant_id = 18 GROUP BY user_id HAVING count(*) > 1 ORDER BY user_id;
SELECT string_agg(sku, ',' ORDER BY order_id, line) FROM order_items WHERE tenant_id = 19;
SELECT id, amount, rank() OVER (ORDER BY amount DESC, id) FROM orders WHERE tenant_id = 20 ORDER BY id;
SELECT count(DISTINCT sku) FROM order_items WHERE tenant_id = 21;
SELECT sum(qty), sum(qty * price) FROM order_items WHERE tenant_id = 25 AND order_id <= 3;
SELECT date_trunc('month', created) AS m, count(*) FROM orders WHERE tenant_id = 26 GROUP BY m ORDER BY m;
SELECT bool_and(qty > 0), bool_or(qty = 5), max(line) FROM order_items WHERE tenant_id = 27;
SELECT array_agg(id ORDER BY id) FROM users WHERE tenant_id = 4294967297;
SELECT json_agg(json_build_object('id', id, 'status', status) ORDER BY id) FROM orders WHERE tenant_id = 28;
SELECT min(created), max(created) FROM users WHERE tenant_id = 29;
SELECT count(*) FILTER (WHERE status = 'paid'), count(*) FILTER (WHERE status = 'new') FROM orders WHERE tenant_id = 30;
SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY amount) FROM orders WHERE tenant_id = 31;
SELECT user_id, sum(amount), sum(sum(amount)) OVER () FROM orders WHERE tenant_id = -5 GROUP BY user_id ORDER BY user_id;
SELECT count(*) FROM orders WHERE tenant_id = 9000000000000000001 AND amount > (SELECT avg(amount) FROM orders WHERE tenant_id = 9000000000000000001);

-- == INSERT, single and multi-row on one shard ==============================================
INSERT INTO users (tenant_id, id, name, email, created) VALUES (1, 100, 'New One', 'new.one@t1.example', '2024-06-01');
INSERT INTO users (tenant_id, id, name, email, created) VALUES (2, 100, 'Ann', 'ann@t2.example', '2024-06-01'), (2, 101, 'Bob', 'bob@t2.example', '2024-06-02');
INSERT INTO users (tenant_id, id, name, email, created) VALUES (2, 102, 'Cy', 'cy@t2.example', '2024-06-03'), (10, 100, 'Di', 'di@t10.example', '2024-06-03'), (4294967297, 100, 'Ed', 'ed@big.example', '2024-06-04');
INSERT INTO users (id, tenant_id, name, email, created) VALUES (100, 5, 'Fay', 'fay@t5.example', '2024-06-05') RETURNING *;
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (5, 100, 100, 12.50, 'new', '2024-06-05 10:00:00+00') RETURNING id, amount, status;
INSERT INTO order_items (tenant_id, order_id, line, sku, qty, price) VALUES (5, 100, 1, 'SKU-001', 2, 3.25), (5, 100, 2, 'SKU-002', 1, 6.00) RETURNING line, qty * price AS total;
INSERT INTO users (tenant_id, id, name, email, created) VALUES (-5, 100, 'Gus', 'gus@neg.example', '2024-06-06'), (9000000000000000001, 100, 'Hal', 'hal@huge.example', '2024-06-06');
INSERT INTO users (tenant_id, id, name, email, created) VALUES ('3', 100, 'Ivy', 'ivy@t3.example', '2024-06-07');
INSERT INTO users (tenant_id, id, name, email, created) VALUES (1, 1, 'Dup', 'dup@t1.example', '2024-06-07');
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (6, 100, 999, 1.00, 'new', '2024-06-07 00:00:00+00');
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (6, 101, 1, -1.00, 'new', '2024-06-07 00:00:00+00');
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (6, 102, 1, 1.00, 'lost', '2024-06-07 00:00:00+00');
INSERT INTO users (tenant_id, id, name, email, created) VALUES (7, 1, 'Again', 'again@t7.example', '2024-06-08') ON CONFLICT (tenant_id, id) DO NOTHING;
INSERT INTO users (tenant_id, id, name, email, created) VALUES (7, 2, 'Renamed', 'renamed@t7.example', '2024-06-08') ON CONFLICT (tenant_id, id) DO UPDATE SET name = EXCLUDED.name RETURNING id, name, email;
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (11, 100, 1, 5.00, 'new', '2024-06-09 12:00:00+00'), (11, 101, 2, 6.00, 'paid', '2024-06-09 12:30:00+00'), (11, 102, 3, 7.00, 'shipped', '2024-06-09 13:00:00+00');
INSERT INTO order_items (tenant_id, order_id, line, sku, qty, price) VALUES (11, 100, 1, 'SKU-010', 1, 5.00), (11, 101, 1, 'SKU-011', 2, 3.00), (11, 102, 1, 'SKU-012', 7, 1.00);
INSERT INTO users (tenant_id, id, name, email, created) VALUES (12, 100, 'Jo', 'jo@t12.example', '2024-06-10'), (12, 100, 'Jo again', 'jo2@t12.example', '2024-06-10');
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (13, 100, 1, 99.99, 'paid', '2024-06-10 08:00:00+00') RETURNING tenant_id, created;
SELECT * FROM users WHERE tenant_id IN (2, 10, 4294967297) AND id >= 100 ORDER BY tenant_id, id;
SELECT * FROM order_items WHERE tenant_id = 11 AND order_id >= 100 ORDER BY order_id, line;

-- == UPDATE and DELETE with RETURNING =======================================================
UPDATE orders SET status = 'shipped' WHERE tenant_id = 4 AND id = 2 RETURNING id, status;
UPDATE orders SET amount = amount * 1.1 WHERE tenant_id = 5 AND status = 'new' RETURNING id, amount;
UPDATE users SET email = upper(email) WHERE tenant_id = 6;
UPDATE orders o SET status = 'paid' FROM users u WHERE o.tenant_id = 7 AND u.tenant_id = 7 AND u.id = o.user_id AND u.id = 1 RETURNING o.id, o.status;
DELETE FROM order_items WHERE tenant_id = 8 AND order_id = 2 RETURNING line, sku;
DELETE FROM orders WHERE tenant_id = 9 AND id = 4 RETURNING id, status;
SELECT count(*) FROM order_items WHERE tenant_id = 9 AND order_id = 4;
DELETE FROM users WHERE tenant_id = 10 AND id = 9999;
UPDATE order_items SET qty = 0 WHERE tenant_id = 14 AND order_id = 1 AND line = 1;
UPDATE users SET name = name || ' (vip)' WHERE tenant_id = -5 AND id IN (1, 2) RETURNING id, name;
UPDATE orders SET amount = 0 WHERE tenant_id = 9000000000000000001 AND id = 2 RETURNING *;
DELETE FROM orders WHERE tenant_id = 4294967297 AND id = 3 RETURNING id;
UPDATE order_items SET price = price + 1 WHERE tenant_id = 15 AND order_id IN (SELECT id FROM orders WHERE tenant_id = 15 AND status = 'paid') RETURNING order_id, line, price;
DELETE FROM order_items i USING orders o WHERE i.tenant_id = 16 AND o.tenant_id = 16 AND o.id = i.order_id AND o.status = 'cancelled' RETURNING i.order_id, i.line;
UPDATE orders SET status = 'cancelled', amount = 0 WHERE tenant_id IN (17, 18) AND id = 1 RETURNING tenant_id, id;
DELETE FROM users WHERE tenant_id = 1 AND id = 100 RETURNING name;
UPDATE users SET id = id + 1000 WHERE tenant_id = 20 AND id = 3;
UPDATE orders SET user_id = 999 WHERE tenant_id = 22 AND id = 1;
WITH moved AS (UPDATE orders SET status = 'shipped' WHERE tenant_id = 23 AND status = 'paid' RETURNING id) SELECT count(*) FROM moved;
DELETE FROM order_items WHERE tenant_id = 24 AND qty >= 4;
SELECT id, status, amount FROM orders WHERE tenant_id IN (4, 7, 9) ORDER BY tenant_id, id;
SELECT * FROM users WHERE tenant_id = 6 ORDER BY id;

-- == transactions of one tenant =============================================================
BEGIN;
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (25, 200, 1, 10.00, 'new', '2024-07-01 00:00:00+00');
INSERT INTO order_items (tenant_id, order_id, line, sku, qty, price) VALUES (25, 200, 1, 'SKU-020', 1, 10.00);
UPDATE orders SET status = 'paid' WHERE tenant_id = 25 AND id = 200 RETURNING status;
/* pgshard: tenant=25 */ SELECT o.id, o.status, count(i.line) FROM orders o JOIN order_items i ON i.tenant_id = o.tenant_id AND i.order_id = o.id WHERE o.tenant_id = 25 AND o.id = 200 GROUP BY o.id, o.status;
COMMIT;
SELECT * FROM orders WHERE tenant_id = 25 AND id = 200;

BEGIN;
DELETE FROM order_items WHERE tenant_id = 26 AND order_id = 1 RETURNING line;
DELETE FROM orders WHERE tenant_id = 26 AND id = 1;
SELECT count(*) FROM orders WHERE tenant_id = 26;
ROLLBACK;
SELECT count(*) FROM orders WHERE tenant_id = 26 AND id = 1;
SELECT count(*) FROM order_items WHERE tenant_id = 26 AND order_id = 1;

START TRANSACTION ISOLATION LEVEL REPEATABLE READ;
SELECT current_setting('transaction_isolation') FROM users WHERE tenant_id = 27 AND id = 1;
COMMIT;

-- The deferred BEGIN reaches the shard with its options.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT current_setting('transaction_isolation') FROM users WHERE tenant_id = 27 AND id = 1;
SELECT sum(amount) FROM orders WHERE tenant_id = 27;
UPDATE orders SET amount = amount + 1 WHERE tenant_id = 27 RETURNING id, amount;
SELECT sum(amount) FROM orders WHERE tenant_id = 27;
COMMIT;

BEGIN;
INSERT INTO users (tenant_id, id, name, email, created) VALUES (28, 200, 'Kim', 'kim@t28.example', '2024-07-02');
SAVEPOINT s1;
INSERT INTO users (tenant_id, id, name, email, created) VALUES (28, 200, 'Kim twice', 'kim2@t28.example', '2024-07-02');
ROLLBACK TO SAVEPOINT s1;
INSERT INTO users (tenant_id, id, name, email, created) VALUES (28, 201, 'Lee', 'lee@t28.example', '2024-07-02');
RELEASE SAVEPOINT s1;
COMMIT;
SELECT id, name FROM users WHERE tenant_id = 28 AND id >= 200 ORDER BY id;

BEGIN;
UPDATE orders SET amount = amount / 0 WHERE tenant_id = 29 AND id = 1;
SELECT * FROM orders WHERE tenant_id = 29 AND id = 1;
COMMIT;
SELECT amount FROM orders WHERE tenant_id = 29 AND id = 1;

BEGIN;
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (30, 200, 1, 1.00, 'new', '2024-07-03 00:00:00+00'), (30, 201, 2, 2.00, 'new', '2024-07-03 00:00:00+00');
DELETE FROM orders WHERE tenant_id = 30 AND id = 200 RETURNING id;
END;
SELECT id FROM orders WHERE tenant_id = 30 AND id >= 200 ORDER BY id;

BEGIN;
SELECT count(*) FROM users WHERE tenant_id IN (8, 13);
UPDATE users SET name = 'Moved' WHERE tenant_id = 13 AND id = 1 RETURNING name;
UPDATE users SET name = 'Moved too' WHERE tenant_id = 8 AND id = 1 RETURNING name;
COMMIT;

BEGIN;
COMMIT;

BEGIN;
ROLLBACK;

BEGIN;
SELECT * FROM users WHERE tenant_id = 33 AND id = 1;
COMMIT AND CHAIN;
SELECT * FROM users WHERE tenant_id = 33 AND id = 2;
COMMIT;

BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT current_setting('transaction_isolation'), id FROM users WHERE tenant_id = 34 AND id = 1;
SET LOCAL statement_timeout = '5s';
SELECT current_setting('statement_timeout') FROM users WHERE tenant_id = 34 AND id = 1;
COMMIT;

BEGIN READ ONLY;
UPDATE users SET name = 'read only' WHERE tenant_id = 35 AND id = 1;
SELECT * FROM users WHERE tenant_id = 35 AND id = 1;
ROLLBACK;

BEGIN;
BEGIN;
SELECT id FROM users WHERE tenant_id = 36 AND id = 1;
ABORT;

BEGIN;
UPDATE users SET name = 'not kept' WHERE tenant_id = 37 AND id = 1;
SELECT 1 / 0;
SELECT name FROM users WHERE tenant_id = 37 AND id = 1;
COMMIT;
SELECT name FROM users WHERE tenant_id = 37 AND id = 1;

BEGIN;
SELECT id FROM users WHERE tenant_id = 31 AND id = 1 FOR UPDATE;
UPDATE users SET created = created + 1 WHERE tenant_id = 31 AND id = 1 RETURNING created;
COMMIT;

-- @binary
BEGIN;
-- @params (32, 300, 1, Decimal("8.40"), "new", datetime(2024, 7, 4, 12, 0, tzinfo=utc))
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (%s, %s, %s, %s, %s, %s);
-- @params (32, 300)
UPDATE orders SET status = 'paid' WHERE tenant_id = %b AND id = %s RETURNING status;
COMMIT;
SELECT id, amount, status FROM orders WHERE tenant_id = 32 AND id = 300;

-- == bind parameters: named prepared statements (text and binary) ===========================
-- The same statement text runs for tenants on every shard, so pgshard prepares it again on
-- each shard's server connection.
-- @params (1, 2)
SELECT * FROM users WHERE tenant_id = %s AND id = %s;
-- @params (2, 2)
SELECT * FROM users WHERE tenant_id = %s AND id = %s;
-- @params (5, 2)
SELECT * FROM users WHERE tenant_id = %s AND id = %s;
-- @params (-5, 3)
SELECT * FROM users WHERE tenant_id = %s AND id = %s;
-- @params (9000000000000000001, 1)
SELECT * FROM users WHERE tenant_id = %s AND id = %s;
-- @params (4294967297, 1)
SELECT * FROM users WHERE tenant_id = %s AND id = %s;
-- @params (3,)
SELECT id, amount FROM orders WHERE tenant_id = %b ORDER BY id;
-- @params (10,)
SELECT id, amount FROM orders WHERE tenant_id = %b ORDER BY id;
-- @params (13,)
SELECT id, amount FROM orders WHERE tenant_id = %b ORDER BY id;
-- @params (9000000000000000001,)
SELECT id, amount FROM orders WHERE tenant_id = %b ORDER BY id;
-- @params (-5,)
SELECT id, amount FROM orders WHERE tenant_id = %b ORDER BY id;
-- @binary
-- @params (33,)
SELECT * FROM orders WHERE tenant_id = %b ORDER BY id;
-- @binary
-- @params (37,)
SELECT * FROM orders WHERE tenant_id = %b ORDER BY id;
-- @params ("34", 2)
SELECT * FROM orders WHERE tenant_id = %t AND id = %t;
-- @params ("38", 2)
SELECT * FROM orders WHERE tenant_id = %t AND id = %t;
-- @params (35, Decimal("100.00"))
SELECT id FROM orders WHERE tenant_id = %s AND amount > %s ORDER BY id;
-- @params (36, date(2023, 9, 1))
SELECT id FROM users WHERE tenant_id = %s AND created < %s ORDER BY id;
-- @params (39, datetime(2024, 3, 1, tzinfo=utc))
SELECT count(*) FROM orders WHERE tenant_id = %b AND created >= %b;
-- @params ([40, 46, 47],)
SELECT tenant_id, count(*) FROM users WHERE tenant_id = ANY(%s) GROUP BY tenant_id ORDER BY tenant_id;
-- @params ([48, 52],)
SELECT tenant_id, count(*) FROM orders WHERE tenant_id = ANY(%s) GROUP BY tenant_id ORDER BY tenant_id;
-- @params ([51, 53, 54],)
SELECT tenant_id, count(*) FROM orders WHERE tenant_id = ANY(%b) GROUP BY tenant_id ORDER BY tenant_id;
-- @params (41, 200, "Nia", "nia@t41.example", date(2024, 7, 5))
INSERT INTO users (tenant_id, id, name, email, created) VALUES (%s, %s, %s, %s, %s) RETURNING id, name;
-- @params (49, 200, "Oz", "oz@t49.example", date(2024, 7, 5))
INSERT INTO users (tenant_id, id, name, email, created) VALUES (%s, %s, %s, %s, %s) RETURNING id, name;
-- @params (55, 200, "Pat", "pat@t55.example", date(2024, 7, 5))
INSERT INTO users (tenant_id, id, name, email, created) VALUES (%b, %b, %b, %b, %b) RETURNING id, name;
-- @params (41, 200, "Nia", "nia2@t41.example", date(2024, 7, 5))
INSERT INTO users (tenant_id, id, name, email, created) VALUES (%s, %s, %s, %s, %s) RETURNING id, name;
-- @params (42, 201, "Quinn", "q@t42.example", date(2024, 7, 6), 42, 202, "Rae", "r@t42.example", date(2024, 7, 6))
INSERT INTO users (tenant_id, id, name, email, created) VALUES (%s, %s, %s, %s, %s), (%s, %s, %s, %s, %s);
-- @params ("shipped", 43, 1)
UPDATE orders SET status = %s WHERE tenant_id = %s AND id = %s RETURNING id, status;
-- @params ("shipped", 52, 1)
UPDATE orders SET status = %s WHERE tenant_id = %s AND id = %s RETURNING id, status;
-- @params (Decimal("0.5"), 44)
UPDATE order_items SET price = price * %s WHERE tenant_id = %b AND order_id = 1 RETURNING line, price;
-- @params (45, 2)
DELETE FROM order_items WHERE tenant_id = %b AND order_id = %b RETURNING line;
-- @params (56, 1)
DELETE FROM order_items WHERE tenant_id = %b AND order_id = %b RETURNING line;
-- @params (50, 3)
SELECT u.name, o.id, o.amount FROM users u JOIN orders o ON o.tenant_id = u.tenant_id AND o.user_id = u.id WHERE u.tenant_id = %s AND o.id <= %s ORDER BY o.id;
-- @params (57, 1)
SELECT * FROM orders WHERE tenant_id = %s AND id = %s / 0;
-- @params (46,)
SELECT status, count(*) FROM orders WHERE tenant_id = %s GROUP BY status ORDER BY status;
-- A key parameter declared float8 or numeric compares by value on the server: pgshard does
-- not hash it as an int8, it refuses it (it once read the float's bytes as an int8 and went
-- to the wrong shard).
-- @refused 0A000
-- @params (2.0,)
SELECT * FROM users WHERE tenant_id = %b AND id = 1;
-- @refused 0A000
-- @params (Decimal(2),)
SELECT * FROM users WHERE tenant_id = %s AND id = 1;
-- @params ([1, 3],)
SELECT count(*) FROM users WHERE tenant_id = ANY(%b);
-- @params ([2, 10],)
SELECT count(*) FROM users WHERE tenant_id = ANY(%s);
-- @params (" 7 ",)
SELECT count(*) FROM users WHERE tenant_id = %t;
-- @params (9,)
SELECT * FROM users WHERE tenant_id = %s::int AND id = 1;
-- @unprepared
-- @params (47, 1)
SELECT * FROM users WHERE tenant_id = %s AND id = %s;
-- @unprepared
-- @params (48,)
SELECT count(*) FROM order_items WHERE tenant_id = %b;
-- @unprepared
-- @params (53, 300, 1, Decimal("1.10"), "new", datetime(2024, 7, 6, tzinfo=utc))
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (%s, %s, %s, %s, %s, %s) RETURNING *;
-- @binary
SELECT * FROM users WHERE tenant_id = 54 ORDER BY id;

-- == the omnisharded and the unlisted tables ================================================
SELECT * FROM tenants WHERE id = 5;
SELECT count(*) FROM tenants;
SELECT plan, count(*) FROM tenants GROUP BY plan ORDER BY plan;
SELECT * FROM tenants ORDER BY id LIMIT 5;
SELECT id FROM tenants WHERE region = 'eu-west' AND plan = 'pro';
SELECT count(*) FROM audit_log;
SELECT tenant_id, action, at FROM audit_log WHERE tenant_id = 3 ORDER BY id;
SELECT action, count(*) FROM audit_log GROUP BY action ORDER BY action;
INSERT INTO audit_log (tenant_id, action, at) VALUES (3, 'differential', '2024-07-07 00:00:00+00') RETURNING id, action;
INSERT INTO audit_log (tenant_id, action, at) VALUES (5, 'a', '2024-07-07 00:00:00+00'), (6, 'b', '2024-07-07 00:00:01+00');
UPDATE audit_log SET action = 'changed' WHERE id = 5 RETURNING *;
DELETE FROM audit_log WHERE id = 7 RETURNING id, tenant_id;
SELECT max(id), count(*) FROM audit_log;
-- @params (4,)
SELECT id, action FROM audit_log WHERE tenant_id = %s ORDER BY id;
-- @params ("enterprise",)
SELECT id, name FROM tenants WHERE plan = %s ORDER BY id;
BEGIN;
INSERT INTO audit_log (tenant_id, action, at) VALUES (7, 'in tx', '2024-07-08 00:00:00+00');
SELECT count(*) FROM audit_log WHERE action = 'in tx';
COMMIT;
-- Omnisharded reads in transactions bound to shards 2 and 1 (read there).
BEGIN;
UPDATE users SET name = 'Omni after' WHERE tenant_id = 51 AND id = 1 RETURNING name;
SELECT plan FROM tenants WHERE id = 51;
SELECT u.name, t.name FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE u.tenant_id = 51 AND u.id = 1;
COMMIT;
BEGIN;
SELECT count(*) FROM orders WHERE tenant_id = 52;
SELECT count(*), min(id), max(id) FROM tenants;
COMMIT;

-- == refused through pgshard (not compared with ref) ========================================
-- compared: a read with no key (or keys of several shards) runs on every shard and is merged
SELECT count(*) FROM users;
-- compared: a read with no key (or keys of several shards) runs on every shard and is merged
SELECT * FROM orders WHERE status = 'new';
-- compared: a read with no key (or keys of several shards) runs on every shard and is merged
SELECT tenant_id, count(*) FROM users WHERE tenant_id IN (1, 2) GROUP BY tenant_id;
-- compared: a read with no key (or keys of several shards) runs on every shard and is merged
SELECT * FROM orders WHERE tenant_id IN (5, 10, 14) AND id = 1;
-- @refused 0A000
INSERT INTO users (tenant_id, id, name, email, created) VALUES (1, 300, 'X', 'x@t1.example', '2024-07-09'), (2, 300, 'Y', 'y@t2.example', '2024-07-09');
-- @refused 0A000
UPDATE users SET tenant_id = 3 WHERE tenant_id = 1 AND id = 1;
-- @refused 0A000
INSERT INTO users VALUES (1, 301, 'Z', 'z@t1.example', '2024-07-09');
-- @refused 0A000
DELETE FROM order_items WHERE qty > 4;
-- compared: a write of the omnisharded table runs on every shard in one distributed transaction
INSERT INTO tenants (id, name, plan, region) VALUES (1000, 'Nope', 'free', 'eu-west');
-- A transaction that reaches a second shard: refused there, then aborted.
-- @proxy-only
BEGIN;
-- @proxy-only
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (2, 500, 1, 1.00, 'new', '2024-07-09 00:00:00+00');
-- @refused 0A000
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) VALUES (5, 500, 1, 1.00, 'new', '2024-07-09 00:00:00+00');
-- @refused 25P02
SELECT count(*) FROM orders WHERE tenant_id = 2;
-- @proxy-only
ROLLBACK;
-- @proxy-only
BEGIN;
-- @proxy-only
SELECT * FROM users WHERE tenant_id = 1 AND id = 1;
-- @refused 0A000
SELECT * FROM users WHERE tenant_id = -5 AND id = 1;
-- @proxy-only
ROLLBACK;
-- A keyless statement refused in a deferred transaction aborts it.
-- @proxy-only
BEGIN;
-- @refused 0A000
SELECT count(*) FROM orders;
-- @refused 25P02
SELECT count(*) FROM orders WHERE tenant_id = 2;
-- @proxy-only
COMMIT;
-- Several statements in one query string.
-- @refused 0A000
SELECT 1 FROM users WHERE tenant_id = 1; SELECT 2 FROM users WHERE tenant_id = 1;
-- compared: a read with no key (or keys of several shards) runs on every shard and is merged
SELECT count(*) FROM users WHERE tenant_id = ANY('{1,2}');
-- @params ([1, 2],)
-- compared: a read with no key (or keys of several shards) runs on every shard and is merged
SELECT count(*) FROM users WHERE tenant_id = ANY(%b);
-- A sharded table in them has no key, or keys on two shards; one shard's rows are not
-- PostgreSQL's answer, so they must be refused.
-- @refused 0A000
SELECT u.id, o.id FROM users u JOIN orders o ON o.user_id = u.id WHERE u.tenant_id = 11 AND u.id = 1;
-- @refused 0A000
SELECT (SELECT count(*) FROM orders) FROM users WHERE tenant_id = 1 AND id = 1;
-- @refused 0A000
SELECT count(*) FROM users u, orders o WHERE u.tenant_id = 1 AND o.tenant_id = 2;
-- @refused 0A000
UPDATE users SET name = 'x' WHERE tenant_id = 1 AND id IN (SELECT user_id FROM orders WHERE tenant_id = 2);
-- Table references a key does not reach, or keys of several shards (tenants 1 and 42: shard
-- 2; 2: shard 0): refused, never answered from one shard.
-- @refused 0A000
SELECT u.id, o.id FROM users u JOIN orders o ON o.user_id = u.id WHERE u.tenant_id = 42;
-- @refused 0A000
SELECT * FROM users u LEFT JOIN orders o ON o.tenant_id = u.tenant_id WHERE o.tenant_id = 42;
-- @refused 0A000
SELECT count(*) FROM users a, users b WHERE a.tenant_id = 1 AND b.tenant_id = 2 AND a.id = b.id;
-- @refused 0A000
SELECT id FROM users WHERE tenant_id = 1 UNION ALL SELECT id FROM orders WHERE tenant_id = 2;
-- @refused 0A000
SELECT id FROM users WHERE tenant_id = 1 UNION ALL SELECT id FROM orders;
-- compared: a read with no key (or keys of several shards) runs on every shard and is merged
SELECT count(*) FROM orders o JOIN order_items i ON i.tenant_id = o.tenant_id WHERE tenant_id = 1;
-- @refused 0A000
WITH c AS (SELECT * FROM orders) SELECT count(*) FROM c WHERE tenant_id = 1;
-- @refused 0A000
SELECT count(*) FROM (SELECT * FROM orders) s WHERE s.tenant_id = 1;
-- @refused 0A000
SELECT count(*) FROM orders o WHERE EXISTS (SELECT 1 FROM order_items i WHERE i.tenant_id = 1 AND i.tenant_id = o.tenant_id);
-- @refused 0A000
INSERT INTO orders (tenant_id, id, user_id, amount, status, created) SELECT tenant_id, id + 1000, user_id, amount, status, created FROM orders WHERE tenant_id = 1;
-- @refused 0A000
UPDATE orders o SET status = 'new' FROM users u WHERE o.tenant_id = 1 AND u.id = o.user_id;
-- @refused 0A000
SELECT * FROM users WHERE tenant_id = 1 AND id IN (SELECT user_id FROM orders WHERE tenant_id = 2);
-- @refused 0A000
-- @params (1, 2)
SELECT count(*) FROM users u, orders o WHERE u.tenant_id = %s AND o.tenant_id = %s;
-- Nothing of the refused transaction reached either shard (compared with ref again).
SELECT count(*) FROM orders WHERE tenant_id IN (2, 10) AND id = 500;
SELECT count(*) FROM orders WHERE tenant_id = 5 AND id = 500;
