/* tzdata.h - reads zone files for core/tz.c from the system tzdata. */
#ifndef FLOWD_DAEMON_TZDATA_H
#define FLOWD_DAEMON_TZDATA_H

#include <stddef.h>

/* A tz_loader: the bytes of $TZDIR/<name> (default /usr/share/zoneinfo),
 * at most 1 MiB. Returns 0, or -1 if there is no such regular file. */
int tzdata_load(const char *name, void **buf, size_t *len);

#endif
