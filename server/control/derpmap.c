/* server/control/derpmap.c: the DERP map sent to clients. Regions come from
 * derp.map_path (as written there) and, when replicas run the embedded
 * relay, one region per relay, read from the replicated replicas table, so
 * every replica sends the same map. Each replica announces its own relay
 * (SetReplicaDerp). */
#include "server/control/control_internal.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/log.h"

int ctl_derpmap_init(struct control *c, const char *file_json, char *errmsg)
{
    json_error_t err;
    const Concord__DerpNode *d = c->opt.derp_node;

    if (file_json != NULL) {
        c->derp_file = json_loads(file_json, 0, &err);
        if (c->derp_file == NULL || !json_is_object(c->derp_file) ||
            !json_is_object(json_object_get(c->derp_file, "Regions"))) {
            snprintf(errmsg, 256, "DERP map: %s",
                     c->derp_file == NULL ? err.text : "expected an object with \"Regions\"");
            return -1;
        }
    }
    if (d != NULL) {
        size_t len = concord__derp_node__get_packed_size(d);
        uint8_t *buf = malloc(len > 0 ? len : 1);

        if (buf != NULL) {
            concord__derp_node__pack(d, buf);
            c->derp_node = concord__derp_node__unpack(NULL, len, buf);
        }
        free(buf);
        if (c->derp_node == NULL) {
            snprintf(errmsg, 256, "out of memory");
            return -1;
        }
    }
    /* Every replica describes the embedded region, relay or not. */
    if (c->opt.derp_region_code != NULL) {
        c->derp_region_code = strdup(c->opt.derp_region_code);
        c->derp_region_name = strdup(c->opt.derp_region_name != NULL ? c->opt.derp_region_name
                                                                     : c->opt.derp_region_code);
        if (c->derp_region_code == NULL || c->derp_region_name == NULL) {
            snprintf(errmsg, 256, "out of memory");
            return -1;
        }
    }
    /* Borrowed from the caller: the copies are used from now on. */
    c->opt.derp_node = NULL;
    c->opt.derp_region_code = NULL;
    c->opt.derp_region_name = NULL;
    ctl_derpmap_rebuild(c);
    return 0;
}

void ctl_derpmap_free(struct control *c)
{
    json_decref(c->derp_file);
    if (c->derp_node != NULL)
        concord__derp_node__free_unpacked(c->derp_node, NULL);
    free(c->derp_region_code);
    free(c->derp_region_name);
    free(c->derp_map_json);
}

static json_t *node_json(uint32_t region, uint64_t replica_id, const Concord__DerpNode *d)
{
    char name[40];

    snprintf(name, sizeof name, "%" PRIu32 "r%" PRIu64, region, replica_id);
    return json_pack("{s:s, s:i, s:s, s:s, s:s, s:i, s:i, s:s*}", "Name", name, "RegionID",
                     (json_int_t)region, "HostName", d->host_name, "IPv4",
                     d->ipv4[0] != '\0' ? d->ipv4 : "", "IPv6", d->ipv6[0] != '\0' ? d->ipv6 : "",
                     "DERPPort", (json_int_t)d->derp_port, "STUNPort", (json_int_t)d->stun_port,
                     "CertName", d->cert_name[0] != '\0' ? d->cert_name : NULL);
}

struct region_walk {
    struct control *c;
    json_t *regions;
    json_t *mesh_nodes; /* meshed relays: the nodes of the one region */
};

/* Meshed relays forward to each other, so they are the nodes of one region
 * (in replica id order). Otherwise one region per relay (replica N:
 * region_id + N - 1): a client reaches a peer homed on another replica's
 * relay by connecting to that region, as it does for any other region. */
static int add_replica_region(const ProtobufCMessage *record, void *arg)
{
    const Concord__Replica *r = (const Concord__Replica *)record;
    struct region_walk *w = arg;
    uint64_t id = (uint64_t)w->c->opt.derp_region_id + r->id - 1;
    char key[24];
    char code[96];
    char name[160];
    json_t *nodes;
    json_t *region;

    if (r->derp == NULL || id > INT32_MAX)
        return 0;
    if (w->mesh_nodes != NULL)
        return json_array_append_new(w->mesh_nodes,
                                     node_json(w->c->opt.derp_region_id, r->id, r->derp)) == 0
                   ? 0
                   : STORE_NOMEM;
    snprintf(key, sizeof key, "%" PRIu64, id);
    snprintf(code, sizeof code, "%s-%" PRIu64, w->c->derp_region_code, r->id);
    snprintf(name, sizeof name, "%s (replica %" PRIu64 ")", w->c->derp_region_name, r->id);
    nodes = json_array();
    if (nodes == NULL ||
        json_array_append_new(nodes, node_json((uint32_t)id, r->id, r->derp)) != 0) {
        json_decref(nodes);
        return STORE_NOMEM;
    }
    region = json_pack("{s:I, s:s, s:s, s:o}", "RegionID", (json_int_t)id, "RegionCode", code,
                       "RegionName", name, "Nodes", nodes);
    if (region == NULL || json_object_set_new(w->regions, key, region) != 0)
        return STORE_NOMEM;
    return 0;
}

bool ctl_derpmap_rebuild(struct control *c)
{
    json_t *map = json_object();
    json_t *regions = json_object();
    struct region_walk w = {.c = c};
    struct store_txn *t = NULL;
    char *text = NULL;
    bool is_changed;

    c->needs_derp_rebuild = false;
    if (map == NULL || regions == NULL)
        goto oom;
    if (c->derp_file != NULL)
        json_object_update(regions, json_object_get(c->derp_file, "Regions"));
    w.regions = regions;
    w.mesh_nodes = c->opt.derp_mesh ? json_array() : NULL;
    if (c->derp_region_code != NULL && store_txn_begin(c->opt.store, false, &t) == 0) {
        store_replica_each(t, add_replica_region, &w);
        store_txn_abort(t);
    }
    if (json_array_size(w.mesh_nodes) > 0) {
        char key[16];

        snprintf(key, sizeof key, "%" PRIu32, c->opt.derp_region_id);
        json_object_set_new(regions, key,
                            json_pack("{s:I, s:s, s:s, s:O}", "RegionID",
                                      (json_int_t)c->opt.derp_region_id, "RegionCode",
                                      c->derp_region_code, "RegionName", c->derp_region_name,
                                      "Nodes", w.mesh_nodes));
    }
    json_decref(w.mesh_nodes);
    if (json_object_size(regions) > 0) {
        json_object_set_new(map, "Regions", regions);
        regions = NULL;
        json_object_set_new(map, "omitDefaultRegions", json_true());
        text = json_dumps(map, JSON_COMPACT | JSON_SORT_KEYS);
        if (text == NULL)
            goto oom;
    }
    is_changed = (text == NULL) != (c->derp_map_json == NULL) ||
                 (text != NULL && strcmp(text, c->derp_map_json) != 0);
    free(c->derp_map_json);
    c->derp_map_json = text;
    c->derp_map_len = text != NULL ? strlen(text) : 0;
    json_decref(regions);
    json_decref(map);
    return is_changed;
oom:
    json_decref(regions);
    json_decref(map);
    c->needs_derp_rebuild = true; /* try again on the next change or tick */
    return false;
}

static bool derp_equal(const Concord__DerpNode *a, const Concord__DerpNode *b)
{
    return strcmp(a->host_name, b->host_name) == 0 && strcmp(a->ipv4, b->ipv4) == 0 &&
           strcmp(a->ipv6, b->ipv6) == 0 && a->derp_port == b->derp_port &&
           a->stun_port == b->stun_port && strcmp(a->cert_name, b->cert_name) == 0;
}

enum announce_state { ANNOUNCE_DONE, ANNOUNCE_NEEDED, ANNOUNCE_WAIT };

/* Whether the replicas table already says what this replica runs; WAIT
 * while this replica has no record there yet (it is being added). */
static enum announce_state announce_state(struct control *c)
{
    Concord__Replica *r = NULL;
    struct store_txn *t;
    enum announce_state state = ANNOUNCE_WAIT;

    if (store_txn_begin(c->opt.store, false, &t) != 0)
        return ANNOUNCE_WAIT;
    switch (store_replica_get(t, c->opt.replica_id, &r)) {
    case 0: {
        bool is_same = c->derp_node == NULL ? r->derp == NULL
                       : r->derp != NULL    ? derp_equal(r->derp, c->derp_node)
                                            : false;

        state = is_same ? ANNOUNCE_DONE : ANNOUNCE_NEEDED;
        store_record_free(r);
        break;
    }
    case STORE_NOTFOUND:
        /* Not a member yet: nothing to withdraw; a relay waits for the record. */
        state = c->derp_node == NULL ? ANNOUNCE_DONE : ANNOUNCE_WAIT;
        break;
    default:
        break;
    }
    store_txn_abort(t);
    return state;
}

static void on_announced(void *arg, int status, const Concord__CommandResult *result)
{
    struct control *c = arg;

    if (status == CLUSTER_OK && result->code == CLUSTER_RESULT_OK)
        LOG_INFO("control: this replica's DERP relay is in the DERP map");
    else if (status == CLUSTER_OK)
        LOG_WARN("control: cannot announce the DERP relay: %s", result->message);
    (void)c;
}

void ctl_derpmap_announce(struct control *c)
{
    Concord__Command *cmd;
    Concord__SetReplicaDerp *op;

    if (c->is_derp_announced || c->is_closing)
        return;
    switch (announce_state(c)) {
    case ANNOUNCE_DONE:
        c->is_derp_announced = true;
        return;
    case ANNOUNCE_WAIT:
        return;
    case ANNOUNCE_NEEDED:
        break;
    }
    cmd = ctl_command_new(c);
    op = calloc(1, sizeof *op);
    if (cmd == NULL || op == NULL) {
        free(op);
        if (cmd != NULL)
            concord__command__free_unpacked(cmd, NULL);
        return;
    }
    concord__set_replica_derp__init(op);
    op->id = c->opt.replica_id;
    cmd->op_case = CONCORD__COMMAND__OP_SET_REPLICA_DERP;
    cmd->set_replica_derp = op;
    if (c->derp_node != NULL) {
        size_t len = concord__derp_node__get_packed_size(c->derp_node);
        uint8_t *buf = malloc(len > 0 ? len : 1);

        if (buf != NULL) {
            concord__derp_node__pack(c->derp_node, buf);
            op->derp = concord__derp_node__unpack(NULL, len, buf);
        }
        free(buf);
        if (op->derp == NULL) {
            concord__command__free_unpacked(cmd, NULL);
            return;
        }
    }
    /* Checked again on the next tick: announce_state() then sees the result. */
    if (cluster_submit(c->opt.cluster, cmd, on_announced, c) != 0)
        concord__command__free_unpacked(cmd, NULL);
}
