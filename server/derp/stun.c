/* server/derp/stun.c: the STUN codec (RFC 5389): validating a Binding Request
 * and writing the Binding Success Response with XOR-MAPPED-ADDRESS. */
#include "server/derp/stun.h"

#include <stdbool.h>
#include <string.h>

#include <netinet/in.h>

#define TYPE_BINDING_REQUEST  0x0001
#define TYPE_BINDING_SUCCESS  0x0101
#define MAGIC_COOKIE          0x2112A442u
#define ATTR_XOR_MAPPED       0x0020
#define ATTR_FINGERPRINT      0x8028
#define ATTR_OPTIONAL_MIN     0x8000 /* types below are comprehension-required */
#define FINGERPRINT_XOR       0x5354554Eu
#define FINGERPRINT_ATTR_SIZE 8 /* type, length, CRC-32 */
#define FAMILY_IPV4           0x01
#define FAMILY_IPV6           0x02

const char *stun_strerror(int code)
{
    switch (code) {
#define X(c, msg)                                                                                  \
    case c:                                                                                        \
        return msg;
        STUN_CODES(X)
#undef X
    }
    return "unknown error";
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    put_u16(p, (uint16_t)(v >> 16));
    put_u16(p + 2, (uint16_t)v);
}

/* CRC-32 of ISO-HDLC (the one of zlib and Ethernet), which FINGERPRINT uses
 * (RFC 5389 section 15.5). Bitwise: requests are tens of bytes. */
static uint32_t crc32_iso_hdlc(const uint8_t *data, size_t len)
{
    uint32_t crc = 0xFFFFFFFFu;

    for (size_t i = 0; i < len; i++) {
        crc ^= data[i];
        for (int bit = 0; bit < 8; bit++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* The FINGERPRINT attribute at packet[attr_start] (its 4-byte length checked
 * by the caller) must end the message and match the CRC of all before it. */
static int check_fingerprint(const uint8_t *packet, size_t len, size_t attr_start)
{
    uint32_t want;

    if (attr_start + FINGERPRINT_ATTR_SIZE != len)
        return STUN_BAD_FINGERPRINT;
    want = crc32_iso_hdlc(packet, attr_start) ^ FINGERPRINT_XOR;
    return get_u32(packet + attr_start + 4) == want ? STUN_OK : STUN_BAD_FINGERPRINT;
}

/* Walks the attributes after the header. The framing and the FINGERPRINT are
 * checked over the whole message before the attribute types are judged, so
 * that a damaged packet is reported as damaged. */
static int check_attributes(const uint8_t *packet, size_t len)
{
    bool has_required = false;
    size_t off = STUN_HEADER_BYTES;

    /* The header check made len - off a multiple of 4, and every attribute
     * takes a multiple of 4: a type and length always fit. */
    while (off < len) {
        uint16_t type = get_u16(packet + off);
        size_t value_len = get_u16(packet + off + 2);
        size_t padded = (value_len + 3) & ~(size_t)3;

        if (padded > len - off - 4)
            return STUN_BAD_ATTRIBUTE;
        if (type == ATTR_FINGERPRINT) {
            int rv = value_len == 4 ? check_fingerprint(packet, len, off) : STUN_BAD_FINGERPRINT;

            if (rv != STUN_OK)
                return rv;
        }
        if (type < ATTR_OPTIONAL_MIN)
            has_required = true;
        off += 4 + padded;
    }
    return has_required ? STUN_UNKNOWN_ATTRIBUTE : STUN_OK;
}

int stun_parse_binding_request(const uint8_t *packet, size_t len, uint8_t txid[STUN_TXID_BYTES])
{
    int rv;

    if (len < STUN_HEADER_BYTES)
        return STUN_SHORT;
    /* The two top bits tell STUN apart from other protocols sharing a port. */
    if ((packet[0] & 0xC0) != 0 || get_u32(packet + 4) != MAGIC_COOKIE)
        return STUN_NOT_STUN;
    if (get_u16(packet) != TYPE_BINDING_REQUEST)
        return STUN_NOT_BINDING_REQUEST;
    /* One message per datagram, attributes padded to 4 bytes. */
    if (get_u16(packet + 2) != len - STUN_HEADER_BYTES || len % 4 != 0)
        return STUN_BAD_LENGTH;
    rv = check_attributes(packet, len);
    if (rv != STUN_OK)
        return rv;
    memcpy(txid, packet + 8, STUN_TXID_BYTES);
    return STUN_OK;
}

/* XOR-MAPPED-ADDRESS (RFC 5389 section 15.2): the port is XORed with the top
 * half of the magic cookie, the address with the cookie followed by the
 * transaction id. Returns the attribute's size. */
static size_t put_xor_mapped(uint8_t *p, const uint8_t txid[STUN_TXID_BYTES], uint8_t family,
                             const uint8_t *addr, size_t addr_len, uint16_t port)
{
    uint8_t mask[4 + STUN_TXID_BYTES];

    put_u32(mask, MAGIC_COOKIE);
    memcpy(mask + 4, txid, STUN_TXID_BYTES);
    put_u16(p, ATTR_XOR_MAPPED);
    put_u16(p + 2, (uint16_t)(4 + addr_len));
    p[4] = 0;
    p[5] = family;
    put_u16(p + 6, port ^ (uint16_t)(MAGIC_COOKIE >> 16));
    for (size_t i = 0; i < addr_len; i++)
        p[8 + i] = addr[i] ^ mask[i];
    return 8 + addr_len;
}

int stun_binding_response(const uint8_t txid[STUN_TXID_BYTES], const struct sockaddr *source,
                          uint8_t out[STUN_MAX_RESPONSE_BYTES], size_t *out_len)
{
    uint8_t *attr = out + STUN_HEADER_BYTES;
    size_t attr_len;

    if (source->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)source;

        attr_len = put_xor_mapped(attr, txid, FAMILY_IPV4, (const uint8_t *)&sin->sin_addr, 4,
                                  ntohs(sin->sin_port));
    } else if (source->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)source;
        const uint8_t *ip = sin6->sin6_addr.s6_addr;

        if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
            attr_len = put_xor_mapped(attr, txid, FAMILY_IPV4, ip + 12, 4, ntohs(sin6->sin6_port));
        else
            attr_len = put_xor_mapped(attr, txid, FAMILY_IPV6, ip, 16, ntohs(sin6->sin6_port));
    } else {
        return STUN_ADDRESS;
    }
    put_u16(out, TYPE_BINDING_SUCCESS);
    put_u16(out + 2, (uint16_t)attr_len);
    put_u32(out + 4, MAGIC_COOKIE);
    memcpy(out + 8, txid, STUN_TXID_BYTES);
    *out_len = STUN_HEADER_BYTES + attr_len;
    return STUN_OK;
}
