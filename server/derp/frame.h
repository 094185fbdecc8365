/* server/derp/frame.h: the DERP frame layer shared by accepted connections
 * and mesh links (internal to server/derp): frame types, the 5-byte header
 * (type, big-endian payload length) and an incremental reader that hands out
 * whole frames from arbitrarily sliced input. */
#ifndef CONCORD_SERVER_DERP_FRAME_H
#define CONCORD_SERVER_DERP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define DERP_HEADER_BYTES 5

enum derp_frame_type {
    DERP_FRAME_SERVER_KEY = 0x01,
    DERP_FRAME_CLIENT_INFO = 0x02,
    DERP_FRAME_SERVER_INFO = 0x03,
    DERP_FRAME_SEND_PACKET = 0x04,
    DERP_FRAME_RECV_PACKET = 0x05,
    DERP_FRAME_KEEP_ALIVE = 0x06,
    DERP_FRAME_NOTE_PREFERRED = 0x07,
    DERP_FRAME_PEER_GONE = 0x08,
    DERP_FRAME_PEER_PRESENT = 0x09,
    DERP_FRAME_FORWARD_PACKET = 0x0a,
    DERP_FRAME_WATCH_CONNS = 0x10,
    DERP_FRAME_CLOSE_PEER = 0x11,
    DERP_FRAME_PING = 0x12,
    DERP_FRAME_PONG = 0x13,
};

/* What the owner wants done with a frame whose header just arrived. */
enum derp_verdict {
    DERP_READ, /* collect the payload and pass it to on_frame */
    DERP_SKIP, /* discard the payload as it arrives */
    DERP_FAIL, /* stop: the connection is broken */
};

struct derp_reader_ops {
    enum derp_verdict (*on_header)(void *arg, uint8_t type, uint32_t len);
    /* A whole payload of a frame the owner chose to read. Non-zero: stop. */
    int (*on_frame)(void *arg, uint8_t type, const uint8_t *payload, uint32_t len);
};

/* Zero-initialised; holds memory only while a frame is split across feeds. */
struct derp_reader {
    uint8_t header[DERP_HEADER_BYTES];
    uint8_t header_have;
    uint8_t type;
    uint8_t in_frame; /* the header was handled; payload bytes pending */
    uint8_t skipping;
    uint32_t len;  /* payload length of the pending frame */
    uint32_t have; /* payload bytes collected in buf or discarded */
    uint32_t cap;
    uint8_t *buf;
};

/* Consumes data, calling ops for each frame. Returns 0, or -1 when a
 * callback stopped it or memory ran out; the reader is then unusable. */
int derp_reader_feed(struct derp_reader *r, const uint8_t *data, size_t len,
                     const struct derp_reader_ops *ops, void *arg);
void derp_reader_free(struct derp_reader *r);

void derp_put_header(uint8_t out[DERP_HEADER_BYTES], uint8_t type, uint32_t len);

#endif
