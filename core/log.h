/* log.h - one logging macro family: level checked before formatting,
 * one line per event, key=value fields, to stderr (journald under systemd). */
#ifndef FLOWD_CORE_LOG_H
#define FLOWD_CORE_LOG_H

enum flowd_log_level {
	FLOWD_LOG_DEBUG = 0,
	FLOWD_LOG_INFO = 1,
	FLOWD_LOG_WARN = 2,
	FLOWD_LOG_ERROR = 3,
};

/* Current threshold. Set once at start (config or FLOWD_TRACE=1 forces debug). */
extern int flowd_log_level;

void flowd_log_write(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Parse "debug|info|warn|error"; returns the level or -1. */
int flowd_log_level_parse(const char *s);

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
