/* The proxy's view of the shard map and of its tables. At start it builds the table
 * registry (tables.h) and loads the map: from the catalog database when catalog_dsn is set
 * (a catalog that cannot be read stops the start), else the default map of the config's
 * shards and buckets, version 0. With a catalog, a thread then LISTENs on pgshard_map on a
 * connection of its own, reloads and publishes each new map (an immutable sm_map), checks
 * map_version every few seconds as a safety net, heartbeats the proxies row every second,
 * and keeps the last map while the catalog is away, reconnecting with backoff. Workers read
 * the newest map through a hazard slot of their own: one atomic load when nothing changed.
 * How a query is routed with the map is not decided here. */
#ifndef PX_CATALOG_H
#define PX_CATALOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "proxy/tables.h"
#include "shardmap/map.h"

typedef struct px_catalog px_catalog;

/* Starts as described above for cfg (which must outlive the catalog), with nreaders hazard
 * slots, one per reading thread (the workers, by id). Blocks while it resolves the key
 * types and loads the first map. Returns NULL with err filled on failure. */
px_catalog *px_catalog_start(const cfg_config *cfg, int nreaders, char *err, size_t errlen);

/* Stops and joins the thread (deleting this proxy's proxies row when the catalog is
 * reachable) and frees every map. Readers must be done. NULL is fine. */
void px_catalog_stop(px_catalog *cat);

/* The newest map, for reader slot reader (a worker's id). It stays valid until the same
 * reader calls px_catalog_map again, so a worker takes it once per statement it routes and
 * does not keep it across loop callbacks. Never NULL. */
const sm_map *px_catalog_map(px_catalog *cat, int reader);

/* The table registry; immutable, valid until px_catalog_stop. */
const px_tables *px_catalog_tables(const px_catalog *cat);

/* Whether a catalog is configured (catalog_dsn), and whether the listener's connection to
 * it is up right now (always false without one). Any thread. */
bool px_catalog_enabled(const px_catalog *cat);
bool px_catalog_connected(const px_catalog *cat);

/* The lease (catalog_lease_ms): whether the catalog was last read successfully (a load or
 * a version check) longer ago than that at now_ms (uv_now: the monotonic clock in ms), so
 * that a write might go where a move has taken its key away meanwhile. Measured from the
 * start of that read, so a process stopped and continued has lapsed until it reads again.
 * Always false without a catalog or with catalog_lease_ms = 0. One atomic load; any thread. */
bool px_catalog_lease_lapsed(const px_catalog *cat, uint64_t now_ms);

/* Moves. The thread calls fn(arg) after each map it publishes (and once at once), from its
 * own thread; fn NULL stops that, and returns only when no call is running. Main thread. */
typedef void (*px_catalog_watch_fn)(void *arg);
void px_catalog_watch(px_catalog *cat, px_catalog_watch_fn fn, void *arg);
/* Reader (a worker) has no open transaction that may touch the keys frozen in the map of
 * serial (sm_map_serial) or later: once every reader says so for the newest map, the thread
 * acknowledges its freezes in the catalog. wake: the map freezes keys, so tell the thread
 * now. Any thread. */
void px_catalog_cleared(px_catalog *cat, int reader, uint64_t serial, bool wake);
/* Load per bucket: reader's counters, one per bucket (*nbuckets of them), which its worker
 * adds the statements it routes by a key to (relaxed atomics); the thread adds them to
 * pgshard.bucket_load every few seconds. NULL (and 0) without a catalog. */
_Atomic uint32_t *px_catalog_hits(px_catalog *cat, int reader, uint32_t *nbuckets);
/* Freezes acknowledged in the catalog since start. */
unsigned long long px_catalog_acks(const px_catalog *cat);

#endif
