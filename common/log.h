/* Logging: one line per event on stderr, as text or as one JSON object. The format and
 * level are set once by main() before any thread starts and only read afterwards. */
#ifndef PGS_LOG_H
#define PGS_LOG_H

#include <stddef.h>

typedef enum pgs_log_level { PGS_LOG_DEBUG, PGS_LOG_INFO, PGS_LOG_WARN, PGS_LOG_ERROR } pgs_log_level;

void pgs_log_setup(int json, pgs_log_level level);
int pgs_log_enabled(pgs_log_level level);
/* event is a short snake_case name ("client_login", "server_lost"); fmt the message. */
void pgs_log(pgs_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies msg into dst (len bytes with the NUL) on one line: runs of blanks and line breaks
 * become one space, leading and trailing ones go. For libpq's multi-line messages. */
void pgs_log_flatten(char *dst, size_t len, const char *msg);

#define pgs_debug(ev, ...)                                                                                   \
    do {                                                                                                     \
        if (pgs_log_enabled(PGS_LOG_DEBUG))                                                                  \
            pgs_log(PGS_LOG_DEBUG, ev, __VA_ARGS__);                                                         \
    } while (0)
#define pgs_info(ev, ...) pgs_log(PGS_LOG_INFO, ev, __VA_ARGS__)
#define pgs_warn(ev, ...) pgs_log(PGS_LOG_WARN, ev, __VA_ARGS__)
#define pgs_error(ev, ...) pgs_log(PGS_LOG_ERROR, ev, __VA_ARGS__)

#endif
