/* server/admin/body.c: request bodies. A body must be one JSON object whose
 * members are all known to the route, each of the right type; anything else
 * is refused with 400 naming the culprit, before anything is proposed.
 * Members are accepted under their protojson (lowerCamel) or proto
 * (snake_case) name, as grpc-gateway does for Headscale. */
#include "server/admin/admin_internal.h"

#include <stdio.h>
#include <string.h>

static const char *type_name(enum admin_field_type type)
{
    switch (type) {
    case ADMIN_FIELD_STRING:
        return "a string";
    case ADMIN_FIELD_BOOL:
        return "a boolean";
    case ADMIN_FIELD_U64:
        return "a non-negative integer";
    case ADMIN_FIELD_STRINGS:
        return "an array of strings";
    case ADMIN_FIELD_TIME:
        return "an RFC 3339 timestamp string";
    }
    return "?";
}

/* Converts one member; 0 or -1 (wrong type or value). */
static int convert(const json_t *v, enum admin_field_type type, struct admin_value *out)
{
    switch (type) {
    case ADMIN_FIELD_STRING:
        if (!json_is_string(v))
            return -1;
        out->str = json_string_value(v);
        /* Embedded NULs would be cut off silently further down. */
        return strlen(out->str) == json_string_length(v) ? 0 : -1;
    case ADMIN_FIELD_BOOL:
        if (!json_is_boolean(v))
            return -1;
        out->b = json_is_true(v);
        return 0;
    case ADMIN_FIELD_U64:
        if (json_is_integer(v)) {
            if (json_integer_value(v) < 0)
                return -1;
            out->u64 = (uint64_t)json_integer_value(v);
            return 0;
        }
        if (json_is_string(v) && strcmp(json_string_value(v), "0") == 0) {
            out->u64 = 0; /* protojson's zero value: the same as absent */
            return 0;
        }
        return json_is_string(v) ? admin_parse_id(json_string_value(v), &out->u64) : -1;
    case ADMIN_FIELD_STRINGS: {
        size_t i;
        json_t *item;
        if (!json_is_array(v))
            return -1;
        json_array_foreach(v, i, item)
        {
            if (!json_is_string(item) ||
                strlen(json_string_value(item)) != json_string_length(item))
                return -1;
        }
        out->strings = (json_t *)v;
        return 0;
    }
    case ADMIN_FIELD_TIME:
        if (!json_is_string(v))
            return -1;
        return admin_parse_rfc3339(json_string_value(v), &out->unix_ms);
    }
    return -1;
}

int admin_body_parse(struct admin_call *call, const struct admin_field *fields, size_t n,
                     struct admin_value *out)
{
    const struct net_http_request *req = call->req;
    json_error_t error;
    const char *key;
    json_t *value;

    memset(out, 0, n * sizeof *out);
    if (req->body_len == 0)
        return 0;
    call->body = json_loadb((const char *)req->body, req->body_len, JSON_REJECT_DUPLICATES, &error);
    if (call->body == NULL) {
        admin_fail(call, ADMIN_INVALID, "malformed JSON body at line %d column %d: %s", error.line,
                   error.column, error.text);
        return -1;
    }
    if (!json_is_object(call->body)) {
        admin_fail(call, ADMIN_INVALID, "the request body must be a JSON object");
        return -1;
    }
    json_object_foreach(call->body, key, value)
    {
        size_t i;
        for (i = 0; i < n; i++) {
            if (strcmp(key, fields[i].json_name) == 0 ||
                (fields[i].proto_name != NULL && strcmp(key, fields[i].proto_name) == 0))
                break;
        }
        if (i == n) {
            admin_fail(call, ADMIN_INVALID, "unknown field \"%.64s\" in the request body", key);
            return -1;
        }
        if (json_is_null(value))
            continue;
        if (out[i].is_present) {
            admin_fail(call, ADMIN_INVALID, "field \"%s\" given twice", fields[i].json_name);
            return -1;
        }
        if (convert(value, fields[i].type, &out[i]) != 0) {
            admin_fail(call, ADMIN_INVALID, "field \"%s\" must be %s", fields[i].json_name,
                       type_name(fields[i].type));
            return -1;
        }
        out[i].is_present = true;
    }
    return 0;
}
