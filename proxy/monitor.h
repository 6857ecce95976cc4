/* The monitor thread: polls every node of every shard with non-blocking libpq calls (one
 * poll() over all connections, so a hung node delays nobody; no libpq on a worker), keeps
 * the primary's WAL samples, computes lag, runs the per-node circuits and follows a
 * promotion, and publishes px_status snapshots. Workers read the newest snapshot through a
 * hazard slot of their own: no lock on their path. */
#ifndef PX_MONITOR_H
#define PX_MONITOR_H

#include <stdatomic.h>
#include <stddef.h>

#include "config/config.h"
#include "proxy/status.h"

typedef struct px_monitor px_monitor;

/* Starts the thread for cfg's shards (cfg must outlive the monitor). nreaders hazard slots
 * are made, one per reading thread. A first snapshot (every node unknown, node 0 primary)
 * is published before it returns. Returns NULL with err filled on failure. */
px_monitor *px_monitor_start(const cfg_config *cfg, int nreaders, char *err, size_t errlen);

/* Stops and joins the thread, frees every snapshot. Readers must be done. */
void px_monitor_stop(px_monitor *m);

/* The newest snapshot for reader slot `reader` (0 .. nreaders-1). It stays valid until the
 * same reader calls this again (or the monitor stops). Never NULL. */
const px_status *px_monitor_get(px_monitor *m, int reader);

/* Reads served per node, counted by the workers (relaxed atomics). */
atomic_ullong *px_monitor_reads(px_monitor *m, int shard, int node);

/* A worker saw a connect or query failure on a node: the monitor polls it at once instead
 * of waiting for the next round (and so opens its circuit sooner). Any thread. */
void px_monitor_report_failure(px_monitor *m, int shard, int node);

#endif
