/* server/policy/hujson.c: the HuJSON reader (see hujson.h).
 *
 * One pass, recursive descent, depth-limited. Finished values wait on a
 * stack until their array or object closes, then move into the document's
 * arena in one piece, so a document is a handful of big allocations freed
 * at once. Positions are computed as the reader goes: the column of the
 * current line is cached and only ever advanced, so a minified one-line
 * document costs O(n) in column counting, not O(n^2). */
#include "server/policy/hujson.h"

#include <stdalign.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARENA_BLOCK_BYTES (64u << 10)

struct arena_block {
    struct arena_block *next;
    size_t used;
    size_t size;
    alignas(max_align_t) unsigned char data[];
};

struct hujson_doc {
    struct arena_block *blocks;
    struct hujson_value root;
};

struct spot {
    unsigned line;
    unsigned col;
};

struct reader {
    const unsigned char *s;
    size_t len;
    size_t pos;
    unsigned line;
    size_t line_start;  /* offset of the current line's first byte */
    size_t col_offset;  /* the column cache: an offset on the current line... */
    unsigned col_chars; /* ...and the characters between line_start and it */
    size_t n_values;
    struct hujson_doc *doc;
    struct hujson_value *values; /* finished elements of the open arrays */
    size_t n_values_stack;
    size_t cap_values_stack;
    struct hujson_member *members; /* finished members of the open objects */
    size_t n_members_stack;
    size_t cap_members_stack;
    unsigned char *buf; /* the string being decoded */
    size_t buf_cap;
    struct policy_error *err;
};

static int parse_value(struct reader *r, unsigned depth, struct hujson_value *out);

/* ---- memory ---- */

static void *arena_alloc(struct hujson_doc *doc, size_t size)
{
    struct arena_block *b = doc->blocks;
    size_t aligned = (size + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1);
    void *p;

    if (aligned < size)
        return NULL;
    if (b == NULL || b->size - b->used < aligned) {
        size_t block = aligned > ARENA_BLOCK_BYTES ? aligned : ARENA_BLOCK_BYTES;

        b = malloc(sizeof *b + block);
        if (b == NULL)
            return NULL;
        b->used = 0;
        b->size = block;
        b->next = doc->blocks;
        doc->blocks = b;
    }
    p = b->data + b->used;
    b->used += aligned;
    return p;
}

static char *arena_strdup(struct hujson_doc *doc, const unsigned char *s, size_t n)
{
    char *copy = arena_alloc(doc, n + 1);

    if (copy == NULL)
        return NULL;
    if (n > 0)
        memcpy(copy, s, n);
    copy[n] = '\0';
    return copy;
}

/* Makes room for one more element of size `elem` in *stack. */
static int stack_reserve(void **stack, size_t *cap, size_t n, size_t elem)
{
    size_t next;
    void *grown;

    if (n < *cap)
        return 0;
    next = *cap == 0 ? 64 : *cap * 2;
    grown = realloc(*stack, next * elem);
    if (grown == NULL)
        return POLICY_ENOMEM;
    *stack = grown;
    *cap = next;
    return 0;
}

static int buf_put(struct reader *r, size_t *n, const unsigned char *bytes, size_t count)
{
    if (count == 0)
        return 0;
    if (*n + count > r->buf_cap) {
        size_t next = r->buf_cap == 0 ? 256 : r->buf_cap;
        unsigned char *grown;

        while (next < *n + count)
            next *= 2;
        grown = realloc(r->buf, next);
        if (grown == NULL)
            return POLICY_ENOMEM;
        r->buf = grown;
        r->buf_cap = next;
    }
    memcpy(r->buf + *n, bytes, count);
    *n += count;
    return 0;
}

/* ---- positions and errors ---- */

static bool is_continuation(unsigned char c)
{
    return (c & 0xc0) == 0x80;
}

/* Line and column (in characters) of offset, which lies on the current line. */
static struct spot spot_of(struct reader *r, size_t offset)
{
    if (r->col_offset < r->line_start || r->col_offset > offset) {
        r->col_offset = r->line_start;
        r->col_chars = 0;
    }
    for (; r->col_offset < offset; r->col_offset++)
        if (!is_continuation(r->s[r->col_offset]))
            r->col_chars++;
    return (struct spot){r->line, r->col_chars + 1};
}

static struct spot here(struct reader *r)
{
    return spot_of(r, r->pos);
}

__attribute__((format(printf, 3, 4))) static int fail_at(struct reader *r, struct spot at,
                                                         const char *fmt, ...)
{
    va_list ap;

    if (r->err != NULL) {
        r->err->line = at.line;
        r->err->col = at.col;
        va_start(ap, fmt);
        vsnprintf(r->err->message, sizeof r->err->message, fmt, ap);
        va_end(ap);
    }
    return POLICY_EINVAL;
}

static int fail_char(struct reader *r, const char *where)
{
    unsigned char c = r->s[r->pos];

    if (c >= 0x20 && c < 0x7f)
        return fail_at(r, here(r), "invalid character '%c' %s", c, where);
    return fail_at(r, here(r), "invalid byte 0x%02x %s", c, where);
}

static int fail_eof(struct reader *r, const char *what)
{
    return fail_at(r, here(r), "unexpected end of text %s", what);
}

static int count_value(struct reader *r, struct spot at)
{
    if (++r->n_values > HUJSON_MAX_VALUES)
        return fail_at(r, at, "more than %u values", HUJSON_MAX_VALUES);
    return 0;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 sequence at s[0..n), or 0: no overlong forms,
 * no surrogates, nothing above U+10FFFF. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && is_continuation(s[1]) ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if (n < 3 || !is_continuation(s[1]) || !is_continuation(s[2]))
            return 0;
        if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f))
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if (n < 4 || !is_continuation(s[1]) || !is_continuation(s[2]) || !is_continuation(s[3]))
            return 0;
        if ((c == 0xf0 && s[1] < 0x90) || (c == 0xf4 && s[1] > 0x8f))
            return 0;
        return 4;
    }
    return 0;
}

static bool utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len(s + i, n - i);

        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

static size_t utf8_encode(uint32_t cp, unsigned char out[4])
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xc0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xe0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (unsigned char)(0xf0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

/* ---- whitespace and comments ---- */

static void newlines_in(struct reader *r, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        if (r->s[i] == '\n') {
            r->line++;
            r->line_start = i + 1;
        }
    }
}

static int skip_comment(struct reader *r)
{
    struct spot start = here(r);
    const unsigned char *body;
    const unsigned char *end;
    size_t rest;

    if (r->pos + 1 >= r->len || (r->s[r->pos + 1] != '/' && r->s[r->pos + 1] != '*'))
        return fail_char(r, "outside a string");
    body = r->s + r->pos + 2;
    rest = r->len - r->pos - 2;
    if (r->s[r->pos + 1] == '/') {
        end = memchr(body, '\n', rest);
        if (end == NULL)
            return fail_at(r, start, "unterminated // comment (it must end with a newline)");
        if (!utf8_valid(body, (size_t)(end - body)))
            return fail_at(r, start, "invalid UTF-8 in comment");
        r->pos = (size_t)(end - r->s);
        return 0;
    }
    end = memmem(body, rest, "*/", 2);
    if (end == NULL)
        return fail_at(r, start, "unterminated /* comment");
    if (!utf8_valid(body, (size_t)(end - body)))
        return fail_at(r, start, "invalid UTF-8 in comment");
    newlines_in(r, r->pos, (size_t)(end - r->s));
    r->pos = (size_t)(end - r->s) + 2;
    return 0;
}

/* Skips whitespace and comments. */
static int skip_extra(struct reader *r)
{
    while (r->pos < r->len) {
        unsigned char c = r->s[r->pos];
        int rv;

        if (c == '\n') {
            r->pos++;
            r->line++;
            r->line_start = r->pos;
        } else if (c == ' ' || c == '\t' || c == '\r') {
            r->pos++;
        } else if (c == '/') {
            rv = skip_comment(r);
            if (rv != 0)
                return rv;
        } else {
            break;
        }
    }
    return 0;
}

/* ---- strings ---- */

static int hex4(const unsigned char *s, uint32_t *out)
{
    uint32_t v = 0;

    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];

        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* A \u escape at r->pos (the backslash), with its low surrogate when it
 * opens a pair: the code point in *cp, r->pos past the escape(s). */
static int parse_unicode_escape(struct reader *r, uint32_t *cp)
{
    struct spot at = here(r);
    uint32_t low;

    *cp = 0;
    if (r->len - r->pos < 6 || hex4(r->s + r->pos + 2, cp) != 0)
        return fail_at(r, at, "invalid \\u escape");
    r->pos += 6;
    if (*cp >= 0xdc00 && *cp <= 0xdfff)
        return fail_at(r, at, "lone surrogate in \\u escape");
    if (*cp < 0xd800 || *cp > 0xdbff)
        return 0;
    if (r->len - r->pos < 6 || r->s[r->pos] != '\\' || r->s[r->pos + 1] != 'u' ||
        hex4(r->s + r->pos + 2, &low) != 0 || low < 0xdc00 || low > 0xdfff)
        return fail_at(r, at, "lone surrogate in \\u escape");
    r->pos += 6;
    *cp = 0x10000 + ((*cp - 0xd800) << 10) + (low - 0xdc00);
    return 0;
}

static int parse_escape(struct reader *r, size_t *n)
{
    static const char from[] = "\"\\/bfnrt";
    static const char to[] = "\"\\/\b\f\n\r\t";
    unsigned char out[4];
    const char *hit;
    uint32_t cp;
    int rv;

    if (r->pos + 1 >= r->len)
        return fail_eof(r, "in a string");
    if (r->s[r->pos + 1] == 'u') {
        rv = parse_unicode_escape(r, &cp);
        if (rv != 0)
            return rv;
        return buf_put(r, n, out, utf8_encode(cp, out));
    }
    hit = r->s[r->pos + 1] == '\0' ? NULL : strchr(from, r->s[r->pos + 1]);
    if (hit == NULL)
        return fail_at(r, here(r), "invalid escape in string");
    out[0] = (unsigned char)to[hit - from];
    r->pos += 2;
    return buf_put(r, n, out, 1);
}

/* The string at r->pos (its opening quote), decoded: *text in the arena. */
static int parse_string(struct reader *r, const char **text, size_t *len)
{
    size_t n = 0;
    int rv;

    r->pos++;
    for (;;) {
        size_t run = r->pos;
        size_t k;
        char *copy;

        while (r->pos < r->len && r->s[r->pos] >= 0x20 && r->s[r->pos] != '"' &&
               r->s[r->pos] != '\\' && r->s[r->pos] < 0x80)
            r->pos++;
        rv = buf_put(r, &n, r->s + run, r->pos - run);
        if (rv != 0)
            return rv;
        if (r->pos >= r->len)
            return fail_eof(r, "in a string");
        switch (r->s[r->pos]) {
        case '"':
            r->pos++;
            copy = arena_strdup(r->doc, r->buf, n);
            if (copy == NULL)
                return POLICY_ENOMEM;
            *text = copy;
            *len = n;
            return 0;
        case '\\':
            rv = parse_escape(r, &n);
            break;
        default:
            if (r->s[r->pos] < 0x20)
                return fail_at(r, here(r), "control character 0x%02x in a string", r->s[r->pos]);
            k = utf8_len(r->s + r->pos, r->len - r->pos);
            if (k == 0)
                return fail_at(r, here(r), "invalid UTF-8 in a string");
            rv = buf_put(r, &n, r->s + r->pos, k);
            r->pos += k;
            break;
        }
        if (rv != 0)
            return rv;
    }
}

/* ---- scalars ---- */

static bool is_literal_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '+' || c == '.';
}

static size_t digits(struct reader *r)
{
    size_t start = r->pos;

    while (r->pos < r->len && r->s[r->pos] >= '0' && r->s[r->pos] <= '9')
        r->pos++;
    return r->pos - start;
}

/* A JSON number: -? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)? */
static int parse_number(struct reader *r, struct hujson_value *out)
{
    size_t start = r->pos;
    struct spot at = here(r);
    bool ok = true;
    char *copy;

    if (r->s[r->pos] == '-')
        r->pos++;
    if (r->pos < r->len && r->s[r->pos] == '0')
        r->pos++;
    else
        ok = digits(r) > 0;
    if (ok && r->pos < r->len && r->s[r->pos] == '.') {
        r->pos++;
        ok = digits(r) > 0;
    }
    if (ok && r->pos < r->len && (r->s[r->pos] == 'e' || r->s[r->pos] == 'E')) {
        r->pos++;
        if (r->pos < r->len && (r->s[r->pos] == '+' || r->s[r->pos] == '-'))
            r->pos++;
        ok = digits(r) > 0;
    }
    if (!ok || (r->pos < r->len && is_literal_char(r->s[r->pos])))
        return fail_at(r, at, "invalid number");
    copy = arena_strdup(r->doc, r->s + start, r->pos - start);
    if (copy == NULL)
        return POLICY_ENOMEM;
    out->kind = HUJSON_NUMBER;
    out->text = copy;
    out->n = r->pos - start;
    return 0;
}

static int parse_word(struct reader *r, struct hujson_value *out)
{
    static const struct {
        const char *word;
        enum hujson_kind kind;
    } words[] = {{"true", HUJSON_TRUE}, {"false", HUJSON_FALSE}, {"null", HUJSON_NULL}};
    struct spot at = here(r);
    size_t start = r->pos;

    while (r->pos < r->len && is_literal_char(r->s[r->pos]))
        r->pos++;
    if (r->pos == start)
        return fail_char(r, "at the start of a value");
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (r->pos - start == strlen(words[i].word) &&
            memcmp(r->s + start, words[i].word, r->pos - start) == 0) {
            out->kind = words[i].kind;
            return 0;
        }
    }
    return fail_at(r, at, "invalid literal '%.*s'",
                   (int)(r->pos - start > 32 ? 32 : r->pos - start), (const char *)r->s + start);
}

/* ---- arrays and objects ---- */

/* After an element: "," (maybe trailing) or the closing character. Sets
 * *done when the container is closed. */
static int after_element(struct reader *r, char close, const char *what, bool *done)
{
    int rv = skip_extra(r);

    if (rv != 0)
        return rv;
    if (r->pos >= r->len)
        return fail_eof(r, what);
    if (r->s[r->pos] == close) {
        r->pos++;
        *done = true;
        return 0;
    }
    if (r->s[r->pos] != ',')
        return fail_at(r, here(r), "expected ',' or '%c' %s", close, what);
    r->pos++;
    rv = skip_extra(r);
    if (rv != 0)
        return rv;
    if (r->pos < r->len && r->s[r->pos] == close) {
        r->pos++;
        *done = true;
    }
    return 0;
}

static int parse_array(struct reader *r, unsigned depth, struct hujson_value *out)
{
    size_t base = r->n_values_stack;
    bool done = false;
    struct hujson_value *items;
    size_t n;
    int rv;

    r->pos++;
    rv = skip_extra(r);
    if (rv != 0)
        return rv;
    if (r->pos < r->len && r->s[r->pos] == ']') {
        r->pos++;
        done = true;
    }
    while (!done) {
        struct hujson_value v;

        rv = parse_value(r, depth + 1, &v);
        if (rv != 0)
            return rv;
        rv = stack_reserve((void **)&r->values, &r->cap_values_stack, r->n_values_stack,
                           sizeof *r->values);
        if (rv != 0)
            return rv;
        r->values[r->n_values_stack++] = v;
        rv = after_element(r, ']', "in an array", &done);
        if (rv != 0)
            return rv;
    }
    n = r->n_values_stack - base;
    items = n == 0 ? NULL : arena_alloc(r->doc, n * sizeof *items);
    if (n > 0 && items == NULL)
        return POLICY_ENOMEM;
    if (n > 0)
        memcpy(items, r->values + base, n * sizeof *items);
    r->n_values_stack = base;
    out->kind = HUJSON_ARRAY;
    out->items = items;
    out->n = n;
    return 0;
}

static int member_cmp(const void *pa, const void *pb)
{
    const struct hujson_member *const *a = pa;
    const struct hujson_member *const *b = pb;
    size_t n = (*a)->key_len < (*b)->key_len ? (*a)->key_len : (*b)->key_len;
    int c = memcmp((*a)->key, (*b)->key, n);

    if (c != 0)
        return c;
    if ((*a)->key_len != (*b)->key_len)
        return (*a)->key_len < (*b)->key_len ? -1 : 1;
    return *a < *b ? -1 : *a > *b;
}

static bool same_key(const struct hujson_member *a, const struct hujson_member *b)
{
    return a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0;
}

/* Refuses a key that appears twice, at its first repetition in the text.
 * Sorting keeps this O(n log n) for objects with many keys. */
static int check_duplicates(struct reader *r, const struct hujson_member *m, size_t n)
{
    const struct hujson_member **order;
    const struct hujson_member *dup = NULL;

    if (n < 2)
        return 0;
    order = malloc(n * sizeof *order);
    if (order == NULL)
        return POLICY_ENOMEM;
    for (size_t i = 0; i < n; i++)
        order[i] = &m[i];
    qsort(order, n, sizeof *order, member_cmp);
    for (size_t i = 1; i < n; i++)
        if (same_key(order[i - 1], order[i]) && (i < 2 || !same_key(order[i - 2], order[i])) &&
            (dup == NULL || order[i] < dup))
            dup = order[i];
    free(order);
    if (dup == NULL)
        return 0;
    return fail_at(r, (struct spot){dup->line, dup->col}, "duplicate key \"%.*s\"",
                   (int)(dup->key_len > 64 ? 64 : dup->key_len), dup->key);
}

static int parse_member(struct reader *r, unsigned depth, struct hujson_member *m)
{
    struct spot at = here(r);
    int rv;

    if (r->pos >= r->len)
        return fail_eof(r, "in an object");
    if (r->s[r->pos] != '"')
        return fail_char(r, "where an object key should start");
    rv = count_value(r, at);
    if (rv == 0)
        rv = parse_string(r, &m->key, &m->key_len);
    if (rv == 0)
        rv = skip_extra(r);
    if (rv != 0)
        return rv;
    m->line = at.line;
    m->col = at.col;
    if (r->pos >= r->len)
        return fail_eof(r, "after an object key");
    if (r->s[r->pos] != ':')
        return fail_at(r, here(r), "expected ':' after an object key");
    r->pos++;
    return parse_value(r, depth + 1, &m->value);
}

static int parse_object(struct reader *r, unsigned depth, struct hujson_value *out)
{
    size_t base = r->n_members_stack;
    bool done = false;
    struct hujson_member *members;
    size_t n;
    int rv;

    r->pos++;
    rv = skip_extra(r);
    if (rv != 0)
        return rv;
    if (r->pos < r->len && r->s[r->pos] == '}') {
        r->pos++;
        done = true;
    }
    while (!done) {
        struct hujson_member m;

        rv = parse_member(r, depth, &m);
        if (rv != 0)
            return rv;
        rv = stack_reserve((void **)&r->members, &r->cap_members_stack, r->n_members_stack,
                           sizeof *r->members);
        if (rv != 0)
            return rv;
        r->members[r->n_members_stack++] = m;
        rv = after_element(r, '}', "in an object", &done);
        if (rv != 0)
            return rv;
    }
    n = r->n_members_stack - base;
    members = n == 0 ? NULL : arena_alloc(r->doc, n * sizeof *members);
    if (n > 0 && members == NULL)
        return POLICY_ENOMEM;
    if (n > 0)
        memcpy(members, r->members + base, n * sizeof *members);
    r->n_members_stack = base;
    out->kind = HUJSON_OBJECT;
    out->members = members;
    out->n = n;
    return check_duplicates(r, members, n);
}

/* One value at r->pos, with the whitespace and comments before it. */
static int parse_value(struct reader *r, unsigned depth, struct hujson_value *out)
{
    struct spot at;
    int rv = skip_extra(r);

    if (rv != 0)
        return rv;
    if (r->pos >= r->len)
        return fail_eof(r, "where a value should start");
    at = here(r);
    *out = (struct hujson_value){.line = at.line, .col = at.col};
    rv = count_value(r, at);
    if (rv != 0)
        return rv;
    switch (r->s[r->pos]) {
    case '[':
    case '{':
        if (depth >= HUJSON_MAX_DEPTH)
            return fail_at(r, at, "nesting deeper than %u levels", HUJSON_MAX_DEPTH);
        return r->s[r->pos] == '[' ? parse_array(r, depth, out) : parse_object(r, depth, out);
    case '"':
        out->kind = HUJSON_STRING;
        return parse_string(r, &out->text, &out->n);
    case '-':
    case '0':
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
    case '7':
    case '8':
    case '9':
        return parse_number(r, out);
    default:
        return parse_word(r, out);
    }
}

/* ---- the document ---- */

int hujson_parse(const char *text, size_t len, struct hujson_doc **out, struct policy_error *err)
{
    struct reader r = {.s = (const unsigned char *)text, .len = len, .line = 1, .err = err};
    int rv;

    if (err != NULL)
        *err = (struct policy_error){0};
    if (len > HUJSON_MAX_BYTES)
        return fail_at(&r, (struct spot){0, 0}, "text larger than %u bytes", HUJSON_MAX_BYTES);
    r.doc = calloc(1, sizeof *r.doc);
    if (r.doc == NULL)
        return POLICY_ENOMEM;
    rv = skip_extra(&r);
    if (rv == 0 && r.pos >= r.len)
        rv = fail_eof(&r, "where the document should start");
    if (rv == 0)
        rv = parse_value(&r, 0, &r.doc->root);
    if (rv == 0)
        rv = skip_extra(&r);
    if (rv == 0 && r.pos < r.len)
        rv = fail_char(&r, "after the top-level value");
    free(r.values);
    free(r.members);
    free(r.buf);
    if (rv != 0) {
        hujson_free(r.doc);
        return rv;
    }
    *out = r.doc;
    return 0;
}

const struct hujson_value *hujson_root(const struct hujson_doc *doc)
{
    return &doc->root;
}

void hujson_free(struct hujson_doc *doc)
{
    struct arena_block *b;

    if (doc == NULL)
        return;
    while ((b = doc->blocks) != NULL) {
        doc->blocks = b->next;
        free(b);
    }
    free(doc);
}
