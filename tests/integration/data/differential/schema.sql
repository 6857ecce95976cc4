-- The multi-tenant schema of tests/integration/t_differential.py, created as is on each of
-- the 3 shards and on the reference database `ref`. pgshard's config lists users, orders and
-- order_items as sharded by tenant_id and tenants as omnisharded (the same rows on every
-- shard, written straight to each shard); audit_log is not listed, so it lives on
-- default_shard 0. Every key of a sharded table starts with tenant_id, so that foreign keys
-- and ON DELETE CASCADE stay within one tenant, hence within one shard.
CREATE TABLE tenants (
  id      bigint PRIMARY KEY,
  name    text NOT NULL,
  plan    text NOT NULL CHECK (plan IN ('free', 'pro', 'enterprise')),
  region  text NOT NULL
);

CREATE TABLE users (
  tenant_id bigint NOT NULL,
  id        int NOT NULL,
  name      text NOT NULL,
  email     text NOT NULL,
  created   date NOT NULL,
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, email)
);

CREATE TABLE orders (
  tenant_id bigint NOT NULL,
  id        int NOT NULL,
  user_id   int NOT NULL,
  amount    numeric(12, 2) NOT NULL CHECK (amount >= 0),
  status    text NOT NULL CHECK (status IN ('new', 'paid', 'shipped', 'cancelled')),
  created   timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id),
  FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id)
);
CREATE INDEX orders_user ON orders (tenant_id, user_id);

CREATE TABLE order_items (
  tenant_id bigint NOT NULL,
  order_id  int NOT NULL,
  line      int NOT NULL,
  sku       text NOT NULL,
  qty       int NOT NULL CHECK (qty > 0),
  price     numeric(10, 2) NOT NULL,
  PRIMARY KEY (tenant_id, order_id, line),
  FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE audit_log (
  id        bigserial PRIMARY KEY,
  tenant_id bigint,
  action    text NOT NULL,
  at        timestamptz NOT NULL
);
