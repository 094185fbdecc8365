/* tests/policy/golden.c: build/policy-golden, the policy engine checked
 * against what Tailscale's hosted control server produced.
 *
 * A capture (../shared/fixtures/tailscale-policy-captures/README.md) is one
 * policy, a small tailnet and what every node of it received. The runner
 * builds the same tailnet in an engine and compares, node by node and by
 * meaning, never by byte order:
 *   - the packet filter, as a set of (source, destination, ports, protocol)
 *     and (source, destination, capability, value) tuples whose sources are
 *     merged into address ranges;
 *   - the visible peers, and each one's AllowedIPs and PrimaryRoutes;
 *   - the SSH policy, rule by rule in order (the client takes the first
 *     rule that matches).
 * A policy the hosted server refused must be refused by policy_parse() or
 * policy_engine_check(). docs/policy-compatibility.md has the rules and the
 * known divergences (--known FILE); --self-test mutates the expected data of
 * passing captures and checks that the comparison notices. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "server/policy/policy.h"

#define MAX_DIFF_LINES 20
#define ADDR_TEXT_SIZE 128
#define CANON_JSON     (JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY)

/* An empty IPProto means TCP, UDP, ICMP and ICMPv6. */
static const json_int_t default_protos[] = {6, 17, 1, 58};

/* ---- memory: the runner stops on exhaustion, it has nothing to save ---- */

static void oom(void)
{
    fputs("policy-golden: out of memory\n", stderr);
    exit(2);
}

static void *xrealloc(void *p, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        oom();
    p = realloc(p, n * size);
    if (p == NULL && n * size != 0)
        oom();
    return p;
}

static char *xstrdup(const char *s)
{
    char *copy = strdup(s);

    if (copy == NULL)
        oom();
    return copy;
}

static char *xstrndup(const char *s, size_t n)
{
    char *copy = strndup(s, n);

    if (copy == NULL)
        oom();
    return copy;
}

__attribute__((format(printf, 1, 0))) static char *xvasprintf(const char *fmt, va_list ap)
{
    char *s;

    if (vasprintf(&s, fmt, ap) < 0)
        oom();
    return s;
}

__attribute__((format(printf, 1, 2))) static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;

    va_start(ap, fmt);
    s = xvasprintf(fmt, ap);
    va_end(ap);
    return s;
}

static char *json_canon(const json_t *j)
{
    char *s = json_dumps(j, CANON_JSON);

    if (s == NULL)
        oom();
    return s;
}

/* ---- sets of strings: sorted, without duplicates once sorted ---- */

struct strset {
    char **v;
    size_t n;
    size_t cap;
};

/* Takes ownership of s. */
static void strset_take(struct strset *set, char *s)
{
    if (set->n == set->cap) {
        set->cap = set->cap ? set->cap * 2 : 16;
        set->v = xrealloc(set->v, set->cap, sizeof *set->v);
    }
    set->v[set->n++] = s;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void strset_sort(struct strset *set)
{
    size_t kept = 0;

    if (set->n == 0)
        return;
    qsort(set->v, set->n, sizeof *set->v, str_cmp);
    for (size_t i = 1; i < set->n; i++) {
        if (strcmp(set->v[i], set->v[kept]) == 0)
            free(set->v[i]);
        else
            set->v[++kept] = set->v[i];
    }
    set->n = kept + 1;
}

static bool strset_has(const struct strset *set, const char *s)
{
    return set->n > 0 && bsearch(&s, set->v, set->n, sizeof *set->v, str_cmp) != NULL;
}

static bool strset_equal(const struct strset *a, const struct strset *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

static void strset_free(struct strset *set)
{
    for (size_t i = 0; i < set->n; i++)
        free(set->v[i]);
    free(set->v);
    *set = (struct strset){0};
}

/* ---- differences of one capture: counted, the first few kept as text ---- */

struct report {
    const char *node; /* the node being compared, prefixed to each line */
    char *lines[MAX_DIFF_LINES];
    unsigned n_lines;
    unsigned n_diffs;
};

__attribute__((format(printf, 2, 3))) static void report_diff(struct report *r, const char *fmt,
                                                              ...)
{
    va_list ap;
    char *msg;

    r->n_diffs++;
    if (r->n_lines == MAX_DIFF_LINES)
        return;
    va_start(ap, fmt);
    msg = xvasprintf(fmt, ap);
    va_end(ap);
    if (r->node != NULL) {
        r->lines[r->n_lines++] = xasprintf("%s: %s", r->node, msg);
        free(msg);
    } else {
        r->lines[r->n_lines++] = msg;
    }
}

static void report_print(const struct report *r)
{
    for (unsigned i = 0; i < r->n_lines; i++)
        printf("    %s\n", r->lines[i]);
    if (r->n_diffs > r->n_lines)
        printf("    ... and %u more differences\n", r->n_diffs - r->n_lines);
}

static void report_clear(struct report *r)
{
    for (unsigned i = 0; i < r->n_lines; i++)
        free(r->lines[i]);
    *r = (struct report){0};
}

/* Length of the part of a packet-filter tuple before its protocol (the
 * last word of "src -> dst ports a-b proto"); 0 for other items. */
static size_t proto_stem(const char *item)
{
    const char *space = strrchr(item, ' ');

    return strstr(item, " ports ") != NULL && space != NULL ? (size_t)(space - item) : 0;
}

/* Reports items[0..n), one line for the tuples that differ only in their
 * protocol (sorted, they are neighbours). */
static void report_items(struct report *r, const char *what, const char *how, char **items,
                         size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t stem = proto_stem(items[i]);
        size_t j = i + 1;
        char *protos = xstrdup(stem ? items[i] + stem + 1 : "");

        while (stem != 0 && j < n && proto_stem(items[j]) == stem &&
               strncmp(items[i], items[j], stem) == 0) {
            char *more = xasprintf("%s,%s", protos, items[j] + stem + 1);

            free(protos);
            protos = more;
            j++;
        }
        if (stem != 0)
            report_diff(r, "%s: %s %.*s %s", what, how, (int)stem, items[i], protos);
        else
            report_diff(r, "%s: %s %s", what, how, items[i]);
        free(protos);
        i = j;
    }
}

/* Reports what is in want but not in got as missing, the reverse as extra.
 * Both sets sorted. */
static void report_sets(struct report *r, const char *what, const struct strset *want,
                        const struct strset *got)
{
    char **missing = xrealloc(NULL, want->n + 1, sizeof *missing);
    char **extra = xrealloc(NULL, got->n + 1, sizeof *extra);
    size_t i = 0, j = 0, n_missing = 0, n_extra = 0;

    while (i < want->n || j < got->n) {
        int c = i == want->n ? 1 : j == got->n ? -1 : strcmp(want->v[i], got->v[j]);

        if (c < 0) {
            missing[n_missing++] = want->v[i++];
        } else if (c > 0) {
            extra[n_extra++] = got->v[j++];
        } else {
            i++;
            j++;
        }
    }
    report_items(r, what, "missing", missing, n_missing);
    report_items(r, what, "extra", extra, n_extra);
    free(missing);
    free(extra);
}

/* ---- addresses: every form a capture or the engine writes ---- */

/* A JSON string's text; what should be a string and is not compares as
 * this marker. */
static const char *text_of(const json_t *j)
{
    return json_is_string(j) ? json_string_value(j) : "(not a string)";
}

/* An inclusive range of addresses of one family, as big-endian bytes. */
struct span {
    uint8_t family; /* 4 or 6 */
    uint8_t lo[16];
    uint8_t hi[16];
};

static size_t family_len(uint8_t family)
{
    return family == 4 ? 4 : 16;
}

static bool bit_at(const uint8_t *a, unsigned i)
{
    return (a[i / 8] >> (7 - i % 8)) & 1;
}

static int addr_parse(const char *text, size_t len, uint8_t *family, uint8_t out[16])
{
    char buf[64];

    if (len >= sizeof buf)
        return -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    memset(out, 0, 16);
    if (inet_pton(AF_INET, buf, out) == 1) {
        *family = 4;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, out) == 1) {
        *family = 6;
        return 0;
    }
    return -1;
}

static int span_from_prefix(struct span *s, const char *bits_text)
{
    unsigned nbits = 8 * (unsigned)family_len(s->family);
    char *end;
    unsigned long bits = strtoul(bits_text, &end, 10);

    if (*bits_text < '0' || *bits_text > '9' || *end != '\0' || bits > nbits)
        return -1;
    memcpy(s->hi, s->lo, 16);
    for (unsigned i = (unsigned)bits; i < nbits; i++) {
        s->lo[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
        s->hi[i / 8] |= (uint8_t)(0x80u >> (i % 8));
    }
    return 0;
}

/* "100.64.0.1", "10.0.0.0/8", "100.64.0.0-100.115.91.255", the IPv6 forms:
 * 0, or -1 when text is none of them. */
static int span_parse(const char *text, struct span *out)
{
    const char *dash = strchr(text, '-');
    const char *slash = strchr(text, '/');
    uint8_t hi_family;

    *out = (struct span){0};
    if (dash != NULL) {
        if (addr_parse(text, (size_t)(dash - text), &out->family, out->lo) != 0 ||
            addr_parse(dash + 1, strlen(dash + 1), &hi_family, out->hi) != 0 ||
            hi_family != out->family)
            return -1;
        return memcmp(out->lo, out->hi, 16) <= 0 ? 0 : -1;
    }
    if (addr_parse(text, slash ? (size_t)(slash - text) : strlen(text), &out->family, out->lo) != 0)
        return -1;
    if (slash == NULL) {
        memcpy(out->hi, out->lo, 16);
        return 0;
    }
    return span_from_prefix(out, slash + 1);
}

/* The prefix length when s is exactly one prefix, else -1. */
static int span_prefix_bits(const struct span *s)
{
    unsigned nbits = 8 * (unsigned)family_len(s->family);
    unsigned common = 0;

    while (common < nbits && bit_at(s->lo, common) == bit_at(s->hi, common))
        common++;
    for (unsigned i = common; i < nbits; i++)
        if (bit_at(s->lo, i) || !bit_at(s->hi, i))
            return -1;
    return (int)common;
}

/* "a/bits" when s is one prefix, else "lo-hi". */
static void span_format(const struct span *s, char *buf, size_t size)
{
    int af = s->family == 4 ? AF_INET : AF_INET6;
    char lo[INET6_ADDRSTRLEN], hi[INET6_ADDRSTRLEN];
    int bits = span_prefix_bits(s);

    inet_ntop(af, s->lo, lo, sizeof lo);
    if (bits >= 0) {
        snprintf(buf, size, "%s/%d", lo, bits);
        return;
    }
    inet_ntop(af, s->hi, hi, sizeof hi);
    snprintf(buf, size, "%s-%s", lo, hi);
}

/* An address, prefix or range in canonical text; "*" stays "*", and text
 * that is no address is kept, marked, so that it can only differ. */
static void addr_canon(const char *text, char *buf, size_t size)
{
    struct span s;

    if (strcmp(text, "*") == 0)
        snprintf(buf, size, "*");
    else if (span_parse(text, &s) == 0)
        span_format(&s, buf, size);
    else
        snprintf(buf, size, "?%s", text);
}

/* The address after a in *next; false when a is the last one. */
static bool addr_next(const uint8_t *a, size_t len, uint8_t *next)
{
    memcpy(next, a, 16);
    for (size_t i = len; i-- > 0;) {
        if (++next[i] != 0)
            return true;
    }
    return false;
}

/* Canonical forms of a JSON array of address strings, into set (sorted). */
static void addr_set(const json_t *array, struct strset *set)
{
    size_t i;
    json_t *item;

    json_array_foreach(array, i, item)
    {
        char buf[ADDR_TEXT_SIZE];

        addr_canon(text_of(item), buf, sizeof buf);
        strset_take(set, xstrdup(buf));
    }
    strset_sort(set);
}

/* ---- packet filters as sets of tuples ---- */

/* One source of one tuple, before sources are merged: key is the rest of
 * the tuple ("dst ports 22-22 tcp", "dst cap name=value"). */
enum source_kind { SOURCE_ANY, SOURCE_BAD, SOURCE_SPAN };

struct atom {
    char *key;
    enum source_kind kind;
    char *bad; /* SOURCE_BAD: the text as written */
    struct span src;
};

struct atoms {
    struct atom *v;
    size_t n;
    size_t cap;
};

static void atoms_add(struct atoms *list, const json_t *src, const char *key)
{
    struct atom *a;
    const char *text = text_of(src);

    if (list->n == list->cap) {
        list->cap = list->cap ? list->cap * 2 : 64;
        list->v = xrealloc(list->v, list->cap, sizeof *list->v);
    }
    a = &list->v[list->n++];
    *a = (struct atom){.key = xstrdup(key), .kind = SOURCE_SPAN};
    if (strcmp(text, "*") == 0) {
        a->kind = SOURCE_ANY;
    } else if (span_parse(text, &a->src) != 0) {
        a->kind = SOURCE_BAD;
        a->bad = xstrdup(text);
    }
}

static void atoms_free(struct atoms *list)
{
    for (size_t i = 0; i < list->n; i++) {
        free(list->v[i].key);
        free(list->v[i].bad);
    }
    free(list->v);
}

static int atom_cmp(const void *pa, const void *pb)
{
    const struct atom *a = pa, *b = pb;
    int c = strcmp(a->key, b->key);

    if (c != 0)
        return c;
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    if (a->kind == SOURCE_BAD)
        return strcmp(a->bad, b->bad);
    if (a->kind == SOURCE_ANY || a->src.family != b->src.family)
        return (int)a->src.family - (int)b->src.family;
    return memcmp(a->src.lo, b->src.lo, 16);
}

/* Does b continue (overlap or touch) the range of a, both of one family? */
static bool span_touches(const struct span *a, const struct span *b)
{
    uint8_t next[16];

    if (!addr_next(a->hi, family_len(a->family), next))
        return true;
    return memcmp(b->lo, next, 16) <= 0;
}

static void emit_tuple(struct strset *out, const struct atom *a, const struct span *merged)
{
    char buf[ADDR_TEXT_SIZE];

    if (a->kind == SOURCE_ANY)
        snprintf(buf, sizeof buf, "*");
    else if (a->kind == SOURCE_BAD)
        snprintf(buf, sizeof buf, "?%s", a->bad);
    else
        span_format(merged, buf, sizeof buf);
    strset_take(out, xasprintf("%s -> %s", buf, a->key));
}

/* Does next (sorted after first) extend merged, the sources of first's key
 * so far? */
static bool atom_extends(const struct atom *first, const struct span *merged,
                         const struct atom *next)
{
    return first->kind == SOURCE_SPAN && next->kind == SOURCE_SPAN &&
           strcmp(next->key, first->key) == 0 && next->src.family == merged->family &&
           span_touches(merged, &next->src);
}

/* The tuples of the atoms, sources of one key merged into maximal ranges
 * (so that a list of addresses and the range holding them are the same). */
static void atoms_to_tuples(struct atoms *list, struct strset *out)
{
    size_t i = 0;

    if (list->n > 1)
        qsort(list->v, list->n, sizeof *list->v, atom_cmp);
    while (i < list->n) {
        const struct atom *first = &list->v[i++];
        struct span merged = first->src;

        for (; i < list->n && atom_extends(first, &merged, &list->v[i]); i++) {
            if (memcmp(list->v[i].src.hi, merged.hi, 16) > 0)
                memcpy(merged.hi, list->v[i].src.hi, 16);
        }
        emit_tuple(out, first, &merged);
    }
    strset_sort(out);
}

static const char *proto_name(json_int_t proto, char *buf, size_t size)
{
    switch (proto) {
    case 1:
        return "icmp";
    case 6:
        return "tcp";
    case 17:
        return "udp";
    case 58:
        return "icmpv6";
    default:
        snprintf(buf, size, "ipproto-%lld", (long long)proto);
        return buf;
    }
}

static void sources_add(struct atoms *list, const json_t *srcs, const char *key)
{
    size_t i;
    json_t *src;

    json_array_foreach(srcs, i, src)
    {
        atoms_add(list, src, key);
    }
}

/* The destination of a DstPorts entry: IP, with Bits when the old form
 * gives the prefix length apart. */
static void dst_canon(const json_t *dp, char *buf, size_t size)
{
    const char *ip = json_string_value(json_object_get(dp, "IP"));
    const json_t *bits = json_object_get(dp, "Bits");
    char text[ADDR_TEXT_SIZE];

    if (ip == NULL)
        ip = "(no IP)";
    if (json_is_integer(bits) && strcmp(ip, "*") != 0)
        snprintf(text, sizeof text, "%s/%lld", ip, (long long)json_integer_value(bits));
    else
        snprintf(text, sizeof text, "%s", ip);
    addr_canon(text, buf, size);
}

static void dst_ports_atoms(const json_t *rule, struct atoms *list)
{
    const json_t *srcs = json_object_get(rule, "SrcIPs");
    const json_t *protos = json_object_get(rule, "IPProto");
    size_t n_protos = json_array_size(protos);
    size_t i;
    json_t *dp;

    json_array_foreach(json_object_get(rule, "DstPorts"), i, dp)
    {
        const json_t *ports = json_object_get(dp, "Ports");
        char dst[ADDR_TEXT_SIZE];

        dst_canon(dp, dst, sizeof dst);
        for (size_t p = 0; p < (n_protos ? n_protos : 4); p++) {
            json_int_t proto =
                n_protos ? json_integer_value(json_array_get(protos, p)) : default_protos[p];
            char name_buf[32];
            char *key = xasprintf("%s ports %lld-%lld %s", dst,
                                  (long long)json_integer_value(json_object_get(ports, "First")),
                                  (long long)json_integer_value(json_object_get(ports, "Last")),
                                  proto_name(proto, name_buf, sizeof name_buf));

            sources_add(list, srcs, key);
            free(key);
        }
    }
}

/* A capability as items: its presence ("name"), and each of its values
 * ("name=value", canonical JSON). A null value and an empty list grant the
 * same, and values granted apart equal one list holding them all. */
static void cap_items(const char *name, const json_t *value, struct strset *out)
{
    size_t i;
    json_t *item;

    strset_take(out, xstrdup(name));
    json_array_foreach(value, i, item)
    {
        char *text = json_canon(item);

        strset_take(out, xasprintf("%s=%s", name, text));
        free(text);
    }
    if (!json_is_array(value) && !json_is_null(value)) {
        char *text = json_canon(value);

        strset_take(out, xasprintf("%s=%s", name, text));
        free(text);
    }
}

static void cap_atoms(const json_t *srcs, const char *dst, const char *name, const json_t *value,
                      struct atoms *list)
{
    struct strset items = {0};

    cap_items(name, value, &items);
    for (size_t i = 0; i < items.n; i++) {
        char *key = xasprintf("%s cap %s", dst, items.v[i]);

        sources_add(list, srcs, key);
        free(key);
    }
    strset_free(&items);
}

static void cap_grant_atoms(const json_t *rule, struct atoms *list)
{
    const json_t *srcs = json_object_get(rule, "SrcIPs");
    size_t i, j;
    json_t *grant, *dst;

    json_array_foreach(json_object_get(rule, "CapGrant"), i, grant)
    {
        json_array_foreach(json_object_get(grant, "Dsts"), j, dst)
        {
            char dst_text[ADDR_TEXT_SIZE];
            const char *name;
            json_t *value;

            addr_canon(text_of(dst), dst_text, sizeof dst_text);
            json_object_foreach(json_object_get(grant, "CapMap"), name, value)
            {
                cap_atoms(srcs, dst_text, name, value, list);
            }
        }
    }
}

/* The tuples of a PacketFilter (tailcfg.FilterRule array; null is empty). */
static void filter_tuples(const json_t *rules, struct strset *out)
{
    struct atoms list = {0};
    size_t i;
    json_t *rule;

    json_array_foreach(rules, i, rule)
    {
        dst_ports_atoms(rule, &list);
        cap_grant_atoms(rule, &list);
    }
    atoms_to_tuples(&list, out);
    atoms_free(&list);
}

/* ---- the tailnet of a capture, in an engine ---- */

struct gnode {
    const char *hostname; /* borrowed from the capture */
    struct policy_node pn;
    const char **tags;
    struct policy_prefix *advertised;
    struct policy_prefix *approved;
    char addr4[ADDR_TEXT_SIZE]; /* canonical, to recognise the node among peers */
    char addr6[ADDR_TEXT_SIZE];
    char created[32]; /* when the hosted server registered it, sortable; "" unknown */
};

struct world {
    struct policy *policy;
    struct policy_engine *engine;
    struct gnode *nodes; /* sorted by hostname; ids in registration order */
    size_t n_nodes;
};

static void world_free(struct world *w)
{
    for (size_t i = 0; i < w->n_nodes; i++) {
        free(w->nodes[i].tags);
        free(w->nodes[i].advertised);
        free(w->nodes[i].approved);
    }
    free(w->nodes);
    policy_engine_free(w->engine);
    policy_free(w->policy);
    *w = (struct world){0};
}

static int hostname_cmp(const void *a, const void *b)
{
    return strcmp(((const struct gnode *)a)->hostname, ((const struct gnode *)b)->hostname);
}

static struct gnode *world_node(const struct world *w, const char *hostname)
{
    struct gnode key = {.hostname = hostname};

    if (w->n_nodes == 0)
        return NULL;
    return bsearch(&key, w->nodes, w->n_nodes, sizeof key, hostname_cmp);
}

static int address_load(const json_t *text, int af, uint8_t *out, bool *has, char *canon)
{
    if (json_is_null(text) || (json_is_string(text) && json_string_length(text) == 0))
        return 0;
    if (!json_is_string(text) || inet_pton(af, json_string_value(text), out) != 1)
        return -1;
    *has = true;
    addr_canon(json_string_value(text), canon, ADDR_TEXT_SIZE);
    return 0;
}

/* Prefixes of a JSON array of strings into a new array (room for extra
 * more); *n set. -1 when one is no prefix. */
static int prefixes_load(const json_t *array, size_t extra, struct policy_prefix **out, size_t *n)
{
    size_t i;
    json_t *item;

    *out = xrealloc(NULL, json_array_size(array) + extra + 1, sizeof **out);
    *n = 0;
    json_array_foreach(array, i, item)
    {
        if (!json_is_string(item) || policy_prefix_parse(json_string_value(item), &(*out)[i]) != 0)
            return -1;
        (*n)++;
    }
    return 0;
}

/* A few captures lost a user's id (0) and email (""): the id becomes one
 * above every other, and the email the tailnet owner's when the login name
 * is its local part (the hosted server accepted policies naming it). */
static uint64_t user_id_at(const json_t *users, size_t index)
{
    uint64_t id = (uint64_t)json_integer_value(json_object_get(json_array_get(users, index), "id"));
    uint64_t max = 0;
    size_t i;
    json_t *u;

    if (id != 0)
        return id;
    json_array_foreach(users, i, u)
    {
        uint64_t other = (uint64_t)json_integer_value(json_object_get(u, "id"));

        max = other > max ? other : max;
    }
    return max + 1 + index;
}

static const char *user_email(const json_t *u, const char *owner)
{
    const char *email = json_string_value(json_object_get(u, "email"));
    const char *name = json_string_value(json_object_get(u, "name"));
    const char *at = owner ? strchr(owner, '@') : NULL;

    if (email != NULL && email[0] != '\0')
        return email;
    if (name != NULL && at != NULL && strlen(name) == (size_t)(at - owner) &&
        strncmp(owner, name, strlen(name)) == 0)
        return owner;
    return NULL;
}

static uint64_t user_id_by_name(const json_t *users, const char *name)
{
    size_t i;
    json_t *u;

    json_array_foreach(users, i, u)
    {
        const char *uname = json_string_value(json_object_get(u, "name"));

        if (uname != NULL && strcmp(uname, name) == 0)
            return user_id_at(users, i);
    }
    return 0;
}

static int node_load(struct gnode *g, const json_t *node, const json_t *users, struct report *r)
{
    const json_t *tags = json_object_get(node, "tags");
    const json_t *routable = json_object_get(node, "routable_ips");
    const char *user = json_string_value(json_object_get(node, "user"));
    size_t i;
    json_t *tag;

    g->tags = xrealloc(NULL, json_array_size(tags) + 1, sizeof *g->tags);
    json_array_foreach(tags, i, tag)
    {
        g->tags[g->pn.n_tags++] = json_is_string(tag) ? json_string_value(tag) : "";
    }
    g->pn.tags = g->tags;
    g->pn.hostname = g->hostname;
    g->pn.online = true;
    if (user != NULL && (g->pn.user_id = user_id_by_name(users, user)) == 0) {
        report_diff(r, "topology: node %s: unknown user %s", g->hostname, user);
        return -1;
    }
    if (address_load(json_object_get(node, "ipv4"), AF_INET, g->pn.ipv4, &g->pn.has_ipv4,
                     g->addr4) != 0 ||
        address_load(json_object_get(node, "ipv6"), AF_INET6, g->pn.ipv6, &g->pn.has_ipv6,
                     g->addr6) != 0) {
        report_diff(r, "topology: node %s: bad address", g->hostname);
        return -1;
    }
    if (prefixes_load(routable, 0, &g->advertised, &g->pn.n_advertised_routes) != 0 ||
        prefixes_load(json_object_get(node, "approved_routes"), json_array_size(routable),
                      &g->approved, &g->pn.n_approved_routes) != 0) {
        report_diff(r, "topology: node %s: bad route", g->hostname);
        return -1;
    }
    g->pn.advertised_routes = g->advertised;
    g->pn.approved_routes = g->approved;
    return 0;
}

/* The node a netmap peer stands for: by address, else by hostname. */
static struct gnode *peer_node(const struct world *w, const json_t *peer)
{
    const char *hostname =
        json_string_value(json_object_get(json_object_get(peer, "Hostinfo"), "Hostname"));
    size_t i;
    json_t *addr;

    json_array_foreach(json_object_get(peer, "Addresses"), i, addr)
    {
        char canon[ADDR_TEXT_SIZE];

        if (!json_is_string(addr))
            continue;
        addr_canon(json_string_value(addr), canon, sizeof canon);
        for (size_t n = 0; n < w->n_nodes; n++)
            if (strcmp(canon, w->nodes[n].addr4) == 0 || strcmp(canon, w->nodes[n].addr6) == 0)
                return &w->nodes[n];
    }
    return hostname != NULL ? world_node(w, hostname) : NULL;
}

/* A tailcfg.Node's Created ("2026-04-10T21:34:45.2051Z": Go drops the
 * fraction's trailing zeros) as "2026-04-10T21:34:45" and nine digits. */
static void created_key(const char *created, char *key, size_t size)
{
    const char *frac = strchr(created, '.');
    char digits[10] = "000000000";

    for (size_t i = 0; frac != NULL && i < 9 && frac[i + 1] >= '0' && frac[i + 1] <= '9'; i++)
        digits[i] = frac[i + 1];
    snprintf(key, size, "%.19s%s", created, digits);
}

static void created_note(struct world *w, const json_t *node)
{
    const char *created = json_string_value(json_object_get(node, "Created"));
    struct gnode *g = peer_node(w, node);

    if (created != NULL && g != NULL && g->created[0] == '\0')
        created_key(created, g->created, sizeof g->created);
}

static int created_cmp(const void *pa, const void *pb)
{
    const struct gnode *a = *(const struct gnode *const *)pa;
    const struct gnode *b = *(const struct gnode *const *)pb;
    int c;

    if ((a->created[0] == '\0') != (b->created[0] == '\0'))
        return a->created[0] == '\0' ? 1 : -1;
    c = strcmp(a->created, b->created);
    return c != 0 ? c : strcmp(a->hostname, b->hostname);
}

/* Node ids 1..n in the order the hosted server registered the nodes (their
 * Created, from the netmaps; unknown ones last, by hostname). The engine
 * elects the lowest id among a route's routers, as concord's ids grow with
 * registration; the hosted server elects the first registered router. */
static void ids_assign(struct world *w, json_t *captures)
{
    struct gnode **order = xrealloc(NULL, w->n_nodes + 1, sizeof *order);
    const char *hostname;
    json_t *cap, *peer;
    size_t i;

    json_object_foreach(captures, hostname, cap)
    {
        const json_t *netmap = json_object_get(cap, "netmap");

        created_note(w, json_object_get(netmap, "SelfNode"));
        json_array_foreach(json_object_get(netmap, "Peers"), i, peer)
        {
            created_note(w, peer);
        }
    }
    for (i = 0; i < w->n_nodes; i++)
        order[i] = &w->nodes[i];
    qsort(order, w->n_nodes, sizeof *order, created_cmp);
    for (i = 0; i < w->n_nodes; i++)
        order[i]->pn.id = i + 1;
    free(order);
}

/* topology.nodes into w->nodes, sorted by hostname. -1 (reported) when the
 * capture's topology is malformed. */
static int nodes_load(struct world *w, const json_t *root, struct report *r)
{
    const json_t *topology = json_object_get(root, "topology");
    json_t *nodes = json_object_get(topology, "nodes");
    const json_t *users = json_object_get(topology, "users");
    const char *hostname;
    json_t *node;
    size_t i = 0;

    w->nodes = xrealloc(NULL, json_object_size(nodes) + 1, sizeof *w->nodes);
    json_object_foreach(nodes, hostname, node)
    {
        w->nodes[i++] = (struct gnode){.hostname = hostname};
    }
    w->n_nodes = i;
    qsort(w->nodes, w->n_nodes, sizeof *w->nodes, hostname_cmp);
    for (i = 0; i < w->n_nodes; i++)
        if (node_load(&w->nodes[i], json_object_get(nodes, w->nodes[i].hostname), users, r) != 0)
            return -1;
    ids_assign(w, json_object_get(root, "captures"));
    return 0;
}

static int users_put(struct world *w, const json_t *users, const char *owner, struct report *r)
{
    size_t i;
    json_t *u;

    json_array_foreach(users, i, u)
    {
        struct policy_user pu = {
            .id = user_id_at(users, i),
            .name = json_string_value(json_object_get(u, "name")),
            .email = user_email(u, owner),
        };

        if (pu.name == NULL) {
            report_diff(r, "topology: user %zu has no name", i);
            return -1;
        }
        if (policy_engine_user_put(w->engine, &pu) != 0)
            oom();
    }
    return 0;
}

static bool prefix_equal(const struct policy_prefix *a, const struct policy_prefix *b)
{
    return a->family == b->family && a->bits == b->bits &&
           memcmp(a->addr, b->addr, family_len(a->family)) == 0;
}

static bool prefix_listed(const struct policy_prefix *list, size_t n, const struct policy_prefix *p)
{
    for (size_t i = 0; i < n; i++)
        if (prefix_equal(&list[i], p))
            return true;
    return false;
}

/* The hosted server approves routes itself: a route only the policy's
 * autoApprovers approve is served (it is in peers' AllowedIPs) although the
 * capture's approved_routes omits it. So approved = approved_routes plus
 * every advertised route policy_engine_auto_approves() accepts. */
static void routes_auto_approve(struct world *w)
{
    for (size_t i = 0; i < w->n_nodes; i++) {
        struct gnode *g = &w->nodes[i];
        size_t before = g->pn.n_approved_routes;

        for (size_t a = 0; a < g->pn.n_advertised_routes; a++) {
            const struct policy_prefix *route = &g->advertised[a];

            if (!prefix_listed(g->approved, g->pn.n_approved_routes, route) &&
                policy_engine_auto_approves(w->engine, g->pn.id, route))
                g->approved[g->pn.n_approved_routes++] = *route;
        }
        if (g->pn.n_approved_routes != before && policy_engine_node_put(w->engine, &g->pn) != 0)
            oom();
    }
}

/* input.full_policy as text (it is a string, or an object to serialize);
 * NULL when there is none. Free it. */
static char *policy_text(const json_t *root, size_t *len)
{
    const json_t *doc = json_object_get(json_object_get(root, "input"), "full_policy");
    char *text;

    if (json_is_string(doc)) {
        *len = json_string_length(doc);
        text = xrealloc(NULL, *len + 1, 1);
        memcpy(text, json_string_value(doc), *len + 1);
        return text;
    }
    if (!json_is_object(doc))
        return NULL;
    text = json_dumps(doc, JSON_INDENT(2));
    if (text == NULL)
        oom();
    *len = strlen(text);
    return text;
}

enum build {
    BUILD_READY,   /* the engine holds the tailnet under the policy */
    BUILD_REFUSED, /* policy_parse or policy_engine_check refused the policy */
    BUILD_BROKEN,  /* the capture is malformed, or the engine failed otherwise (reported) */
};

/* Why the policy was refused, for BUILD_REFUSED. */
struct refusal {
    const char *by;
    struct policy_error err;
};

static enum build engine_fill(struct world *w, const json_t *root, struct refusal *why,
                              struct report *r)
{
    const json_t *users = json_object_get(json_object_get(root, "topology"), "users");
    int rv;

    w->engine = policy_engine_new(w->policy);
    if (w->engine == NULL)
        oom();
    if (users_put(w, users, json_string_value(json_object_get(root, "tailnet")), r) != 0)
        return BUILD_BROKEN;
    for (size_t i = 0; i < w->n_nodes; i++)
        if (policy_engine_node_put(w->engine, &w->nodes[i].pn) != 0)
            oom();
    routes_auto_approve(w);
    why->by = "policy_engine_check";
    rv = policy_engine_check(w->engine, w->policy, &why->err);
    if (rv == POLICY_EINVAL || rv == POLICY_ETEST)
        return BUILD_REFUSED;
    if (rv != 0) {
        report_diff(r, "policy_engine_check: %s", policy_strerror(rv));
        return BUILD_BROKEN;
    }
    return BUILD_READY;
}

static enum build world_build(struct world *w, const json_t *root, struct refusal *why,
                              struct report *r)
{
    size_t len = 0;
    char *text = policy_text(root, &len);
    int rv;

    *why = (struct refusal){.by = "policy_parse"};
    if (text == NULL) {
        report_diff(r, "capture: no input.full_policy");
        return BUILD_BROKEN;
    }
    if (nodes_load(w, root, r) != 0) {
        free(text);
        return BUILD_BROKEN;
    }
    rv = policy_parse(text, len, &w->policy, &why->err);
    free(text);
    if (rv == POLICY_EINVAL)
        return BUILD_REFUSED;
    if (rv != 0) {
        report_diff(r, "policy_parse: %s", policy_strerror(rv));
        return BUILD_BROKEN;
    }
    return engine_fill(w, root, why, r);
}

/* ---- one node: what it received versus what the engine answers ---- */

/* The wire PacketFilter a node received: packet_filter_rules, or the
 * netmap's PacketFilterRules where the capture kept only that one. */
static json_t *expected_rules(const json_t *cap)
{
    json_t *rules = json_object_get(cap, "packet_filter_rules");

    if (rules == NULL)
        rules = json_object_get(json_object_get(cap, "netmap"), "PacketFilterRules");
    return rules;
}

static void compare_filter(struct world *w, const struct gnode *g, const json_t *cap,
                           struct report *r)
{
    json_t *got = policy_engine_filter(w->engine, g->pn.id);
    struct strset want_set = {0}, got_set = {0};

    if (got == NULL) {
        report_diff(r, "policy_engine_filter returned NULL");
        return;
    }
    filter_tuples(expected_rules(cap), &want_set);
    filter_tuples(got, &got_set);
    report_sets(r, "filter", &want_set, &got_set);
    strset_free(&want_set);
    strset_free(&got_set);
    json_decref(got);
}

static void compare_prefixes(struct report *r, const char *what, const char *peer,
                             const json_t *want, json_t *got)
{
    struct strset want_set = {0}, got_set = {0};
    char *label = xasprintf("peer %s %s", peer, what);

    if (got == NULL)
        report_diff(r, "%s: the engine returned NULL", label);
    addr_set(want, &want_set);
    addr_set(got, &got_set);
    report_sets(r, label, &want_set, &got_set);
    strset_free(&want_set);
    strset_free(&got_set);
    free(label);
    json_decref(got);
}

static void compare_peer_routes(struct world *w, const struct gnode *viewer,
                                const struct gnode *peer, const json_t *entry, struct report *r)
{
    compare_prefixes(r, "AllowedIPs", peer->hostname, json_object_get(entry, "AllowedIPs"),
                     policy_engine_allowed_ips(w->engine, viewer->pn.id, peer->pn.id));
    compare_prefixes(r, "PrimaryRoutes", peer->hostname, json_object_get(entry, "PrimaryRoutes"),
                     policy_engine_primary_routes(w->engine, viewer->pn.id, peer->pn.id));
}

/* Visible peers by hostname, then the routes of each peer both list. */
static void compare_peers(struct world *w, const struct gnode *g, const json_t *cap,
                          struct report *r)
{
    const json_t *peers = json_object_get(json_object_get(cap, "netmap"), "Peers");
    struct strset want_set = {0}, got_set = {0};
    size_t i;
    json_t *entry;

    json_array_foreach(peers, i, entry)
    {
        const struct gnode *peer = peer_node(w, entry);
        const char *name = json_string_value(json_object_get(entry, "Name"));

        strset_take(&want_set, peer ? xstrdup(peer->hostname)
                                    : xasprintf("(unknown peer %s)", name ? name : "?"));
    }
    for (size_t n = 0; n < w->n_nodes; n++)
        if (policy_engine_visible(w->engine, g->pn.id, w->nodes[n].pn.id))
            strset_take(&got_set, xstrdup(w->nodes[n].hostname));
    strset_sort(&want_set);
    strset_sort(&got_set);
    report_sets(r, "peers", &want_set, &got_set);
    json_array_foreach(peers, i, entry)
    {
        const struct gnode *peer = peer_node(w, entry);

        if (peer != NULL && strset_has(&got_set, peer->hostname))
            compare_peer_routes(w, g, peer, entry, r);
    }
    strset_free(&want_set);
    strset_free(&got_set);
}

/* Go's omitempty: false, null, 0, "" and empty lists and maps say nothing,
 * whether written or left out. */
static bool says_nothing(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
    case JSON_FALSE:
        return true;
    case JSON_STRING:
        return json_string_length(v) == 0;
    case JSON_INTEGER:
        return json_integer_value(v) == 0;
    case JSON_ARRAY:
        return json_array_size(v) == 0;
    case JSON_OBJECT:
        return json_object_size(v) == 0;
    default:
        return false;
    }
}

/* A JSON array of the canonical forms of items, sorted: a set. */
static json_t *json_set(struct strset *items)
{
    size_t len = 3;
    char *text;
    json_t *set;

    strset_sort(items);
    for (size_t i = 0; i < items->n; i++)
        len += strlen(items->v[i]) + 1;
    text = xrealloc(NULL, len, 1);
    strcpy(text, "[");
    for (size_t i = 0; i < items->n; i++) {
        strcat(text, items->v[i]);
        if (i + 1 < items->n)
            strcat(text, ",");
    }
    strcat(text, "]");
    set = json_loads(text, 0, NULL);
    if (set == NULL)
        oom();
    free(text);
    return set;
}

/* Principals as a set, each nodeIP in canonical form. */
static json_t *principals_canon(const json_t *principals)
{
    struct strset items = {0};
    size_t i;
    json_t *p, *set;

    json_array_foreach(principals, i, p)
    {
        json_t *copy = json_deep_copy(p);
        const char *ip = json_string_value(json_object_get(p, "nodeIP"));

        if (copy == NULL)
            oom();
        if (ip != NULL) {
            char canon[ADDR_TEXT_SIZE];

            addr_canon(ip, canon, sizeof canon);
            json_object_set_new(copy, "nodeIP", json_string(canon));
        }
        strset_take(&items, json_canon(copy));
        json_decref(copy);
    }
    set = json_set(&items);
    strset_free(&items);
    return set;
}

static json_t *string_set(const json_t *array)
{
    struct strset items = {0};
    size_t i;
    json_t *item, *set;

    json_array_foreach(array, i, item)
    {
        strset_take(&items, json_canon(item));
    }
    set = json_set(&items);
    strset_free(&items);
    return set;
}

/* The action without what says nothing, and holdAndDelegate without its
 * scheme and host: they are the control server's own address (the hosted
 * server's captures say "https://unused"), not policy. */
static json_t *action_canon(json_t *action)
{
    json_t *out = json_object();
    const char *key;
    json_t *value;

    if (out == NULL)
        oom();
    json_object_foreach(action, key, value)
    {
        const char *url = json_string_value(value);
        const char *scheme_end = url ? strstr(url, "://") : NULL;

        if (says_nothing(value))
            continue;
        if (strcmp(key, "holdAndDelegate") == 0 && scheme_end != NULL) {
            const char *path = strchr(scheme_end + 3, '/');

            json_object_set_new(out, key, json_string(path ? path : "/"));
        } else {
            json_object_set(out, key, value);
        }
    }
    return out;
}

/* One tailcfg.SSHRule as canonical text: principals and acceptEnv as sets,
 * sshUsers as a map, the action by meaning, empty fields dropped. */
static char *ssh_rule_canon(json_t *rule)
{
    json_t *out = json_object();
    const char *key;
    json_t *value;
    char *text;

    if (out == NULL)
        oom();
    json_object_foreach(rule, key, value)
    {
        if (says_nothing(value))
            continue;
        if (strcmp(key, "principals") == 0)
            json_object_set_new(out, key, principals_canon(value));
        else if (strcmp(key, "acceptEnv") == 0)
            json_object_set_new(out, key, string_set(value));
        else if (strcmp(key, "action") == 0)
            json_object_set_new(out, key, action_canon(value));
        else
            json_object_set(out, key, value);
    }
    text = json_canon(out);
    json_decref(out);
    return text;
}

/* The rules of a tailcfg.SSHPolicy, in order (null is no rules). */
static void ssh_rules(const json_t *policy, struct strset *out)
{
    size_t i;
    json_t *rule;

    json_array_foreach(json_object_get(policy, "rules"), i, rule)
    {
        strset_take(out, ssh_rule_canon(rule));
    }
}

static void compare_ssh(struct world *w, const struct gnode *g, const json_t *cap, struct report *r)
{
    json_t *got = policy_engine_ssh(w->engine, g->pn.id);
    struct strset want_rules = {0}, got_rules = {0};

    if (got == NULL) {
        report_diff(r, "policy_engine_ssh returned NULL");
        return;
    }
    ssh_rules(json_object_get(json_object_get(cap, "netmap"), "SSHPolicy"), &want_rules);
    ssh_rules(got, &got_rules);
    for (size_t i = 0; i < want_rules.n || i < got_rules.n; i++) {
        if (i >= got_rules.n)
            report_diff(r, "ssh rule %zu: missing %s", i, want_rules.v[i]);
        else if (i >= want_rules.n)
            report_diff(r, "ssh rule %zu: extra %s", i, got_rules.v[i]);
        else if (strcmp(want_rules.v[i], got_rules.v[i]) != 0)
            report_diff(r, "ssh rule %zu: want %s, got %s", i, want_rules.v[i], got_rules.v[i]);
    }
    strset_free(&want_rules);
    strset_free(&got_rules);
    json_decref(got);
}

/* Capabilities about Tailscale's own service, not the policy: roles, tailnet
 * lock, the tailnet's name and auto-update default (tailnet settings), app
 * connector route storage, a magicsock experiment. */
static const char *const saas_caps[] = {
    "https://tailscale.com/cap/is-admin",
    "https://tailscale.com/cap/is-owner",
    "https://tailscale.com/cap/tailnet-lock",
    "tailnet-display-name",
    "default-auto-update",
    "store-appc-routes",
    "probe-udp-lifetime",
};

static bool cap_is_saas(const char *name)
{
    for (size_t i = 0; i < sizeof saas_caps / sizeof saas_caps[0]; i++)
        if (strcmp(name, saas_caps[i]) == 0)
            return true;
    return false;
}

static void capmap_items(json_t *capmap, struct strset *out)
{
    const char *name;
    json_t *value;

    json_object_foreach(capmap, name, value)
    {
        if (!cap_is_saas(name))
            cap_items(name, value, out);
    }
    strset_sort(out);
}

/* The node's own CapMap (SelfNode.CapMap), without Tailscale's service
 * capabilities. */
static void compare_capmap(struct world *w, const struct gnode *g, const json_t *cap,
                           struct report *r)
{
    json_t *got = policy_engine_capmap(w->engine, g->pn.id);
    json_t *self = json_object_get(json_object_get(cap, "netmap"), "SelfNode");
    struct strset want_set = {0}, got_set = {0};

    if (got == NULL) {
        report_diff(r, "policy_engine_capmap returned NULL");
        return;
    }
    capmap_items(json_object_get(self, "CapMap"), &want_set);
    capmap_items(got, &got_set);
    report_sets(r, "CapMap", &want_set, &got_set);
    strset_free(&want_set);
    strset_free(&got_set);
    json_decref(got);
}

/* Everything one node received against the engine's answers for it. */
static void compare_node(struct world *w, const struct gnode *g, const json_t *cap,
                         struct report *r)
{
    r->node = g->hostname;
    compare_filter(w, g, cap, r);
    compare_peers(w, g, cap, r);
    compare_ssh(w, g, cap, r);
    compare_capmap(w, g, cap, r);
    r->node = NULL;
}

static void compare_captures(struct world *w, json_t *captures, struct report *r)
{
    const char *hostname;
    json_t *cap;

    json_object_foreach(captures, hostname, cap)
    {
        const struct gnode *g = world_node(w, hostname);

        if (g == NULL)
            report_diff(r, "captured node %s is not in the topology", hostname);
        else
            compare_node(w, g, cap, r);
    }
}

/* ---- captures: HuJSON files ---- */

/* Blanks out // and block comments outside strings (newlines stay, so
 * jansson's line numbers stay right). -1 on an unterminated comment. */
static int strip_comments(char *text, size_t len)
{
    bool in_string = false;

    for (size_t i = 0; i < len; i++) {
        if (in_string) {
            if (text[i] == '\\' && i + 1 < len)
                i++;
            else if (text[i] == '"')
                in_string = false;
        } else if (text[i] == '"') {
            in_string = true;
        } else if (text[i] == '/' && i + 1 < len && text[i + 1] == '/') {
            for (; i < len && text[i] != '\n'; i++)
                text[i] = ' ';
        } else if (text[i] == '/' && i + 1 < len && text[i + 1] == '*') {
            size_t start = i;

            for (i += 2; i + 1 < len && !(text[i] == '*' && text[i + 1] == '/'); i++)
                ;
            if (i + 1 >= len)
                return -1;
            for (size_t j = start; j <= i + 1; j++)
                if (text[j] != '\n')
                    text[j] = ' ';
            i++;
        }
    }
    return 0;
}

/* Blanks out commas followed only by whitespace and a closing bracket. Run
 * after strip_comments. */
static void strip_trailing_commas(char *text, size_t len)
{
    bool in_string = false;

    for (size_t i = 0; i < len; i++) {
        if (in_string) {
            if (text[i] == '\\' && i + 1 < len)
                i++;
            else if (text[i] == '"')
                in_string = false;
        } else if (text[i] == '"') {
            in_string = true;
        } else if (text[i] == ',') {
            size_t j = i + 1;

            while (j < len && strchr(" \t\r\n", text[j]) != NULL)
                j++;
            if (j < len && (text[j] == '}' || text[j] == ']'))
                text[i] = ' ';
        }
    }
}

static char *file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0;

    *len = 0;
    if (f == NULL)
        return NULL;
    for (;;) {
        size_t got;

        if (cap - *len < 4096) {
            cap = cap ? cap * 2 : 65536;
            buf = xrealloc(buf, cap, 1);
        }
        got = fread(buf + *len, 1, cap - *len, f);
        *len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

/* The capture at path, or NULL with errmsg filled. */
static json_t *capture_load(const char *path, char *errmsg, size_t size)
{
    size_t len;
    char *text = file_read(path, &len);
    json_error_t jerr;
    json_t *root = NULL;

    if (text == NULL) {
        snprintf(errmsg, size, "cannot read: %s", strerror(errno));
        return NULL;
    }
    if (strip_comments(text, len) != 0) {
        snprintf(errmsg, size, "unterminated comment");
    } else {
        strip_trailing_commas(text, len);
        root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (root == NULL) {
            snprintf(errmsg, size, "line %d col %d: %s", jerr.line, jerr.column, jerr.text);
        } else if (!json_is_object(root)) {
            snprintf(errmsg, size, "not a JSON object");
            json_decref(root);
            root = NULL;
        }
    }
    free(text);
    return root;
}

enum outcome { OUTCOME_PASS, OUTCOME_FAIL, OUTCOME_SKIP };

static void report_refusal(struct report *r, const struct refusal *why)
{
    if (why->err.line != 0)
        report_diff(r, "%s refused the policy at line %u col %u: %s", why->by, why->err.line,
                    why->err.col, why->err.message);
    else
        report_diff(r, "%s refused the policy: %s", why->by, why->err.message);
}

/* One capture: refused by both, or accepted by both and every node alike. */
static enum outcome capture_check(json_t *root, struct report *r)
{
    const json_t *hosted_error = json_object_get(root, "error");
    bool hosted_refused = hosted_error != NULL && !json_is_false(hosted_error);
    struct world w = {0};
    struct refusal why;
    enum build built;

    if (json_object_get(root, "capture_error") != NULL)
        return OUTCOME_SKIP;
    built = world_build(&w, root, &why, r);
    if (built == BUILD_REFUSED && !hosted_refused)
        report_refusal(r, &why);
    if (built == BUILD_READY && hosted_refused) {
        const char *message = json_string_value(json_object_get(
            json_object_get(json_object_get(root, "input"), "api_response_body"), "message"));

        report_diff(r, "the hosted server refused the policy (%s), the engine accepted it",
                    message ? message : "no message");
    }
    if (built == BUILD_READY && !hosted_refused)
        compare_captures(&w, json_object_get(root, "captures"), r);
    world_free(&w);
    return r->n_diffs == 0 ? OUTCOME_PASS : OUTCOME_FAIL;
}

/* ---- --self-test: a comparison that cannot fail proves nothing ---- */

enum mutation { MUTATE_SOURCE, MUTATE_PORT };

struct selftest {
    unsigned eligible; /* with a rule that has sources and ports */
    unsigned used;     /* of those, passing unmutated */
    unsigned failing;  /* of those, failing unmutated: no evidence either way */
    unsigned slipped;  /* used, and a mutation went unnoticed */
};

static bool rule_mutable(const json_t *rule)
{
    return json_array_size(json_object_get(rule, "SrcIPs")) > 0 &&
           json_array_size(json_object_get(rule, "DstPorts")) > 0;
}

static bool rules_mutable(const json_t *rules)
{
    size_t i;
    json_t *rule;

    json_array_foreach(rules, i, rule)
    {
        if (rule_mutable(rule))
            return true;
    }
    return false;
}

/* Changes one port of a range: the first goes up, or a single port moves. */
static void port_change(json_t *ports)
{
    json_int_t first = json_integer_value(json_object_get(ports, "First"));
    json_int_t last = json_integer_value(json_object_get(ports, "Last"));

    if (first < last) {
        first++;
    } else {
        first = last < 65535 ? last + 1 : last - 1;
        last = first;
    }
    json_object_set_new(ports, "First", json_integer(first));
    json_object_set_new(ports, "Last", json_integer(last));
}

/* A copy of node capture cap with mutation m applied to item item_i of
 * rule rule_i; what says what changed. */
static json_t *mutation_apply(const json_t *cap, enum mutation m, size_t rule_i, size_t item_i,
                              char *what, size_t size)
{
    json_t *copy = json_deep_copy(cap);
    json_t *rule;

    if (copy == NULL)
        oom();
    rule = json_array_get(expected_rules(copy), rule_i);
    if (m == MUTATE_SOURCE) {
        json_t *srcs = json_object_get(rule, "SrcIPs");
        snprintf(what, size, "rule %zu without source %s", rule_i,
                 text_of(json_array_get(srcs, item_i)));
        json_array_remove(srcs, item_i);
    } else {
        json_t *dp = json_array_get(json_object_get(rule, "DstPorts"), item_i);

        snprintf(what, size, "rule %zu DstPorts %zu with one port changed", rule_i, item_i);
        port_change(json_object_get(dp, "Ports"));
    }
    return copy;
}

/* The first mutation of kind m of node capture cap that changes what its
 * packet filter means (a removed source may be covered by another, a
 * changed port by another rule): a copy, or NULL when none does. */
static json_t *mutate(const json_t *cap, enum mutation m, char *what, size_t size)
{
    const json_t *rules = expected_rules(cap);
    struct strset before = {0};
    size_t i;
    json_t *rule, *found = NULL;

    filter_tuples(rules, &before);
    json_array_foreach(rules, i, rule)
    {
        size_t n =
            json_array_size(json_object_get(rule, m == MUTATE_SOURCE ? "SrcIPs" : "DstPorts"));

        for (size_t j = 0; found == NULL && rule_mutable(rule) && j < n; j++) {
            json_t *copy = mutation_apply(cap, m, i, j, what, size);
            struct strset after = {0};

            filter_tuples(expected_rules(copy), &after);
            if (!strset_equal(&before, &after))
                found = copy;
            else
                json_decref(copy);
            strset_free(&after);
        }
        if (found != NULL)
            break;
    }
    strset_free(&before);
    return found;
}

/* Whether the comparison notices mutation m on the first node it changes. */
static bool mutation_detected(struct world *w, json_t *captures, enum mutation m, const char *id)
{
    const char *kind = m == MUTATE_SOURCE ? "source removal" : "port change";

    for (size_t i = 0; i < w->n_nodes; i++) {
        const json_t *cap = json_object_get(captures, w->nodes[i].hostname);
        char what[256];
        json_t *mutated = cap ? mutate(cap, m, what, sizeof what) : NULL;
        struct report r = {0};
        bool detected;

        if (mutated == NULL)
            continue;
        compare_node(w, &w->nodes[i], mutated, &r);
        detected = r.n_diffs > 0;
        if (!detected)
            printf("self-test: %s: not detected: node %s: %s\n", id, w->nodes[i].hostname, what);
        report_clear(&r);
        json_decref(mutated);
        return detected;
    }
    printf("self-test: %s: no %s changes what a packet filter means\n", id, kind);
    return false;
}

static bool capture_mutable(json_t *captures)
{
    const char *hostname;
    json_t *cap;

    json_object_foreach(captures, hostname, cap)
    {
        if (rules_mutable(expected_rules(cap)))
            return true;
    }
    return false;
}

static void selftest_capture(json_t *root, struct selftest *st)
{
    json_t *captures = json_object_get(root, "captures");
    const char *id = json_string_value(json_object_get(root, "test_id"));
    struct world w = {0};
    struct refusal why;
    struct report r = {0};

    if (json_object_get(root, "capture_error") != NULL || json_object_get(root, "error") != NULL ||
        !capture_mutable(captures))
        return;
    st->eligible++;
    if (world_build(&w, root, &why, &r) == BUILD_READY)
        compare_captures(&w, captures, &r);
    else
        report_diff(&r, "not built");
    if (r.n_diffs > 0) {
        st->failing++;
    } else {
        bool source_seen = mutation_detected(&w, captures, MUTATE_SOURCE, id ? id : "?");
        bool port_seen = mutation_detected(&w, captures, MUTATE_PORT, id ? id : "?");

        st->used++;
        if (!source_seen || !port_seen)
            st->slipped++;
    }
    report_clear(&r);
    world_free(&w);
}

static int selftest_run(const struct strset *paths)
{
    struct selftest st = {0};

    for (size_t i = 0; i < paths->n; i++) {
        char errmsg[256];
        json_t *root = capture_load(paths->v[i], errmsg, sizeof errmsg);

        if (root == NULL) {
            printf("self-test: %s: %s\n", paths->v[i], errmsg);
            continue;
        }
        selftest_capture(root, &st);
        json_decref(root);
    }
    printf("self-test: %u captures with sources and ports, %u pass unmutated and were used "
           "(%u fail unmutated: no evidence)\n",
           st.eligible, st.used, st.failing);
    if (st.used == 0) {
        printf("self-test: no capture passes unmutated: nothing shows the comparison works\n");
        return 1;
    }
    if (st.slipped > 0) {
        printf("self-test: %u of %u mutated captures not detected\n", st.slipped, st.used);
        return 1;
    }
    printf("self-test: %u mutated captures, all detected\n", st.used);
    return 0;
}

/* ---- the run ---- */

struct options {
    bool verbose;
    bool self_test;
    const char *known_path;
    char *dir; /* without trailing slashes */
};

struct tally {
    char *category;
    unsigned passed, failed, skipped;
};

struct tallies {
    struct tally *v;
    size_t n;
};

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Every *.hujson under dir, recursively (hidden entries left out), into
 * paths. -1 when a directory cannot be read. */
static int scan_dir(const char *dir, struct strset *paths)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int rv = 0;

    if (d == NULL) {
        fprintf(stderr, "policy-golden: cannot open %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while (rv == 0 && (e = readdir(d)) != NULL) {
        char *path = xasprintf("%s/%s", dir, e->d_name);
        struct stat st;
        bool is_capture = false;

        if (e->d_name[0] != '.' && stat(path, &st) == 0) {
            if (S_ISDIR(st.st_mode))
                rv = scan_dir(path, paths);
            else
                is_capture = S_ISREG(st.st_mode) && ends_with(path, ".hujson");
        }
        if (is_capture)
            strset_take(paths, path);
        else
            free(path);
    }
    closedir(d);
    return rv;
}

/* The test ids file lists as "- `ID`: reason". -1 when it cannot be read. */
static int known_load(const char *path, struct strset *ids)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;

    if (f == NULL) {
        fprintf(stderr, "policy-golden: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (getline(&line, &cap, f) >= 0) {
        const char *end;

        if (strncmp(line, "- `", 3) != 0 || (end = strchr(line + 3, '`')) == NULL ||
            end == line + 3 || end[1] != ':')
            continue;
        strset_take(ids, xstrndup(line + 3, (size_t)(end - line - 3)));
    }
    free(line);
    fclose(f);
    strset_sort(ids);
    return 0;
}

/* The name of the folder holding path. */
static char *category_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *start = slash;

    if (slash == NULL)
        return xstrdup(".");
    while (start > path && start[-1] != '/')
        start--;
    return xstrndup(start, (size_t)(slash - start));
}

static struct tally *tally_get(struct tallies *t, const char *category)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->v[i].category, category) == 0)
            return &t->v[i];
    t->v = xrealloc(t->v, t->n + 1, sizeof *t->v);
    t->v[t->n] = (struct tally){.category = xstrdup(category)};
    return &t->v[t->n++];
}

static int tally_cmp(const void *a, const void *b)
{
    return strcmp(((const struct tally *)a)->category, ((const struct tally *)b)->category);
}

/* Per-category lines, then the totals; whether anything failed. */
static bool tallies_print(struct tallies *t)
{
    unsigned passed = 0, failed = 0, skipped = 0;

    qsort(t->v, t->n, sizeof *t->v, tally_cmp);
    for (size_t i = 0; i < t->n; i++) {
        printf("%s: %u passed, %u failed, %u skipped\n", t->v[i].category, t->v[i].passed,
               t->v[i].failed, t->v[i].skipped);
        passed += t->v[i].passed;
        failed += t->v[i].failed;
        skipped += t->v[i].skipped;
        free(t->v[i].category);
    }
    free(t->v);
    printf("%u passed, %u failed, %u skipped\n", passed, failed, skipped);
    return failed > 0;
}

/* The outcome of the capture at path, after the known divergences, printed
 * as the options ask. */
static enum outcome capture_run(const char *path, const struct options *o,
                                const struct strset *known)
{
    char errmsg[256];
    json_t *root = capture_load(path, errmsg, sizeof errmsg);
    struct report r = {0};
    const char *id;
    enum outcome out;

    if (root == NULL) {
        printf("FAIL %s: %s\n", path, errmsg);
        return OUTCOME_FAIL;
    }
    id = json_string_value(json_object_get(root, "test_id"));
    id = id ? id : path;
    out = capture_check(root, &r);
    if (strset_has(known, id) && out == OUTCOME_FAIL) {
        out = OUTCOME_SKIP;
        if (o->verbose)
            printf("known %s: a documented divergence\n", id);
    } else if (strset_has(known, id) && out == OUTCOME_PASS) {
        out = OUTCOME_FAIL;
        printf("FAIL %s: listed in %s but passes: remove it\n", id, o->known_path);
    } else if (out == OUTCOME_FAIL) {
        printf("FAIL %s\n", id);
        if (o->verbose)
            report_print(&r);
    } else if (out == OUTCOME_SKIP && o->verbose) {
        printf("skip %s: the capture failed (capture_error)\n", id);
    }
    report_clear(&r);
    json_decref(root);
    return out;
}

static int run(const struct strset *paths, const struct options *o, const struct strset *known)
{
    struct tallies t = {0};

    for (size_t i = 0; i < paths->n; i++) {
        char *category = category_of(paths->v[i]);
        struct tally *tally = tally_get(&t, category);

        free(category);
        switch (capture_run(paths->v[i], o, known)) {
        case OUTCOME_PASS:
            tally->passed++;
            break;
        case OUTCOME_FAIL:
            tally->failed++;
            break;
        case OUTCOME_SKIP:
            tally->skipped++;
            break;
        }
    }
    return tallies_print(&t) ? 1 : 0;
}

static int usage(void)
{
    fputs("usage: policy-golden [--verbose] [--known FILE] [--self-test] DIR\n", stderr);
    return 2;
}

static int options_parse(int argc, char **argv, struct options *o)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--verbose") == 0)
            o->verbose = true;
        else if (strcmp(argv[i], "--self-test") == 0)
            o->self_test = true;
        else if (strcmp(argv[i], "--known") == 0 && i + 1 < argc)
            o->known_path = argv[++i];
        else if (argv[i][0] == '-' || o->dir != NULL)
            return -1;
        else
            o->dir = argv[i];
    }
    if (o->dir == NULL)
        return -1;
    for (size_t n = strlen(o->dir); n > 1 && o->dir[n - 1] == '/'; n--)
        o->dir[n - 1] = '\0';
    return 0;
}

int main(int argc, char **argv)
{
    struct options o = {0};
    struct strset paths = {0}, known = {0};
    int rv = 2;

    if (options_parse(argc, argv, &o) != 0)
        return usage();
    if ((o.known_path == NULL || known_load(o.known_path, &known) == 0) &&
        scan_dir(o.dir, &paths) == 0) {
        strset_sort(&paths);
        if (paths.n == 0)
            fprintf(stderr, "policy-golden: no *.hujson captures under %s\n", o.dir);
        else if (o.self_test)
            rv = selftest_run(&paths);
        else
            rv = run(&paths, &o, &known);
    }
    strset_free(&paths);
    strset_free(&known);
    return rv;
}
