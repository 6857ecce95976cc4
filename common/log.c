/* Line-at-a-time logging to stderr (see log.h). Each line is formatted into a local buffer
 * and written with one write(2), so lines from different threads never interleave. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Set once by pgs_log_setup() before threads start; read-only afterwards. */
static int log_json;
static pgs_log_level log_min = PGS_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void pgs_log_setup(int json, pgs_log_level level)
{
    log_json = json;
    log_min = level;
}

int pgs_log_enabled(pgs_log_level level)
{
    return level >= log_min;
}

/* Appends s to out as JSON string content, escaping quotes, backslashes and controls. */
static size_t json_escape(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; *s && n + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    out[n] = 0;
    return n;
}

void pgs_log(pgs_log_level level, const char *event, const char *fmt, ...)
{
    if (level < log_min)
        return;
    char msg[1024], line[2560], ts[40];
    va_list ap;
    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof msg, fmt, ap) < 0)
        msg[0] = 0;
    va_end(ap);

    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%03ldZ", now.tv_nsec / 1000000);

    int n;
    if (log_json) {
        char esc[2048];
        json_escape(esc, sizeof esc, msg);
        n = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"event\":\"%s\",\"msg\":\"%s\"}\n",
                     ts, level_names[level], event, esc);
    } else {
        n = snprintf(line, sizeof line, "%s %s %s: %s\n", ts, level_names[level], event, msg);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void pgs_log_flatten(char *dst, size_t len, const char *msg)
{
    size_t j = 0;
    int space = 0;
    if (len == 0)
        return;
    for (size_t i = 0; msg && msg[i] && j + 1 < len; i++) {
        if (msg[i] == '\n' || msg[i] == '\t' || msg[i] == '\r' || msg[i] == ' ') {
            space = j > 0;
            continue;
        }
        if (space && j + 2 < len)
            dst[j++] = ' ';
        space = 0;
        dst[j++] = msg[i];
    }
    dst[j] = 0;
}
