/* pgshard-migrate init: creates the catalog the config's catalog_dsn names and fills it
 * with the default map, then says what it did. Safe to run again: it changes nothing on a
 * catalog that is complete, and refuses one made for another number of shards or buckets. */
#include <libpq-fe.h>

#include "migrate/mig.h"
#include "shardmap/catalog.h"

int mig_init(const mig_opts *o)
{
    const cfg_config *cfg = o->cfg;
    char err[512];
    PGconn *conn = mig_connect(o);
    if (!conn)
        return MIG_EXIT_ERROR;
    int did = sm_catalog_init(conn, (uint32_t)cfg->nshards, cfg->buckets, err, sizeof err);
    if (did < 0) {
        fprintf(o->err, "pgshard-migrate: init: %s\n", err);
        PQfinish(conn);
        return MIG_EXIT_ERROR;
    }
    uint64_t version = 0;
    if (sm_catalog_version(conn, &version, err, sizeof err) < 0) {
        fprintf(o->err, "pgshard-migrate: init: %s\n", err);
        PQfinish(conn);
        return MIG_EXIT_ERROR;
    }
    const char *db = PQdb(conn), *host = PQhost(conn), *port = PQport(conn);
    fprintf(o->out, "catalog: database %s on %s:%s\n", db, host, port);
    if (did & SM_CATALOG_CREATED)
        fprintf(o->out, "created: schema pgshard with bucket_map, tenant_map, map_version and proxies\n");
    if (did & SM_CATALOG_FILLED)
        fprintf(o->out, "filled bucket_map: %u buckets over %d shards (the default map)\n", cfg->buckets,
                cfg->nshards);
    if (did & SM_CATALOG_VERSIONED)
        fprintf(o->out, "wrote map_version 1\n");
    if (did == 0)
        fprintf(o->out, "nothing to do: the catalog is complete (%u buckets, %d shards, map_version %llu)\n",
                cfg->buckets, cfg->nshards, (unsigned long long)version);
    else
        fprintf(o->out, "done: map_version %llu\n", (unsigned long long)version);
    PQfinish(conn);
    return MIG_EXIT_OK;
}
