/* server/control/wire.c: the request decoders of wire.h. jansson parses the
 * body (depth-limited, NUL in strings refused, nothing after the value); each
 * field is then checked against its Go type and our limits, and copied out so
 * that the jansson tree can be dropped at once. */
#include "server/control/wire.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/control/noise.h"

#define ZERO_TIME_SECONDS (-62135596800LL) /* 0001-01-01T00:00:00Z */
#define MAX_PORT          65535
/* The longest text an address check produces: "[" IPv6 "]:65535". */
#define ADDR_TEXT_BYTES (INET6_ADDRSTRLEN + 8)

__attribute__((format(printf, 2, 3))) static int fail(char *errmsg, const char *fmt, ...)
{
    va_list ap;

    if (errmsg != NULL) {
        va_start(ap, fmt);
        vsnprintf(errmsg, WIRE_ERRMSG_BYTES, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ---- times ---- */

/* Reads exactly n decimal digits. */
static bool read_digits(const char **p, int n, int *out)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return true;
}

static bool expect(const char **p, char c)
{
    if (**p != c)
        return false;
    (*p)++;
    return true;
}

static bool is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (400-year eras, years
 * starting in March so that the leap day comes last). */
static int64_t days_from_civil(int y, int m, int d)
{
    int64_t yy = m <= 2 ? y - 1 : y;
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}

/* ".d{1,9}" if present: the fraction in nanoseconds. */
static bool read_fraction(const char **p, int64_t *nanos)
{
    int digits = 0;

    *nanos = 0;
    if (**p != '.')
        return true;
    (*p)++;
    while (**p >= '0' && **p <= '9') {
        if (++digits > 9)
            return false;
        *nanos = *nanos * 10 + (**p - '0');
        (*p)++;
    }
    for (int i = digits; i < 9; i++)
        *nanos *= 10;
    return digits > 0;
}

/* "Z" or "+hh:mm" / "-hh:mm": seconds east of UTC. */
static bool read_offset(const char **p, int64_t *offset)
{
    int sign;
    int hh;
    int mm;

    *offset = 0;
    if (expect(p, 'Z'))
        return true;
    if (**p != '+' && **p != '-')
        return false;
    sign = **p == '-' ? -1 : 1;
    (*p)++;
    if (!read_digits(p, 2, &hh) || !expect(p, ':') || !read_digits(p, 2, &mm) || hh > 23 || mm > 59)
        return false;
    *offset = sign * (hh * 3600 + mm * 60);
    return true;
}

bool wire_parse_time(const char *text, int64_t *unix_ms)
{
    const char *p = text;
    int y, mo, d, h, mi, s;
    int64_t nanos;
    int64_t offset;
    int64_t secs;

    if (!read_digits(&p, 4, &y) || !expect(&p, '-') || !read_digits(&p, 2, &mo) ||
        !expect(&p, '-') || !read_digits(&p, 2, &d) || !expect(&p, 'T') ||
        !read_digits(&p, 2, &h) || !expect(&p, ':') || !read_digits(&p, 2, &mi) ||
        !expect(&p, ':') || !read_digits(&p, 2, &s) || !read_fraction(&p, &nanos) ||
        !read_offset(&p, &offset) || *p != '\0')
        return false;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59)
        return false;
    secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset;
    if (secs == ZERO_TIME_SECONDS && nanos == 0) {
        *unix_ms = INT64_MIN;
        return true;
    }
    *unix_ms = secs * 1000 + nanos / 1000000;
    return true;
}

/* ---- text forms of addresses and tags ---- */

/* A decimal of 1 to 5 digits, at most max; a leading zero only when
 * leading_zero_ok (ports: Go's strconv accepts "080", netip's bits do not). */
static bool parse_number(const char *s, size_t len, long max, bool leading_zero_ok, long *out)
{
    long v = 0;

    if (len == 0 || len > 5 || (!leading_zero_ok && len > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

/* An address (no zone) of family af from s[0..len); false if malformed. */
static bool parse_addr(int af, const char *s, size_t len, uint8_t addr[16])
{
    char tmp[INET6_ADDRSTRLEN];

    if (len >= sizeof tmp)
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return inet_pton(af, tmp, addr) == 1;
}

/* A check and canonicalization of one list element into out (cap bytes);
 * false if the text is not of the element's kind. */
typedef bool (*canon_fn)(const char *in, char *out, size_t cap);

/* "ip:port" or "[ipv6]:port" (Go's netip.AddrPort), re-formatted. */
static bool canon_endpoint(const char *in, char *out, size_t cap)
{
    const char *colon;
    uint8_t addr[16];
    char text[INET6_ADDRSTRLEN];
    int af;
    long port;

    if (in[0] == '[') {
        const char *close = strchr(in, ']');
        if (close == NULL || close[1] != ':' ||
            !parse_addr(AF_INET6, in + 1, (size_t)(close - in - 1), addr))
            return false;
        colon = close + 1;
        af = AF_INET6;
    } else {
        colon = strrchr(in, ':');
        if (colon == NULL || !parse_addr(AF_INET, in, (size_t)(colon - in), addr))
            return false;
        af = AF_INET;
    }
    if (!parse_number(colon + 1, strlen(colon + 1), MAX_PORT, true, &port) ||
        inet_ntop(af, addr, text, sizeof text) == NULL)
        return false;
    return snprintf(out, cap, af == AF_INET6 ? "[%s]:%ld" : "%s:%ld", text, port) < (int)cap;
}

/* True if no bit past the first `bits` of addr is set. */
static bool host_bits_zero(const uint8_t *addr, size_t addr_len, long bits)
{
    for (size_t i = 0; i < addr_len; i++) {
        long first_bit = (long)i * 8;
        uint8_t host_mask;
        if (first_bit + 8 <= bits)
            continue;
        host_mask = first_bit >= bits ? 0xff : (uint8_t)(0xff >> (bits - first_bit));
        if ((addr[i] & host_mask) != 0)
            return false;
    }
    return true;
}

/* "addr/bits" with the host bits zero (a canonical netip.Prefix). */
static bool canon_prefix(const char *in, char *out, size_t cap)
{
    const char *slash = strchr(in, '/');
    uint8_t addr[16];
    char text[INET6_ADDRSTRLEN];
    int af;
    size_t addr_len;
    long bits;

    if (slash == NULL)
        return false;
    af = memchr(in, ':', (size_t)(slash - in)) != NULL ? AF_INET6 : AF_INET;
    addr_len = af == AF_INET6 ? 16 : 4;
    if (!parse_addr(af, in, (size_t)(slash - in), addr) ||
        !parse_number(slash + 1, strlen(slash + 1), (long)addr_len * 8, false, &bits) ||
        !host_bits_zero(addr, addr_len, bits) || inet_ntop(af, addr, text, sizeof text) == NULL)
        return false;
    return snprintf(out, cap, "%s/%ld", text, bits) < (int)cap;
}

/* "tag:" followed by letters, digits and dashes. */
static bool canon_tag(const char *in, char *out, size_t cap)
{
    size_t len = strlen(in);

    if (strncmp(in, "tag:", 4) != 0 || len == 4 || len >= cap)
        return false;
    for (size_t i = 4; i < len; i++) {
        char c = in[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return false;
    }
    memcpy(out, in, len + 1);
    return true;
}

/* ---- JSON members ---- */

/* The member `name`, NULL when absent or null (Go treats both alike). */
static json_t *member(const json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);

    return json_is_null(v) ? NULL : v;
}

/* A string member of at most max bytes: *out NULL when absent. */
static int string_member(const json_t *obj, const char *name, const char *label, size_t max,
                         const char **out, char *errmsg)
{
    json_t *v = member(obj, name);

    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return fail(errmsg, "%s: not a string", label);
    if (json_string_length(v) > max)
        return fail(errmsg, "%s: longer than %zu bytes", label, max);
    *out = json_string_value(v);
    return 0;
}

/* Copies s into *out; an empty string stays NULL when empty_is_null. */
static int copy_string(const char *s, bool empty_is_null, char **out, char *errmsg)
{
    if (s == NULL || (empty_is_null && s[0] == '\0'))
        return 0;
    *out = strdup(s);
    if (*out == NULL)
        return fail(errmsg, "out of memory");
    return 0;
}

static int dup_member(const json_t *obj, const char *name, const char *label, bool empty_is_null,
                      char **out, char *errmsg)
{
    const char *s;

    if (string_member(obj, name, label, WIRE_MAX_STRING, &s, errmsg) != 0)
        return -1;
    return copy_string(s, empty_is_null, out, errmsg);
}

static int bool_member(const json_t *obj, const char *name, bool *out, char *errmsg)
{
    json_t *v = member(obj, name);

    *out = false;
    if (v == NULL)
        return 0;
    if (!json_is_boolean(v))
        return fail(errmsg, "%s: not a boolean", name);
    *out = json_is_true(v);
    return 0;
}

static int version_member(const json_t *obj, uint32_t *out, char *errmsg)
{
    json_t *v = member(obj, "Version");

    *out = 0;
    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return fail(errmsg, "Version: not an integer");
    if (json_integer_value(v) < 0 || json_integer_value(v) > 65535)
        return fail(errmsg, "Version: out of range");
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

/* A key in its text form; *nonzero is false when absent or all zero. */
static int key_member(const json_t *obj, const char *name, const char *prefix, const char *kind,
                      uint8_t key[32], bool *nonzero, char *errmsg)
{
    static const uint8_t zero[32];
    const char *text;

    memset(key, 0, 32);
    *nonzero = false;
    if (string_member(obj, name, name, WIRE_MAX_STRING, &text, errmsg) != 0)
        return -1;
    if (text == NULL)
        return 0;
    if (noise_key_parse(prefix, text, key) != NOISE_OK)
        return fail(errmsg, "%s: not a %s", name, kind);
    *nonzero = memcmp(key, zero, 32) != 0;
    return 0;
}

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

/* A list of at most max strings, each checked and canonicalized by canon. */
static int list_member(const json_t *obj, const char *name, const char *label, size_t max,
                       canon_fn canon, const char *kind, char ***out, size_t *n, char *errmsg)
{
    json_t *arr = member(obj, name);
    char text[WIRE_MAX_STRING + 1];
    size_t count;

    if (arr == NULL)
        return 0;
    if (!json_is_array(arr))
        return fail(errmsg, "%s: not an array", label);
    count = json_array_size(arr);
    if (count > max)
        return fail(errmsg, "%s: more than %zu entries", label, max);
    if (count == 0)
        return 0;
    *out = calloc(count, sizeof **out);
    if (*out == NULL)
        return fail(errmsg, "out of memory");
    for (size_t i = 0; i < count; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_string(v) || json_string_length(v) > WIRE_MAX_STRING ||
            !canon(json_string_value(v), text, sizeof text))
            return fail(errmsg, "%s[%zu]: not %s", label, i, kind);
        (*out)[i] = strdup(text);
        if ((*out)[i] == NULL)
            return fail(errmsg, "out of memory");
        (*n)++;
    }
    return 0;
}

/* ---- Hostinfo ---- */

/* The whole object re-serialized compactly, within WIRE_MAX_HOSTINFO. */
static int hostinfo_json(const json_t *hi, struct wire_hostinfo *h, char *errmsg)
{
    size_t size = json_dumpb(hi, NULL, 0, JSON_COMPACT);

    if (size == 0)
        return fail(errmsg, "Hostinfo: cannot be serialized");
    if (size > WIRE_MAX_HOSTINFO)
        return fail(errmsg, "Hostinfo: too large (%zu bytes, at most %d)", size, WIRE_MAX_HOSTINFO);
    h->json = malloc(size + 1);
    if (h->json == NULL)
        return fail(errmsg, "out of memory");
    if (json_dumpb(hi, h->json, size, JSON_COMPACT) != size)
        return fail(errmsg, "Hostinfo: cannot be serialized");
    h->json[size] = '\0';
    h->json_len = size;
    return 0;
}

static int preferred_derp(const json_t *hi, int32_t *out, char *errmsg)
{
    json_t *netinfo = member(hi, "NetInfo");
    json_t *v;

    if (netinfo == NULL)
        return 0;
    if (!json_is_object(netinfo))
        return fail(errmsg, "Hostinfo.NetInfo: not an object");
    v = member(netinfo, "PreferredDERP");
    if (v == NULL)
        return 0;
    if (!json_is_integer(v))
        return fail(errmsg, "Hostinfo.NetInfo.PreferredDERP: not an integer");
    if (json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
        return fail(errmsg, "Hostinfo.NetInfo.PreferredDERP: out of range");
    *out = (int32_t)json_integer_value(v);
    return 0;
}

static int parse_hostinfo(const json_t *req, struct wire_hostinfo *h, char *errmsg)
{
    json_t *hi = member(req, "Hostinfo");

    if (hi == NULL)
        return 0;
    if (!json_is_object(hi))
        return fail(errmsg, "Hostinfo: not an object");
    if (hostinfo_json(hi, h, errmsg) != 0 ||
        dup_member(hi, "Hostname", "Hostinfo.Hostname", true, &h->hostname, errmsg) != 0 ||
        dup_member(hi, "OS", "Hostinfo.OS", false, &h->os, errmsg) != 0 ||
        preferred_derp(hi, &h->preferred_derp, errmsg) != 0 ||
        list_member(hi, "RequestTags", "Hostinfo.RequestTags", WIRE_MAX_TAGS, canon_tag,
                    "a tag (\"tag:\" and letters, digits, dashes)", &h->request_tags,
                    &h->n_request_tags, errmsg) != 0 ||
        list_member(hi, "RoutableIPs", "Hostinfo.RoutableIPs", WIRE_MAX_ROUTES, canon_prefix,
                    "a canonical CIDR prefix", &h->routable_ips, &h->n_routable_ips, errmsg) != 0)
        return -1;
    return 0;
}

static void free_hostinfo(struct wire_hostinfo *h)
{
    free(h->json);
    free(h->hostname);
    free(h->os);
    free_list(h->request_tags, h->n_request_tags);
    free_list(h->routable_ips, h->n_routable_ips);
    memset(h, 0, sizeof *h);
}

/* ---- requests ---- */

static json_t *load_object(const uint8_t *body, size_t len, char *errmsg)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)body, len, JSON_DECODE_ANY, &jerr);

    if (root == NULL) {
        fail(errmsg, "body: invalid JSON at byte %d: %s", jerr.position, jerr.text);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        fail(errmsg, "body: not a JSON object");
        return NULL;
    }
    return root;
}

static int node_key(const json_t *req, uint8_t key[32], char *errmsg)
{
    bool nonzero;

    if (key_member(req, "NodeKey", "nodekey:", "node key", key, &nonzero, errmsg) != 0)
        return -1;
    if (!nonzero)
        return fail(errmsg, "NodeKey: missing");
    return 0;
}

static int auth_key(const json_t *req, char **out, char *errmsg)
{
    json_t *auth = member(req, "Auth");

    if (auth == NULL)
        return 0;
    if (!json_is_object(auth))
        return fail(errmsg, "Auth: not an object");
    return dup_member(auth, "AuthKey", "Auth.AuthKey", true, out, errmsg);
}

static int expiry(const json_t *req, struct wire_register_request *r, char *errmsg)
{
    const char *text;

    if (string_member(req, "Expiry", "Expiry", WIRE_MAX_STRING, &text, errmsg) != 0)
        return -1;
    if (text == NULL)
        return 0;
    if (!wire_parse_time(text, &r->expiry_unix_ms))
        return fail(errmsg, "Expiry: not an RFC 3339 time");
    r->has_expiry = r->expiry_unix_ms != INT64_MIN;
    if (!r->has_expiry)
        r->expiry_unix_ms = 0;
    return 0;
}

static int decode_register(const json_t *req, struct wire_register_request *r, char *errmsg)
{
    if (version_member(req, &r->version, errmsg) != 0 || node_key(req, r->node_key, errmsg) != 0 ||
        key_member(req, "OldNodeKey", "nodekey:", "node key", r->old_node_key, &r->has_old_node_key,
                   errmsg) != 0 ||
        auth_key(req, &r->auth_key, errmsg) != 0 || expiry(req, r, errmsg) != 0 ||
        dup_member(req, "Followup", "Followup", true, &r->followup, errmsg) != 0 ||
        bool_member(req, "Ephemeral", &r->ephemeral, errmsg) != 0)
        return -1;
    return parse_hostinfo(req, &r->hostinfo, errmsg);
}

int wire_register_request_parse(const uint8_t *body, size_t len, struct wire_register_request *out,
                                char *errmsg)
{
    json_t *req;
    int rc;

    memset(out, 0, sizeof *out);
    req = load_object(body, len, errmsg);
    if (req == NULL)
        return -1;
    rc = decode_register(req, out, errmsg);
    json_decref(req);
    if (rc != 0)
        wire_register_request_free(out);
    return rc;
}

void wire_register_request_free(struct wire_register_request *r)
{
    free(r->auth_key);
    free(r->followup);
    free_hostinfo(&r->hostinfo);
    memset(r, 0, sizeof *r);
}

static int compress_member(const json_t *req, bool *zstd, char *errmsg)
{
    const char *text;

    if (string_member(req, "Compress", "Compress", WIRE_MAX_STRING, &text, errmsg) != 0)
        return -1;
    *zstd = text != NULL && strcmp(text, "zstd") == 0;
    return 0;
}

static int decode_map(const json_t *req, struct wire_map_request *r, char *errmsg)
{
    if (version_member(req, &r->version, errmsg) != 0 || node_key(req, r->node_key, errmsg) != 0 ||
        key_member(req, "DiscoKey", "discokey:", "disco key", r->disco_key, &r->has_disco_key,
                   errmsg) != 0 ||
        bool_member(req, "Stream", &r->stream, errmsg) != 0 ||
        bool_member(req, "OmitPeers", &r->omit_peers, errmsg) != 0 ||
        bool_member(req, "KeepAlive", &r->keep_alive, errmsg) != 0 ||
        bool_member(req, "ReadOnly", &r->read_only, errmsg) != 0 ||
        compress_member(req, &r->compress_zstd, errmsg) != 0 ||
        list_member(req, "Endpoints", "Endpoints", WIRE_MAX_ENDPOINTS, canon_endpoint, "an ip:port",
                    &r->endpoints, &r->n_endpoints, errmsg) != 0)
        return -1;
    return parse_hostinfo(req, &r->hostinfo, errmsg);
}

int wire_map_request_parse(const uint8_t *body, size_t len, struct wire_map_request *out,
                           char *errmsg)
{
    json_t *req;
    int rc;

    memset(out, 0, sizeof *out);
    req = load_object(body, len, errmsg);
    if (req == NULL)
        return -1;
    rc = decode_map(req, out, errmsg);
    json_decref(req);
    if (rc != 0)
        wire_map_request_free(out);
    return rc;
}

void wire_map_request_free(struct wire_map_request *r)
{
    free_list(r->endpoints, r->n_endpoints);
    free_hostinfo(&r->hostinfo);
    memset(r, 0, sizeof *r);
}
