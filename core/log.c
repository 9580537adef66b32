/* log.c - the stderr log writer behind log.h. It is core's one exception to
 * "no I/O, no clock": it writes stderr and reads the wall clock for the time
 * at the start of each line. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int flowd_log_level = FLOWD_LOG_INFO;

static const char *names[] = {"debug", "info", "warn", "error"};

static pthread_once_t stamp_once = PTHREAD_ONCE_INIT;
static bool stamp; /* written once under stamp_once, read-only after */

void flowd_log_time_format(char buf[FLOWD_LOG_TIME_LEN + 1], int64_t unix_ms)
{
	int64_t secs = unix_ms / 1000, ms = unix_ms % 1000;
	char tmp[64];
	time_t t;
	struct tm tm;

	if (ms < 0) {
		ms += 1000;
		secs--;
	}
	t = (time_t)secs;
	if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 ||
	    tm.tm_year + 1900 < 0) {
		memcpy(buf, "0000-00-00T00:00:00.000Z", FLOWD_LOG_TIME_LEN + 1);
		return;
	}
	snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
		 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec, (int)ms);
	memcpy(buf, tmp, FLOWD_LOG_TIME_LEN);
	buf[FLOWD_LOG_TIME_LEN] = '\0';
}

bool flowd_log_is_journal(const char *journal_stream, int fd)
{
	uintmax_t dev, ino;
	struct stat st;
	int used = 0;

	if (journal_stream == NULL || *journal_stream == '\0')
		return false;
	if (sscanf(journal_stream, "%ju:%ju%n", &dev, &ino, &used) != 2 ||
	    journal_stream[used] != '\0')
		return false;
	if (fstat(fd, &st) != 0)
		return false;
	return (uintmax_t)st.st_dev == dev && (uintmax_t)st.st_ino == ino;
}

static void decide_stamp(void)
{
	stamp = !flowd_log_is_journal(getenv("JOURNAL_STREAM"), STDERR_FILENO);
}

void flowd_log_write(int level, const char *fmt, ...)
{
	char line[2048];
	va_list ap;
	size_t n = 0;

	if (level < 0 || level > FLOWD_LOG_ERROR)
		level = FLOWD_LOG_ERROR;
	pthread_once(&stamp_once, decide_stamp);
	if (stamp) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		flowd_log_time_format(line, (int64_t)ts.tv_sec * 1000 +
						ts.tv_nsec / 1000000);
		line[FLOWD_LOG_TIME_LEN] = ' ';
		n = FLOWD_LOG_TIME_LEN + 1;
	}
	n += (size_t)snprintf(line + n, sizeof line - n,
			      "flowd %s: ", names[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof line - n, fmt, ap);
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
