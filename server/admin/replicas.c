/* server/admin/replicas.c: concord's own cluster routes under
 * /api/v1/cluster: membership, status with a state hash to compare replicas,
 * leadership transfer and joining. Membership changes run through raft/
 * (forwarded to the leader); their answer is the configuration after them. */
#include "server/admin/admin_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

static json_t *render_members(struct cluster *c)
{
    struct cluster_member *m = NULL;
    json_t *a;
    size_t n = 0;

    if (cluster_members(c, &m, &n) != 0)
        return NULL;
    a = json_array();
    for (size_t i = 0; a != NULL && i < n; i++) {
        json_t *j = json_pack("{s:o, s:s, s:s, s:b, s:b}", "id", admin_json_id(m[i].id),
                              "raftAddress", m[i].raft_address, "httpAddress", m[i].http_address,
                              "voter", m[i].is_voter, "leader", m[i].is_leader);
        if (json_array_append_new(a, j) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    free(m);
    return a != NULL ? json_pack("{s:o}", "members", a) : NULL;
}

void admin_cluster_members(struct admin_call *call)
{
    json_t *body = render_members(call->admin->opts.cluster);

    if (body == NULL) {
        admin_fail(call, ADMIN_INTERNAL, "cannot read the cluster configuration");
        return;
    }
    admin_reply_json(call, 200, body, NULL);
}

/* Local by design: status must answer on a replica without quorum. The
 * applied index and the hash come from one read transaction, so two replicas
 * that report the same appliedIndex must report the same stateHash. */
void admin_cluster_status(struct admin_call *call)
{
    struct cluster_status st;
    struct store_txn *t;
    uint8_t hash[32];
    char hex[65];
    uint64_t applied = 0;
    int rv;

    cluster_status_get(call->admin->opts.cluster, &st);
    rv = store_txn_begin(call->admin->opts.store, false, &t);
    if (rv == 0) {
        rv = store_applied_index_get(t, &applied);
        if (rv == 0)
            rv = store_state_hash(t, hash);
        store_txn_abort(t);
    }
    if (rv != 0) {
        admin_fail_store(call, rv, "cannot hash the state");
        return;
    }
    sodium_bin2hex(hex, sizeof hex, hash, sizeof hash);
    admin_reply_json(
        call, 200,
        json_pack("{s:o, s:s, s:o, s:s, s:o, s:o, s:o, s:o, s:o, s:i, s:s}", "id",
                  admin_json_id(st.id), "role", cluster_role_name(st.role), "leaderId",
                  admin_json_id(st.leader_id), "leaderHttpAddress", st.leader_http_address, "term",
                  admin_json_id(st.term), "commitIndex", admin_json_id(st.commit_index),
                  "appliedIndex", admin_json_id(applied), "lastLogIndex",
                  admin_json_id(st.last_log_index), "leaderChanges",
                  admin_json_id(st.leader_changes), "voters", (int)st.n_voters, "stateHash", hex),
        NULL);
}

static void on_changed_reply_members(void *arg, int status)
{
    struct admin_call *call = arg;
    json_t *body;

    if (status != CLUSTER_OK) {
        admin_fail_cluster(call, status, "membership change failed");
        return;
    }
    body = render_members(call->admin->opts.cluster);
    if (body == NULL) {
        admin_fail(call, ADMIN_INTERNAL, "changed, but cannot read the configuration back");
        return;
    }
    admin_reply_json(call, 200, body, NULL);
}

static void on_done_reply_empty(void *arg, int status)
{
    struct admin_call *call = arg;

    if (status != CLUSTER_OK) {
        admin_fail_cluster(call, status, NULL);
        return;
    }
    admin_reply_json(call, 200, json_object(), NULL);
}

/* "host:port" that fits struct cluster_member's 64-byte fields. */
static int check_address(struct admin_call *call, const char *field, const char *addr)
{
    const char *colon = strrchr(addr, ':');
    size_t len = strlen(addr);
    unsigned long port = 0;

    if (len == 0 || len >= sizeof((struct cluster_member *)NULL)->raft_address || colon == NULL ||
        colon == addr || colon[1] == '\0' || strlen(colon + 1) > 5)
        goto err_invalid;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            goto err_invalid;
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port == 0 || port > 65535)
        goto err_invalid;
    for (const char *p = addr; p < colon; p++) {
        if (*p <= ' ' || *p == '/' || *p == 0x7F)
            goto err_invalid;
    }
    return 0;

err_invalid:
    admin_fail(call, ADMIN_INVALID, "%s: expected host:port (at most 63 characters)", field);
    return -1;
}

void admin_cluster_member_add(struct admin_call *call)
{
    static const struct admin_field fields[] = {
        {"id", NULL, ADMIN_FIELD_U64},
        {"raftAddress", "raft_address", ADMIN_FIELD_STRING},
        {"httpAddress", "http_address", ADMIN_FIELD_STRING},
    };
    struct admin_value v[3];
    struct cluster_member m = {0};
    int rv;

    if (admin_body_parse(call, fields, 3, v) != 0)
        return;
    if (v[0].u64 == 0 || !v[1].is_present || !v[2].is_present) {
        admin_fail(call, ADMIN_INVALID,
                   "fields \"id\", \"raftAddress\" and \"httpAddress\" are "
                   "required");
        return;
    }
    if (check_address(call, "raftAddress", v[1].str) != 0 ||
        check_address(call, "httpAddress", v[2].str) != 0)
        return;
    m.id = v[0].u64;
    m.is_voter = true;
    snprintf(m.raft_address, sizeof m.raft_address, "%s", v[1].str);
    snprintf(m.http_address, sizeof m.http_address, "%s", v[2].str);
    rv = cluster_member_add(call->admin->opts.cluster, &m, on_changed_reply_members, call);
    if (rv != 0)
        admin_fail_cluster(call, rv, "membership change failed");
}

void admin_cluster_member_remove(struct admin_call *call)
{
    uint64_t id;
    int rv;

    if (admin_parse_id(call->params[0], &id) != 0) {
        admin_fail(call, ADMIN_INVALID, "replica id must be a positive integer");
        return;
    }
    rv = cluster_member_remove(call->admin->opts.cluster, id, on_changed_reply_members, call);
    if (rv != 0)
        admin_fail_cluster(call, rv, "membership change failed");
}

void admin_cluster_transfer(struct admin_call *call)
{
    static const struct admin_field fields[] = {
        {"id", NULL, ADMIN_FIELD_U64},
    };
    struct admin_value v[1];
    int rv;

    if (admin_body_parse(call, fields, 1, v) != 0)
        return;
    /* No id (0): libraft picks the most up-to-date voter. */
    rv =
        cluster_transfer_leadership(call->admin->opts.cluster, v[0].u64, on_done_reply_empty, call);
    if (rv != 0)
        admin_fail_cluster(call, rv, "leadership transfer failed");
}

void admin_cluster_join(struct admin_call *call)
{
    static const struct admin_field fields[] = {
        {"peer", NULL, ADMIN_FIELD_STRING},
    };
    struct admin_value v[1];
    int rv;

    if (admin_body_parse(call, fields, 1, v) != 0)
        return;
    if (!v[0].is_present) {
        admin_fail(call, ADMIN_INVALID,
                   "field \"peer\" is required (the host:port of a member's "
                   "client listener)");
        return;
    }
    if (check_address(call, "peer", v[0].str) != 0)
        return;
    rv = cluster_join(call->admin->opts.cluster, v[0].str, on_done_reply_empty, call);
    if (rv != 0)
        admin_fail_cluster(call, rv, "join failed");
}
