/* server/admin/hujson.c: recursive descent over HuJSON. The parser only
 * answers "is this valid, and if not where does it first go wrong"; the
 * policy engine reads the document itself. Recursion is bounded by
 * ADMIN_HUJSON_MAX_DEPTH. */
#include "server/admin/hujson.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct parser {
    const unsigned char *text;
    size_t len;
    size_t pos;
    struct admin_hujson_error *err;
};

static int fail_at(struct parser *p, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reports an error at byte offset pos. Line and column are counted from the
 * start only now: errors are rare, and positions stay right for errors that
 * point back at an opening bracket on an earlier line. */
static int fail_at(struct parser *p, size_t pos, const char *fmt, ...)
{
    va_list ap;
    unsigned line = 1;
    size_t line_start = 0;
    unsigned col = 1;

    if (p->err == NULL)
        return -1;
    for (size_t i = 0; i < pos && i < p->len; i++) {
        if (p->text[i] == '\n') {
            line++;
            line_start = i + 1;
        }
    }
    for (size_t i = line_start; i < pos && i < p->len; i++) {
        if ((p->text[i] & 0xC0) != 0x80)
            col++;
    }
    p->err->line = line;
    p->err->col = col;
    va_start(ap, fmt);
    vsnprintf(p->err->message, sizeof p->err->message, fmt, ap);
    va_end(ap);
    return -1;
}

static int fail(struct parser *p, const char *what)
{
    if (p->pos >= p->len)
        return fail_at(p, p->pos, "unexpected end of input, expected %s", what);
    unsigned char c = p->text[p->pos];
    if (c >= 0x20 && c < 0x7F)
        return fail_at(p, p->pos, "unexpected '%c', expected %s", c, what);
    return fail_at(p, p->pos, "unexpected byte 0x%02x, expected %s", c, what);
}

/* Length of the valid UTF-8 sequence at pos, or 0 if it is not one
 * (overlong forms, surrogates and code points past U+10FFFF are invalid). */
static size_t utf8_len(const struct parser *p, size_t pos)
{
    const unsigned char *s = p->text + pos;
    size_t left = p->len - pos;
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        n = 2;
    else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        n = 3;
        if (s[0] == 0xE0)
            lo = 0xA0;
        else if (s[0] == 0xED)
            hi = 0x9F;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        n = 4;
        if (s[0] == 0xF0)
            lo = 0x90;
        else if (s[0] == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (left < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    }
    return n;
}

/* Skips whitespace and comments. */
static int skip_space(struct parser *p)
{
    while (p->pos < p->len) {
        unsigned char c = p->text[p->pos];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            p->pos++;
        } else if (c == '/' && p->pos + 1 < p->len && p->text[p->pos + 1] == '/') {
            p->pos += 2;
            while (p->pos < p->len && p->text[p->pos] != '\n') {
                size_t n = utf8_len(p, p->pos);
                if (n == 0)
                    return fail_at(p, p->pos, "invalid UTF-8 in comment");
                p->pos += n;
            }
        } else if (c == '/' && p->pos + 1 < p->len && p->text[p->pos + 1] == '*') {
            size_t start = p->pos;
            p->pos += 2;
            for (;;) {
                if (p->pos + 1 >= p->len)
                    return fail_at(p, start, "unterminated /* comment");
                if (p->text[p->pos] == '*' && p->text[p->pos + 1] == '/') {
                    p->pos += 2;
                    break;
                }
                size_t n = utf8_len(p, p->pos);
                if (n == 0)
                    return fail_at(p, p->pos, "invalid UTF-8 in comment");
                p->pos += n;
            }
        } else if (c == '/') {
            return fail_at(p, p->pos, "unexpected '/': comments start with // or /*");
        } else {
            break;
        }
    }
    return 0;
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int parse_string(struct parser *p)
{
    size_t start = p->pos;

    p->pos++; /* opening quote */
    for (;;) {
        if (p->pos >= p->len)
            return fail_at(p, start, "unterminated string");
        unsigned char c = p->text[p->pos];
        if (c == '"') {
            p->pos++;
            return 0;
        }
        if (c == '\n')
            return fail_at(p, start, "unterminated string (newline before the closing quote)");
        if (c < 0x20)
            return fail_at(p, p->pos, "control character 0x%02x in string: escape it", c);
        if (c == '\\') {
            if (p->pos + 1 >= p->len)
                return fail_at(p, start, "unterminated string");
            unsigned char e = p->text[p->pos + 1];
            if (e == 'u') {
                for (size_t i = 2; i < 6; i++) {
                    if (p->pos + i >= p->len || !is_hex(p->text[p->pos + i]))
                        return fail_at(p, p->pos, "invalid \\u escape: expected 4 hex digits");
                }
                p->pos += 6;
                continue;
            }
            if (strchr("\"\\/bfnrt", e) == NULL || e == '\0')
                return fail_at(p, p->pos, "invalid escape in string");
            p->pos += 2;
            continue;
        }
        size_t n = utf8_len(p, p->pos);
        if (n == 0)
            return fail_at(p, p->pos, "invalid UTF-8 in string");
        p->pos += n;
    }
}

static int parse_number(struct parser *p)
{
    const unsigned char *t = p->text;

    if (p->pos < p->len && t[p->pos] == '-')
        p->pos++;
    if (p->pos >= p->len || !is_digit(t[p->pos]))
        return fail(p, "a digit");
    if (t[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->len && is_digit(t[p->pos]))
            return fail_at(p, p->pos, "invalid number: leading zero");
    } else {
        while (p->pos < p->len && is_digit(t[p->pos]))
            p->pos++;
    }
    if (p->pos < p->len && t[p->pos] == '.') {
        p->pos++;
        if (p->pos >= p->len || !is_digit(t[p->pos]))
            return fail(p, "a digit after the decimal point");
        while (p->pos < p->len && is_digit(t[p->pos]))
            p->pos++;
    }
    if (p->pos < p->len && (t[p->pos] == 'e' || t[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (t[p->pos] == '+' || t[p->pos] == '-'))
            p->pos++;
        if (p->pos >= p->len || !is_digit(t[p->pos]))
            return fail(p, "a digit in the exponent");
        while (p->pos < p->len && is_digit(t[p->pos]))
            p->pos++;
    }
    return 0;
}

static int parse_literal(struct parser *p)
{
    static const char *const words[] = {"true", "false", "null"};

    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i]);
        if (p->len - p->pos >= n && memcmp(p->text + p->pos, words[i], n) == 0) {
            p->pos += n;
            return 0;
        }
    }
    return fail(p, "a value");
}

static int parse_value(struct parser *p, unsigned depth);

/* Arrays and objects share one loop: elements separated by commas, with an
 * optional comma after the last one. */
static int parse_container(struct parser *p, unsigned depth)
{
    bool is_object = p->text[p->pos] == '{';
    unsigned char close = is_object ? '}' : ']';
    size_t open = p->pos;

    if (depth >= ADMIN_HUJSON_MAX_DEPTH)
        return fail_at(p, p->pos, "nesting deeper than %d", ADMIN_HUJSON_MAX_DEPTH);
    p->pos++;
    for (;;) {
        if (skip_space(p) != 0)
            return -1;
        if (p->pos >= p->len)
            return fail_at(p, open, "unterminated %s", is_object ? "object" : "array");
        if (p->text[p->pos] == close) {
            p->pos++;
            return 0;
        }
        if (is_object) {
            if (p->text[p->pos] != '"')
                return fail(p, "a quoted member name or '}'");
            if (parse_string(p) != 0 || skip_space(p) != 0)
                return -1;
            if (p->pos >= p->len || p->text[p->pos] != ':')
                return fail(p, "':' after the member name");
            p->pos++;
            if (skip_space(p) != 0)
                return -1;
        }
        if (parse_value(p, depth + 1) != 0 || skip_space(p) != 0)
            return -1;
        if (p->pos >= p->len)
            return fail_at(p, open, "unterminated %s", is_object ? "object" : "array");
        if (p->text[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->text[p->pos] == close) {
            p->pos++;
            return 0;
        }
        return fail(p, is_object ? "',' or '}'" : "',' or ']'");
    }
}

static int parse_value(struct parser *p, unsigned depth)
{
    if (p->pos >= p->len)
        return fail(p, "a value");
    switch (p->text[p->pos]) {
    case '{':
    case '[':
        return parse_container(p, depth);
    case '"':
        return parse_string(p);
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
        return parse_number(p);
    default:
        return parse_literal(p);
    }
}

int admin_hujson_check(const char *text, size_t len, struct admin_hujson_error *err)
{
    struct parser p = {.text = (const unsigned char *)text, .len = len, .err = err};

    if (skip_space(&p) != 0)
        return -1;
    if (p.pos >= p.len)
        return fail_at(&p, p.pos, "empty document: expected a value");
    if (parse_value(&p, 0) != 0 || skip_space(&p) != 0)
        return -1;
    if (p.pos < p.len)
        return fail_at(&p, p.pos, "unexpected data after the top-level value");
    return 0;
}
