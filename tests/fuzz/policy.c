/* tests/fuzz/policy.c: arbitrary bytes into the policy parser (HuJSON reader
 * included). Properties checked: no crash, no leak, no hang (ASan/UBSan and
 * libFuzzer's timeout); the result is either a policy or a refusal with a
 * message, never both; a refusal's position is 0:0 or a real line and
 * column; and in an accepted policy every group, tag and host reference
 * points at the definition of that name. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "server/policy/policy_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_alias(const struct policy *p, const struct policy_alias *a)
{
    assert(a->name != NULL);
    switch (a->kind) {
    case POLICY_ALIAS_GROUP:
        assert(a->index < p->n_groups && strcmp(a->name, p->groups[a->index].name) == 0);
        break;
    case POLICY_ALIAS_TAG:
        assert(a->index < p->n_tag_owners && strcmp(a->name, p->tag_owners[a->index].tag) == 0);
        break;
    case POLICY_ALIAS_HOST:
        assert(a->index < p->n_hosts && strcmp(a->name, p->hosts[a->index].name) == 0);
        assert(memcmp(&a->prefix, &p->hosts[a->index].prefix, sizeof a->prefix) == 0);
        break;
    default:
        break;
    }
    assert(a->pos.line >= 1 && a->pos.col >= 1);
}

static void check_aliases(const struct policy *p, const struct policy_alias *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        check_alias(p, &a[i]);
}

static void check_policy(const struct policy *p)
{
    for (size_t i = 0; i < p->n_tag_owners; i++)
        check_aliases(p, p->tag_owners[i].owners, p->tag_owners[i].n_owners);
    for (size_t i = 0; i < p->n_acls; i++) {
        check_aliases(p, p->acls[i].src, p->acls[i].n_src);
        for (size_t j = 0; j < p->acls[i].n_dst; j++) {
            check_alias(p, &p->acls[i].dst[j].alias);
            assert(p->acls[i].dst[j].n_ports >= 1);
        }
    }
    for (size_t i = 0; i < p->n_grants; i++) {
        check_aliases(p, p->grants[i].src, p->grants[i].n_src);
        check_aliases(p, p->grants[i].dst, p->grants[i].n_dst);
        check_aliases(p, p->grants[i].via, p->grants[i].n_via);
        assert(p->grants[i].n_ip > 0 || p->grants[i].app != NULL);
    }
    for (size_t i = 0; i < p->n_ssh; i++) {
        check_aliases(p, p->ssh[i].src, p->ssh[i].n_src);
        check_aliases(p, p->ssh[i].dst, p->ssh[i].n_dst);
        assert(p->ssh[i].n_users > 0);
    }
    for (size_t i = 0; i < p->n_node_attrs; i++)
        check_aliases(p, p->node_attrs[i].target, p->node_attrs[i].n_target);
    for (size_t i = 0; i < p->n_route_approvers; i++)
        check_aliases(p, p->route_approvers[i].approvers, p->route_approvers[i].n_approvers);
    check_aliases(p, p->exit_node_approvers, p->n_exit_node_approvers);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct policy_error err;
    struct policy *p = NULL;
    int rv = policy_parse((const char *)data, size, &p, &err);

    if (rv == 0) {
        assert(p != NULL);
        check_policy(p);
        policy_free(p);
        return 0;
    }
    assert(rv == POLICY_EINVAL || rv == POLICY_ENOMEM);
    assert(p == NULL);
    if (rv == POLICY_EINVAL) {
        assert(err.message[0] != '\0');
        assert((err.line == 0) == (err.col == 0));
    }
    return 0;
}
