/* Tests for proxy/tables.c (the [table.NAME] registry and its lookup rules) and for the
 * parts of proxy/catalog.c that need no PostgreSQL: the default map without catalog_dsn,
 * read through the workers' hazard slots, and the start-up errors of a catalog or a shard 0
 * that cannot be reached. The catalog itself is exercised by tests/integration/t_catalog.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/catalog.h"
#include "proxy/tables.h"

#define SHARD0 "[shard.0]\nprimary = 127.0.0.1:1\n"
#define USER "[user.app]\npassword = app\n"

static cfg_config *load(const char *text)
{
    cfg_config *cfg = NULL;
    char err[512] = "";
    if (cfg_load_string(text, "t.ini", &cfg, err, sizeof err) != 0)
        print_error("%s\n", err);
    assert_non_null(cfg);
    return cfg;
}

static const char tables_ini[] =
    SHARD0 USER "[table.orders]\nshard_key = tenant_id\nkey_type = int\n"
                "[table.sales.orders]\nshard_key = tenant_id\nkey_type = text\n"
                "[table.public.items]\nshard_key = item_tenant\nkey_type = uuid\n"
                "[table.countries]\nomnisharded = true\n";

static void test_lookup_rules(void **state)
{
    cfg_config *cfg = load(tables_ini);
    px_tables *t;
    char err[256];
    assert_int_equal(px_tables_build(cfg, &t, err, sizeof err), 0);
    assert_int_equal(px_tables_count(t), 4);

    /* Qualified: the schema's own entry, else the unqualified one. */
    const px_table *pt = px_tables_find(t, "sales", "orders");
    assert_non_null(pt);
    assert_string_equal(pt->schema, "sales");
    assert_int_equal(pt->key_type, SM_KEY_TEXT);
    assert_int_equal(pt->key_oid, SM_OID_TEXT);
    pt = px_tables_find(t, "public", "orders");
    assert_non_null(pt);
    assert_string_equal(pt->schema, "");
    assert_int_equal(pt->key_type, SM_KEY_INT);
    assert_int_equal(pt->key_oid, SM_OID_INT8);
    assert_string_equal(pt->shard_key, "tenant_id");

    /* Unqualified: the unqualified entry, else public's. */
    assert_ptr_equal(px_tables_find(t, NULL, "orders"), pt);
    assert_ptr_equal(px_tables_find(t, "", "orders"), pt);
    pt = px_tables_find(t, NULL, "items");
    assert_non_null(pt);
    assert_string_equal(pt->schema, "public");
    assert_int_equal(pt->key_type, SM_KEY_UUID);
    assert_null(px_tables_find(t, "sales", "items"));
    assert_null(px_tables_find(t, NULL, "Orders"));
    assert_null(px_tables_find(t, NULL, "nothing"));

    pt = px_tables_find(t, "anywhere", "countries");
    assert_non_null(pt);
    assert_true(pt->omnisharded);
    assert_null(pt->shard_key);
    assert_int_equal(pt->key_column, -1);

    /* Two distinct key columns, each table pointing at its own. */
    int n;
    const char *const *cols = px_tables_key_columns(t, &n);
    assert_int_equal(n, 2);
    assert_string_equal(cols[px_tables_find(t, NULL, "orders")->key_column], "tenant_id");
    assert_string_equal(cols[px_tables_find(t, NULL, "items")->key_column], "item_tenant");
    for (int i = 0; i < px_tables_count(t); i++)
        assert_non_null(px_tables_at(t, i));
    assert_null(px_tables_at(t, 4));

    /* Every type is known: nothing to ask shard 0 (which does not exist here). */
    assert_int_equal(px_tables_resolve(t, cfg, err, sizeof err), 0);
    px_tables_free(t);
    cfg_free(cfg);
}

static void test_too_many_key_columns(void **state)
{
    char text[2048];
    size_t used = (size_t)snprintf(text, sizeof text, SHARD0);
    for (int i = 0; i < 9; i++)
        used += (size_t)snprintf(text + used, sizeof text - used,
                                 "[table.t%d]\nshard_key = k%d\nkey_type = int\n", i, i);
    cfg_config *cfg = load(text);
    px_tables *t = (px_tables *)&t;
    char err[256];
    assert_int_equal(px_tables_build(cfg, &t, err, sizeof err), -1);
    assert_null(t);
    assert_string_equal(err, "[table.t8]: more than 8 distinct shard_key column names; the tables must share "
                             "their shard-key names");
    cfg_free(cfg);
}

static void test_default_map(void **state)
{
    cfg_config *cfg =
        load("[pgshard]\nbuckets = 16\n" SHARD0 "[shard.1]\nprimary = 127.0.0.1:2\n"
             "[shard.2]\nprimary = 127.0.0.1:3\n" USER "[table.orders]\nshard_key = id\nkey_type = int\n");
    char err[256];
    px_catalog *cat = px_catalog_start(cfg, 2, err, sizeof err);
    assert_non_null(cat);
    assert_false(px_catalog_enabled(cat));
    assert_false(px_catalog_connected(cat));
    const sm_map *m = px_catalog_map(cat, 0);
    assert_ptr_equal(px_catalog_map(cat, 1), m);
    assert_int_equal(sm_map_version(m), 0);
    assert_int_equal(sm_map_buckets(m), 16);
    assert_int_equal(sm_map_nshards(m), 3);
    assert_int_equal(sm_map_bucket_shard(m, 5), 0);
    assert_int_equal(sm_map_bucket_shard(m, 6), 1);
    assert_int_equal(sm_map_bucket_shard(m, 15), 2);
    assert_non_null(px_tables_find(px_catalog_tables(cat), "public", "orders"));
    px_catalog_stop(cat);
    px_catalog_stop(NULL);
    cfg_free(cfg);
}

/* Port 1 on the loopback refuses at once. */
static void test_start_errors(void **state)
{
    char err[512];
    cfg_config *cfg = load("[pgshard]\ncatalog_dsn = host=127.0.0.1 port=1 dbname=cat user=u\n" SHARD0 USER);
    assert_null(px_catalog_start(cfg, 1, err, sizeof err));
    if (!strstr(err, "catalog (catalog_dsn): cannot connect: ") || !strstr(err, "refused"))
        print_error("%s\n", err);
    assert_non_null(strstr(err, "catalog (catalog_dsn): cannot connect: "));
    cfg_free(cfg);

    cfg = load("[pgshard]\nmonitor_dbname = appdb\n" SHARD0 USER "[table.orders]\nshard_key = id\n");
    assert_null(px_catalog_start(cfg, 1, err, sizeof err));
    if (!strstr(err, "reading the shard keys' types: shard 0's primary 127.0.0.1:1, database appdb: "))
        print_error("%s\n", err);
    assert_non_null(
        strstr(err, "reading the shard keys' types: shard 0's primary 127.0.0.1:1, database appdb: "));
    cfg_free(cfg);

    /* No plain password anywhere: nobody to ask with. */
    cfg = load(SHARD0 "[table.orders]\nshard_key = id\n");
    assert_null(px_catalog_start(cfg, 1, err, sizeof err));
    assert_non_null(strstr(err, "needs a user with a plain password (monitor_user)"));
    cfg_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_rules),
        cmocka_unit_test(test_too_many_key_columns),
        cmocka_unit_test(test_default_map),
        cmocka_unit_test(test_start_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
