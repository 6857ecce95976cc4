/* The statement that gives a shard's sequences their range (see config.h): run by pgshard
 * after DDL it broadcasts, and by pgshard-migrate add-shard on a new shard. */
#include "common/buf.h"
#include "config/config.h"

bool cfg_seq_range_sql(const cfg_config *cfg, int s, pgs_buf *b)
{
    int sharded = 0;
    for (int i = 0; i < cfg->ntables; i++)
        sharded += cfg->tables[i].shard_key[0] != 0;
    if (s <= 0 || !sharded)
        return false;
    unsigned long long start = ((unsigned long long)s << 48) + 1;
    pgs_buf_appendf(
        b,
        "DO $pgshard$DECLARE r record; lv bigint; BEGIN FOR r IN SELECT q.seqrelid::regclass AS seq "
        "FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_sequence q ON q.seqrelid = d.objid WHERE "
        "d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = "
        "'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i') AND q.seqincrement > 0 AND "
        "q.seqmax >= %llu AND d.refobjid = ANY (ARRAY[0",
        start);
    for (int i = 0; i < cfg->ntables; i++) {
        const cfg_table *t = &cfg->tables[i];
        if (!t->shard_key[0])
            continue;
        pgs_buf_append(b, ", to_regclass('", 15);
        for (int part = t->schema[0] ? 0 : 1; part < 2; part++) {
            const char *id = part ? t->name : t->schema;
            pgs_buf_append_u8(b, '"');
            for (const char *p = id; *p; p++) {
                if (*p == '"' || *p == '\'')
                    pgs_buf_append_u8(b, (uint8_t)*p);
                pgs_buf_append_u8(b, (uint8_t)*p);
            }
            pgs_buf_append(b, part ? "\"" : "\".", part ? 1 : 2);
        }
        pgs_buf_append(b, "')::oid", 7);
    }
    pgs_buf_appendf(
        b,
        "]::oid[]) LOOP BEGIN EXECUTE format('SELECT last_value FROM %%s', r.seq) INTO lv; IF lv < "
        "%llu THEN PERFORM pg_catalog.setval(r.seq, %llu, false); END IF; EXCEPTION WHEN OTHERS THEN "
        "RAISE WARNING 'pgshard: sequence %% keeps its range on this shard: %%', r.seq, SQLERRM; "
        "END; END LOOP; END$pgshard$",
        start, start);
    return true;
}
