/* server/net/address.h: "host:port" strings, as every listen and peer address
 * of concord is written: "127.0.0.1:8080", "[::1]:8080", "localhost:8080",
 * "db1.example.net:7001". */
#ifndef CONCORD_SERVER_NET_ADDRESS_H
#define CONCORD_SERVER_NET_ADDRESS_H

#include <stddef.h>

#include <sys/socket.h>

/* Splits addr into host (brackets of an IPv6 literal removed) and port
 * (0..65535). Returns 0, or NET_ADDRESS when addr has no port, an empty or
 * over-long host, or a host with characters no IP literal or DNS name has. */
int net_address_split(const char *addr, char *host, size_t host_cap, unsigned *port);

/* Fills *out from a numeric IPv4 or IPv6 "host:port", or "localhost:port"
 * (taken as 127.0.0.1, so that no resolver runs and no IPv6-first answer
 * surprises a listener bound to IPv4). NET_ADDRESS for anything else. */
int net_address_numeric(const char *addr, struct sockaddr_storage *out);

/* Formats a socket address as "ip:port" or "[ip]:port" into buf (64 bytes is
 * enough for any). */
void net_address_format(const struct sockaddr *sa, char *buf, size_t cap);

#endif
