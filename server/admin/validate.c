/* server/admin/validate.c: checks on operator input, done before anything is
 * proposed so that bad input changes nothing. The rules follow Headscale 0.29
 * where it has one (user names: hscontrol/util/dns.go ValidateUsername; tags:
 * grpcv1.go validateTag, tightened to tag:[a-z0-9-]+), DNS labels otherwise. */
#include "server/admin/admin_internal.h"
#include "server/policy/policy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#define USERNAME_MAX_BYTES 255
#define TAG_MAX_BYTES      255

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_ascii_letter(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

int admin_parse_id(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    if (s == NULL || *s == '\0' || strlen(s) > 20)
        return -1;
    for (const char *p = s; *p != '\0'; p++) {
        if (!is_digit(*p))
            return -1;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (v == 0)
        return -1;
    *out = v;
    return 0;
}

int admin_validate_username(const char *name, char *why)
{
    size_t len = strlen(name);
    unsigned n_at = 0;

    if (len < 2) {
        snprintf(why, ADMIN_WHY_BYTES, "user name must be at least 2 characters long");
        return -1;
    }
    if (len > USERNAME_MAX_BYTES) {
        snprintf(why, ADMIN_WHY_BYTES, "user name must be at most %d characters long",
                 USERNAME_MAX_BYTES);
        return -1;
    }
    if (!is_ascii_letter(name[0])) {
        snprintf(why, ADMIN_WHY_BYTES, "user name must start with a letter");
        return -1;
    }
    for (const char *p = name; *p != '\0'; p++) {
        if (is_ascii_letter(*p) || is_digit(*p) || *p == '-' || *p == '.' || *p == '_')
            continue;
        if (*p == '@' && ++n_at == 1)
            continue;
        if (*p == '@')
            snprintf(why, ADMIN_WHY_BYTES, "user name cannot contain more than one '@'");
        else if ((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7F)
            snprintf(why, ADMIN_WHY_BYTES, "user name contains invalid character '%c'", *p);
        else
            snprintf(why, ADMIN_WHY_BYTES, "user name contains invalid byte 0x%02x",
                     (unsigned char)*p);
        return -1;
    }
    return 0;
}

int admin_validate_node_name(const char *name, char *why)
{
    size_t len = strlen(name);

    if (len == 0 || len > 63) {
        snprintf(why, ADMIN_WHY_BYTES, "node name must be 1 to 63 characters long");
        return -1;
    }
    for (const char *p = name; *p != '\0'; p++) {
        if (!is_lower_alnum(*p) && *p != '-') {
            snprintf(why, ADMIN_WHY_BYTES,
                     "node name must be a DNS label: lower-case letters, digits and '-'");
            return -1;
        }
    }
    if (name[0] == '-' || name[len - 1] == '-') {
        snprintf(why, ADMIN_WHY_BYTES, "node name cannot start or end with '-'");
        return -1;
    }
    return 0;
}

int admin_validate_tag(const char *tag, char *why)
{
    size_t len = strlen(tag);

    if (strncmp(tag, "tag:", 4) != 0) {
        snprintf(why, ADMIN_WHY_BYTES, "tag \"%.64s\" must start with \"tag:\"", tag);
        return -1;
    }
    if (len == 4 || len > TAG_MAX_BYTES) {
        snprintf(why, ADMIN_WHY_BYTES, "tag \"%.64s\" must have a name of 1 to %d characters", tag,
                 TAG_MAX_BYTES - 4);
        return -1;
    }
    for (const char *p = tag + 4; *p != '\0'; p++) {
        if (!is_lower_alnum(*p) && *p != '-') {
            snprintf(why, ADMIN_WHY_BYTES,
                     "tag \"%.64s\" may only contain lower-case letters, digits and '-' after "
                     "\"tag:\"",
                     tag);
            return -1;
        }
    }
    return 0;
}

int admin_validate_cidr(const char *cidr, char *why)
{
    const char *slash = strchr(cidr, '/');
    char addr[INET6_ADDRSTRLEN];
    unsigned char buf[16];
    unsigned long bits = 0;
    int max_bits;

    if (slash == NULL || (size_t)(slash - cidr) >= sizeof addr || slash[1] == '\0' ||
        strlen(slash + 1) > 3)
        goto err_syntax;
    memcpy(addr, cidr, (size_t)(slash - cidr));
    addr[slash - cidr] = '\0';
    if (inet_pton(AF_INET, addr, buf) == 1)
        max_bits = 32;
    else if (inet_pton(AF_INET6, addr, buf) == 1)
        max_bits = 128;
    else
        goto err_syntax;
    for (const char *p = slash + 1; *p != '\0'; p++) {
        if (!is_digit(*p))
            goto err_syntax;
        bits = bits * 10 + (unsigned long)(*p - '0');
    }
    if ((slash[1] == '0' && slash[2] != '\0') || bits > (unsigned long)max_bits) {
        snprintf(why, ADMIN_WHY_BYTES, "route \"%.64s\": prefix length must be 0 to %d", cidr,
                 max_bits);
        return -1;
    }
    return 0;

err_syntax:
    snprintf(why, ADMIN_WHY_BYTES, "route \"%.64s\" is not a CIDR prefix like 10.0.0.0/24", cidr);
    return -1;
}

/* Reads exactly n digits. */
static int digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!is_digit((*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static bool is_leap(int year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

/* RFC 3339 date-time: 2006-01-02T15:04:05[.frac](Z|+hh:mm|-hh:mm). */
int admin_parse_rfc3339(const char *s, int64_t *unix_ms)
{
    static const int month_days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int year, month, day, hour, min, sec, off_h = 0, off_m = 0, sign = 0;
    int64_t frac_ms = 0;
    const char *p = s;
    struct tm tm = {0};
    time_t t;

    if (digits(&p, 4, &year) != 0 || *p++ != '-' || digits(&p, 2, &month) != 0 || *p++ != '-' ||
        digits(&p, 2, &day) != 0 || (*p != 'T' && *p != 't'))
        return -1;
    p++;
    if (digits(&p, 2, &hour) != 0 || *p++ != ':' || digits(&p, 2, &min) != 0 || *p++ != ':' ||
        digits(&p, 2, &sec) != 0)
        return -1;
    if (*p == '.') {
        int n = 0;
        p++;
        if (!is_digit(*p))
            return -1;
        for (; is_digit(*p); p++, n++) {
            if (n < 3)
                frac_ms = frac_ms * 10 + (*p - '0');
        }
        for (; n < 3; n++)
            frac_ms *= 10;
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '-' ? -1 : 1;
        p++;
        if (digits(&p, 2, &off_h) != 0 || *p++ != ':' || digits(&p, 2, &off_m) != 0 || off_h > 23 ||
            off_m > 59)
            return -1;
    } else {
        return -1;
    }
    if (*p != '\0' || year < 1970 || month < 1 || month > 12 || day < 1 || hour > 23 || min > 59 ||
        sec > 60)
        return -1;
    if (day > month_days[month - 1] + (month == 2 && is_leap(year)))
        return -1;
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec == 60 ? 59 : sec; /* a leap second reads as the second before it */
    t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *unix_ms = ((int64_t)t - (int64_t)sign * (off_h * 3600 + off_m * 60)) * 1000 + frac_ms;
    return 0;
}

int admin_parse_node_key(const char *s, uint8_t key[32])
{
    size_t bin_len = 0;
    const char *end = NULL;

    if (strncmp(s, "nodekey:", 8) != 0 || strlen(s + 8) != 64)
        return -1;
    if (sodium_hex2bin(key, 32, s + 8, 64, NULL, &bin_len, &end) != 0 || bin_len != 32 ||
        *end != '\0')
        return -1;
    return 0;
}

void admin_strings_free(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

int admin_tags_copy(const json_t *tags, char ***out, size_t *n, char *why)
{
    size_t count = json_array_size(tags);
    char **v = calloc(count > 0 ? count : 1, sizeof *v);

    if (v == NULL) {
        snprintf(why, ADMIN_WHY_BYTES, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        const char *tag = json_string_value(json_array_get(tags, i));
        if (admin_validate_tag(tag, why) != 0)
            goto err_after_alloc;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(v[j], tag) == 0) {
                snprintf(why, ADMIN_WHY_BYTES, "tag \"%.64s\" is listed twice", tag);
                goto err_after_alloc;
            }
        }
        v[i] = admin_strdup(tag);
        if (v[i] == NULL) {
            snprintf(why, ADMIN_WHY_BYTES, "out of memory");
            goto err_after_alloc;
        }
    }
    *out = v;
    *n = count;
    return 0;

err_after_alloc:
    admin_strings_free(v, count);
    return -1;
}

/* A route as clients advertise it: a CIDR prefix without host bits, in
 * canonical form. */
static int route_check(const char *text, char *why)
{
    struct policy_prefix p;
    char canonical[64];

    if (admin_validate_cidr(text, why) != 0)
        return -1;
    if (policy_prefix_parse(text, &p) != 0) {
        snprintf(why, ADMIN_WHY_BYTES,
                 "route \"%.64s\" has host bits set: a route is a network, like 10.0.0.0/24", text);
        return -1;
    }
    policy_prefix_format(&p, canonical, sizeof canonical);
    if (strcmp(canonical, text) != 0) {
        snprintf(why, ADMIN_WHY_BYTES, "route \"%.50s\" is not in canonical form: write %.50s",
                 text, canonical);
        return -1;
    }
    return 0;
}

int admin_routes_copy(const json_t *routes, char ***out, size_t *n, char *why)
{
    size_t count = json_array_size(routes);
    char **v = calloc(count > 0 ? count : 1, sizeof *v);

    if (v == NULL) {
        snprintf(why, ADMIN_WHY_BYTES, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < count; i++) {
        const char *route = json_string_value(json_array_get(routes, i));

        if (route_check(route, why) != 0)
            goto err;
        for (size_t j = 0; j < i; j++)
            if (strcmp(v[j], route) == 0) {
                snprintf(why, ADMIN_WHY_BYTES, "route \"%.64s\" is listed twice", route);
                goto err;
            }
        v[i] = admin_strdup(route);
        if (v[i] == NULL) {
            snprintf(why, ADMIN_WHY_BYTES, "out of memory");
            goto err;
        }
    }
    *out = v;
    *n = count;
    return 0;

err:
    admin_strings_free(v, count);
    return -1;
}
