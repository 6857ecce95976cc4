/* pgshard's entry point: options, config, the listening sockets, the worker threads and
 * the signals that stop them. Everything else happens in the workers. */
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/allocfail.h"
#include "common/log.h"
#include "proxy/monitor.h"
#include "proxy/px.h"
#include "proxy/testhook.h"

static void usage(FILE *f)
{
    fprintf(f,
            "pgshard %s: a sharding PostgreSQL proxy\n\n"
            "Usage: pgshard -c FILE [options]\n\n"
            "  -c, --config FILE   the INI configuration to run (required)\n"
            "  -t, --check         check the configuration and exit\n"
            "  -h, --help          show this help\n"
            "  -V, --version       show the version\n\n"
            "Signals: SIGINT and SIGTERM stop pgshard.\n",
            PGS_VERSION);
}

/* Binds one SO_REUSEPORT socket per worker, so the kernel spreads connections over them. */
static int listen_socket(const cfg_config *cfg, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    if (px_resolve(cfg->listen_addr, cfg->listen_port, &ss, err, errlen) < 0)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&ss,
             ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) < 0) {
        snprintf(err, errlen, "cannot listen on %s:%u: %s", cfg->listen_addr, cfg->listen_port,
                 strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

typedef struct px_main {
    px_proxy *px;
    uv_signal_t sigint, sigterm, sighup;
    uv_timer_t drain;
    uint64_t deadline;
} px_main;

static void stop_now(px_main *m)
{
    atomic_store(&m->px->stopping, true);
    for (int i = 0; i < m->px->nworkers; i++)
        px_worker_request_stop(&m->px->workers[i]);
    uv_stop(m->drain.loop);
}

/* While draining: done when the last client has gone, or at shutdown_timeout. */
static void on_drain_tick(uv_timer_t *t)
{
    px_main *m = t->data;
    int left = atomic_load(&m->px->nclients);
    if (left > 0 && uv_now(t->loop) < m->deadline)
        return;
    if (left > 0)
        pgs_warn("shutdown", "shutdown_timeout: closing %d clients still in a transaction", left);
    stop_now(m);
}

static bool same_node(const cfg_node *a, const cfg_node *b)
{
    return a->port == b->port && strcmp(a->host, b->host) == 0;
}

/* The nodes of every shard: the monitor and the workers number them at start. */
static bool same_topology(const cfg_config *a, const cfg_config *b)
{
    if (a->nshards != b->nshards)
        return false;
    for (int s = 0; s < a->nshards; s++) {
        const cfg_shard *x = &a->shards[s], *y = &b->shards[s];
        if (!same_node(&x->primary, &y->primary) || x->nreplicas != y->nreplicas)
            return false;
        for (int r = 0; r < x->nreplicas; r++)
            if (!same_node(&x->replicas[r].node, &y->replicas[r].node))
                return false;
    }
    return true;
}

static bool same_tables(const cfg_config *a, const cfg_config *b)
{
    if (a->ntables != b->ntables)
        return false;
    for (int i = 0; i < a->ntables; i++) {
        const cfg_table *x = &a->tables[i], *y = &b->tables[i];
        if (strcmp(x->schema, y->schema) != 0 || strcmp(x->name, y->name) != 0 ||
            strcmp(x->shard_key, y->shard_key) != 0 || x->omnisharded != y->omnisharded ||
            x->key_type != y->key_type)
            return false;
    }
    return true;
}

static bool same_string(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* The catalog thread and the table registry were made from the startup config: buckets,
 * catalog_dsn, catalog_lease_ms (the thread keeps the lease), default_shard and the tables
 * keep their running values. A copy that cannot be made leaves the new file's value, which
 * nothing reads but SHOW CONFIG. */
static void reload_keep_sharding(const cfg_config *old, cfg_config *neu)
{
    if (old->buckets == neu->buckets && old->default_shard == neu->default_shard &&
        old->catalog_lease_ms == neu->catalog_lease_ms && same_string(old->catalog_dsn, neu->catalog_dsn) &&
        same_tables(old, neu))
        return;
    pgs_warn(
        "reload_restart_needed",
        "buckets, catalog_dsn, catalog_lease_ms, default_shard and [table.NAME] change only at restart; the "
        "running ones stay");
    neu->buckets = old->buckets;
    neu->default_shard = old->default_shard;
    neu->catalog_lease_ms = old->catalog_lease_ms;
    char *dsn = old->catalog_dsn ? strdup(old->catalog_dsn) : NULL;
    if (dsn || !old->catalog_dsn) {
        free(neu->catalog_dsn);
        neu->catalog_dsn = dsn;
    }
    cfg_table *tables = old->ntables ? malloc((size_t)old->ntables * sizeof *tables) : NULL;
    if (tables || !old->ntables) {
        if (tables)
            memcpy(tables, old->tables, (size_t)old->ntables * sizeof *tables);
        free(neu->tables);
        neu->tables = tables;
        neu->ntables = old->ntables;
    }
}

/* The recovery thread was started, or not, for the startup config, and reads its timings
 * from it: two-phase commit is switched and tuned only by a restart. */
static void reload_keep_two_phase(const cfg_config *old, cfg_config *neu)
{
    if (old->two_phase_commit != neu->two_phase_commit ||
        old->two_phase_recovery_interval_ms != neu->two_phase_recovery_interval_ms ||
        old->two_phase_recovery_grace_ms != neu->two_phase_recovery_grace_ms)
        pgs_warn("reload_restart_needed",
                 "two_phase_commit, two_phase_recovery_interval_ms and two_phase_recovery_grace_ms change "
                 "only at restart; the running ones stay");
    neu->two_phase_commit = old->two_phase_commit;
    neu->two_phase_recovery_interval_ms = old->two_phase_recovery_interval_ms;
    neu->two_phase_recovery_grace_ms = old->two_phase_recovery_grace_ms;
}

/* Keys that only a restart can change keep their running values in the new config, so
 * that SHOW CONFIG tells the truth; a warning names them. */
static void reload_keep_fixed(const cfg_config *old, cfg_config *neu)
{
    reload_keep_sharding(old, neu);
    bool changed = strcmp(old->listen_addr, neu->listen_addr) != 0 || old->listen_port != neu->listen_port ||
                   old->workers != neu->workers || old->client_tls != neu->client_tls ||
                   old->server_tls != neu->server_tls ||
                   strcmp(old->tls_cert_file, neu->tls_cert_file) != 0 ||
                   strcmp(old->tls_key_file, neu->tls_key_file) != 0 ||
                   strcmp(old->server_tls_ca_file, neu->server_tls_ca_file) != 0 ||
                   old->metrics_port != neu->metrics_port || old->log_format != neu->log_format ||
                   old->log_level != neu->log_level;
    if (changed)
        pgs_warn("reload_restart_needed",
                 "listen_addr, listen_port, workers, TLS, metrics_port and log settings "
                 "change only at restart; their running values stay");
    cfg_shard *keep = same_topology(old, neu) ? NULL : malloc((size_t)old->nshards * sizeof *keep);
    if (keep) {
        pgs_warn("reload_restart_needed",
                 "shards, primaries and replicas change only at restart; the running "
                 "ones stay");
        memcpy(keep, old->shards, (size_t)old->nshards * sizeof *keep);
        free(neu->shards);
        neu->shards = keep;
        neu->nshards = old->nshards;
    }
    memcpy(neu->listen_addr, old->listen_addr, sizeof neu->listen_addr);
    neu->listen_port = old->listen_port;
    neu->workers = old->workers;
    neu->client_tls = old->client_tls;
    neu->server_tls = old->server_tls;
    memcpy(neu->tls_cert_file, old->tls_cert_file, sizeof neu->tls_cert_file);
    memcpy(neu->tls_key_file, old->tls_key_file, sizeof neu->tls_key_file);
    memcpy(neu->server_tls_ca_file, old->server_tls_ca_file, sizeof neu->server_tls_ca_file);
    neu->metrics_port = old->metrics_port;
    neu->log_format = old->log_format;
    neu->log_level = old->log_level;
    reload_keep_two_phase(old, neu);
}

/* SIGHUP (and the admin RELOAD): load the file again; a bad file is refused with its
 * reason and the running config stays. That includes a server_tls_ca_file that could not
 * be read: the running CA stays in force (TLS settings change only at restart), but a file
 * that would stop the next start is refused now, while someone is looking. Workers switch
 * when they run the posted job, so no client is dropped: pools and clients keep what they
 * had and pick up new users, passwords, pool sizes and timeouts from then on. */
static void on_sighup(uv_signal_t *s, int signum)
{
    px_main *m = s->data;
    px_proxy *px = m->px;
    char err[512];
    cfg_config *cfg;
    (void)signum;
    px_conf *conf = NULL;
    pgs_af_mark("sighup");
    if (cfg_load(px->conf->cfg->path, &cfg, err, sizeof err) == 0) {
        if (px_tls_check_server_ca(cfg, err, sizeof err) == 0) {
            reload_keep_fixed(px->conf->cfg, cfg);
            conf = px_conf_build(px, cfg, err, sizeof err);
        } else {
            cfg_free(cfg);
        }
    }
    if (!conf) {
        pgs_error("reload_failed", "%s; the running configuration stays", err);
        return;
    }
    px_conf_release(px->conf);
    px->conf = conf;
    for (int i = 0; i < px->nworkers; i++)
        px_worker_post_conf(&px->workers[i], conf);
    pgs_info("reload", "configuration reloaded from %s: %d users, pool_size %d", conf->cfg->path,
             conf->cfg->nusers, conf->cfg->pool_size);
}

/* SIGINT stops at once (closing every socket); SIGTERM stops accepting and lets running
 * transactions finish for up to shutdown_timeout; a second SIGTERM stops at once. */
static void on_signal(uv_signal_t *s, int signum)
{
    px_main *m = s->data;
    px_proxy *px = m->px;
    if (signum == SIGINT || atomic_load(&px->draining)) {
        pgs_info("shutdown", "received %s, stopping now", signum == SIGINT ? "SIGINT" : "SIGTERM");
        stop_now(m);
        return;
    }
    pgs_info("shutdown", "received SIGTERM: no new clients, waiting up to %u ms for %d clients",
             px->conf->cfg->shutdown_timeout_ms, atomic_load(&px->nclients));
    atomic_store(&px->draining, true);
    for (int i = 0; i < px->nworkers; i++)
        px_worker_request_drain(&px->workers[i]);
    m->deadline = uv_now(s->loop) + px->conf->cfg->shutdown_timeout_ms;
    uv_timer_start(&m->drain, on_drain_tick, 50, 50);
}

static int run(px_proxy *px)
{
    char err[512];
    cfg_config *cfg = px->cfg;
    if (px_tls_setup(px, err, sizeof err) < 0) {
        pgs_error("startup_failed", "%s", err);
        return 1;
    }
    px->nworkers = cfg->workers;
    px->workers = calloc((size_t)px->nworkers, sizeof *px->workers);
    if (!px->workers)
        return 1;
    for (int s = 0; s < cfg->nshards; s++)
        px->has_replicas = px->has_replicas || cfg->shards[s].nreplicas > 0;
    /* Without replicas there is nothing to choose between: no monitor, no extra connection. */
    if (px->has_replicas && !(px->mon = px_monitor_start(cfg, px->nworkers, err, sizeof err))) {
        pgs_error("startup_failed", "monitor: %s", err);
        return 1;
    }
    /* The map is there before the first client: a catalog that cannot be read stops the
     * start rather than routing by a map that may be wrong. */
    if (!(px->cat = px_catalog_start(cfg, px->nworkers, err, sizeof err))) {
        pgs_error("startup_failed", "%s", err);
        px_monitor_stop(px->mon);
        px->mon = NULL;
        return 1;
    }
    px->sharded = cfg->nshards > 1 || px_tables_count(px_catalog_tables(px->cat)) > 0;
    /* Names this process's two-phase transactions apart from other proxies' and from its
     * own earlier lives', so recovery never confuses them. */
    if (getrandom(&px->instance_id, sizeof px->instance_id, 0) != (ssize_t)sizeof px->instance_id)
        px->instance_id = uv_hrtime() ^ ((uint64_t)getpid() << 32);
    /* In-doubt transactions left by a pgshard that died are resolved in the background, so
     * that a shard that is down does not stop the start. */
    if (cfg->two_phase_commit && !(px->rec = px_recovery_start(cfg, &px->gs, err, sizeof err))) {
        pgs_error("startup_failed", "%s", err);
        px_catalog_stop(px->cat);
        px->cat = NULL;
        px_monitor_stop(px->mon);
        px->mon = NULL;
        return 1;
    }
    /* The signal handlers come first: a client may connect, and a SIGTERM arrive, as soon
     * as the first worker listens. */
    uv_loop_t loop;
    px_main m = {.px = px};
    int ur;
    if ((ur = uv_loop_init(&loop)) < 0 || (ur = uv_signal_init(&loop, &m.sigint)) < 0 ||
        (ur = uv_signal_init(&loop, &m.sigterm)) < 0 || (ur = uv_signal_init(&loop, &m.sighup)) < 0 ||
        (ur = uv_timer_init(&loop, &m.drain)) < 0) {
        pgs_error("startup_failed", "main loop: %s", uv_strerror(ur));
        return 1;
    }
    m.sigint.data = m.sigterm.data = m.sighup.data = m.drain.data = &m;
    uv_signal_start(&m.sighup, on_sighup, SIGHUP);
    uv_signal_start(&m.sigint, on_signal, SIGINT);
    uv_signal_start(&m.sigterm, on_signal, SIGTERM);
    int started = 0, rc = 0;
    for (int i = 0; i < px->nworkers && rc == 0; i++) {
        px->workers[i].px = px;
        px->workers[i].conf = px_conf_hold(px->conf);
        px->workers[i].id = i;
        px->workers[i].listen_fd = listen_socket(cfg, err, sizeof err);
        if (px->workers[i].listen_fd < 0) {
            pgs_error("startup_failed", "%s", err);
            rc = 1;
        }
    }
    for (; rc == 0 && started < px->nworkers; started++) {
        int r = px_worker_start(&px->workers[started]);
        if (r < 0) {
            pgs_error("startup_failed", "worker %d: %s", started, uv_strerror(r));
            rc = 1;
            break;
        }
    }
    if (rc == 0) {
        pgs_info("listening", "pgshard %s on %s:%u, %d worker%s, %s pooling, pool_size %d", PGS_VERSION,
                 cfg->listen_addr, cfg->listen_port, px->nworkers, px->nworkers == 1 ? "" : "s",
                 cfg_pool_mode_name(cfg->pool_mode), cfg->pool_size);
        pgs_af_mark("listening");
        px_move_attach(px); /* the catalog thread tells the workers of each map from now on */
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_close((uv_handle_t *)&m.sigint, NULL);
    uv_close((uv_handle_t *)&m.sigterm, NULL);
    uv_close((uv_handle_t *)&m.sighup, NULL);
    uv_close((uv_handle_t *)&m.drain, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    /* Stopping: closing the handles restored the default actions, and a further SIGTERM or
     * SIGINT must not kill the process halfway through. */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    px_move_detach(px); /* before the workers' mailboxes go */
    atomic_store(&px->stopping, true);
    for (int i = 0; i < started; i++)
        px_worker_request_stop(&px->workers[i]);
    for (int i = 0; i < started; i++)
        uv_thread_join(&px->workers[i].thread);
    for (int i = 0; i < started; i++)
        px_worker_destroy(&px->workers[i]);
    px_recovery_stop(px->rec);
    px->rec = NULL;
    if (px->mon)
        px_monitor_stop(px->mon);
    px->mon = NULL;
    px_catalog_stop(px->cat);
    px->cat = NULL;
    for (int i = started; i < px->nworkers; i++) {
        if (px->workers[i].listen_fd > 0)
            close(px->workers[i].listen_fd);
        px_conf_release(px->workers[i].conf);
    }
    pgs_info("stopped", "pgshard stopped");
    return rc;
}

/* Each client costs a descriptor and each server link another, and the soft limit a shell
 * gives (often 1024) is far below max_client_conn's default of 10000: raise the soft limit
 * to the hard one, as PostgreSQL and PgBouncer do, and say so when even that is too low
 * for max_client_conn plus the server connections. Accepting beyond the limit fails with
 * EMFILE, which the listener logs and survives. */
static void raise_fd_limit(const cfg_config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            pgs_warn("fd_limit", "cannot raise the open files limit from %llu: %s", (unsigned long long)was,
                     strerror(errno));
            rl.rlim_cur = was;
        }
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)cfg->max_client_conn + 100)
        pgs_warn("fd_limit", "open files limit %llu is below max_client_conn %d plus server connections",
                 (unsigned long long)rl.rlim_cur, cfg->max_client_conn);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check", no_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *path = NULL;
    bool check = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:thV", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 't':
            check = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("pgshard %s\n", PGS_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!path || optind != argc) {
        usage(stderr);
        return 2;
    }
    char err[512];
    px_proxy px;
    cfg_config *cfg;
    memset(&px, 0, sizeof px);
    if (cfg_load(path, &cfg, err, sizeof err) < 0 || !(px.conf = px_conf_build(&px, cfg, err, sizeof err))) {
        fprintf(stderr, "pgshard: %s\n", err);
        free(px.user_counts);
        return 1;
    }
    px.cfg = cfg;
    px.start = px_conf_hold(px.conf);
    if (check) {
        printf("%s: configuration is valid (%d worker%s, %s pooling, pool_size %d per worker)\n", path,
               cfg->workers, cfg->workers == 1 ? "" : "s", cfg_pool_mode_name(cfg->pool_mode),
               cfg->pool_size);
        px_conf_release(px.conf);
        px_conf_release(px.start);
        free(px.user_counts);
        return 0;
    }
    pgs_log_setup(px.cfg->log_format == CFG_LOG_JSON, (pgs_log_level)px.cfg->log_level);
    px_test_crash_init();
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(px.cfg);
    int rc = run(&px);
    px_tls_teardown(&px);
    free(px.workers);
    px_conf_release(px.conf);
    px_conf_release(px.start);
    free(px.user_counts);
    return rc;
}
