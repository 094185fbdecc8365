/* server/admin/render.c: records as the JSON grpc-gateway emits for
 * Headscale 0.29 (protojson with EmitUnpopulated: lowerCamel names, uint64 as
 * strings, unset timestamps as null, enums by name), so Headscale tooling
 * reads concord's answers unchanged. */
#include "server/admin/admin_internal.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

/* Headscale shows tagged nodes as owned by this pseudo-user
 * (hscontrol/types/users.go TaggedDevices). */
#define TAGGED_DEVICES_USER_ID 2147455555ULL

json_t *admin_json_time(int64_t unix_ms)
{
    char buf[40];
    struct tm tm;
    time_t secs;
    int64_t ms;
    size_t n;

    if (unix_ms == 0)
        return json_null();
    secs = (time_t)(unix_ms / 1000);
    ms = unix_ms % 1000;
    if (ms < 0) {
        secs--;
        ms += 1000;
    }
    if (gmtime_r(&secs, &tm) == NULL)
        return json_null();
    n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    if (ms != 0)
        snprintf(buf + n, sizeof buf - n, ".%03" PRId64 "Z", ms);
    else
        snprintf(buf + n, sizeof buf - n, "Z");
    return json_string(buf);
}

json_t *admin_json_id(uint64_t id)
{
    char buf[24];

    snprintf(buf, sizeof buf, "%" PRIu64, id);
    return json_string(buf);
}

json_t *admin_json_strings(char *const *v, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < n; i++) {
        if (json_array_append_new(a, json_string(v[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* "prefix:<hex>" for a 32-byte key; "" when the key is absent. */
static json_t *json_key(const char *prefix, const ProtobufCBinaryData *key)
{
    char buf[16 + 65];
    size_t n = strlen(prefix);

    if (key->len != 32)
        return json_string("");
    memcpy(buf, prefix, n);
    sodium_bin2hex(buf + n, sizeof buf - n, key->data, key->len);
    return json_string(buf);
}

json_t *admin_render_user(const Concord__User *u)
{
    return json_pack("{s:o, s:s, s:o, s:s, s:s, s:s, s:s, s:s}", "id", admin_json_id(u->id), "name",
                     u->name, "createdAt", admin_json_time(u->created_unix_ms), "displayName",
                     u->display_name, "email", u->email, "providerId", "", "provider", "",
                     "profilePicUrl", "");
}

static json_t *render_tagged_devices_user(void)
{
    return json_pack("{s:o, s:s, s:n, s:s, s:s, s:s, s:s, s:s}", "id",
                     admin_json_id(TAGGED_DEVICES_USER_ID), "name", "tagged-devices", "createdAt",
                     "displayName", "Tagged Devices", "email", "", "providerId", "", "provider", "",
                     "profilePicUrl", "");
}

/* The user object for a user id, or null when it is unknown or unset. */
static json_t *render_user_ref(struct store_txn *t, uint64_t user_id)
{
    Concord__User *u = NULL;
    json_t *j;

    if (user_id == 0 || store_user_get(t, user_id, &u) != 0)
        return json_null();
    j = admin_render_user(u);
    store_record_free(u);
    return j;
}

json_t *admin_render_preauthkey(struct store_txn *t, const Concord__PreAuthKey *k)
{
    char shown[SECRET_TOKEN_MAX];

    snprintf(shown, sizeof shown, "%s-%s-***", SECRET_KIND_PREAUTH, k->prefix);
    return json_pack("{s:o, s:o, s:s, s:b, s:b, s:b, s:o, s:o, s:o}", "user",
                     render_user_ref(t, k->user_id), "id", admin_json_id(k->id), "key", shown,
                     "reusable", k->reusable, "ephemeral", k->ephemeral, "used", k->used,
                     "expiration", admin_json_time(k->expiration_unix_ms), "createdAt",
                     admin_json_time(k->created_unix_ms), "aclTags",
                     admin_json_strings(k->tags, k->n_tags));
}

json_t *admin_render_apikey(const Concord__ApiKey *k)
{
    return json_pack("{s:o, s:s, s:o, s:o, s:o}", "id", admin_json_id(k->id), "prefix", k->prefix,
                     "expiration", admin_json_time(k->expiration_unix_ms), "createdAt",
                     admin_json_time(k->created_unix_ms), "lastSeen",
                     admin_json_time(k->last_seen_unix_ms));
}

static const char *register_method_name(const char *method)
{
    if (strcmp(method, "authkey") == 0)
        return "REGISTER_METHOD_AUTH_KEY";
    if (strcmp(method, "cli") == 0)
        return "REGISTER_METHOD_CLI";
    if (strcmp(method, "oidc") == 0)
        return "REGISTER_METHOD_OIDC";
    return "REGISTER_METHOD_UNSPECIFIED";
}

static json_t *render_ips(const Concord__Node *n)
{
    json_t *a = json_array();
    char buf[INET6_ADDRSTRLEN];

    if (a == NULL)
        return NULL;
    if (n->ipv4.len == 4 && inet_ntop(AF_INET, n->ipv4.data, buf, sizeof buf) != NULL)
        json_array_append_new(a, json_string(buf));
    if (n->ipv6.len == 16 && inet_ntop(AF_INET6, n->ipv6.data, buf, sizeof buf) != NULL)
        json_array_append_new(a, json_string(buf));
    return a;
}

/* The routes the client announces: Hostinfo.RoutableIPs of its hostinfo. */
static json_t *render_available_routes(const Concord__Node *n)
{
    json_t *hostinfo, *routes, *out;

    if (n->hostinfo.len == 0)
        return json_array();
    hostinfo = json_loadb((const char *)n->hostinfo.data, n->hostinfo.len, 0, NULL);
    routes = json_object_get(hostinfo, "RoutableIPs");
    out = json_is_array(routes) ? json_deep_copy(routes) : json_array();
    json_decref(hostinfo);
    return out;
}

/* The routes the node serves: approved and advertised. (Which of the
 * routers serving a prefix is primary shows in the clients' netmaps.) */
static json_t *render_serving_routes(const Concord__Node *n)
{
    json_t *out = json_array();

    for (size_t i = 0; out != NULL && i < n->n_approved_routes; i++)
        for (size_t j = 0; j < n->n_advertised_routes; j++)
            if (strcmp(n->approved_routes[i], n->advertised_routes[j]) == 0) {
                json_array_append_new(out, json_string(n->approved_routes[i]));
                break;
            }
    return out;
}

static bool is_online(const struct admin_online *online, uint64_t node_id)
{
    size_t lo = 0, hi = online != NULL ? online->n : 0;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (online->ids[mid] == node_id)
            return true;
        if (online->ids[mid] < node_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

json_t *admin_render_node(struct store_txn *t, const Concord__Node *n,
                          const struct admin_online *online)
{
    json_t *user = n->n_tags > 0 ? render_tagged_devices_user() : render_user_ref(t, n->user_id);
    json_t *preauthkey = json_null();
    Concord__PreAuthKey *k = NULL;

    if (n->auth_key_id != 0 && store_preauthkey_get(t, n->auth_key_id, &k) == 0) {
        json_decref(preauthkey);
        preauthkey = admin_render_preauthkey(t, k);
        store_record_free(k);
    }
    return json_pack(
        "{s:o, s:o, s:o, s:o, s:o, s:s, s:o, s:o, s:o, s:o, s:o, s:s, s:s, s:b, s:o, s:o, s:o, "
        "s:o}",
        "id", admin_json_id(n->id), "machineKey", json_key("mkey:", &n->machine_key), "nodeKey",
        json_key("nodekey:", &n->node_key), "discoKey", json_key("discokey:", &n->disco_key),
        "ipAddresses", render_ips(n), "name", n->hostname, "user", user, "lastSeen",
        admin_json_time(n->last_seen_unix_ms), "expiry", admin_json_time(n->expiry_unix_ms),
        "preAuthKey", preauthkey, "createdAt", admin_json_time(n->created_unix_ms),
        "registerMethod", register_method_name(n->register_method), "givenName", n->given_name,
        "online", is_online(online, n->id), "approvedRoutes",
        admin_json_strings(n->approved_routes, n->n_approved_routes), "availableRoutes",
        render_available_routes(n), "subnetRoutes", render_serving_routes(n), "tags",
        admin_json_strings(n->tags, n->n_tags));
}

/* ---- online set ---- */

static int online_add(const ProtobufCMessage *record, void *arg)
{
    const Concord__Session *s = (const Concord__Session *)record;
    struct admin_online *o = arg;
    uint64_t *ids = realloc(o->ids, (o->n + 1) * sizeof *ids);

    if (ids == NULL)
        return STORE_NOMEM;
    o->ids = ids;
    o->ids[o->n++] = s->node_id;
    return 0;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int admin_online_load(struct store_txn *t, struct admin_online *out)
{
    int rv;

    out->ids = NULL;
    out->n = 0;
    rv = store_session_each(t, online_add, out);
    if (rv != 0) {
        admin_online_free(out);
        return rv;
    }
    if (out->n > 0)
        qsort(out->ids, out->n, sizeof *out->ids, compare_u64);
    return 0;
}

void admin_online_free(struct admin_online *o)
{
    free(o->ids);
    o->ids = NULL;
    o->n = 0;
}

/* ---- sorted lists ---- */

struct list_item {
    uint64_t id;
    json_t *json;
};

struct list_walk {
    struct store_txn *t;
    admin_render_fn render;
    const void *arg;
    struct list_item *items;
    size_t n, cap;
};

static int list_add(const ProtobufCMessage *record, void *arg)
{
    struct list_walk *w = arg;
    json_t *j = NULL;
    uint64_t id = 0;
    int rv = w->render(w->t, record, w->arg, &id, &j);

    if (rv != 0 || j == NULL)
        return rv;
    if (w->n == w->cap) {
        size_t cap = w->cap == 0 ? 16 : w->cap * 2;
        struct list_item *items = realloc(w->items, cap * sizeof *items);
        if (items == NULL) {
            json_decref(j);
            return STORE_NOMEM;
        }
        w->items = items;
        w->cap = cap;
    }
    w->items[w->n].id = id;
    w->items[w->n].json = j;
    w->n++;
    return 0;
}

static int compare_items(const void *a, const void *b)
{
    const struct list_item *x = a, *y = b;

    return x->id < y->id ? -1 : x->id > y->id;
}

int admin_render_list(struct store_txn *t, admin_each_fn each, admin_render_fn render,
                      const void *arg, json_t **out)
{
    struct list_walk w = {.t = t, .render = render, .arg = arg};
    json_t *a = NULL;
    int rv = each(t, list_add, &w);

    if (rv == 0) {
        if (w.n > 0)
            qsort(w.items, w.n, sizeof *w.items, compare_items);
        a = json_array();
        if (a == NULL)
            rv = STORE_NOMEM;
    }
    for (size_t i = 0; i < w.n; i++) {
        if (a != NULL && json_array_append_new(a, w.items[i].json) != 0) {
            json_decref(a);
            a = NULL;
            rv = STORE_NOMEM;
        } else if (a == NULL) {
            json_decref(w.items[i].json);
        }
    }
    free(w.items);
    if (rv != 0) {
        json_decref(a);
        return rv;
    }
    *out = a;
    return 0;
}
