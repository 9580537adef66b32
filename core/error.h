/* error.h - the one error shape every layer of flowd reports in. */
#ifndef FLOWD_CORE_ERROR_H
#define FLOWD_CORE_ERROR_H

#include <stdarg.h>

/* What kind of failure, in the domain's words: core/ and storage/ say what
 * went wrong, the api says it in HTTP, once (api_http_status in api/api.h:
 * INVALID 400, UNAUTHORIZED 401, FORBIDDEN 403, NOT_FOUND 404, METHOD 405,
 * CONFLICT 409, TOO_LARGE 413, MEDIA_TYPE 415, INTERNAL 500, UNAVAILABLE
 * 503, TIMEOUT 504). */
enum flowd_errc {
	FLOWD_OK = 0,	      /* no error */
	FLOWD_E_INVALID,      /* the input is malformed or breaks a rule */
	FLOWD_E_UNAUTHORIZED, /* no credential, or one nobody knows */
	FLOWD_E_FORBIDDEN,    /* a credential without the right */
	FLOWD_E_NOT_FOUND,    /* no such thing */
	FLOWD_E_METHOD,	      /* the thing exists but not that operation */
	FLOWD_E_CONFLICT,     /* the state does not allow it (now) */
	FLOWD_E_TOO_LARGE,    /* over a documented limit of size */
	FLOWD_E_MEDIA_TYPE,   /* input in a format that is not taken */
	FLOWD_E_INTERNAL,     /* a bug, or out of memory */
	FLOWD_E_UNAVAILABLE,  /* for now: no leader, storage away, backlog,
			       * shutting down; retrying later may work */
	FLOWD_E_TIMEOUT,      /* it did not finish in time; it may still */
};

/* A failure that crosses a layer or reaches a client. `errc` is its kind,
 * `code` a stable machine-readable word ("invalid_field", "not_found", ...),
 * `field` the JSON path of the offending input ("steps[2].depends_on[0]") or
 * "" when none. The struct is embedded by value; nothing in it is
 * heap-allocated.
 *
 * code, message and field are always valid UTF-8 (RFC 3629) when filled by
 * flowd_error_set, because they end up in JSON bodies and a JSON encoder
 * refuses anything else: a message that quotes a client's bytes must not
 * turn a client's error into an internal one. */
struct flowd_error {
	enum flowd_errc errc;
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
int flowd_error_set(struct flowd_error *e, enum flowd_errc errc,
		    const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Reset to "no error" (FLOWD_OK, empty strings). */
void flowd_error_clear(struct flowd_error *e);

/* How many bytes of `s` to quote when at most `max` fit: the length of its
 * longest prefix of at most `max` bytes that does not end inside a UTF-8
 * character. For "%.*s" in messages that echo input:
 *   "unknown field \"%.*s\"", flowd_error_quote_len(key, 64), key */
int flowd_error_quote_len(const char *s, int max);

#endif
