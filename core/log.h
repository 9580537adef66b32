/* log.h - one logging macro family: level checked before formatting,
 * one line per event, key=value fields, to stderr (journald under systemd). */
#ifndef FLOWD_CORE_LOG_H
#define FLOWD_CORE_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum flowd_log_level {
	FLOWD_LOG_DEBUG = 0,
	FLOWD_LOG_INFO = 1,
	FLOWD_LOG_WARN = 2,
	FLOWD_LOG_ERROR = 3,
};

/* Current threshold. Set once at start (config or FLOWD_TRACE=1 forces debug). */
extern int flowd_log_level;

/* Writes "flowd <level>: <message>" and a newline to stderr in one write.
 * Unless stderr is journald's (which stamps each line itself), the line
 * starts with the time, RFC 3339 in UTC with milliseconds:
 * "2026-12-05T12:34:56.789Z flowd info: ...". That is decided once, at the
 * first line (thread safe). */
void flowd_log_write(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Parse "debug|info|warn|error"; returns the level or -1. */
int flowd_log_level_parse(const char *s);

/* "2026-12-05T12:34:56.789Z" (FLOWD_LOG_TIME_LEN bytes and a NUL) for
 * `unix_ms` milliseconds since the epoch, into buf. */
#define FLOWD_LOG_TIME_LEN 24
void flowd_log_time_format(char buf[FLOWD_LOG_TIME_LEN + 1], int64_t unix_ms);

/* Is `fd` the journald stream named by `journal_stream`, the value of
 * JOURNAL_STREAM ("<device>:<inode>", systemd.exec(5))? NULL or "" (not
 * under systemd), a malformed value, or another file (stderr redirected by
 * hand under a service that has it) answer false. */
bool flowd_log_is_journal(const char *journal_stream, int fd);

#define FLOWD_LOG(level, ...)                                    \
	do {                                                     \
		if ((level) >= flowd_log_level)                  \
			flowd_log_write((level), __VA_ARGS__);   \
	} while (0)

#define log_debug(...) FLOWD_LOG(FLOWD_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) FLOWD_LOG(FLOWD_LOG_INFO, __VA_ARGS__)
#define log_warn(...) FLOWD_LOG(FLOWD_LOG_WARN, __VA_ARGS__)
#define log_error(...) FLOWD_LOG(FLOWD_LOG_ERROR, __VA_ARGS__)

#endif
