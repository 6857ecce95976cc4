/* The runtime configuration (px_conf) built from a loaded file: the secrets each
 * [user.NAME] password yields for authenticating clients (SCRAM, md5) and for logging in to
 * servers, and the primary's resolved address. Built at start and at each reload, off the
 * workers' threads, and freed by its last reference (who holds one: px.h, px_conf); the
 * exchanges themselves are in client.c and server.c. */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/px.h"

#define PX_SCRAM_ITERATIONS 4096

const px_user *px_user_find(const px_conf *conf, const char *name)
{
    for (int i = 0; i < conf->cfg->nusers; i++)
        if (strcmp(conf->users[i].cfg->name, name) == 0)
            return &conf->users[i];
    return NULL;
}

static bool is_md5_secret(const char *pw)
{
    if (strncmp(pw, "md5", 3) != 0 || strlen(pw) != 35)
        return false;
    for (int i = 3; i < 35; i++)
        if (!((pw[i] >= '0' && pw[i] <= '9') || (pw[i] >= 'a' && pw[i] <= 'f')))
            return false;
    return true;
}

static int conf_users(px_conf *conf, char *err, size_t errlen)
{
    conf->users = calloc((size_t)(conf->cfg->nusers ? conf->cfg->nusers : 1), sizeof *conf->users);
    if (!conf->users) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < conf->cfg->nusers; i++) {
        px_user *u = &conf->users[i];
        u->conf = conf;
        u->cfg = &conf->cfg->users[i];
        const char *pw = u->cfg->password;
        if (!pw)
            continue;
        if (strncmp(pw, "SCRAM-SHA-256$", 14) == 0) {
            if (px_scram_secret_parse(pw, &u->scram) < 0) {
                snprintf(err, errlen, "%s: [user.%s] password: malformed SCRAM secret", conf->cfg->path,
                         u->cfg->name);
                return -1;
            }
            u->has_scram = true;
        } else if (is_md5_secret(pw)) {
            memcpy(u->md5, pw, 36);
            u->has_md5 = true;
        } else {
            if (px_scram_secret_from_password(pw, PX_SCRAM_ITERATIONS, &u->scram) < 0) {
                snprintf(err, errlen, "cannot derive a SCRAM secret for user %s", u->cfg->name);
                return -1;
            }
            px_md5_secret(pw, u->cfg->name, u->md5);
            u->has_scram = u->has_md5 = u->has_plain = true;
        }
    }
    return 0;
}

/* Resolves host:port once; the workers connect to the stored address. */
int px_resolve(const char *host, uint16_t port, struct sockaddr_storage *out, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    char ports[8];
    hints.ai_socktype = SOCK_STREAM;
    snprintf(ports, sizeof ports, "%u", port);
    int r = getaddrinfo(host, ports, &hints, &res);
    if (r != 0 || !res) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(r));
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

/* Every node's address, resolved once: the workers connect to these. */
static int conf_nodes(px_conf *conf, char *err, size_t errlen)
{
    const cfg_config *cfg = conf->cfg;
    conf->nshards = cfg->nshards;
    conf->nodes = calloc((size_t)cfg->nshards * PX_MAX_NODES, sizeof *conf->nodes);
    if (!conf->nodes) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int s = 0; s < cfg->nshards; s++) {
        const cfg_shard *sh = &cfg->shards[s];
        struct sockaddr_storage *at = &conf->nodes[(size_t)s * PX_MAX_NODES];
        if (px_resolve(sh->primary.host, sh->primary.port, &at[0], err, errlen) < 0)
            return -1;
        for (int r = 0; r < sh->nreplicas; r++)
            if (px_resolve(sh->replicas[r].node.host, sh->replicas[r].node.port, &at[1 + r], err, errlen) < 0)
                return -1;
    }
    return 0;
}

const struct sockaddr *px_conf_node(const px_conf *conf, int shard, int node)
{
    return (const struct sockaddr *)&conf->nodes[(size_t)shard * PX_MAX_NODES + (size_t)node];
}

const cfg_node *px_conf_cfg_node(const px_conf *conf, int shard, int node)
{
    const cfg_shard *sh = &conf->cfg->shards[shard];
    return node == 0 ? &sh->primary : &sh->replicas[node - 1].node;
}

/* The counter slot for a user name, shared by every conf that names the user. */
static atomic_int *conf_user_count(px_proxy *px, const char *name)
{
    for (int i = 0; i < px->nuser_counts; i++)
        if (strcmp(px->user_counts[i].name, name) == 0)
            return &px->user_counts[i].n;
    if (px->nuser_counts == PX_MAX_USER_NAMES)
        return NULL;
    px_user_count *c = &px->user_counts[px->nuser_counts++];
    snprintf(c->name, sizeof c->name, "%s", name);
    return &c->n;
}

static void conf_free(px_conf *conf)
{
    free(conf->users);
    free(conf->nodes);
    cfg_free(conf->cfg);
    free(conf);
}

px_conf *px_conf_build(px_proxy *px, cfg_config *cfg, char *err, size_t errlen)
{
    px_conf *conf = calloc(1, sizeof *conf);
    if (!conf) {
        snprintf(err, errlen, "out of memory");
        cfg_free(cfg);
        return NULL;
    }
    conf->cfg = cfg;
    conf->gen = px->conf ? px->conf->gen + 1 : 1;
    atomic_init(&conf->refs, 1);
    if (!px->user_counts && !(px->user_counts = calloc(PX_MAX_USER_NAMES, sizeof *px->user_counts))) {
        snprintf(err, errlen, "out of memory");
        conf_free(conf);
        return NULL;
    }
    if (conf_users(conf, err, errlen) < 0 || conf_nodes(conf, err, errlen) < 0) {
        conf_free(conf);
        return NULL;
    }
    for (int i = 0; i < cfg->nusers; i++) {
        if (!(conf->users[i].nconn = conf_user_count(px, cfg->users[i].name))) {
            snprintf(err, errlen, "more than %d user names", PX_MAX_USER_NAMES);
            conf_free(conf);
            return NULL;
        }
    }
    return conf;
}

const px_conf *px_conf_hold(const px_conf *conf)
{
    /* The count is bookkeeping beside the immutable contents, hence the cast. Relaxed is
     * enough: the holder already has a reference, so the conf cannot go meanwhile. */
    atomic_fetch_add_explicit(&((px_conf *)conf)->refs, 1, memory_order_relaxed);
    return conf;
}

/* The release that drops the count to 0 frees the conf: acq_rel orders every holder's reads
 * of it before the free, whichever thread they ran on. */
void px_conf_release(const px_conf *conf)
{
    if (conf && atomic_fetch_sub_explicit(&((px_conf *)conf)->refs, 1, memory_order_acq_rel) == 1)
        conf_free((px_conf *)conf);
}
