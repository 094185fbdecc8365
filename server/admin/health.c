/* server/admin/health.c: what load balancers and monitors ask. /health says
 * the process is alive and never depends on quorum (a replica in a minority
 * is alive, just not ready); /ready says this replica should get clients:
 * it knows a leader and has applied close to the commit index. */
#include "server/admin/admin_internal.h"

#include <inttypes.h>
#include <stdio.h>

void admin_health(struct admin *a, struct net_http_request *req)
{
    admin_respond_json(a, req, 200, json_pack("{s:s}", "status", "pass"), NULL);
}

void admin_ready(struct admin *a, struct net_http_request *req)
{
    struct cluster_status st;
    json_t *reasons = json_array();
    char text[96];

    if (reasons == NULL) {
        admin_respond_error(a, req, ADMIN_INTERNAL, "out of memory");
        return;
    }
    cluster_status_get(a->opts.cluster, &st);
    if (st.role == CLUSTER_ROLE_UNAVAILABLE)
        json_array_append_new(reasons, json_string("replica unavailable"));
    if (st.leader_id == 0)
        json_array_append_new(reasons, json_string("no leader"));
    if (st.commit_index > st.applied_index &&
        st.commit_index - st.applied_index > a->opts.ready_max_apply_lag) {
        snprintf(text, sizeof text, "apply lag %" PRIu64 " > %u",
                 st.commit_index - st.applied_index, a->opts.ready_max_apply_lag);
        json_array_append_new(reasons, json_string(text));
    }
    if (admin_policy_file_mismatch(a))
        json_array_append_new(reasons, json_string("policy file differs from the applied policy"));
    if (json_array_size(reasons) == 0) {
        json_decref(reasons);
        admin_respond_json(a, req, 200, json_pack("{s:s}", "status", "pass"), NULL);
        return;
    }
    admin_respond_json(a, req, 503, json_pack("{s:s, s:o}", "status", "fail", "reasons", reasons),
                       NULL);
}

static void api_health_read(struct admin_call *call, struct store_txn *t)
{
    uint64_t applied;
    int rv = store_applied_index_get(t, &applied);

    if (rv != 0) {
        admin_fail_store(call, rv, "database check failed");
        return;
    }
    admin_reply_json(call, 200, json_pack("{s:b}", "databaseConnectivity", 1), NULL);
}

/* Headscale's Health RPC pings its database; ours reads the store locally. */
void admin_api_health(struct admin_call *call)
{
    call->is_consistent = false;
    admin_read(call, api_health_read);
}
