/* http.h - flowctl's blocking HTTP client and its exit codes. */
#ifndef FLOWCTL_HTTP_H
#define FLOWCTL_HTTP_H

#include <stddef.h>

#include <jansson.h>

/* flowctl's exit codes, and what every cli_* function returns. */
enum cli_exit {
	CLI_OK = 0,	     /* the request (and a --wait run) succeeded */
	CLI_FAILED = 1,	     /* an HTTP error, a failed run, a bad file */
	CLI_UNREACHABLE = 2, /* no HTTP answer: connect, resolve, timeout */
	CLI_USAGE = 64,	     /* bad command line (EX_USAGE, sysexits.h) */
};

struct cli_http;

/* One HTTP answer. Every pointer is owned by the reply; cli_reply_clear frees
 * them. */
struct cli_reply {
	long status; /* the HTTP status */
	char
	    *body; /* the raw body, NUL-terminated (never NULL once answered) */
	size_t len; /* its length, without the NUL */
	json_t
	    *json; /* the parsed body (new reference), NULL: empty, not JSON */
	/* why json is NULL for a non-empty body */
	char jerr[JSON_ERROR_TEXT_LENGTH + 32];
};

/* A client of `base_url` ("http://host:port", a trailing slash is dropped),
 * sending "Authorization: Bearer <token>" when token is non-NULL and
 * non-empty. Both strings are copied. NULL if out of memory or libcurl
 * cannot start. Call curl_global_init before, once per process. */
struct cli_http *cli_http_new(const char *base_url, const char *token);

/* HTTPS: the CA the server must chain to (NULL: the system's), and a
 * client certificate and key (NULL: none). Strings borrowed for h's life. */
struct cli_tls {
	const char *ca_file;
	const char *cert_file;
	const char *key_file;
};
void cli_http_tls(struct cli_http *h, const struct cli_tls *tls);
void cli_http_free(struct cli_http *h);

/* Send `method` to base_url + `path` (path already percent-encoded, with its
 * query) and read the whole answer into `out` (cleared first; the caller
 * clears it afterwards on every return). `body` (borrowed, may be NULL) is
 * sent as application/json. Returns CLI_OK when an HTTP answer arrived,
 * whatever its status, else CLI_UNREACHABLE with the reason in
 * cli_http_errmsg. */
int cli_http_request(struct cli_http *h, const char *method, const char *path,
		     const char *body, size_t body_len, struct cli_reply *out);

/* GET base_url + `path` as a Server-Sent Events stream: on_event(arg,
 * event, data) for each event as it arrives (comments skipped), until the
 * server ends the stream. An answer other than 200 is read whole into
 * `out`, as cli_http_request does (out->status is 200 for a stream; the
 * caller clears `out` on every return). Returns CLI_OK or
 * CLI_UNREACHABLE. */
typedef void (*cli_event_cb)(void *arg, const char *event, const char *data);
int cli_http_stream(struct cli_http *h, const char *path, cli_event_cb on_event,
		    void *arg, struct cli_reply *out);

/* Why the last request failed: "<url>: <curl's message>" (borrowed, valid
 * until the next request). */
const char *cli_http_errmsg(const struct cli_http *h);

void cli_reply_clear(struct cli_reply *r);

#endif
