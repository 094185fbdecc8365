/* raft/codec.c: the bytes raft/ owns. A log entry is
 * [u32 little-endian length][packed Command][zero padding to a multiple of 8]
 * because raft_uv requires 8-byte aligned entry payloads; a snapshot is a
 * 16-byte header followed by a storage dump. Decoding is strict (exact total
 * length, zero padding) so that a damaged entry is rejected the same way on
 * every replica. */
#include "raft/cluster.h"

#include <string.h>

#include <raft.h>

#include "raft/cluster_internal.h"

#define LEN_PREFIX_BYTES   4u
#define SNAPSHOT_MAGIC     0x504e5343u /* "CSNP" */
#define SNAPSHOT_FORMAT_V1 1u

static size_t padded_len(size_t payload_len)
{
    return (LEN_PREFIX_BYTES + payload_len + 7u) & ~(size_t)7u;
}

static void put_u32_le(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32_le(const uint8_t *p)
{
    uint32_t v = 0;

    for (unsigned i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static void put_u64_le(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64_le(const uint8_t *p)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

int cluster_command_encode(const Concord__Command *cmd, uint8_t **out, size_t *len)
{
    size_t payload_len;
    size_t total;
    uint8_t *buf;

    if (cmd == NULL || out == NULL || len == NULL)
        return CLUSTER_INVALID;
    payload_len = concord__command__get_packed_size(cmd);
    if (payload_len > CLUSTER_MAX_COMMAND_BYTES)
        return CLUSTER_TOOBIG;
    total = padded_len(payload_len);
    /* raft_malloc: the buffer may be handed to raft_apply(), which frees it. */
    buf = raft_malloc(total);
    if (buf == NULL)
        return CLUSTER_NOMEM;
    memset(buf, 0, total);
    put_u32_le(buf, (uint32_t)payload_len);
    concord__command__pack(cmd, buf + LEN_PREFIX_BYTES);
    *out = buf;
    *len = total;
    return 0;
}

void cluster_command_buf_free(uint8_t *buf)
{
    raft_free(buf);
}

int cluster_command_decode(const uint8_t *buf, size_t len, Concord__Command **out)
{
    size_t payload_len;
    Concord__Command *cmd;

    if (buf == NULL || out == NULL || len < LEN_PREFIX_BYTES || len % 8 != 0)
        return CLUSTER_INVALID;
    payload_len = get_u32_le(buf);
    if (payload_len > CLUSTER_MAX_COMMAND_BYTES || padded_len(payload_len) != len)
        return CLUSTER_INVALID;
    for (size_t i = LEN_PREFIX_BYTES + payload_len; i < len; i++) {
        if (buf[i] != 0)
            return CLUSTER_INVALID;
    }
    cmd = concord__command__unpack(NULL, payload_len, buf + LEN_PREFIX_BYTES);
    if (cmd == NULL)
        return CLUSTER_INVALID;
    *out = cmd;
    return 0;
}

void cluster_snapshot_header_encode(uint64_t applied_index,
                                    uint8_t out[CLUSTER_SNAPSHOT_HEADER_BYTES])
{
    put_u32_le(out, SNAPSHOT_MAGIC);
    put_u32_le(out + 4, SNAPSHOT_FORMAT_V1);
    put_u64_le(out + 8, applied_index);
}

int cluster_snapshot_header_decode(const uint8_t *buf, size_t len, uint64_t *applied_index)
{
    if (buf == NULL || len < CLUSTER_SNAPSHOT_HEADER_BYTES)
        return CLUSTER_INVALID;
    if (get_u32_le(buf) != SNAPSHOT_MAGIC || get_u32_le(buf + 4) != SNAPSHOT_FORMAT_V1)
        return CLUSTER_INVALID;
    *applied_index = get_u64_le(buf + 8);
    return 0;
}
