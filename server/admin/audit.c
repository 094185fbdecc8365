/* server/admin/audit.c: GET /api/v1/audit?after=<index>&limit=<n>, the
 * append-only log of who changed what, keyed by the Raft index of the change.
 * Page through it by passing the last index seen as `after`. */
#include "server/admin/admin_internal.h"

#include <string.h>

#define AUDIT_DEFAULT_LIMIT 100
#define AUDIT_MAX_LIMIT     1000

struct audit_page {
    uint64_t after;
    size_t limit;
};

/* Reads ?after= (0 allowed) and ?limit=; 0, or -1 after replying 400. */
static int page_get(struct admin_call *call, struct audit_page *page)
{
    char text[32];
    uint64_t v;

    page->after = 0;
    page->limit = AUDIT_DEFAULT_LIMIT;
    if (net_http_query_get(call->req, "after", text, sizeof text) && strcmp(text, "0") != 0) {
        if (admin_parse_id(text, &v) != 0) {
            admin_fail(call, ADMIN_INVALID, "after: expected a log index");
            return -1;
        }
        page->after = v;
    }
    if (net_http_query_get(call->req, "limit", text, sizeof text)) {
        if (admin_parse_id(text, &v) != 0 || v > AUDIT_MAX_LIMIT) {
            admin_fail(call, ADMIN_INVALID, "limit: expected 1 to %d", AUDIT_MAX_LIMIT);
            return -1;
        }
        page->limit = (size_t)v;
    }
    return 0;
}

static int audit_add(const ProtobufCMessage *record, void *arg)
{
    const Concord__AuditEntry *e = (const Concord__AuditEntry *)record;
    json_t *j = json_pack("{s:o, s:o, s:s, s:s, s:s}", "index", admin_json_id(e->index), "time",
                          admin_json_time(e->unix_ms), "actor", e->actor, "action", e->action,
                          "detail", e->detail);

    return json_array_append_new(arg, j) == 0 ? 0 : STORE_NOMEM;
}

static void audit_read(struct admin_call *call, struct store_txn *t)
{
    struct audit_page page;
    json_t *entries = json_array();
    int rv;

    if (entries == NULL) {
        admin_fail(call, ADMIN_INTERNAL, "out of memory");
        return;
    }
    if (page_get(call, &page) != 0) {
        json_decref(entries);
        return;
    }
    rv = store_audit_each(t, page.after, page.limit, audit_add, entries);
    if (rv != 0) {
        json_decref(entries);
        admin_fail_store(call, rv, "cannot read the audit log");
        return;
    }
    admin_reply_json(call, 200, json_pack("{s:o}", "entries", entries), NULL);
}

void admin_audit_list(struct admin_call *call)
{
    struct audit_page page;

    if (page_get(call, &page) != 0)
        return;
    admin_read(call, audit_read);
}
