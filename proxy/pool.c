/* Pools of server connections, one per (user, database) in each worker: the idle list,
 * the queue of clients waiting for a server, the parameters new clients are welcomed
 * with, and the periodic sweep of timeouts. No locking: a pool belongs to one worker. */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "proxy/merge.h"
#include "proxy/px.h"

#define PX_LOGIN_RETRY_MS 1000 /* pause after a failed server login, as PgBouncer's server_login_retry */
#define PX_POOL_LINGER_MS 5000 /* an unused pool is freed after this long */

px_pool *px_pool_get(px_worker *w, const px_user *user, const char *db, int shard, int node)
{
    pgs_node *it, *tmp;
    pgs_list_each (&w->pools, it, tmp) {
        px_pool *p = pgs_container_of(it, px_pool, node);
        if (p->shard == shard && p->nodeix == node && strcmp(p->user->cfg->name, user->cfg->name) == 0 &&
            strcmp(p->db_name, db) == 0) {
            px_pool_set_user(p, user); /* after a reload: the new password logs in new servers */
            return p;
        }
    }
    px_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): sibling is an array of pool pointers */
    p->sibling = calloc((size_t)w->px->cfg->nshards * PX_MAX_NODES, sizeof *p->sibling);
    if (!p->sibling) {
        free(p);
        return NULL;
    }
    p->w = w;
    px_pool_set_user(p, user);
    p->shard = shard;
    p->nodeix = node;
    snprintf(p->db_name, sizeof p->db_name, "%s", db);
    pgs_list_init(&p->servers);
    pgs_list_init(&p->idle);
    pgs_list_init(&p->waiting);
    pgs_list_init(&p->welcome_waiting);
    pgs_list_push_back(&w->pools, &p->node);
    return p;
}

/* The pool keeps the newest entry it has seen for its user name: a client that logged in
 * before a reload does not take the pool back to the old password. The pool's reference
 * follows its pointer; the old conf is freed here if nothing else holds it. */
void px_pool_set_user(px_pool *pool, const px_user *user)
{
    const px_user *old = pool->user;
    if (old == user || (old && old->conf->gen > user->conf->gen))
        return;
    pool->user = user;
    px_conf_hold(user->conf);
    if (old)
        px_conf_release(old->conf);
}

void px_pool_free(px_pool *pool)
{
    if (pool->user)
        px_conf_release(pool->user->conf);
    pgs_buf_free(&pool->welcome);
    if (pool->coll_state == PX_COLL_LIBC)
        freelocale(pool->coll);
    free(pool->coll_map);
    free(pool->sibling);
    free(pool);
}

/* "C" and "POSIX" order text by bytes; another libc locale by strcoll_l, which needs that
 * locale on this machine; ICU (provider 'i') pgshard cannot reproduce, nor a locale this
 * machine lacks: text is then never compared here. */
int px_pool_set_collated(px_pool *pool, const char *list, size_t len)
{
    char *map = NULL;
    if (len) {
        if (!(map = malloc(len + 1)))
            return -1;
        memcpy(map, list, len);
        map[len] = '\0';
    }
    free(pool->coll_map);
    pool->coll_map = map;
    pool->coll_at = uv_now(&pool->w->loop);
    return 0;
}

int px_pool_collation_locale(void *arg, const char *name, char *locale, size_t cap)
{
    const px_pool *pool = arg;
    size_t nlen = strlen(name);
    for (const char *at = pool->coll_map; at && *at;) {
        const char *end = strchr(at, ',');
        size_t len = end ? (size_t)(end - at) : strlen(at);
        const char *eq = memchr(at, '=', len);
        if (eq && (size_t)(eq - at) == nlen && memcmp(at, name, nlen) == 0) {
            size_t llen = len - nlen - 1;
            if (llen >= cap)
                return 0;
            memcpy(locale, eq + 1, llen);
            locale[llen] = '\0';
            return 1;
        }
        at = end ? end + 1 : at + len;
    }
    return 0;
}

void px_pool_set_collation(px_pool *pool, const char *datcollate, char provider)
{
    if (pool->coll_state != PX_COLL_UNKNOWN)
        return;
    pool->coll_state = PX_COLL_ICU;
    if (provider != 'c')
        return;
    if (strcmp(datcollate, "C") == 0 || strcmp(datcollate, "POSIX") == 0) {
        pool->coll_state = PX_COLL_BYTES;
        return;
    }
    locale_t loc = newlocale(LC_COLLATE_MASK, datcollate, (locale_t)0);
    if (!loc) {
        pgs_warn("collation_unknown",
                 "database \"%s\" sorts text by collation \"%s\", which this machine "
                 "lacks: cross-shard sorts on text are refused",
                 pool->db_name, datcollate);
        return;
    }
    pool->coll = loc;
    pool->coll_state = PX_COLL_LIBC;
}

/* Nothing points at a pool that has no server, no client and no waiter but the worker's
 * list and its siblings' tables. */
static bool pool_unused(const px_pool *pool)
{
    return pool->servers.n == 0 && pool->nclients == 0 && pool->waiting.n == 0 &&
           pool->welcome_waiting.n == 0;
}

/* Pools are keyed by whatever database name clients ask for, so one per name ever asked
 * would pile up (a scan of names that do not exist leaves a dead pool each). A pool that
 * stayed unused for PX_POOL_LINGER_MS is freed; a later client makes it again. */
static bool pool_reap(px_pool *pool, uint64_t now)
{
    if (!pool_unused(pool)) {
        pool->unused_since = 0;
        return false;
    }
    if (!pool->unused_since)
        pool->unused_since = now;
    if (now - pool->unused_since < PX_POOL_LINGER_MS || now < pool->retry_at)
        return false;
    px_worker *w = pool->w;
    pgs_node *it, *tmp;
    pgs_list_each (&w->pools, it, tmp) {
        px_pool *o = pgs_container_of(it, px_pool, node);
        for (int i = 0; i < w->px->cfg->nshards * PX_MAX_NODES; i++)
            if (o->sibling[i] == pool)
                o->sibling[i] = NULL;
    }
    pgs_list_remove(&w->pools, &pool->node);
    pgs_debug("pool_freed", "pool user=%s db=%s shard %d node %d unused for %u ms", pool->user->cfg->name,
              pool->db_name, pool->shard, pool->nodeix, (unsigned)(now - pool->unused_since));
    px_pool_free(pool);
    return true;
}

/* Opens server connections while clients wait for more than are being opened, up to
 * pool_size. A pool that has not yet learnt the server's parameters opens one. */
static void pool_kick(px_pool *pool)
{
    if (atomic_load(&pool->w->px->stopping) || atomic_load(&pool->w->px->paused) ||
        uv_now(&pool->w->loop) < pool->retry_at)
        return;
    size_t need = pool->waiting.n;
    if (!pool->welcome_ready && pool->welcome_waiting.n && need == 0)
        need = 1;
    int limit = pool->w->conf->cfg->pool_size;
    while ((size_t)pool->nconnecting < need && (int)pool->servers.n < limit) {
        if (!px_server_connect(pool)) {
            pgs_error("server_connect_failed", "cannot start a server connection");
            break;
        }
    }
}

void px_pool_want_welcome(px_pool *pool, px_client *cl)
{
    if (pool->welcome_ready) {
        px_client_welcome(cl);
        return;
    }
    px_client_set_state(cl, CL_WAIT_WELCOME, &pool->welcome_waiting);
    pool_kick(pool);
}

/* Gives the client an idle server at once (linking it) or queues it. Returns 0 either
 * way; the caller sees cl->server set when it was linked. */
int px_pool_acquire(px_pool *pool, px_client *cl)
{
    bool paused = atomic_load(&pool->w->px->paused);
    pgs_node *n;
    while ((n = paused ? NULL : pgs_list_pop_front(&pool->idle))) {
        px_server *sv = pgs_container_of(n, px_server, idle_node);
        if (!px_server_stale(sv)) {
            px_client_link(cl, sv);
            return 0;
        }
        px_server_close(sv, PX_STALE_ISO);
    }
    px_client_set_state(cl, CL_WAIT_SERVER, &pool->waiting);
    if (!cl->wait_start_ns)
        cl->wait_start_ns = uv_hrtime();
    if (!paused)
        pool_kick(pool);
    return 0;
}

/* RESUME: waiters get the idle servers, and new ones are opened for the rest. */
void px_pool_resume(px_pool *pool)
{
    pgs_node *n;
    while (pool->waiting.n && (n = pgs_list_pop_front(&pool->idle)))
        px_pool_server_ready(pool, pgs_container_of(n, px_server, idle_node));
    pool_kick(pool);
}

/* A server became idle: the longest-waiting client gets it, or it joins the idle list. */
void px_pool_server_ready(px_pool *pool, px_server *sv)
{
    if (sv->cancels.n)
        return; /* held until its cancel is done (cancel.c), which calls here again */
    pgs_node *n = atomic_load(&pool->w->px->paused) ? NULL : pgs_list_first(&pool->waiting);
    if (!n) {
        pgs_list_push_front(&pool->idle, &sv->idle_node);
        return;
    }
    px_client_link(pgs_container_of(n, px_client, wait_node), sv); /* leaves the queue */
}

void px_pool_login_done(px_pool *pool, px_server *sv)
{
    px_route_node_ok(pool->w, pool->shard, pool->nodeix);
    if (!pool->welcome_ready) {
        pool->welcome = sv->login_params;
        sv->login_params = (pgs_buf)PGS_BUF_INIT;
        pool->welcome_ready = true;
    }
    pgs_node *n;
    while ((n = pgs_list_first(&pool->welcome_waiting)))
        px_client_welcome(pgs_container_of(n, px_client, wait_node)); /* leaves the queue */
}

static void pool_fail_list(pgs_list *l, const uint8_t *err, size_t errlen)
{
    pgs_node *n;
    while ((n = pgs_list_first(l))) {
        px_client *cl = pgs_container_of(n, px_client, wait_node);
        px_client_set_state(cl, CL_IDLE, NULL);
        if (err)
            px_client_fatal_raw(cl, err, errlen);
        else
            px_client_fatal(cl, PGS_SQLSTATE_CONNECTION_FAILURE, "pgshard: cannot reach the server");
    }
}

/* Shutting down, starting up, too many connections, connection failures: SQLSTATE
 * classes 57 and 08, and 53300. */
static bool pool_err_transient(const uint8_t *err, size_t errlen)
{
    pgs_error_fields ef;
    if (errlen < PGS_HDR_LEN || pgs_error_parse(err + PGS_HDR_LEN, errlen - PGS_HDR_LEN, &ef) < 0)
        return false;
    return strncmp(ef.sqlstate, "57", 2) == 0 || strncmp(ef.sqlstate, "08", 2) == 0 ||
           strcmp(ef.sqlstate, PGS_SQLSTATE_TOO_MANY_CONNECTIONS) == 0;
}

/* A server closed. When it was still logging in and the pool has no other server, the
 * waiting clients get its error (the server's own message when it sent one) instead of
 * waiting for nothing; otherwise the pool opens replacements for whoever waits. */
void px_pool_server_gone(px_pool *pool, bool login_failed, const uint8_t *err, size_t errlen)
{
    if (!login_failed) {
        pool_kick(pool);
        return;
    }
    /* Others still connecting decide, or logged-in ones serve the waiters; either way no
     * new attempt before a pause, so an unreachable server is not hammered. */
    pool->retry_at = uv_now(&pool->w->loop) + PX_LOGIN_RETRY_MS;
    px_route_node_failed(pool->w, pool->shard, pool->nodeix);
    if (pool->servers.n > 0)
        return;
    /* Queued clients try another node (a replica) or wait for a primary (failover) when
     * the node is unreachable or going away; an error about them (a bad password, no such
     * database) is theirs to see. */
    if (!err || pool_err_transient(err, errlen))
        px_route_requeue(pool);
    pgs_buf b = PGS_BUF_INIT;
    if (!err) {
        pgs_msg_error(&b, "FATAL", PGS_SQLSTATE_CONNECTION_FAILURE,
                      "pgshard: cannot connect to the server for database \"%s\"", pool->db_name);
        err = b.data;
        errlen = b.len;
    }
    pool_fail_list(&pool->welcome_waiting, err, errlen);
    pool_fail_list(&pool->waiting, err, errlen);
    pgs_buf_free(&b);
}

static void pool_expire_waiters(pgs_list *l, uint64_t now, uint32_t timeout)
{
    pgs_node *n;
    while ((n = pgs_list_first(l))) {
        px_client *cl = pgs_container_of(n, px_client, wait_node);
        if (now - cl->wait_since < timeout)
            break;
        px_client_set_state(cl, CL_IDLE, NULL);
        px_client_fatal(cl, PGS_SQLSTATE_CONFIGURATION_LIMIT_EXCEEDED,
                        "pgshard: query_wait_timeout: no server connection within %u ms", timeout);
    }
}

bool px_pool_tick(px_pool *pool, uint64_t now)
{
    if (pool_reap(pool, now))
        return true;
    const cfg_config *cfg = pool->w->conf->cfg;
    if (cfg->query_wait_timeout_ms) {
        pool_expire_waiters(&pool->waiting, now, cfg->query_wait_timeout_ms);
        pool_expire_waiters(&pool->welcome_waiting, now, cfg->query_wait_timeout_ms);
    }
    pgs_node *it, *tmp;
    pgs_list_each (&pool->servers, it, tmp) {
        px_server *sv = pgs_container_of(it, px_server, node);
        if ((sv->state == SV_CONNECTING || sv->state == SV_TLS || sv->state == SV_LOGIN) &&
            now - sv->since >= cfg->server_connect_timeout_ms)
            px_server_close(sv, "server_connect_timeout");
    }
    pool_kick(pool);
    pgs_node *n;
    while (cfg->server_idle_timeout_ms && (n = pgs_list_last(&pool->idle))) {
        px_server *sv = pgs_container_of(n, px_server, idle_node);
        if (now - sv->since < cfg->server_idle_timeout_ms)
            break;
        px_server_close(sv, "server_idle_timeout");
    }
    return false;
}
