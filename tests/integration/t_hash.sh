#!/usr/bin/env bash
# shardmap's hashes against the server's own: PostgreSQL generates well over 100,000 values
# of each shard-key kind (ints over the whole int8 range and every int2, ASCII text of every
# length 0..200 so each lookup3 tail is hit, multi-byte UTF-8 text, uuids written in every
# form uuid_in takes) with hashint2/4/8extended(v, 0), hashtextextended(v, 0),
# uuid_hash_extended(v, 0) and their buckets of 1024; sm_hashdump hashes the same values
# through the key parser, and every line must agree. Needs no proxy.
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

W=$PGS_WORK/t_hash
rm -rf "$W"
mkdir -p "$W"

HASHDUMP=${PGS_HASHDUMP:-$(dirname "${PGSHARD_BIN:-.}")/tests/sm_hashdump}
[[ -x $HASHDUMP ]] || pgs_fail "sm_hashdump not found at '$HASHDUMP' (set PGS_HASHDUMP)"

# One line per value: TYPE, VALUE as sm_hashdump reads it (text as hex of its UTF-8 bytes),
# the server's hash and bucket. setseed makes the random values the same on every run.
pgs_log "generating values and hashes on the server"
pgs_psql_direct -q -F $'\t' -o "$W/values.tsv" <<'EOF_SQL'
SELECT setseed(0.4242) \g /dev/null

-- ints: extremes of every width, a dense run around 0, 2^k - 1, 2^k, 2^k + 1 of both signs,
-- random values over all 64 bits and over int4; some written with a sign and blanks.
WITH v(x, i) AS (
  SELECT x, 0 FROM unnest('{0,-1,1,32767,-32768,32768,-32769,2147483647,-2147483648,2147483648,
      -2147483649,4294967295,4294967296,-4294967296,9223372036854775807,-9223372036854775808,
      9223372036854775806,-9223372036854775807}'::int8[]) x
  UNION ALL SELECT x, x FROM generate_series(-5000::int8, 5000) x
  UNION ALL SELECT s * ((1::int8 << k) + d), k FROM generate_series(0, 62) k,
      (VALUES (-1), (0), (1)) dd(d), (VALUES (1), (-1)) ss(s)
  UNION ALL SELECT (floor(random() * 4294967296)::int8 << 32) | floor(random() * 4294967296)::int8, i
      FROM generate_series(1, 60000) i
  UNION ALL SELECT floor(random() * 4294967296 - 2147483648)::int8, i FROM generate_series(1, 30000) i
)
SELECT 'int8', CASE WHEN i % 5 = 1 THEN ' ' || CASE WHEN x >= 0 THEN '+' ELSE '' END || x || '  '
                    ELSE x::text END,
       hashint8extended(x, 0), hashint8extended(x, 0) & 1023
FROM v;

-- every int2, through hashint2extended
SELECT 'int2', x, hashint2extended(x::int2, 0), hashint2extended(x::int2, 0) & 1023
FROM generate_series(-32768, 32767) x;

-- random int4 and its extremes, through hashint4extended
SELECT 'int4', x, hashint4extended(x, 0), hashint4extended(x, 0) & 1023
FROM (SELECT floor(random() * 4294967296 - 2147483648)::int4 FROM generate_series(1, 20000)
      UNION ALL SELECT unnest('{2147483647,-2147483648,0,-1}'::int4[])) v(x);

-- text: a few fixed strings, 250 random printable ASCII strings of each length 0..200,
-- and 50,000 strings of 1..60 random code points from 1-, 2-, 3- and 4-byte UTF-8 (no NUL,
-- no surrogates). The series' bounds name the row's i: a function scan whose arguments do
-- not change is not run again, and would give every row the same length.
WITH t(s) AS (
  SELECT unnest(ARRAY['', 'a', 'abc', 'tenant-1', E'tab\tnew\nline\\', 'Grüße', '日本語', '🐘'])
  UNION ALL
  SELECT (SELECT coalesce(string_agg(chr(32 + floor(random() * 95)::int), ''), '')
          FROM generate_series(1, n) WHERE i > 0)
  FROM generate_series(0, 200) n, generate_series(1, 250) i
  UNION ALL
  SELECT (SELECT coalesce(string_agg(chr(CASE WHEN r < 0.25 THEN 1 + floor(q * 127)::int
                                              WHEN r < 0.5 THEN 128 + floor(q * 1920)::int
                                              WHEN r < 0.75 THEN 2048 + floor(q * 61440)::int
                                              ELSE 65536 + floor(q * 1048576)::int END
                                          + CASE WHEN r >= 0.5 AND r < 0.75
                                                  AND 2048 + floor(q * 61440) >= 55296
                                                 THEN 2048 ELSE 0 END), ''), '')
          FROM (SELECT random() AS r, random() AS q FROM generate_series(1, 1 + i % 60)) c)
  FROM generate_series(1, 50000) i
)
SELECT 'text', encode(convert_to(s, 'UTF8'), 'hex'), hashtextextended(s, 0),
       hashtextextended(s, 0) & 1023
FROM t;

-- uuids: nil, all ones and 100,000 random ones, written canonically, in capitals, bare and
-- in braces.
WITH u(u, i) AS (
  SELECT '00000000-0000-0000-0000-000000000000'::uuid, 0
  UNION ALL SELECT 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid, 1
  UNION ALL SELECT md5(random()::text || i)::uuid, i FROM generate_series(1, 100000) i
)
SELECT 'uuid', CASE i % 4 WHEN 0 THEN u::text WHEN 1 THEN upper(u::text)
                          WHEN 2 THEN '{' || replace(u::text, '-', '') || '}'
                          ELSE replace(u::text, '-', '') END,
       uuid_hash_extended(u, 0), uuid_hash_extended(u, 0) & 1023
FROM u;
EOF_SQL

# Enough values of each kind, varied enough to mean something.
awk -F'\t' '
  { k = ($1 ~ /^int/) ? "int" : $1; n[k]++; if (!seen[k SUBSEP $2]++) d[k]++; b[k SUBSEP $4] = 1
    if ($1 == "text") len[length($2) / 2] = 1 }
  END {
    for (k in n) { nb = 0; for (j = 0; j < 1024; j++) nb += (k SUBSEP j) in b
                   printf "%s %d values, %d distinct, %d buckets\n", k, n[k], d[k], nb }
    nl = 0; for (j = 0; j <= 200; j++) nl += j in len; printf "text lengths 0..200 present: %d\n", nl
  }' "$W/values.tsv" | sort >"$W/summary.txt"
cat "$W/summary.txt"
for k in int text uuid; do
  line=$(grep "^$k " "$W/summary.txt") || pgs_fail "the server produced no $k values"
  read -r _ n _ d _ nb _ <<<"$line"
  ((n >= 100000 && d >= 99000)) || pgs_fail "$k: $n values, $d distinct; expected at least 100,000 (99,000 distinct)"
  pgs_assert_eq 1024 "$nb" "$k values fall in every bucket"
done
pgs_assert_eq "text lengths 0..200 present: 201" "$(grep "^text lengths" "$W/summary.txt")" "every lookup3 tail length"

pgs_log "hashing $(wc -l <"$W/values.tsv") values with sm_hashdump"
rc=0
cut -f1,2 "$W/values.tsv" | "$HASHDUMP" 1024 >"$W/ours.txt" || rc=$?
awk -F'\t' '{ print $3 " " $4 }' "$W/values.tsv" >"$W/server.txt"
pgs_assert_eq "$(wc -l <"$W/server.txt")" "$(wc -l <"$W/ours.txt")" "sm_hashdump answers every line"
if ((rc != 0)) || ! cmp -s "$W/server.txt" "$W/ours.txt"; then
  paste "$W/values.tsv" "$W/ours.txt" | awk -F'\t' '
    $3 " " $4 != $5 { bad++; if (bad <= 10) printf "line %d: %s %s: server %s %s, sm_hashdump %s\n", NR, $1, $2, $3, $4, $5 }
    END { printf "%d of %d lines differ\n", bad, NR }' >&2
  pgs_fail "shardmap's hashes differ from the server's (sm_hashdump exit $rc; files in $W)"
fi
pgs_log "all $(wc -l <"$W/ours.txt") hashes and buckets equal the server's"
