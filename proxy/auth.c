/* Users as the proxy knows them: the secrets each [user.NAME] password yields for
 * authenticating clients (SCRAM, md5) and for logging in to servers (plain password or md5
 * secret). Derived once at start; the exchanges themselves are in client.c and server.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/px.h"

#define PX_SCRAM_ITERATIONS 4096

const px_user *px_user_find(const px_proxy *px, const char *name)
{
    for (int i = 0; i < px->cfg->nusers; i++)
        if (strcmp(px->users[i].cfg->name, name) == 0)
            return &px->users[i];
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

int px_users_prepare(px_proxy *px, char *err, size_t errlen)
{
    px->users = calloc((size_t)(px->cfg->nusers ? px->cfg->nusers : 1), sizeof *px->users);
    if (!px->users) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < px->cfg->nusers; i++) {
        px_user *u = &px->users[i];
        u->cfg = &px->cfg->users[i];
        const char *pw = u->cfg->password;
        if (!pw)
            continue;
        if (strncmp(pw, "SCRAM-SHA-256$", 14) == 0) {
            if (px_scram_secret_parse(pw, &u->scram) < 0) {
                snprintf(err, errlen, "%s: [user.%s] password: malformed SCRAM secret", px->cfg->path,
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
