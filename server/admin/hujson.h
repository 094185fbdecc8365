/* server/admin/hujson.h: a validating parser for HuJSON (JSON with Commas and
 * Comments, the format of Tailscale and Headscale policies): standard JSON
 * plus // and block comments and a trailing comma after the last element of
 * an array or object. Anything else is refused with the line and column of
 * the first offending character. I/O-free, so it has a fuzz target
 * (tests/fuzz/hujson.c). */
#ifndef CONCORD_SERVER_ADMIN_HUJSON_H
#define CONCORD_SERVER_ADMIN_HUJSON_H

#include <stddef.h>

/* Nesting deeper than this is refused, so hostile input cannot exhaust the stack. */
#define ADMIN_HUJSON_MAX_DEPTH 256

struct admin_hujson_error {
    unsigned line;    /* 1-based */
    unsigned col;     /* 1-based, in characters (UTF-8 code points) */
    char message[96]; /* "unterminated string", ... */
};

/* Checks that text[0..len) is one HuJSON value surrounded by optional
 * whitespace and comments, in valid UTF-8. Returns 0, or -1 with *err filled
 * (err may be NULL). */
int admin_hujson_check(const char *text, size_t len, struct admin_hujson_error *err);

#endif
