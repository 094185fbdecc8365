/* tests/fuzz/stun_packet.c: arbitrary datagrams into the STUN request parser.
 * Properties checked: no crash (ASan/UBSan); an accepted packet has the
 * framing the parser promises (Binding Request type, magic cookie, length
 * field equal to the rest, a multiple of 4) and its transaction id is the one
 * copied out; a refused one leaves the id untouched; and the answer to an
 * accepted one, for an IPv4 and an IPv6 source, is a Binding Success
 * Response echoing that id with one XOR-MAPPED-ADDRESS of the right size. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include <netinet/in.h>

#include "server/derp/stun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_response(const uint8_t txid[STUN_TXID_BYTES], const struct sockaddr *source,
                           size_t addr_len)
{
    uint8_t out[STUN_MAX_RESPONSE_BYTES];
    size_t len = 0;

    assert(stun_binding_response(txid, source, out, &len) == STUN_OK);
    assert(len == STUN_HEADER_BYTES + 8 + addr_len);
    assert(out[0] == 0x01 && out[1] == 0x01 && out[2] == 0 && out[3] == 8 + addr_len);
    assert(memcmp(out + 4, "\x21\x12\xa4\x42", 4) == 0);
    assert(memcmp(out + 8, txid, STUN_TXID_BYTES) == 0);
    assert(out[20] == 0x00 && out[21] == 0x20 && out[22] == 0 && out[23] == 4 + addr_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(41641)};
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(41641)};
    uint8_t txid[STUN_TXID_BYTES];

    memset(txid, 0x55, sizeof txid);
    if (stun_parse_binding_request(data, size, txid) != STUN_OK) {
        for (size_t i = 0; i < sizeof txid; i++)
            assert(txid[i] == 0x55);
        return 0;
    }
    assert(size >= STUN_HEADER_BYTES && size % 4 == 0);
    assert(data[0] == 0x00 && data[1] == 0x01);
    assert((size_t)(data[2] << 8 | data[3]) == size - STUN_HEADER_BYTES);
    assert(memcmp(data + 4, "\x21\x12\xa4\x42", 4) == 0);
    assert(memcmp(txid, data + 8, sizeof txid) == 0);
    sin.sin_addr.s_addr = htonl(0xc6336401); /* 198.51.100.1 */
    check_response(txid, (const struct sockaddr *)&sin, 4);
    sin6.sin6_addr.s6_addr[0] = 0x20;
    sin6.sin6_addr.s6_addr[1] = 0x01;
    sin6.sin6_addr.s6_addr[15] = 0x01; /* 2001::1 */
    check_response(txid, (const struct sockaddr *)&sin6, 16);
    return 0;
}
