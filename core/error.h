/* error.h - the one error shape every layer of flowd reports in. */
#ifndef FLOWD_CORE_ERROR_H
#define FLOWD_CORE_ERROR_H

#include <stdarg.h>

/* A failure that crosses a layer or reaches a client. `status` is the HTTP
 * status it maps to (400, 404, 409, 413, 415, 503, ...), `code` a stable
 * machine-readable word ("invalid_field", "not_found", ...), `field` the JSON
 * path of the offending input ("steps[2].depends_on[0]") or "" when none. The
 * struct is embedded by value; nothing in it is heap-allocated.
 *
 * code, message and field are always valid UTF-8 (RFC 3629) when filled by
 * flowd_error_set, because they end up in JSON bodies and a JSON encoder
 * refuses anything else: a message that quotes a client's bytes must not
 * turn a 400 into a 500. */
struct flowd_error {
	int status;
	char code[48];
	char message[256];
	char field[192];
};

/* Fill `e` (may be NULL: then nothing happens). Always returns -1 so that a
 * caller can write `return flowd_error_set(e, ...)`.
 *
 * Whatever the arguments hold, code, message and field come out as valid
 * UTF-8: each byte that does not start a well-formed sequence becomes U+FFFD,
 * and text that does not fit is cut between two characters, never inside
 * one. `code`, `field` and the format's arguments may point into `e` itself
 * (they are read before `e` is written). */
int flowd_error_set(struct flowd_error *e, int status, const char *code,
		    const char *field, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Reset to "no error" (status 0, empty strings). */
void flowd_error_clear(struct flowd_error *e);

/* How many bytes of `s` to quote when at most `max` fit: the length of its
 * longest prefix of at most `max` bytes that does not end inside a UTF-8
 * character. For "%.*s" in messages that echo input:
 *   "unknown field \"%.*s\"", flowd_error_quote_len(key, 64), key */
int flowd_error_quote_len(const char *s, int max);

#endif
