/* raft/exec_internal.h: what the business-rule files (execute.c for the admin
 * commands, execute_control.c for the control protocol's) share. Every helper
 * follows execute.c's contract: a business failure fills the result and
 * returns 0; a non-zero return is a storage failure. */
#ifndef CONCORD_RAFT_EXEC_INTERNAL_H
#define CONCORD_RAFT_EXEC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/cluster.h"

#define GIVEN_NAME_MAX 63u
#define TAG_MAX_BYTES  128u

struct exec {
    struct store_txn *t;
    const Concord__Command *cmd;
    uint64_t index;
    Concord__CommandResult *result;
};

const char *exec_str_or_empty(const char *s);
/* A business failure: a deterministic result, not an error. */
int exec_fail(struct exec *x, enum cluster_result code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void exec_succeed(struct exec *x, uint64_t id);
int exec_audit(struct exec *x, const char *action, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

bool exec_tag_is_valid(const char *tag);
bool exec_label_is_valid(const char *name);
/* *is_ok false: the result already says why. */
int exec_check_tags(struct exec *x, char **tags, size_t n_tags, bool *is_ok);
int exec_check_owner(struct exec *x, uint64_t user_id, size_t n_tags, bool *is_ok);

/* Address allocation: one offset gives both a node's addresses. */
void exec_ipv4_of(uint32_t offset, uint8_t out[4]);
void exec_ipv6_of(uint32_t offset, uint8_t out[16]);
int exec_allocate_ip_offset(struct exec *x, uint32_t *offset);

/* Node names: hostname -> DNS label, made unique with -1, -2, ... */
void exec_given_name_base(const char *hostname, char out[GIVEN_NAME_MAX + 1]);
int exec_given_name_is_taken(struct exec *x, const char *name, uint64_t except_id, bool *is_taken);
/* Names held by except_id (the node being renamed) count as free. */
int exec_unique_given_name(struct exec *x, const char *base, uint64_t except_id,
                           char out[GIVEN_NAME_MAX + 1]);
int exec_node_key_is_taken(struct exec *x, const uint8_t *key, bool is_machine, bool *is_taken);
/* NOTFOUND result (and *out NULL) when the node does not exist. */
int exec_get_node(struct exec *x, uint64_t id, Concord__Node **out);
/* What a registration needs, whichever command it came from. */
struct exec_registration {
    ProtobufCBinaryData machine_key;
    ProtobufCBinaryData node_key;
    uint64_t user_id;
    char **tags;
    size_t n_tags;
    bool ephemeral;
    const char *hostname;
    ProtobufCBinaryData hostinfo;
    uint64_t auth_key_id;
    const char *register_method;
    int64_t expiry_unix_ms;
    uint32_t cap_version;
    char **routes;
    size_t n_routes;
};

/* Creates the node of a machine the cluster has not seen: addresses, a
 * unique name from the hostname, a new id; audited as `action`. */
int exec_node_create(struct exec *x, const struct exec_registration *r, const char *action,
                     uint64_t *id);
/* Deletes the node and its sessions (no audit entry). */
int exec_delete_node_record(struct exec *x, uint64_t id);

/* execute_control.c: the control protocol's commands. */
int exec_register_node(struct exec *x);
int exec_add_registration(struct exec *x);
int exec_approve_registration(struct exec *x);
int exec_delete_registration(struct exec *x);
int exec_update_nodes(struct exec *x);
int exec_logout_node(struct exec *x);
int exec_open_session(struct exec *x);
int exec_close_session(struct exec *x);
int exec_set_control_settings(struct exec *x);
int exec_set_replica_derp(struct exec *x);

#endif
