/* log.c - the stderr log writer behind log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int flowd_log_level = FLOWD_LOG_INFO;

static const char *names[] = {"debug", "info", "warn", "error"};

void flowd_log_write(int level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	int n;

	if (level < 0 || level > FLOWD_LOG_ERROR)
		level = FLOWD_LOG_ERROR;
	n = snprintf(line, sizeof line, "flowd %s: ", names[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	va_end(ap);
	/* One write per line so that lines from threads do not interleave. */
	fprintf(stderr, "%s\n", line);
}

int flowd_log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcasecmp(s, names[i]) == 0)
			return i;
	return -1;
}
