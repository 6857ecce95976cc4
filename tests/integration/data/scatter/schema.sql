-- The schema of tests/integration/t_scatter.py, created as is on each of the 3 shards and on
-- the reference database `ref`. pgshard's config lists items, events and big as sharded by
-- tenant_id and tenants as omnisharded (the same rows on every shard, written straight to
-- each shard). items has a column of every type the cross-shard merge has to compare,
-- combine or pass through, NULLs in each (but the key), and many ties. big is loaded only
-- on the shards (1,000,000 rows by generate_series on each shard's primary): the
-- bounded-memory check streams it.
CREATE TABLE tenants (
  id      bigint PRIMARY KEY,
  name    text NOT NULL,
  plan    text NOT NULL,
  region  text,
  active  bool
);

CREATE TABLE items (
  tenant_id bigint NOT NULL,
  id        int NOT NULL,
  grp       text,            -- 5 values and NULL: many ties
  i2        int2,
  i4        int4,
  i8        int8,
  n         numeric,         -- scales 0 to 5 (1.50 and 1.5 are different values to show)
  n2        numeric(12, 2),
  nx        numeric,         -- NaN, Infinity, -Infinity, huge and tiny values
  f8        float8,
  fx        float8,          -- NaN, Infinity, -Infinity, 1e300, 1e-300
  b         bool,
  d         date,
  tm        time,
  ts        timestamp,
  tz        timestamptz,
  iv        interval,        -- '1 mon' and '30 days' compare equal
  u         uuid,
  tx        text,            -- multi-byte UTF-8: é, ß, 日本, emoji; '' too
  vc        varchar(16),
  bin       bytea,
  cc        text COLLATE "C", -- its own collation: byte order, whatever the database's
  PRIMARY KEY (tenant_id, id)
);

-- Text under an ICU collation, which pgshard does not reproduce: tx::icu_text is ordered by it.
CREATE DOMAIN icu_text AS text COLLATE "und-x-icu";

CREATE TABLE events (
  tenant_id bigint NOT NULL,
  id        int NOT NULL,
  item_id   int NOT NULL,      -- items.id of the same tenant
  kind      text,
  qty       int,
  amount    numeric(10, 2),
  at        timestamptz,
  PRIMARY KEY (tenant_id, id)
);

CREATE TABLE big (
  tenant_id bigint NOT NULL,
  v         bigint NOT NULL,
  pad       text NOT NULL
);
