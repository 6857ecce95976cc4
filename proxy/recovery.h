/* Two-phase commit's gids and the recovery of in-doubt transactions: a thread that, at start
 * and every two_phase_recovery_interval_ms, finds pgshard's prepared transactions on every
 * shard's primary and commits those whose decision shard 0 recorded, rolling back the rest.
 * The commit path itself (PREPARE, the decision, COMMIT PREPARED) is in fanout.c. */
#ifndef PX_RECOVERY_H
#define PX_RECOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "proxy/stats.h"

/* "pgshard_" + 16 hex digits (the proxy's random id) + "_" + 16 hex digits (a sequence). */
#define PX_GID_PREFIX "pgshard_"
#define PX_GID_LEN (sizeof PX_GID_PREFIX - 1 + 16 + 1 + 16)

/* Writes the gid of transaction seq of the proxy proxy_id into out (at least PX_GID_LEN + 1
 * bytes). Returns 0, or -1 when out is too small. */
int px_gid_format(char *out, size_t len, uint64_t proxy_id, uint64_t seq);

/* Whether gid is exactly one px_gid_format writes (lower-case hex only); if so, and the
 * pointers are not NULL, its two numbers. Only such gids are ever resolved, and being hex
 * they are safe inside a quoted SQL literal. */
bool px_gid_parse(const char *gid, uint64_t *proxy_id, uint64_t *seq);

typedef struct px_recovery px_recovery;

/* Starts the thread for cfg's shards (cfg must outlive it), counting what it resolves in
 * gs->twopc_recovered (gs must outlive it too). The first round runs in the thread, so a
 * shard that is down delays nothing here. Returns NULL with err filled on failure. */
px_recovery *px_recovery_start(const cfg_config *cfg, px_global_stats *gs, char *err, size_t errlen);

/* Stops and joins the thread (waiting at most for the statement or connection attempt it is
 * in, each bounded by a timeout) and closes its connections. NULL is fine. */
void px_recovery_stop(px_recovery *r);

#endif
