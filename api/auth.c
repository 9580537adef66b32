/* auth.c - bearer tokens by their SHA-256, and node requests signed with the
 * cluster secret. */

/*
 * DESIGN
 *
 * Users. The config holds a token or its "sha256:<hex>"; either way the
 * server keeps only the SHA-256 (struct api_token). A request's bearer token
 * is hashed once and compared with every entry in constant time: tokens
 * are random (at least 16 characters), so a plain hash is what GitHub and
 * etcd keep as well; a slow KDF would cost every request milliseconds.
 *
 * Nodes. A node never sends a user's token. It signs each request:
 *   X-Flowd-Node: <its id>
 *   X-Flowd-Node-Auth: <unix ms>.<hex HMAC-SHA256(secret, message)>
 * where message = "flowd-node-v1\n" id "\n" ms "\n" method "\n" target "\n"
 * hex SHA-256(body) "\n" on-behalf. The receiver recomputes it, compares in
 * constant time, and refuses a time more than API_NODE_SKEW_MS away from
 * its own clock, which bounds a replay to that window; with [tls] nobody
 * can see a request to replay it. A follower forwarding a client's write
 * sends no Authorization at all: X-Flowd-On-Behalf "<role> <name>
 * <address>" names the client as the follower authenticated it, and is
 * covered by the signature.
 *
 * Pure functions over GnuTLS's hash and HMAC; any thread.
 */
#include "api/auth.h"
#include "api/route.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char hexdigits[] = "0123456789abcdef";

static void to_hex(const unsigned char *in, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hexdigits[in[i] >> 4];
		out[2 * i + 1] = hexdigits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int from_hex(const char *s, size_t n, unsigned char *out)
{
	for (size_t i = 0; i < n; i++) {
		int hi = api__hex_value(s[2 * i]), lo = api__hex_value(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (unsigned char)(hi << 4 | lo);
	}
	return 0;
}

/* 1 when equal; time independent of where they differ. */
static int same_bytes(const unsigned char *a, const unsigned char *b, size_t n)
{
	volatile unsigned char diff = 0;

	for (size_t i = 0; i < n; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

int api_sha256(const void *data, size_t len, unsigned char out[32])
{
	return gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, out) == 0 ? 0
									 : -1;
}

int api_token_set(struct api_token *t, const char *value)
{
	static const char prefix[] = "sha256:";
	size_t n = strlen(value);

	if (strncmp(value, prefix, sizeof prefix - 1) == 0) {
		if (n != sizeof prefix - 1 + 64)
			return -1;
		return from_hex(value + sizeof prefix - 1, 32, t->hash);
	}
	return api_sha256(value, n, t->hash);
}

void api_token_hash_text(const char *token, size_t len, char out[72])
{
	unsigned char h[32];

	memcpy(out, "sha256:", 7);
	if (api_sha256(token, len, h) != 0) {
		out[0] = '\0';
		return;
	}
	to_hex(h, 32, out + 7);
}

const char *api_role_name(enum api_role role)
{
	switch (role) {
	case API_ROLE_PUBLIC:
		return "public";
	case API_ROLE_READER:
		return "reader";
	case API_ROLE_OPERATOR:
		return "operator";
	case API_ROLE_ADMIN:
		return "admin";
	case API_ROLE_PRODUCTION:
		return "production";
	case API_ROLE_NODE:
		return "node";
	}
	return "?";
}

int api_role_parse(const char *name)
{
	static const enum api_role roles[] = {API_ROLE_PUBLIC, API_ROLE_READER,
					      API_ROLE_OPERATOR,
					      API_ROLE_ADMIN,
					      API_ROLE_PRODUCTION};

	for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
		if (strcmp(name, api_role_name(roles[i])) == 0)
			return (int)roles[i];
	return -1;
}

const struct api_token *api__auth_lookup(const struct api_token *tokens,
					 size_t n, const char *authorization)
{
	static const char scheme[] = "Bearer";
	const struct api_token *found = NULL;
	const char *p = authorization;
	unsigned char h[32];
	size_t glen;

	if (p == NULL || n == 0)
		return NULL;
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, scheme, sizeof scheme - 1) != 0)
		return NULL;
	p += sizeof scheme - 1;
	if (*p != ' ' && *p != '\t')
		return NULL;
	while (*p == ' ' || *p == '\t')
		p++;
	glen = strlen(p);
	while (glen > 0 && (p[glen - 1] == ' ' || p[glen - 1] == '\t'))
		glen--;
	if (glen == 0 || api_sha256(p, glen, h) != 0)
		return NULL;
	/* Every entry is compared; of a token listed twice, the entry with
	 * the highest role wins. */
	for (size_t i = 0; i < n; i++)
		if (same_bytes(h, tokens[i].hash, 32) &&
		    (found == NULL || tokens[i].role > found->role))
			found = &tokens[i];
	return found;
}

static int node_mac(const char *secret, uint64_t node_id, int64_t ms,
		    const char *method, const char *target, const void *body,
		    size_t body_len, const char *on_behalf,
		    unsigned char mac[32])
{
	unsigned char bh[32];
	char head[64], bhex[65];
	gnutls_hmac_hd_t h;
	int n;

	if (api_sha256(body != NULL ? body : "", body != NULL ? body_len : 0,
		       bh) != 0)
		return -1;
	to_hex(bh, 32, bhex);
	n = snprintf(head, sizeof head, "flowd-node-v1\n%" PRIu64 "\n%" PRId64
			 "\n", node_id, ms);
	if (n < 0 || (size_t)n >= sizeof head ||
	    gnutls_hmac_init(&h, GNUTLS_MAC_SHA256, secret, strlen(secret)) !=
		    0)
		return -1;
	gnutls_hmac(h, head, (size_t)n);
	gnutls_hmac(h, method, strlen(method));
	gnutls_hmac(h, "\n", 1);
	gnutls_hmac(h, target, strlen(target));
	gnutls_hmac(h, "\n", 1);
	gnutls_hmac(h, bhex, 64);
	gnutls_hmac(h, "\n", 1);
	if (on_behalf != NULL)
		gnutls_hmac(h, on_behalf, strlen(on_behalf));
	gnutls_hmac_deinit(h, mac);
	return 0;
}

int api_node_sign(const char *secret, uint64_t node_id, int64_t now_ms,
		  const char *method, const char *target, const void *body,
		  size_t body_len, const char *on_behalf,
		  char out[API_NODE_AUTH_MAX])
{
	unsigned char mac[32];
	int n;

	if (secret == NULL ||
	    node_mac(secret, node_id, now_ms, method, target, body, body_len,
		     on_behalf, mac) != 0)
		return -1;
	n = snprintf(out, API_NODE_AUTH_MAX, "%" PRId64 ".", now_ms);
	if (n < 0 || (size_t)n + 65 > API_NODE_AUTH_MAX)
		return -1;
	to_hex(mac, 32, out + n);
	return 0;
}

static int refuse(struct flowd_error *err, const char *why)
{
	return flowd_error_set(err, FLOWD_E_UNAUTHORIZED, "unauthorized", "",
			       "node credential refused: %s", why);
}

int api__node_verify(const char *secret, const char *node, const char *sig,
		     const char *method, const char *target, const void *body,
		     size_t body_len, const char *on_behalf, int64_t now_ms,
		     uint64_t *node_id, struct flowd_error *err)
{
	unsigned char want[32], got[32];
	unsigned long long id;
	long long ms;
	char *end;
	const char *dot;

	if (secret == NULL)
		return refuse(err, "this node has no cluster secret");
	if (node == NULL || sig == NULL)
		return refuse(err, "X-Flowd-Node and X-Flowd-Node-Auth are both required");
	id = strtoull(node, &end, 10);
	if (*node < '1' || *node > '9' || *end != '\0' || id > INT64_MAX)
		return refuse(err, "X-Flowd-Node is not a node id");
	ms = strtoll(sig, &end, 10);
	dot = end;
	if (end == sig || *dot != '.' || strlen(dot + 1) != 64 ||
	    from_hex(dot + 1, 32, got) != 0)
		return refuse(err, "X-Flowd-Node-Auth is malformed");
	if (ms < now_ms - API_NODE_SKEW_MS || ms > now_ms + API_NODE_SKEW_MS)
		return refuse(err, "the signature's time is more than 60 s "
				   "from this node's clock");
	if (node_mac(secret, (uint64_t)id, ms, method, target, body, body_len,
		     on_behalf, want) != 0)
		return refuse(err, "cannot compute the signature");
	if (!same_bytes(want, got, 32))
		return refuse(err, "bad signature");
	*node_id = (uint64_t)id;
	return 0;
}

int api__on_behalf_parse(const char *value, enum api_role *role,
			 char name[API_TOKEN_NAME_MAX], char address[48])
{
	char r[16], nm[API_TOKEN_NAME_MAX], ad[48];
	int rv;

	if (value == NULL ||
	    sscanf(value, "%15s %63s %47s", r, nm, ad) != 3)
		return -1;
	rv = api_role_parse(r);
	if (rv < 0)
		return -1;
	*role = (enum api_role)rv;
	memcpy(name, nm, sizeof nm);
	memcpy(address, ad, sizeof ad);
	return 0;
}
