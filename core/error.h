/* error.h - the one error shape every layer of flowd reports in. */
#ifndef FLOWD_CORE_ERROR_H
#define FLOWD_CORE_ERROR_H

#include <stdarg.h>

/* A failure that crosses a layer or reaches a client. `status` is the HTTP
 * status it maps to (400, 404, 409, 413, 415, 503, ...), `code` a stable
 * machine-readable word ("invalid_field", "not_found", ...), `field` the JSON
 * path of the offending input ("steps[2].depends_on[0]") or "" when none. The
 * struct is embedded by value; nothing in it is heap-allocated. */
struct flowd_error {
	int status;
	char code[48];
	char message[256];
	char field[192];
};

/* Fill `e` (may be NULL: then nothing happens). Always returns -1 so that a
 * caller can write `return flowd_error_set(e, ...)`. */
int flowd_error_set(struct flowd_error *e, int status, const char *code,
		    const char *field, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Reset to "no error" (status 0, empty strings). */
void flowd_error_clear(struct flowd_error *e);

#endif
