/* server/log.h: one line per event on stderr, as text
 * ("2026-11-23T20:50:00.123Z INFO msg key=value") or as one JSON object per
 * line ({"time":..., "level":..., "msg":...}). The LOG_* macros test the level
 * before any argument is evaluated, so a disabled LOG_DEBUG costs one compare.
 * Everything runs on the loop thread; lines are written with one write each. */
#ifndef CONCORD_SERVER_LOG_H
#define CONCORD_SERVER_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "raft/cluster.h"

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

/* Sets the process-wide level and format; until called: info, text. */
void log_init(enum log_level level, enum log_format format);
bool log_enabled(enum log_level level);
/* Formats and writes one line; use the macros, which skip disabled levels. */
void log_emit(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "error", "warn", "info", "debug". */
const char *log_level_name(enum log_level level);

#define LOG_AT(level, ...)                                                                         \
    do {                                                                                           \
        if (log_enabled(level))                                                                    \
            log_emit(level, __VA_ARGS__);                                                          \
    } while (0)
#define LOG_ERROR(...) LOG_AT(LOG_LEVEL_ERROR, __VA_ARGS__)
#define LOG_WARN(...)  LOG_AT(LOG_LEVEL_WARN, __VA_ARGS__)
#define LOG_INFO(...)  LOG_AT(LOG_LEVEL_INFO, __VA_ARGS__)
#define LOG_DEBUG(...) LOG_AT(LOG_LEVEL_DEBUG, __VA_ARGS__)

/* cluster_log_cb for struct cluster_options: arg is unused (pass NULL). */
void log_cluster_cb(void *arg, enum cluster_log_level level, const char *msg);

/* Formats one line (with its trailing newline) into buf without writing it;
 * time_unix_ms is the wall-clock time to print. Returns the length written,
 * at most cap - 1 (long messages are cut and end in "..."). Exposed for tests. */
size_t log_format_line(char *buf, size_t cap, enum log_format format, enum log_level level,
                       long long time_unix_ms, const char *msg);

#endif
