/* auth.h - who is calling: users by bearer token (stored as SHA-256), nodes
 * by a request signed with the cluster secret (docs/security.md). */
#ifndef FLOWD_API_AUTH_H
#define FLOWD_API_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "api/api.h"
#include "core/error.h"

#define API_TOKEN_NAME_MAX 64
#define API_NODE_AUTH_MAX 96   /* "<ms>.<64 hex>" and a NUL */
#define API_ON_BEHALF_MAX 160  /* "<role> <name> <address>" and a NUL */
/* A signed node request is accepted this long either side of the
 * receiver's clock (nodes run NTP; docs/security.md). */
#define API_NODE_SKEW_MS 60000

/* One user token: its name (audit, logs), role, and SHA-256 of the token. */
struct api_token {
	char name[API_TOKEN_NAME_MAX];
	enum api_role role;
	unsigned char hash[32];
};

/* SHA-256 of `len` bytes. Returns 0 or -1. */
int api_sha256(const void *data, size_t len, unsigned char out[32]);

/* Fill t->hash from a config value: "sha256:<64 hex digits>" (what
 * `flowd hash-token` prints) is taken as the hash, anything else as the
 * token itself and hashed. Returns 0, or -1 for a "sha256:" value that is
 * not 64 hex digits. */
int api_token_set(struct api_token *t, const char *value);

/* "sha256:<hex>" of a token into out (at least 72 bytes). */
void api_token_hash_text(const char *token, size_t len, char out[72]);

/* The role name: "public", "reader", "operator", "admin", "node". */
const char *api_role_name(enum api_role role);

/* The role of a name (those above but "node"), or -1. */
int api_role_parse(const char *name);

/* Sign a node request: writes "<now_ms>.<hex HMAC-SHA256>" into out, over
 * the node id, the time, the method, the target, the SHA-256 of the body
 * and the on-behalf value ("" when none). Returns 0 or -1. */
int api_node_sign(const char *secret, uint64_t node_id, int64_t now_ms,
		  const char *method, const char *target, const void *body,
		  size_t body_len, const char *on_behalf,
		  char out[API_NODE_AUTH_MAX]);

/* The token's entry for an Authorization header value (may be NULL), or
 * NULL: no header, a malformed one, or an unknown token. Every entry is
 * compared (constant time in the token's content). */
const struct api_token *api__auth_lookup(const struct api_token *tokens,
					 size_t n, const char *authorization);

/* Check a node request's signature: `node` is the X-Flowd-Node header,
 * `sig` X-Flowd-Node-Auth. Returns 0 with *node_id, or -1 with err 401
 * "unauthorized" saying why (no secret, malformed, skew, bad signature). */
int api__node_verify(const char *secret, const char *node, const char *sig,
		     const char *method, const char *target, const void *body,
		     size_t body_len, const char *on_behalf, int64_t now_ms,
		     uint64_t *node_id, struct flowd_error *err);

/* Parse an X-Flowd-On-Behalf value "<role> <name> <address>": the role of
 * the client a node forwards for. Returns 0 or -1. name/address are
 * copied, truncated to their buffers. */
int api__on_behalf_parse(const char *value, enum api_role *role,
			 char name[API_TOKEN_NAME_MAX], char address[48]);

#endif
