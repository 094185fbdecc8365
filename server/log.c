/* server/log.c: formatting and writing log lines.
 * A message is formatted into a stack buffer, escaped so that one event is
 * always one line (a peer-supplied path cannot forge a second line), prefixed
 * with the time and level, and written to stderr with a single fwrite. */
#include "server/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LOG_MSG_MAX  2048
#define LOG_LINE_MAX 8192

/* The one process-wide mutable state outside server/main.c (STYLE.md section
 * 5 makes the exception explicit here): every module logs through the macros,
 * and threading a logger pointer through each of them would buy nothing, since
 * a process has exactly one stderr. Written once by log_init() at start-up,
 * before the loop runs. */
static enum log_level current_level = LOG_LEVEL_INFO;
static enum log_format current_format = LOG_FORMAT_TEXT;

void log_init(enum log_level level, enum log_format format)
{
    current_level = level;
    current_format = format;
}

bool log_enabled(enum log_level level)
{
    return level <= current_level;
}

const char *log_level_name(enum log_level level)
{
    switch (level) {
    case LOG_LEVEL_ERROR:
        return "error";
    case LOG_LEVEL_WARN:
        return "warn";
    case LOG_LEVEL_INFO:
        return "info";
    case LOG_LEVEL_DEBUG:
        return "debug";
    }
    return "unknown";
}

static const char *level_upper(enum log_level level)
{
    switch (level) {
    case LOG_LEVEL_ERROR:
        return "ERROR";
    case LOG_LEVEL_WARN:
        return "WARN";
    case LOG_LEVEL_INFO:
        return "INFO";
    case LOG_LEVEL_DEBUG:
        return "DEBUG";
    }
    return "UNKNOWN";
}

/* Appends to a bounded buffer; once full, further appends are dropped and
 * the line is marked as cut. */
struct line {
    char *buf;
    size_t cap; /* usable bytes, excluding the room kept for "...\n" + NUL */
    size_t len;
    bool is_cut;
};

static void line_put(struct line *l, const char *s, size_t n)
{
    if (l->is_cut)
        return;
    if (n > l->cap - l->len) {
        l->is_cut = true;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void line_puts(struct line *l, const char *s)
{
    line_put(l, s, strlen(s));
}

/* Length of the valid UTF-8 sequence starting at s (at most n bytes), or 0. */
static size_t utf8_sequence_len(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned min;
    unsigned cp;

    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2, min = 0x80, cp = s[0] & 0x1fu;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3, min = 0x800, cp = s[0] & 0x0fu;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4, min = 0x10000, cp = s[0] & 0x07u;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Copies msg, escaping what would break the line: for text, control bytes
 * become \n, \t or \xNN; for JSON, the string escapes of RFC 8259 plus
 * U+FFFD for bytes that are not UTF-8. */
static void line_put_escaped(struct line *l, const char *msg, bool is_json)
{
    const unsigned char *s = (const unsigned char *)msg;
    size_t n = strlen(msg);
    char esc[8];

    for (size_t i = 0; i < n; i++) {
        unsigned char ch = s[i];

        if (ch == '\n') {
            line_puts(l, "\\n");
        } else if (ch == '\t') {
            line_puts(l, "\\t");
        } else if (ch == '\r') {
            line_puts(l, "\\r");
        } else if (is_json && (ch == '"' || ch == '\\')) {
            esc[0] = '\\';
            esc[1] = (char)ch;
            line_put(l, esc, 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            snprintf(esc, sizeof esc, is_json ? "\\u%04x" : "\\x%02x", ch);
            line_puts(l, esc);
        } else if (ch >= 0x80 && is_json) {
            size_t seq = utf8_sequence_len(s + i, n - i);

            if (seq == 0) {
                line_puts(l, "\\ufffd");
            } else {
                line_put(l, msg + i, seq);
                i += seq - 1;
            }
        } else {
            line_put(l, msg + i, 1);
        }
    }
}

static void format_time(char out[32], long long time_unix_ms)
{
    time_t secs = (time_t)(time_unix_ms / 1000);
    unsigned ms = (unsigned)(time_unix_ms % 1000) % 1000;
    struct tm tm;

    if (gmtime_r(&secs, &tm) == NULL || strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm) != 19) {
        snprintf(out, 32, "1970-01-01T00:00:00.000Z");
        return;
    }
    snprintf(out + 19, 32 - 19, ".%03uZ", ms);
}

size_t log_format_line(char *buf, size_t cap, enum log_format format, enum log_level level,
                       long long time_unix_ms, const char *msg)
{
    static const char cut_mark[] = "...";
    /* Room kept back for the cut mark, the closing of a JSON object, "\n" and NUL. */
    const size_t reserve = sizeof cut_mark - 1 + 2 + 2;
    struct line l = {.buf = buf, .cap = cap > reserve ? cap - reserve : 0};
    char when[32];
    bool was_cut;

    if (cap == 0)
        return 0;
    format_time(when, time_unix_ms);
    if (format == LOG_FORMAT_JSON) {
        line_puts(&l, "{\"time\":\"");
        line_puts(&l, when);
        line_puts(&l, "\",\"level\":\"");
        line_puts(&l, log_level_name(level));
        line_puts(&l, "\",\"msg\":\"");
        line_put_escaped(&l, msg, true);
    } else {
        line_puts(&l, when);
        line_puts(&l, " ");
        line_puts(&l, level_upper(level));
        line_puts(&l, " ");
        line_put_escaped(&l, msg, false);
    }
    /* The reserve is now ours, except the NUL's byte. */
    was_cut = l.is_cut;
    l.is_cut = false;
    l.cap = cap - 1;
    if (was_cut)
        line_puts(&l, cut_mark);
    if (format == LOG_FORMAT_JSON)
        line_puts(&l, "\"}");
    line_puts(&l, "\n");
    buf[l.len] = '\0';
    return l.len;
}

void log_emit(enum log_level level, const char *fmt, ...)
{
    char msg[LOG_MSG_MAX];
    char out[LOG_LINE_MAX];
    struct timespec now;
    va_list ap;
    size_t n;

    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof msg, fmt, ap) >= (int)sizeof msg)
        memcpy(msg + sizeof msg - 4, "...", 4);
    va_end(ap);
    clock_gettime(CLOCK_REALTIME, &now);
    n = log_format_line(out, sizeof out, current_format, level,
                        (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000, msg);
    fwrite(out, 1, n, stderr);
}

void log_cluster_cb(void *arg, enum cluster_log_level level, const char *msg)
{
    enum log_level ours = LOG_LEVEL_DEBUG;

    (void)arg;
    switch (level) {
    case CLUSTER_LOG_ERROR:
        ours = LOG_LEVEL_ERROR;
        break;
    case CLUSTER_LOG_WARN:
        ours = LOG_LEVEL_WARN;
        break;
    case CLUSTER_LOG_INFO:
        ours = LOG_LEVEL_INFO;
        break;
    case CLUSTER_LOG_DEBUG:
        ours = LOG_LEVEL_DEBUG;
        break;
    }
    LOG_AT(ours, "%s", msg);
}
