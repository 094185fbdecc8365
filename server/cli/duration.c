/* server/cli/duration.c: durations as Headscale's CLI takes them
 * (Prometheus style: 30m, 1h, 90d, 1h30m) and the expiration timestamps
 * they turn into. */
#include "server/cli/cli_internal.h"

#include <time.h>

static int64_t unit_seconds(char unit)
{
    switch (unit) {
    case 's':
        return 1;
    case 'm':
        return 60;
    case 'h':
        return 3600;
    case 'd':
        return 86400;
    case 'w':
        return 7 * 86400;
    case 'y':
        return 365 * 86400;
    default:
        return 0;
    }
}

int cli_duration_parse(const char *text, int64_t *seconds)
{
    int64_t total = 0;
    const char *p = text;

    if (*p == '\0')
        return -1;
    while (*p != '\0') {
        int64_t n = 0, unit;
        if (*p < '0' || *p > '9')
            return -1;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (n > (INT64_MAX - 9) / 10)
                return -1;
            n = n * 10 + (*p - '0');
        }
        unit = unit_seconds(*p);
        if (unit == 0)
            return -1;
        p++;
        if (n > (INT64_MAX - total) / unit)
            return -1;
        total += n * unit;
    }
    if (total <= 0)
        return -1;
    *seconds = total;
    return 0;
}

/* RFC 3339 has four-digit years: later expirations are clamped to the last
 * second of 9999, which is "never" for every practical purpose. */
#define LAST_RFC3339_UNIX_S 253402300799LL

void cli_rfc3339_after(int64_t now_unix_s, int64_t seconds, char buf[32])
{
    time_t t;
    struct tm tm;

    if (seconds > LAST_RFC3339_UNIX_S - now_unix_s)
        seconds = LAST_RFC3339_UNIX_S - now_unix_s;
    t = (time_t)(now_unix_s + seconds);
    gmtime_r(&t, &tm);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}
