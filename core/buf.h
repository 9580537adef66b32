/* buf.h - appending to a growing byte buffer held as (pointer, length,
 * capacity), NUL-terminated after each append: the one helper the stream
 * code shares (the change feed, watchers, followed logs). */
#ifndef FLOWD_CORE_BUF_H
#define FLOWD_CORE_BUF_H

#include <jansson.h>
#include <stddef.h>

/* Append s[0..n) to *buf (len used, cap allocated; realloc'd, doubling
 * from 1 KiB). Returns 0, or -1 out of memory (the buffer is unchanged). */
int flowd_buf_append(char **buf, size_t *len, size_t *cap, const char *s,
		     size_t n);

/* The same for a NUL-terminated string. */
int flowd_buf_puts(char **buf, size_t *len, size_t *cap, const char *s);

/* Append a Server-Sent Event without an id: "event: <event>\ndata:
 * <data as compact JSON>\n\n". `data` is stolen (NULL: out of memory).
 * Returns 0 or -1. */
int flowd_buf_event(char **buf, size_t *len, size_t *cap, const char *event,
		    json_t *data);

#endif
