/* tests/fuzz/wire_request.c: arbitrary bodies into the request decoders. The
 * first byte selects the decoder (even: RegisterRequest, odd: MapRequest;
 * the seeds use 'R' and 'M'), the rest is the body. Properties checked: no
 * crash or leak (ASan), an error leaves a message and a zeroed struct, a
 * success respects every limit of wire.h, and the re-serialized Hostinfo
 * decodes again to the same values (so what peers receive is what we
 * checked). */
#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/control/jsonw.h"
#include "server/control/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_list(char *const *list, size_t n, size_t max)
{
    assert(n <= max);
    assert((n == 0) == (list == NULL));
    for (size_t i = 0; i < n; i++)
        assert(list[i] != NULL && strlen(list[i]) <= WIRE_MAX_STRING);
}

static void check_hostinfo(const struct wire_hostinfo *h)
{
    if (h->json == NULL) {
        assert(h->hostname == NULL && h->os == NULL && h->preferred_derp == 0);
        assert(h->n_request_tags == 0 && h->n_routable_ips == 0);
        return;
    }
    assert(h->json_len <= WIRE_MAX_HOSTINFO && strlen(h->json) == h->json_len);
    assert(h->hostname == NULL ||
           (h->hostname[0] != '\0' && strlen(h->hostname) <= WIRE_MAX_STRING));
    assert(h->preferred_derp >= 0);
    check_list(h->request_tags, h->n_request_tags, WIRE_MAX_TAGS);
    check_list(h->routable_ips, h->n_routable_ips, WIRE_MAX_ROUTES);
}

static bool same_string(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool same_list(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++) {
        if (strcmp(a[i], b[i]) != 0)
            return false;
    }
    return true;
}

/* Decodes {"NodeKey":..,"Hostinfo":<h->json>} and compares the result. */
static void check_hostinfo_round_trip(const uint8_t node_key[32], const struct wire_hostinfo *h)
{
    struct wire_register_request again;
    char errmsg[WIRE_ERRMSG_BYTES];
    struct jw w;

    if (h->json == NULL)
        return;
    jw_init(&w);
    jw_obj_begin(&w);
    jw_key(&w, "NodeKey");
    jw_key_hex(&w, "nodekey:", node_key);
    jw_key(&w, "Hostinfo");
    jw_raw(&w, h->json, h->json_len);
    jw_obj_end(&w);
    if (jw_failed(&w)) {
        jw_free(&w);
        return;
    }
    assert(wire_register_request_parse((const uint8_t *)w.buf, w.len, &again, errmsg) == 0);
    assert(again.hostinfo.json_len == h->json_len);
    assert(memcmp(again.hostinfo.json, h->json, h->json_len) == 0);
    assert(same_string(again.hostinfo.hostname, h->hostname));
    assert(same_string(again.hostinfo.os, h->os));
    assert(again.hostinfo.preferred_derp == h->preferred_derp);
    assert(same_list(again.hostinfo.request_tags, again.hostinfo.n_request_tags, h->request_tags,
                     h->n_request_tags));
    assert(same_list(again.hostinfo.routable_ips, again.hostinfo.n_routable_ips, h->routable_ips,
                     h->n_routable_ips));
    wire_register_request_free(&again);
    jw_free(&w);
}

static void fuzz_register(const uint8_t *body, size_t len)
{
    static const struct wire_register_request zero;
    struct wire_register_request r;
    char errmsg[WIRE_ERRMSG_BYTES] = "";

    if (wire_register_request_parse(body, len, &r, errmsg) != 0) {
        assert(errmsg[0] != '\0');
        assert(memcmp(&r, &zero, sizeof r) == 0);
        return;
    }
    assert(r.version <= 65535);
    assert(r.auth_key == NULL || (r.auth_key[0] != '\0' && strlen(r.auth_key) <= WIRE_MAX_STRING));
    assert(r.followup == NULL || (r.followup[0] != '\0' && strlen(r.followup) <= WIRE_MAX_STRING));
    assert(r.has_expiry || r.expiry_unix_ms == 0);
    check_hostinfo(&r.hostinfo);
    check_hostinfo_round_trip(r.node_key, &r.hostinfo);
    wire_register_request_free(&r);
}

static void fuzz_map(const uint8_t *body, size_t len)
{
    static const struct wire_map_request zero;
    struct wire_map_request r;
    char errmsg[WIRE_ERRMSG_BYTES] = "";

    if (wire_map_request_parse(body, len, &r, errmsg) != 0) {
        assert(errmsg[0] != '\0');
        assert(memcmp(&r, &zero, sizeof r) == 0);
        return;
    }
    assert(r.version <= 65535);
    check_list(r.endpoints, r.n_endpoints, WIRE_MAX_ENDPOINTS);
    check_hostinfo(&r.hostinfo);
    check_hostinfo_round_trip(r.node_key, &r.hostinfo);
    wire_map_request_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (data[0] % 2 == 0)
        fuzz_register(data + 1, size - 1);
    else
        fuzz_map(data + 1, size - 1);
    return 0;
}
