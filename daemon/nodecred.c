/* nodecred.c - sign node-to-node requests and set their TLS (nodecred.h). */
#include "daemon/nodecred.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"

const char *nodecred_scheme(const struct nodecred *c)
{
	return c->ca_file != NULL ? "https" : "http";
}

static int add(struct curl_slist **list, const char *name, const char *value)
{
	char line[API_ON_BEHALF_MAX + 64];
	struct curl_slist *l;

	snprintf(line, sizeof line, "%s: %s", name, value);
	l = curl_slist_append(*list, line);
	if (l == NULL)
		return -1;
	*list = l;
	return 0;
}

int nodecred_headers(const struct nodecred *c, const char *method,
		     const char *target, const void *body, size_t body_len,
		     const char *on_behalf, struct curl_slist **list)
{
	char id[24], sig[API_NODE_AUTH_MAX];
	struct timespec now;

	if (c->secret == NULL)
		return 0;
	clock_gettime(CLOCK_REALTIME, &now);
	if (api_node_sign(c->secret, c->node_id,
			  (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000,
			  method, target, body, body_len, on_behalf, sig) != 0)
		return -1;
	snprintf(id, sizeof id, "%" PRIu64, c->node_id);
	if (add(list, "X-Flowd-Node", id) != 0 ||
	    add(list, "X-Flowd-Node-Auth", sig) != 0)
		return -1;
	if (on_behalf != NULL && add(list, "X-Flowd-On-Behalf", on_behalf) != 0)
		return -1;
	return 0;
}

void nodecred_curl_tls(const struct nodecred *c, CURL *h)
{
	if (c->ca_file == NULL)
		return;
	curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
	curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert_file);
	curl_easy_setopt(h, CURLOPT_SSLKEY, c->key_file);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(h, CURLOPT_SSLVERSION,
			 (long)CURL_SSLVERSION_TLSv1_2);
}

void nodecred_on_behalf(const struct api_request *req,
			char out[API_ON_BEHALF_MAX])
{
	snprintf(out, API_ON_BEHALF_MAX, "%s %s %s", api_role_name(req->role),
		 req->who[0] != '\0' ? req->who : "-",
		 req->client_address[0] != '\0' ? req->client_address : "-");
}
