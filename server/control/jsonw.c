/* server/control/jsonw.c: the JSON writer of jsonw.h. Everything is appended
 * to one buffer that grows by doubling; numbers, keys and times are formatted
 * by hand because this writer renders every peer of every map response. */
#include "server/control/jsonw.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#define JW_INITIAL_CAP 256

/* Go's time.Time only marshals years 1..9999; instants outside are clamped to
 * that range so that a client never receives a time it cannot parse. */
#define JW_TIME_MIN_MS (-62135596800000LL) /* 0001-01-01T00:00:00Z */
#define JW_TIME_MAX_MS 253402300799999LL   /* 9999-12-31T23:59:59.999Z */
#define MS_PER_DAY     86400000LL

static const char hex_digits[] = "0123456789abcdef";

void jw_init(struct jw *w)
{
    memset(w, 0, sizeof *w);
}

void jw_free(struct jw *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

void jw_next_value(struct jw *w)
{
    w->depth = 0;
    w->need_comma[0] = false;
    w->after_key = false;
}

void jw_reset(struct jw *w)
{
    w->len = 0;
    w->failed = false;
    jw_next_value(w);
    if (w->buf != NULL)
        w->buf[0] = '\0';
}

bool jw_failed(const struct jw *w)
{
    return w->failed;
}

/* The slow path of reserve: doubles the capacity until it fits. */
static bool grow(struct jw *w, size_t n)
{
    size_t need;
    size_t cap;
    char *buf;

    if (w->failed)
        return false;
    if (n > SIZE_MAX / 2 - w->len) {
        w->failed = true;
        return false;
    }
    need = w->len + n + 1;
    cap = w->cap != 0 ? w->cap : JW_INITIAL_CAP;
    while (cap < need)
        cap *= 2;
    buf = realloc(w->buf, cap);
    if (buf == NULL) {
        w->failed = true;
        return false;
    }
    w->buf = buf;
    w->cap = cap;
    return true;
}

/* Room for n more bytes plus the terminating NUL; false once failed. A
 * failed writer keeps its capacity, so the fast path checks the flag too. */
static inline bool reserve(struct jw *w, size_t n)
{
    if (!w->failed && n < w->cap - w->len)
        return true;
    return grow(w, n);
}

/* Appends without a reserve check: callers reserved first. */
static void put(struct jw *w, const char *s, size_t n)
{
    memcpy(w->buf + w->len, s, n);
    w->len += n;
}

static void terminate(struct jw *w)
{
    w->buf[w->len] = '\0';
}

static void fail(struct jw *w)
{
    w->failed = true;
}

/* Reserves n bytes plus a possible comma and writes the comma a value needs
 * when it follows another element or member. */
static bool begin_value(struct jw *w, size_t n)
{
    if (!reserve(w, n + 1))
        return false;
    if (w->after_key) {
        w->after_key = false;
    } else {
        if (w->need_comma[w->depth])
            w->buf[w->len++] = ',';
        w->need_comma[w->depth] = true;
    }
    return true;
}

static void open_container(struct jw *w, char c)
{
    if (w->depth >= JW_MAX_DEPTH) {
        fail(w);
        return;
    }
    if (!begin_value(w, 1))
        return;
    w->buf[w->len++] = c;
    w->depth++;
    w->need_comma[w->depth] = false;
    terminate(w);
}

static void close_container(struct jw *w, char c)
{
    if (w->depth == 0 || w->after_key) {
        fail(w);
        return;
    }
    if (!reserve(w, 1))
        return;
    w->buf[w->len++] = c;
    w->depth--;
    terminate(w);
}

void jw_obj_begin(struct jw *w)
{
    open_container(w, '{');
}

void jw_obj_end(struct jw *w)
{
    close_container(w, '}');
}

void jw_arr_begin(struct jw *w)
{
    open_container(w, '[');
}

void jw_arr_end(struct jw *w)
{
    close_container(w, ']');
}

static bool needs_escape(unsigned char c)
{
    return c < 0x20 || c == '"' || c == '\\';
}

/* The letter of c's short escape, or 'u' for \u00XX. */
static char escape_letter(unsigned char c)
{
    switch (c) {
    case '\n':
        return 'n';
    case '\r':
        return 'r';
    case '\t':
        return 't';
    case '"':
    case '\\':
        return (char)c;
    default:
        return 'u';
    }
}

/* The quoted, escaped string; the caller has placed any comma or key. The
 * output goes through a local pointer: stores through w->buf could alias
 * w->len, which would force a reload per byte. */
static void put_string(struct jw *w, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    char *out;

    /* Room for the common case; grown again only when escapes appear. */
    if (!reserve(w, len + 2))
        return;
    out = w->buf + w->len;
    *out++ = '"';
    for (;;) {
        size_t run = i;
        char e;
        while (i < len && !needs_escape(p[i]))
            i++;
        memcpy(out, s + run, i - run);
        out += i - run;
        if (i == len)
            break;
        w->len = (size_t)(out - w->buf);
        if (!reserve(w, 6 + (len - i - 1) + 1))
            return;
        out = w->buf + w->len;
        e = escape_letter(p[i]);
        *out++ = '\\';
        if (e == 'u') {
            memcpy(out, "u00", 3);
            out[3] = hex_digits[p[i] >> 4];
            out[4] = hex_digits[p[i] & 0xf];
            out += 5;
        } else {
            *out++ = e;
        }
        i++;
    }
    *out++ = '"';
    *out = '\0';
    w->len = (size_t)(out - w->buf);
}

void jw_key(struct jw *w, const char *name)
{
    if (w->depth == 0 || w->after_key) {
        fail(w);
        return;
    }
    if (!begin_value(w, 0))
        return;
    put_string(w, name, strlen(name));
    if (!reserve(w, 1))
        return;
    w->buf[w->len++] = ':';
    terminate(w);
    w->after_key = true;
}

void jw_strn(struct jw *w, const char *s, size_t len)
{
    if (!begin_value(w, 0))
        return;
    put_string(w, s, len);
}

void jw_str(struct jw *w, const char *s)
{
    jw_strn(w, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

/* Decimal digits of v, right-aligned ending at end; returns the start. */
static char *format_u64(char *end, uint64_t v)
{
    char *p = end;

    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return p;
}

void jw_uint(struct jw *w, uint64_t v)
{
    char tmp[20];
    char *start = format_u64(tmp + sizeof tmp, v);
    size_t n = (size_t)(tmp + sizeof tmp - start);

    if (!begin_value(w, n))
        return;
    put(w, start, n);
    terminate(w);
}

void jw_int(struct jw *w, int64_t v)
{
    char tmp[21];
    /* Negation in unsigned arithmetic: defined for INT64_MIN too. */
    uint64_t mag = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    char *start = format_u64(tmp + sizeof tmp, mag);
    size_t n;

    if (v < 0)
        *--start = '-';
    n = (size_t)(tmp + sizeof tmp - start);
    if (!begin_value(w, n))
        return;
    put(w, start, n);
    terminate(w);
}

void jw_bool(struct jw *w, bool v)
{
    jw_raw(w, v ? "true" : "false", v ? 4 : 5);
}

void jw_null(struct jw *w)
{
    jw_raw(w, "null", 4);
}

void jw_raw(struct jw *w, const char *json, size_t len)
{
    if (!begin_value(w, len))
        return;
    put(w, json, len);
    terminate(w);
}

void jw_key_hex(struct jw *w, const char *prefix, const uint8_t key[32])
{
    size_t plen = strlen(prefix);
    char *out;

    if (!begin_value(w, plen + 66))
        return;
    out = w->buf + w->len;
    *out++ = '"';
    memcpy(out, prefix, plen);
    out += plen;
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex_digits[key[i] >> 4];
        out[2 * i + 1] = hex_digits[key[i] & 0xf];
    }
    out += 64;
    *out++ = '"';
    *out = '\0';
    w->len = (size_t)(out - w->buf);
}

/* Proleptic Gregorian date of a day count since 1970-01-01 (the era-based
 * method: 400-year eras of 146097 days, years starting in March). */
static void civil_from_days(int64_t days, int64_t *year, unsigned *month, unsigned *day)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;

    *day = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *month = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *year = yoe + era * 400 + (*month <= 2);
}

static char *put_digits(char *p, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

void jw_time(struct jw *w, int64_t unix_ms)
{
    char tmp[32];
    char *p = tmp;
    int64_t days;
    int64_t ms_of_day;
    int64_t year;
    unsigned month;
    unsigned day;
    unsigned frac;

    if (unix_ms == 0 || unix_ms < JW_TIME_MIN_MS)
        unix_ms = JW_TIME_MIN_MS;
    if (unix_ms > JW_TIME_MAX_MS)
        unix_ms = JW_TIME_MAX_MS;
    days = unix_ms / MS_PER_DAY;
    ms_of_day = unix_ms % MS_PER_DAY;
    if (ms_of_day < 0) {
        ms_of_day += MS_PER_DAY;
        days--;
    }
    civil_from_days(days, &year, &month, &day);
    *p++ = '"';
    p = put_digits(p, (unsigned)year, 4);
    *p++ = '-';
    p = put_digits(p, month, 2);
    *p++ = '-';
    p = put_digits(p, day, 2);
    *p++ = 'T';
    p = put_digits(p, (unsigned)(ms_of_day / 3600000), 2);
    *p++ = ':';
    p = put_digits(p, (unsigned)(ms_of_day / 60000 % 60), 2);
    *p++ = ':';
    p = put_digits(p, (unsigned)(ms_of_day / 1000 % 60), 2);
    frac = (unsigned)(ms_of_day % 1000);
    if (frac != 0) {
        /* Trailing zeros dropped, as Go's RFC3339Nano does. */
        int width = frac % 100 == 0 ? 1 : frac % 10 == 0 ? 2 : 3;
        *p++ = '.';
        p = put_digits(p, width == 1 ? frac / 100 : width == 2 ? frac / 10 : frac, width);
    }
    *p++ = 'Z';
    *p++ = '"';
    jw_raw(w, tmp, (size_t)(p - tmp));
}

void jw_host_prefix(struct jw *w, const uint8_t *addr, size_t len)
{
    char text[INET6_ADDRSTRLEN + 8];
    size_t n;

    if (len == 4) {
        char *p = text;
        for (int i = 0; i < 4; i++) {
            char tmp[3];
            char *start = format_u64(tmp + sizeof tmp, addr[i]);
            size_t digits = (size_t)(tmp + sizeof tmp - start);
            memcpy(p, start, digits);
            p += digits;
            *p++ = i < 3 ? '.' : '/';
        }
        memcpy(p, "32", 3);
    } else if (len == 16) {
        if (inet_ntop(AF_INET6, addr, text, INET6_ADDRSTRLEN) == NULL) {
            fail(w);
            return;
        }
        strcat(text, "/128");
    } else {
        fail(w);
        return;
    }
    n = strlen(text);
    if (!begin_value(w, n + 2))
        return;
    w->buf[w->len++] = '"';
    put(w, text, n);
    w->buf[w->len++] = '"';
    terminate(w);
}
