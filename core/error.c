/* error.c - filling struct flowd_error. */
#include "error.h"

#include <stdio.h>
#include <string.h>

int flowd_error_set(struct flowd_error *e, int status, const char *code,
		    const char *field, const char *fmt, ...)
{
	va_list ap;

	if (e == NULL)
		return -1;
	e->status = status;
	snprintf(e->code, sizeof e->code, "%s", code ? code : "error");
	snprintf(e->field, sizeof e->field, "%s", field ? field : "");
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof e->message, fmt, ap);
	va_end(ap);
	return -1;
}

void flowd_error_clear(struct flowd_error *e)
{
	if (e == NULL)
		return;
	memset(e, 0, sizeof *e);
}
