/* server/control/jsonw.h: a hand-written JSON writer for the hot paths (map
 * responses). Appends to one growable buffer; commas between members and
 * elements are inserted automatically. Never fails mid-way: after an
 * allocation failure every call is a no-op and jw_failed() says so. Strings
 * are escaped per RFC 8259 (control characters as \u00XX, '"' and '\\');
 * bytes >= 0x80 are copied as they are (inputs are UTF-8 from jansson or our
 * own records). */
#ifndef CONCORD_SERVER_CONTROL_JSONW_H
#define CONCORD_SERVER_CONTROL_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JW_MAX_DEPTH 64

struct jw {
    char *buf; /* NUL-terminated after every call that succeeded */
    size_t len;
    size_t cap;
    bool failed;
    unsigned depth;
    bool need_comma[JW_MAX_DEPTH + 1];
    bool after_key;
};

void jw_init(struct jw *w);
void jw_free(struct jw *w);
/* Empties the buffer and the nesting state, keeping the memory. */
void jw_reset(struct jw *w);
/* Starts another top-level value right after the previous one, without a
 * separating comma (several encodings kept back to back in one buffer). */
void jw_next_value(struct jw *w);
bool jw_failed(const struct jw *w);

void jw_obj_begin(struct jw *w);
void jw_obj_end(struct jw *w);
void jw_arr_begin(struct jw *w);
void jw_arr_end(struct jw *w);
/* A member name inside an object; the next value call is its value. */
void jw_key(struct jw *w, const char *name);

void jw_str(struct jw *w, const char *s); /* NULL writes "" */
void jw_strn(struct jw *w, const char *s, size_t len);
void jw_int(struct jw *w, int64_t v);
void jw_uint(struct jw *w, uint64_t v);
void jw_bool(struct jw *w, bool v);
void jw_null(struct jw *w);
/* A value that is already valid JSON, copied verbatim. */
void jw_raw(struct jw *w, const char *json, size_t len);
/* "<prefix><64 lowercase hex>" as a string value (key fields). */
void jw_key_hex(struct jw *w, const char *prefix, const uint8_t key[32]);
/* RFC 3339 UTC string with millisecond precision ("2026-08-22T10:00:00.123Z",
 * trailing zeros of the fraction dropped as Go does, none when it is zero); 0
 * writes Go's zero time "0001-01-01T00:00:00Z". Instants outside the years
 * 1..9999, which Go cannot parse, are clamped to that range. */
void jw_time(struct jw *w, int64_t unix_ms);
/* An IP address as a prefix string: 4 bytes -> "a.b.c.d/32", 16 bytes ->
 * RFC 5952 text + "/128". Other lengths write nothing and fail the writer. */
void jw_host_prefix(struct jw *w, const uint8_t *addr, size_t len);

#endif
