/* Tests for proxy/status.c (lag in time from WAL samples, the read-your-writes bound, LSN
 * parsing) and for the parts of proxy/monitor.c that need no PostgreSQL: the first snapshot,
 * a monitor with nothing to poll, hazard-pointer reads, and circuits opened by a node that
 * refuses connections and by one that accepts and never answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "proxy/monitor.h"
#include "proxy/status.h"

#define MS 1000000ull
#define T0 (1000 * MS) /* an arbitrary uv_hrtime() */

/* ---- px_status_lag_ms ---- */

/* The primary at 100, 200, 300 at T0, T0 + 100 ms, T0 + 200 ms. */
static const px_lsn_sample three[] = {
    {T0, 100, 100},
    {T0 + 100 * MS, 200, 200},
    {T0 + 200 * MS, 300, 300},
};

static void test_lag_no_samples(void **state)
{
    assert_int_equal(px_status_lag_ms(NULL, 0, 0, T0), 0);
    assert_int_equal(px_status_lag_ms(three, 0, 5, T0 + 5000 * MS), 0);
}

static void test_lag_caught_up(void **state)
{
    /* Equal to the newest sample: no sample is past it. */
    assert_int_equal(px_status_lag_ms(three, 3, 300, T0 + 900 * MS), 0);
    /* Ahead of every sample (the replica was polled after the primary). */
    assert_int_equal(px_status_lag_ms(three, 3, 350, T0 + 900 * MS), 0);
}

static void test_lag_between(void **state)
{
    /* At 250 the first sample past it is 300, taken at T0 + 200 ms. */
    assert_int_equal(px_status_lag_ms(three, 3, 250, T0 + 900 * MS), 700);
    /* Exactly at a sample's LSN: the next one is the first past it. */
    assert_int_equal(px_status_lag_ms(three, 3, 200, T0 + 900 * MS), 700);
    assert_int_equal(px_status_lag_ms(three, 3, 100, T0 + 900 * MS), 800);
    assert_int_equal(px_status_lag_ms(three, 3, 150, T0 + 900 * MS), 800);
}

static void test_lag_older_than_all(void **state)
{
    /* Past every sample: the oldest sample's age, a lower bound. */
    assert_int_equal(px_status_lag_ms(three, 3, 99, T0 + 900 * MS), 900);
    assert_int_equal(px_status_lag_ms(three, 3, 0, T0 + 900 * MS), 900);
    assert_int_equal(px_status_lag_ms(three, 1, 0, T0 + 1 * MS), 1);
}

static void test_lag_clock_edges(void **state)
{
    /* now before the sample (a snapshot built from an older clock reading): no lag. */
    assert_int_equal(px_status_lag_ms(three, 3, 0, T0 - 1), 0);
    assert_int_equal(px_status_lag_ms(three, 3, 0, T0), 0);
    /* Under a millisecond rounds down. */
    assert_int_equal(px_status_lag_ms(three, 3, 0, T0 + MS - 1), 0);
    /* Saturates instead of wrapping. */
    px_lsn_sample old = {0, 10, 10};
    assert_int_equal(px_status_lag_ms(&old, 1, 0, UINT64_MAX), UINT32_MAX);
}

static void test_lag_full_ring(void **state)
{
    static px_lsn_sample ring[PX_LSN_SAMPLES];
    for (int i = 0; i < PX_LSN_SAMPLES; i++)
        ring[i] =
            (px_lsn_sample){T0 + (uint64_t)i * 100 * MS, 1000 + (uint64_t)i * 10, 1000 + (uint64_t)i * 10};
    uint64_t now = T0 + (uint64_t)PX_LSN_SAMPLES * 100 * MS;
    for (int i = 0; i < PX_LSN_SAMPLES - 1; i++) {
        /* Just past sample i: sample i + 1 is the first past it. */
        assert_int_equal(px_status_lag_ms(ring, PX_LSN_SAMPLES, ring[i].lsn + 1, now),
                         (PX_LSN_SAMPLES - i - 1) * 100);
    }
    assert_int_equal(px_status_lag_ms(ring, PX_LSN_SAMPLES, ring[PX_LSN_SAMPLES - 1].lsn, now), 0);
}

/* Equal LSNs in a row (an idle primary): the first past them is the one that counts. */
static void test_lag_idle_primary(void **state)
{
    static const px_lsn_sample idle[] = {
        {T0, 500, 500}, {T0 + 100 * MS, 500, 500}, {T0 + 200 * MS, 500, 500}, {T0 + 300 * MS, 600, 600}};
    assert_int_equal(px_status_lag_ms(idle, 4, 500, T0 + 400 * MS), 100);
    assert_int_equal(px_status_lag_ms(idle, 3, 500, T0 + 400 * MS), 0);
    assert_int_equal(px_status_lag_ms(idle, 4, 499, T0 + 400 * MS), 400);
}

/* ---- px_status_ryw_lsn ---- */

static px_shard_status *shard_with(const px_lsn_sample *s, int n)
{
    static px_shard_status sh;
    memset(&sh, 0, sizeof sh);
    sh.nnodes = 1;
    sh.nsamples = n;
    memcpy(sh.samples, s, (size_t)n * sizeof *s);
    return &sh;
}

static void test_ryw(void **state)
{
    assert_true(px_status_ryw_lsn(NULL, T0) == 0);
    assert_true(px_status_ryw_lsn(shard_with(three, 0), T0) == 0);
    const px_shard_status *sh = shard_with(three, 3);
    /* Before every sample: the first one. */
    assert_true(px_status_ryw_lsn(sh, 0) == 100);
    assert_true(px_status_ryw_lsn(sh, T0 - 1) == 100);
    /* At a sample's own time the order is unknown: the next sample. */
    assert_true(px_status_ryw_lsn(sh, T0) == 200);
    assert_true(px_status_ryw_lsn(sh, T0 + 50 * MS) == 200);
    assert_true(px_status_ryw_lsn(sh, T0 + 199 * MS) == 300);
    /* No sample after the write yet. */
    assert_true(px_status_ryw_lsn(sh, T0 + 200 * MS) == 0);
    assert_true(px_status_ryw_lsn(sh, T0 + 900 * MS) == 0);
    /* The insert LSN, ahead of the flush LSN (an asynchronous commit), is the bound. */
    static const px_lsn_sample async[] = {{T0, 100, 180}, {T0 + 100 * MS, 200, 200}};
    sh = shard_with(async, 2);
    assert_true(px_status_ryw_lsn(sh, T0 - 1) == 180);
    assert_true(px_status_ryw_lsn(sh, T0) == 200);
    /* Lag is measured against the flush LSN only. */
    assert_int_equal(px_status_lag_ms(async, 2, 100, T0 + 300 * MS), 200);
}

/* ---- px_lsn_parse ---- */

static void test_lsn_parse_ok(void **state)
{
    uint64_t v = 1;
    assert_int_equal(px_lsn_parse("0/0", &v), 0);
    assert_true(v == 0);
    assert_int_equal(px_lsn_parse("16/B374D848", &v), 0);
    assert_true(v == 0x16B374D848ull);
    assert_int_equal(px_lsn_parse("16/b374d848", &v), 0);
    assert_true(v == 0x16B374D848ull);
    assert_int_equal(px_lsn_parse("FFFFFFFF/FFFFFFFF", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(px_lsn_parse("00000001/00000000", &v), 0);
    assert_true(v == 0x100000000ull);
    assert_int_equal(px_lsn_parse("0/3000148", &v), 0);
    assert_true(v == 0x3000148ull);
}

static void test_lsn_parse_malformed(void **state)
{
    static const char *const bad[] = {
        "",      "1/",    "/1",          "/",           "G/1",         "1/G",         "1/1 ",
        " 1/1",  "1//1",  "1/1/1",       "-1/1",        "+1/1",        "1",           "0x1/1",
        "1/0x1", "1.5/1", "100000000/0", "0/100000000", "FFFFFFFFF/0", "0/FFFFFFFFF", "000000000/0",
        "1/1\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v = 42;
        if (px_lsn_parse(bad[i], &v) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
        assert_true(v == 42); /* untouched */
    }
    uint64_t v = 0;
    assert_int_equal(px_lsn_parse(NULL, &v), -1);
    assert_int_equal(px_lsn_parse("1/1", NULL), -1);
}

/* ---- the monitor without PostgreSQL ---- */

static char user_name[] = "mon", user_password[] = "secret";

typedef struct test_cfg {
    cfg_config cfg;
    cfg_shard shard;
    cfg_user user;
} test_cfg;

/* One shard whose primary is at `port` and replicas at replica_ports; with or without a user
 * the monitor may log in as. */
static void cfg_make(test_cfg *t, uint16_t port, const uint16_t *replica_ports, int nreplicas, bool user)
{
    memset(t, 0, sizeof *t);
    t->cfg.lag_poll_ms = 20;
    t->cfg.server_tls = CFG_STLS_DISABLE;
    snprintf(t->cfg.monitor_dbname, sizeof t->cfg.monitor_dbname, "postgres");
    snprintf(t->shard.primary.host, sizeof t->shard.primary.host, "127.0.0.1");
    t->shard.primary.port = port;
    t->shard.nreplicas = nreplicas;
    for (int i = 0; i < nreplicas; i++) {
        snprintf(t->shard.replicas[i].node.host, CFG_HOST_MAX, "127.0.0.1");
        t->shard.replicas[i].node.port = replica_ports[i];
        t->shard.replicas[i].weight = 1;
    }
    t->cfg.nshards = 1;
    t->cfg.shards = &t->shard;
    if (user) {
        t->user = (cfg_user){.name = user_name, .password = user_password};
        t->cfg.nusers = 1;
        t->cfg.users = &t->user;
    }
}

/* A loopback port nobody listens on (bound, then closed). */
static uint16_t closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A listener that never accepts: the kernel completes the TCP handshake and libpq then waits
 * forever for an answer to its startup packet. */
static int silent_listener(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void assert_first_snapshot(const px_status *st, int nnodes)
{
    assert_non_null(st);
    assert_true(st->gen >= 1);
    assert_int_equal(st->nshards, 1);
    assert_int_equal(st->shards[0].nnodes, nnodes);
    assert_int_equal(st->shards[0].primary, 0);
    assert_true(st->shards[0].primary_ok);
    assert_int_equal(st->shards[0].nsamples, 0);
    for (int i = 0; i < nnodes; i++) {
        assert_int_equal(st->shards[0].nodes[i].health, PX_NODE_UNKNOWN);
        assert_int_equal(st->shards[0].nodes[i].circuit, PX_CIRCUIT_CLOSED);
        assert_int_equal(st->shards[0].nodes[i].failures, 0);
    }
}

/* No user with a plain password and no replicas: nothing is polled, the first snapshot stays. */
static void test_monitor_without_user(void **state)
{
    test_cfg t;
    char err[256] = "";
    cfg_make(&t, 5432, NULL, 0, false);
    px_monitor *m = px_monitor_start(&t.cfg, 2, err, sizeof err);
    assert_non_null(m);
    const px_status *a = px_monitor_get(m, 0);
    assert_first_snapshot(a, 1);
    assert_int_equal(a->gen, 1);
    px_monitor_report_failure(m, 0, 0); /* nobody to tell: ignored */
    px_monitor_report_failure(m, 7, 0);
    uv_sleep(50);
    const px_status *b = px_monitor_get(m, 1);
    assert_ptr_equal(a, b);
    atomic_fetch_add_explicit(px_monitor_reads(m, 0, 0), 3, memory_order_relaxed);
    atomic_fetch_add_explicit(px_monitor_reads(m, 0, PX_MAX_NODES - 1), 1, memory_order_relaxed);
    assert_true(atomic_load(px_monitor_reads(m, 0, 0)) == 3);
    assert_true(atomic_load(px_monitor_reads(m, 0, 1)) == 0);
    px_monitor_stop(m);
    px_monitor_stop(NULL);
}

static void test_monitor_replicas_need_user(void **state)
{
    test_cfg t;
    char err[256] = "";
    uint16_t rp = 5433;
    cfg_make(&t, 5432, &rp, 1, false);
    assert_null(px_monitor_start(&t.cfg, 1, err, sizeof err));
    assert_non_null(strstr(err, "monitor user"));
    /* A stored secret is not a password the monitor can log in with. */
    char scram[] = "SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2VydmVy";
    cfg_make(&t, 5432, &rp, 1, true);
    t.user.password = scram;
    err[0] = '\0';
    assert_null(px_monitor_start(&t.cfg, 1, err, sizeof err));
    assert_non_null(strstr(err, "monitor user"));
}

/* Waits up to ms for a snapshot satisfying ok(), reading through `reader`. */
static const px_status *wait_for(px_monitor *m, int reader, bool (*ok)(const px_status *), int ms)
{
    for (int waited = 0; waited < ms; waited += 5) {
        const px_status *st = px_monitor_get(m, reader);
        if (ok(st))
            return st;
        uv_sleep(5);
    }
    return NULL;
}

static bool primary_down(const px_status *st)
{
    return st->shards[0].nodes[0].health == PX_NODE_DOWN;
}

static bool primary_failed_thrice(const px_status *st)
{
    return st->shards[0].nodes[0].failures >= 3;
}

/* A refused connect opens the circuit at once; probes follow with growing backoff, and
 * readers alternating between snapshots never see one change under them. */
static void test_monitor_refused(void **state)
{
    test_cfg t;
    char err[256] = "";
    cfg_make(&t, closed_port(), NULL, 0, true);
    uint64_t t0 = uv_hrtime();
    px_monitor *m = px_monitor_start(&t.cfg, 2, err, sizeof err);
    assert_non_null(m);
    /* A refused connect fails at once: the monitor thread may already have published the
     * failure when this reader first looks, so only a first snapshot is checked as one. */
    const px_status *first = px_monitor_get(m, 0);
    if (first->gen == 1)
        assert_first_snapshot(first, 1);
    else
        assert_true(primary_down(first));

    const px_status *down = wait_for(m, 0, primary_down, 2000);
    assert_non_null(down);
    assert_true(uv_hrtime() - t0 < 1000 * MS);
    assert_int_equal(down->shards[0].nodes[0].circuit, PX_CIRCUIT_OPEN);
    assert_true(down->shards[0].nodes[0].failures >= 1);
    assert_false(down->shards[0].primary_ok);
    assert_true(down->gen > 1);
    uint64_t gen = down->gen;
    px_node_status copy = down->shards[0].nodes[0];

    /* 20, 40, 80 ms (+-25%) of backoff: a third failure comes well within 1 s. */
    const px_status *later = wait_for(m, 1, primary_failed_thrice, 2000);
    assert_non_null(later);
    assert_true(later->gen > gen);
    assert_int_equal(later->shards[0].nodes[0].health, PX_NODE_DOWN);
    /* Reader 0 still holds `down`; it must be intact. */
    assert_true(down->gen == gen);
    assert_memory_equal(&down->shards[0].nodes[0], &copy, sizeof copy);

    px_monitor_report_failure(m, 0, 0); /* circuit open: ignored, must not crash */
    px_monitor_report_failure(m, 0, 1); /* no such node */
    px_monitor_stop(m);
}

static bool replica_down(const px_status *st)
{
    return st->shards[0].nodes[1].health == PX_NODE_DOWN;
}

/* A node that hangs during connect does not hold up another's failure, and is itself
 * declared down after the 2 s connect timeout. */
static void test_monitor_hung_node(void **state)
{
    test_cfg t;
    char err[256] = "";
    uint16_t hung_port;
    int lfd = silent_listener(&hung_port);
    uint16_t refused = closed_port();
    cfg_make(&t, hung_port, &refused, 1, true);
    uint64_t t0 = uv_hrtime();
    px_monitor *m = px_monitor_start(&t.cfg, 1, err, sizeof err);
    assert_non_null(m);

    const px_status *st = wait_for(m, 0, replica_down, 1000);
    assert_non_null(st);
    assert_true(uv_hrtime() - t0 < 1000 * MS);
    assert_int_equal(st->shards[0].nodes[0].health, PX_NODE_UNKNOWN);
    assert_true(st->shards[0].primary_ok);

    st = wait_for(m, 0, primary_down, 4000);
    assert_non_null(st);
    uint64_t took = uv_hrtime() - t0;
    assert_true(took >= 1900 * MS && took < 3500 * MS);
    assert_false(st->shards[0].primary_ok);
    assert_int_equal(st->shards[0].primary, 0); /* nobody else is a primary */
    px_monitor_stop(m);
    close(lfd);
}

/* ---- px_status_serializable: pg_db_role_setting's order of precedence ---- */

static px_status *iso_status(int nshards)
{
    px_status *st = calloc(1, sizeof *st + (size_t)nshards * sizeof st->shards[0]);
    assert_non_null(st);
    st->nshards = nshards;
    return st;
}

static void iso_add(px_status *st, int shard, const char *role, const char *db, bool ser)
{
    px_shard_status *sh = &st->shards[shard];
    sh->iso[sh->niso++] =
        (px_iso_default){role ? px_status_name_key(role) : 0, db ? px_status_name_key(db) : 0, ser};
    st->any_iso = true;
}

static bool iso_ser(const px_status *st, const char *role, const char *db)
{
    return px_status_serializable(st, px_status_name_key(role), px_status_name_key(db));
}

static void test_iso_precedence(void **state)
{
    (void)state;
    px_status *st = iso_status(1);
    assert_false(iso_ser(st, "app", "app")); /* nothing set */
    assert_int_not_equal(px_status_name_key(""), 0);

    iso_add(st, 0, NULL, NULL, true); /* ALTER ROLE ALL SET ... serializable */
    assert_true(iso_ser(st, "app", "app"));
    iso_add(st, 0, NULL, "app", false); /* ALTER DATABASE app SET ... read committed: over ALL */
    assert_false(iso_ser(st, "app", "app"));
    assert_true(iso_ser(st, "app", "other"));
    iso_add(st, 0, "app", NULL, true); /* ALTER ROLE app SET ... serializable: over the database */
    assert_true(iso_ser(st, "app", "app"));
    assert_false(iso_ser(st, "bob", "app"));
    iso_add(st, 0, "app", "app", false); /* ALTER ROLE app IN DATABASE app: over everything */
    assert_false(iso_ser(st, "app", "app"));
    assert_true(iso_ser(st, "app", "other"));
    assert_true(iso_ser(st, "bob", "other"));
    free(st);
}

static void test_iso_shards(void **state)
{
    (void)state;
    px_status *st = iso_status(2);
    iso_add(st, 1, "app", NULL, true); /* set on shard 1's cluster only: serializable anyway */
    iso_add(st, 0, "app", NULL, false);
    assert_true(iso_ser(st, "app", "app"));
    assert_false(iso_ser(st, "App", "app")); /* role names are exact */
    st->any_iso = false;                     /* the snapshot says none: not looked at */
    assert_false(iso_ser(st, "app", "app"));
    free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lag_no_samples),       cmocka_unit_test(test_lag_caught_up),
        cmocka_unit_test(test_lag_between),          cmocka_unit_test(test_lag_older_than_all),
        cmocka_unit_test(test_lag_clock_edges),      cmocka_unit_test(test_lag_full_ring),
        cmocka_unit_test(test_lag_idle_primary),     cmocka_unit_test(test_ryw),
        cmocka_unit_test(test_lsn_parse_ok),         cmocka_unit_test(test_lsn_parse_malformed),
        cmocka_unit_test(test_monitor_without_user), cmocka_unit_test(test_monitor_replicas_need_user),
        cmocka_unit_test(test_monitor_refused),      cmocka_unit_test(test_monitor_hung_node),
        cmocka_unit_test(test_iso_precedence),       cmocka_unit_test(test_iso_shards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
