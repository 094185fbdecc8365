/* server/net/address.c: parsing and printing "host:port". */
#include "server/net/address.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <netinet/in.h>
#include <uv.h>

#include "server/net/http.h"

static bool is_host_char(char ch)
{
    /* Letters, digits, '-' and '.' make DNS names and IPv4 literals ('_'
     * appears in container host names); ':' and '%' (an IPv6 zone index)
     * appear only inside brackets. */
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_';
}

int net_address_split(const char *addr, char *host, size_t host_cap, unsigned *port)
{
    const char *colon = strrchr(addr, ':');
    const char *host_start = addr;
    const char *host_end = colon;
    unsigned value = 0;

    if (colon == NULL || colon[1] == '\0')
        return NET_ADDRESS;
    for (const char *p = colon + 1; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return NET_ADDRESS;
        value = value * 10 + (unsigned)(*p - '0');
        if (value > 65535)
            return NET_ADDRESS;
    }
    if (addr[0] == '[') {
        if (colon == addr || colon[-1] != ']')
            return NET_ADDRESS;
        host_start = addr + 1;
        host_end = colon - 1;
        for (const char *p = host_start; p < host_end; p++) {
            if (!is_host_char(*p) && *p != ':' && *p != '%')
                return NET_ADDRESS;
        }
    } else {
        for (const char *p = host_start; p < host_end; p++) {
            if (!is_host_char(*p))
                return NET_ADDRESS;
        }
    }
    if (host_end == host_start || (size_t)(host_end - host_start) >= host_cap)
        return NET_ADDRESS;
    memcpy(host, host_start, (size_t)(host_end - host_start));
    host[host_end - host_start] = '\0';
    *port = value;
    return 0;
}

int net_address_numeric(const char *addr, struct sockaddr_storage *out)
{
    char host[64];
    unsigned port;

    if (net_address_split(addr, host, sizeof host, &port) != 0)
        return NET_ADDRESS;
    memset(out, 0, sizeof *out);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0)
        return 0;
    if (strchr(host, ':') != NULL && uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0)
        return 0;
    return NET_ADDRESS;
}

void net_address_format(const struct sockaddr *sa, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        uv_ip4_name(in, ip, sizeof ip);
        snprintf(buf, cap, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        uv_ip6_name(in6, ip, sizeof ip);
        snprintf(buf, cap, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
    } else {
        snprintf(buf, cap, "unix");
    }
}
