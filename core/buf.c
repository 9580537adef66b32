/* buf.c - appending to a growing byte buffer (buf.h). */
#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

int flowd_buf_append(char **buf, size_t *len, size_t *cap, const char *s,
		     size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t c = *cap ? *cap : 1024;
		while (c < *len + n + 1)
			c *= 2;
		char *p = realloc(*buf, c);
		if (p == NULL)
			return -1;
		*buf = p;
		*cap = c;
	}
	if (n > 0)
		memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
	return 0;
}

int flowd_buf_puts(char **buf, size_t *len, size_t *cap, const char *s)
{
	return flowd_buf_append(buf, len, cap, s, strlen(s));
}

int flowd_buf_event(char **buf, size_t *len, size_t *cap, const char *event,
		    json_t *data)
{
	char *s = data != NULL ? json_dumps(data, JSON_COMPACT) : NULL;
	int rc = -1;

	if (s != NULL && flowd_buf_puts(buf, len, cap, "event: ") == 0 &&
	    flowd_buf_puts(buf, len, cap, event) == 0 &&
	    flowd_buf_puts(buf, len, cap, "\ndata: ") == 0 &&
	    flowd_buf_puts(buf, len, cap, s) == 0 &&
	    flowd_buf_puts(buf, len, cap, "\n\n") == 0)
		rc = 0;
	free(s);
	json_decref(data);
	return rc;
}
