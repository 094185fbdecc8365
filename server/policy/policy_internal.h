/* server/policy/policy_internal.h: the parsed policy document, shared by the
 * parser (parse.c), which builds and validates it, and the compilers
 * (filter, SSH, node attributes, tests), which only read it. Every name is
 * checked by the parser: a group, tag or host an alias mentions is defined;
 * nested groups are expanded, so a group's members are users only. Positions
 * (line, col) point into the policy text, for error messages. */
#ifndef CONCORD_SERVER_POLICY_POLICY_INTERNAL_H
#define CONCORD_SERVER_POLICY_POLICY_INTERNAL_H

#include "server/policy/policy.h"

struct policy_pos {
    unsigned line;
    unsigned col;
};

enum policy_autogroup {
    POLICY_AUTOGROUP_MEMBER,     /* every user-owned (untagged) node */
    POLICY_AUTOGROUP_TAGGED,     /* every tagged node */
    POLICY_AUTOGROUP_SELF,       /* as dst: the src user's own untagged nodes */
    POLICY_AUTOGROUP_INTERNET,   /* as dst: everything outside the tailnet, via exit nodes */
    POLICY_AUTOGROUP_NONROOT,    /* as an SSH user: any user but root */
    POLICY_AUTOGROUP_DANGER_ALL, /* as src: every IP address, including the internet */
};

enum policy_alias_kind {
    POLICY_ALIAS_WILDCARD,  /* "*" */
    POLICY_ALIAS_USER,      /* "odin@example.com", "odin@" */
    POLICY_ALIAS_GROUP,     /* "group:admins" */
    POLICY_ALIAS_TAG,       /* "tag:server" */
    POLICY_ALIAS_HOST,      /* a name defined in "hosts" */
    POLICY_ALIAS_PREFIX,    /* "100.64.0.1", "10.0.0.0/8" */
    POLICY_ALIAS_AUTOGROUP, /* "autogroup:member", ... */
};

/* Something a src, dst, target or approver names. */
struct policy_alias {
    enum policy_alias_kind kind;
    char *name;                  /* as written (without ports), for messages */
    size_t index;                /* GROUP: into groups[]; TAG: into tag_owners[]; HOST: hosts[] */
    struct policy_prefix prefix; /* PREFIX, and HOST (copied from hosts[]) */
    enum policy_autogroup autogroup;
    struct policy_pos pos;
};

struct policy_port_range {
    uint16_t first;
    uint16_t last;
};

/* An ACL destination "alias:ports": ports "*" is 0-65535. */
struct policy_acl_dst {
    struct policy_alias alias;
    struct policy_port_range *ports;
    size_t n_ports;
};

/* IANA protocol numbers; none means Tailscale's default set (TCP, UDP, ICMP,
 * ICMPv6). */
struct policy_protos {
    int *numbers;
    size_t n;
};

struct policy_acl {
    struct policy_alias *src;
    size_t n_src;
    struct policy_acl_dst *dst;
    size_t n_dst;
    struct policy_protos proto;
    struct policy_pos pos;
};

/* One entry of a grant's "ip": "*", "22", "tcp:443", "udp:1000-2000", "icmp:*". */
struct policy_grant_ip {
    struct policy_protos proto;
    struct policy_port_range ports;
};

struct policy_grant {
    struct policy_alias *src;
    size_t n_src;
    struct policy_alias *dst;
    size_t n_dst;
    struct policy_grant_ip *ip;
    size_t n_ip;
    json_t *app;              /* {"capability": [values...]} or NULL */
    struct policy_alias *via; /* tags of the routers the grant applies through */
    size_t n_via;
    struct policy_pos pos;
};

struct policy_group {
    char *name;     /* "group:admins" */
    char **members; /* user tokens ("odin@example.com", "odin@"), nested groups expanded */
    size_t n_members;
    struct policy_pos pos;
};

struct policy_tag_owner {
    char *tag;                   /* "tag:server" */
    struct policy_alias *owners; /* users, groups, tags, autogroups */
    size_t n_owners;
    struct policy_pos pos;
};

struct policy_host {
    char *name;
    struct policy_prefix prefix;
    struct policy_pos pos;
};

enum policy_ssh_action {
    POLICY_SSH_ACCEPT,
    POLICY_SSH_CHECK,
};

struct policy_ssh_rule {
    enum policy_ssh_action action;
    int64_t check_period_s; /* check only; 0: Tailscale's default (12 h), -1: "always" */
    struct policy_alias *src;
    size_t n_src;
    struct policy_alias *dst;
    size_t n_dst;
    char **users; /* "root", "autogroup:nonroot", "localpart:*@example.com", ... */
    size_t n_users;
    char **accept_env;
    size_t n_accept_env;
    struct policy_pos pos;
};

struct policy_node_attr {
    struct policy_alias *target;
    size_t n_target;
    char **attr;
    size_t n_attr;
    json_t *app; /* or NULL */
    struct policy_pos pos;
};

struct policy_route_approver {
    struct policy_prefix prefix;
    struct policy_alias *approvers;
    size_t n_approvers;
    struct policy_pos pos;
};

/* One `tests` entry: from src, each accept destination must be reachable and
 * each deny destination not. */
struct policy_test {
    struct policy_alias src;
    struct policy_protos proto;
    struct policy_acl_dst *accept;
    size_t n_accept;
    struct policy_acl_dst *deny;
    size_t n_deny;
    struct policy_pos pos;
};

/* One `sshTests` entry: from src to each dst, the listed users are accepted,
 * need a check, or are denied. */
struct policy_ssh_test {
    struct policy_alias src;
    struct policy_alias *dst;
    size_t n_dst;
    char **accept;
    size_t n_accept;
    char **check;
    size_t n_check;
    char **deny;
    size_t n_deny;
    struct policy_pos pos;
};

struct policy {
    struct policy_group *groups;
    size_t n_groups;
    struct policy_tag_owner *tag_owners;
    size_t n_tag_owners;
    struct policy_host *hosts;
    size_t n_hosts;
    struct policy_acl *acls;
    size_t n_acls;
    struct policy_grant *grants;
    size_t n_grants;
    struct policy_ssh_rule *ssh;
    size_t n_ssh;
    struct policy_node_attr *node_attrs;
    size_t n_node_attrs;
    struct policy_route_approver *route_approvers;
    size_t n_route_approvers;
    struct policy_alias *exit_node_approvers;
    size_t n_exit_node_approvers;
    struct policy_test *tests;
    size_t n_tests;
    struct policy_ssh_test *ssh_tests;
    size_t n_ssh_tests;
    bool randomize_client_port;
    /* Neither "acls" nor "grants" given: Tailscale's default policy applies
     * to traffic, every node may reach every other. */
    bool allows_all;
};

#endif
