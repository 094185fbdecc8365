/* server/policy/hujson.h: a reader for HuJSON (JSON with Commas and
 * Comments), the format of Tailscale policy files: standard JSON plus // and
 * block comments and one trailing comma after the last element of an array
 * or object, as github.com/tailscale/hujson accepts it (a // comment ends
 * with a newline; comments are valid UTF-8). Strict otherwise: one value at
 * the top, strings in valid UTF-8 with their escapes decoded (surrogate
 * pairs joined, lone surrogates refused), numbers as JSON writes them, no
 * duplicate keys in an object.
 *
 * The result is a tree in which every value and every object key carries
 * its 1-based line and column (counted in characters), so that the policy
 * parser can say where a problem is. Bounded on hostile input: the text
 * size, the nesting depth and the number of values are limited, and no step
 * costs more than O(n log n). No global state. */
#ifndef CONCORD_SERVER_POLICY_HUJSON_H
#define CONCORD_SERVER_POLICY_HUJSON_H

#include "server/policy/policy.h"

#include <stddef.h>

#define HUJSON_MAX_BYTES  (4u << 20) /* text size */
#define HUJSON_MAX_DEPTH  64         /* arrays and objects inside each other */
#define HUJSON_MAX_VALUES (1u << 18) /* values and object members, all told */

enum hujson_kind {
    HUJSON_NULL,
    HUJSON_FALSE,
    HUJSON_TRUE,
    HUJSON_NUMBER,
    HUJSON_STRING,
    HUJSON_ARRAY,
    HUJSON_OBJECT,
};

struct hujson_member;

struct hujson_value {
    enum hujson_kind kind;
    unsigned line; /* of the value's first character */
    unsigned col;
    size_t n;         /* STRING, NUMBER: bytes of text; ARRAY: items; OBJECT: members */
    const char *text; /* STRING: decoded UTF-8 (may hold NUL bytes); NUMBER: as
                         written. NUL-terminated either way. */
    const struct hujson_value *items;    /* ARRAY */
    const struct hujson_member *members; /* OBJECT, in document order */
};

struct hujson_member {
    const char *key; /* decoded, NUL-terminated */
    size_t key_len;
    unsigned line; /* of the key */
    unsigned col;
    struct hujson_value value;
};

struct hujson_doc; /* owns every value and string of one parse */

/* Parses text[0..len). On 0, *out holds the tree until hujson_free. On
 * POLICY_EINVAL, *err (may be NULL) says where and why; POLICY_ENOMEM when
 * memory ran out. */
int hujson_parse(const char *text, size_t len, struct hujson_doc **out, struct policy_error *err);
const struct hujson_value *hujson_root(const struct hujson_doc *doc);
void hujson_free(struct hujson_doc *doc); /* NULL is fine */

#endif
