/* pgshard-migrate list: every move the catalog records, newest last, as aligned text or
 * one JSON document: what moves where, its state and step, and why it stopped. */
#include <stdlib.h>
#include <string.h>

#include "migrate/mig.h"

static const char mig_list_query[] =
    "SELECT id, source, target, CASE WHEN buckets IS NOT NULL THEN 'buckets'"
    " ELSE 'tenant' END, coalesce(array_to_string(buckets, ','), tenant), state, step, freeze_seq,"
    " coalesce(error, ''), to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), flip_version"
    " FROM pgshard.migrations ORDER BY id";

static void mig_list_json(FILE *f, const PGresult *res)
{
    static const char *const names[] = {"id",    "source",     "target",     "kind",
                                        "keys",  "state",      "step",       "freeze_seq",
                                        "error", "created_at", "updated_at", "flip_version"};
    fputs("{\"moves\":[", f);
    for (int r = 0; r < PQntuples(res); r++) {
        fputs(r ? ",{" : "{", f);
        for (int c = 0; c < 12; c++) {
            fprintf(f, "%s\"%s\":", c ? "," : "", names[c]);
            bool num = c == 0 || c == 1 || c == 2 || c == 7 || c == 11;
            if (PQgetisnull(res, r, c) || (c == 8 && !*PQgetvalue(res, r, c)))
                fputs("null", f);
            else if (num)
                fputs(PQgetvalue(res, r, c), f);
            else
                mig_json_cstr(f, PQgetvalue(res, r, c));
        }
        fputc('}', f);
    }
    fputs("]}\n", f);
}

static void mig_list_text(FILE *f, const PGresult *res)
{
    if (PQntuples(res) == 0) {
        fputs("no moves\n", f);
        return;
    }
    fprintf(f, "%-6s %-6s %-6s %-30s %-9s %-9s %-20s %s\n", "id", "from", "to", "keys", "state", "step",
            "updated", "error");
    for (int r = 0; r < PQntuples(res); r++) {
        char keys[64];
        snprintf(keys, sizeof keys, "%s %s", PQgetvalue(res, r, 3), PQgetvalue(res, r, 4));
        if (strlen(keys) == sizeof keys - 1)
            memcpy(keys + sizeof keys - 4, "...", 4);
        fprintf(f, "%-6s %-6s %-6s %-30s %-9s %-9s %-20s %s\n", PQgetvalue(res, r, 0), PQgetvalue(res, r, 1),
                PQgetvalue(res, r, 2), keys, PQgetvalue(res, r, 5), PQgetvalue(res, r, 6),
                PQgetvalue(res, r, 10), PQgetvalue(res, r, 8));
    }
}

int mig_list(const mig_opts *o)
{
    PGconn *conn = mig_connect(o);
    if (!conn)
        return MIG_EXIT_ERROR;
    PGresult *res = PQexec(conn, mig_list_query);
    int rc = MIG_EXIT_OK;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(o->err, "pgshard-migrate: list: %s", PQresultErrorMessage(res));
        rc = MIG_EXIT_ERROR;
    } else if (o->json) {
        mig_list_json(o->out, res);
    } else {
        mig_list_text(o->out, res);
    }
    PQclear(res);
    PQfinish(conn);
    if (rc == MIG_EXIT_OK && (fflush(o->out) != 0 || ferror(o->out)))
        rc = MIG_EXIT_ERROR;
    return rc;
}
