/* A client's transaction: the server links it holds (one per shard it touches) and what
 * the client remembers per shard between transactions (read-your-writes, nodes to avoid).
 * Routing decides where a transaction goes; this file only records that decision and
 * keeps the two directions of a link (client -> server, server -> link) in agreement.
 * Pools and the relay of bytes are elsewhere (pool.c, client.c, server.c). */
#include <stdlib.h>

#include "proxy/monitor.h"
#include "proxy/px.h"

int px_xact_init(px_client *cl, int nshards)
{
    px_xact *x = &cl->x;
    x->links = &x->one;
    x->one.cl = cl;
    x->route_bucket = PX_MOVE_NO_KEY;
    x->memo = calloc((size_t)nshards, sizeof *x->memo);
    return x->memo ? 0 : UV_ENOMEM;
}

void px_xact_free(px_client *cl)
{
    px_xact *x = &cl->x;
    if (x->links && x->links != &x->one)
        free(x->links);
    x->links = &x->one;
    free(x->parked);
    x->parked = NULL;
    x->nparked = 0;
    free(x->memo);
    x->memo = NULL;
    pgs_buf_free(&x->begin);
    pgs_buf_free(&x->unnamed);
    x->unnamed_known = false;
    x->deferred = PX_DEFER_NONE;
}

void px_xact_plan(px_client *cl, int shard, bool write, bool replica)
{
    px_link *l = &cl->x.one;
    l->cl = cl;
    l->shard = shard;
    l->write = write;
    l->replica = replica;
}

px_link *px_xact_attach(px_client *cl, px_server *sv)
{
    px_xact *x = &cl->x;
    x->links = &x->one;
    px_link *l = &x->one;
    l->cl = cl;
    l->sv = sv;
    l->fresh = true;
    l->sent_any = false;
    l->start_ns = 0;
    x->nlinks = 1;
    sv->link = l;
    return l;
}

px_server *px_xact_detach(px_client *cl)
{
    px_xact *x = &cl->x;
    if (!x->nlinks)
        return NULL;
    px_link *l = &x->links[0];
    px_server *sv = l->sv;
    if (sv)
        sv->link = NULL;
    l->sv = NULL;
    l->fresh = false;
    x->nlinks = 0;
    return sv;
}

int px_xact_park_server(px_client *cl, int s, px_server *sv, bool write)
{
    px_xact *x = &cl->x;
    if (!x->parked && !(x->parked = calloc(cl->conn.w->conf->nshards, sizeof *x->parked)))
        return -1;
    if (x->parked[s].sv)
        return -1;
    x->parked[s] = (px_link){.cl = cl, .sv = sv, .shard = s, .write = write, .parked = true};
    sv->link = &x->parked[s];
    x->nparked++;
    return 0;
}

px_server *px_xact_take_parked(px_client *cl, int s)
{
    px_xact *x = &cl->x;
    px_link *l = x->nparked && s >= 0 ? &x->parked[s] : NULL;
    px_server *sv = l ? l->sv : NULL;
    if (sv) {
        memset(l, 0, sizeof *l);
        x->nparked--;
    }
    return sv;
}

int px_xact_park(px_client *cl)
{
    px_xact *x = &cl->x;
    px_link *from = &x->links[0];
    if (px_xact_park_server(cl, from->shard, from->sv, from->write) < 0)
        return -1;
    from->sv = NULL;
    from->fresh = false;
    x->nlinks = 0;
    return 0;
}

px_server *px_xact_unpark(px_client *cl, int shard)
{
    px_xact *x = &cl->x;
    bool write = x->nparked && shard >= 0 && x->parked[shard].write;
    px_server *sv = px_xact_take_parked(cl, shard);
    if (!sv)
        return NULL;
    x->deferred = PX_DEFER_NONE; /* it is in the transaction: no BEGIN for it */
    px_xact_plan(cl, shard, write, false);
    px_xact_attach(cl, sv);
    return sv;
}

void px_xact_parked_lost(px_link *l)
{
    px_xact *x = &l->cl->x;
    l->sv->link = NULL;
    memset(l, 0, sizeof *l);
    x->nparked--;
    x->multi_lost = true;
}

void px_xact_drop_parked(px_client *cl)
{
    px_xact *x = &cl->x;
    for (int s = 0; x->nparked && s < cl->conn.w->conf->nshards; s++) {
        px_server *sv = x->parked[s].sv;
        if (sv) /* closing it takes it off parked[] (px_xact_parked_lost) */
            px_server_close(sv, "its client left in the middle of a transaction over several shards");
    }
    x->multi_lost = false;
}

/* The pool of the client's user and database on a node, found through its home pool's
 * sibling table so that the hot path does no string compare. */
px_pool *px_xact_pool(px_client *cl, int shard, int node)
{
    px_pool *home = cl->pool, **slot = &home->sibling[shard * PX_MAX_NODES + node], *pool = *slot;
    if (!pool && !(pool = *slot = px_pool_get(cl->conn.w, cl->user, cl->db_name, shard, node)))
        return NULL;
    px_pool_set_user(pool, home->user); /* after a reload, as px_pool_get does */
    return pool;
}

int px_xact_begin(px_client *cl, const px_route *d)
{
    px_worker *w = cl->conn.w;
    if (d->verdict == PX_ROUTE_REFUSE) {
        cl->refuse = d->refuse;
        return 1;
    }
    px_server *sv = px_xact_unpark(cl, d->shard); /* a transaction over several shards returns */
    if (sv) {
        px_client_link(cl, sv);
        return 0;
    }
    px_xact_plan(cl, d->shard, d->write, d->replica);
    if (d->verdict == PX_ROUTE_WAIT_PRIMARY) {
        px_client_set_state(cl, CL_WAIT_SERVER, &w->primary_waiters);
        if (!cl->wait_start_ns)
            cl->wait_start_ns = uv_hrtime();
        return 0;
    }
    if (d->replica)
        atomic_fetch_add_explicit(px_monitor_reads(w->px->mon, d->shard, d->node), 1, memory_order_relaxed);
    px_pool *pool = px_xact_pool(cl, d->shard, d->node);
    return pool ? px_pool_acquire(pool, cl) : -1;
}
