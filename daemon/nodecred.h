/* nodecred.h - how this node presents itself to another node's API: every
 * request signed with the cluster secret (api/auth.h), over HTTPS verified
 * against the cluster CA when [tls] is set. peer.c and follow.c use it. */
#ifndef FLOWD_DAEMON_NODECRED_H
#define FLOWD_DAEMON_NODECRED_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "api/auth.h"

struct api_request;

/* Borrowed strings: they live as long as the config. */
struct nodecred {
	uint64_t node_id;
	const char *secret;     /* cluster.secret; NULL: requests go unsigned
	                         * (a single node never calls itself) */
	const char *ca_file;    /* [tls]: HTTPS, peers verified against it */
	const char *cert_file;  /* presented as a client certificate */
	const char *key_file;
};

/* "https" with [tls], else "http". */
const char *nodecred_scheme(const struct nodecred *c);

/* Append X-Flowd-Node, X-Flowd-Node-Auth and (when on_behalf is not NULL)
 * X-Flowd-On-Behalf to *list, signing method, target, body and on_behalf
 * at the current time. Returns 0 or -1 (out of memory). */
int nodecred_headers(const struct nodecred *c, const char *method,
		     const char *target, const void *body, size_t body_len,
		     const char *on_behalf, struct curl_slist **list);

/* TLS options of an easy handle: the CA, the client certificate and key. */
void nodecred_curl_tls(const struct nodecred *c, CURL *h);

/* The X-Flowd-On-Behalf value for a client request this node forwards:
 * "<role> <name> <address>". */
void nodecred_on_behalf(const struct api_request *req,
			char out[API_ON_BEHALF_MAX]);

#endif
