/* tls.c - the API's certificate and key, handed to GnuTLS per handshake so
 * that SIGHUP can replace them without dropping the node. */

/*
 * DESIGN
 *
 * libmicrohttpd asks for the certificate through
 * MHD_OPTION_HTTPS_CERT_CALLBACK on every handshake (a GnuTLS
 * certificate_retrieve_function2, which has no user pointer: hence one
 * process-wide `current`, guarded by `mu`). api__tls_load() reads the PEM
 * files into a generation (certificate chain as gnutls_pcert_st, private
 * key as gnutls_privkey_t) and makes it current. A handshake in progress
 * may still use the generation it was given, so replaced generations are
 * kept, up to KEEP_OLD, and freed after that (or at api__tls_unload): a
 * handshake that spans eight reloads is not a case worth more memory.
 *
 * Failure: a file that cannot be read or parsed leaves the current
 * generation in place and returns -1 with the reason; at start that stops
 * the node, on SIGHUP it is logged and the old certificate stays.
 *
 * Threads: load/unload on the loop thread; the callback on MHD's workers.
 */
#include "api/tls.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define MAX_CHAIN 8
#define KEEP_OLD 8

struct generation {
	gnutls_pcert_st chain[MAX_CHAIN];
	unsigned n_chain;
	gnutls_privkey_t key;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct generation *current;
static struct generation *old[KEEP_OLD];
static unsigned n_old;

static void generation_free(struct generation *g)
{
	if (g == NULL)
		return;
	for (unsigned i = 0; i < g->n_chain; i++)
		gnutls_pcert_deinit(&g->chain[i]);
	if (g->key != NULL)
		gnutls_privkey_deinit(g->key);
	free(g);
}

static int generation_load(const char *cert_file, const char *key_file,
			   struct generation **out, char *errmsg,
			   size_t errlen)
{
	gnutls_datum_t cert = {NULL, 0}, key = {NULL, 0};
	struct generation *g = calloc(1, sizeof *g);
	int rv;

	if (g == NULL) {
		snprintf(errmsg, errlen, "tls: out of memory");
		return -1;
	}
	rv = gnutls_load_file(cert_file, &cert);
	if (rv < 0) {
		snprintf(errmsg, errlen, "tls.cert_file: %s: %s", cert_file,
			 gnutls_strerror(rv));
		goto fail;
	}
	rv = gnutls_load_file(key_file, &key);
	if (rv < 0) {
		snprintf(errmsg, errlen, "tls.key_file: %s: %s", key_file,
			 gnutls_strerror(rv));
		goto fail;
	}
	g->n_chain = MAX_CHAIN;
	rv = gnutls_pcert_list_import_x509_raw(g->chain, &g->n_chain, &cert,
					       GNUTLS_X509_FMT_PEM, 0);
	if (rv < 0 || g->n_chain == 0) {
		g->n_chain = 0;
		snprintf(errmsg, errlen, "tls.cert_file: %s: %s", cert_file,
			 rv < 0 ? gnutls_strerror(rv) : "no certificate");
		goto fail;
	}
	if ((rv = gnutls_privkey_init(&g->key)) < 0 ||
	    (rv = gnutls_privkey_import_x509_raw(g->key, &key,
						 GNUTLS_X509_FMT_PEM, NULL,
						 0)) < 0) {
		snprintf(errmsg, errlen, "tls.key_file: %s: %s", key_file,
			 gnutls_strerror(rv));
		goto fail;
	}
	gnutls_free(cert.data);
	gnutls_memset(key.data, 0, key.size);
	gnutls_free(key.data);
	*out = g;
	return 0;

fail:
	gnutls_free(cert.data);
	if (key.data != NULL)
		gnutls_memset(key.data, 0, key.size);
	gnutls_free(key.data);
	generation_free(g);
	return -1;
}

int api__tls_load(const char *cert_file, const char *key_file, char *errmsg,
		  size_t errlen)
{
	struct generation *g, *dropped = NULL;

	if (generation_load(cert_file, key_file, &g, errmsg, errlen) != 0)
		return -1;
	pthread_mutex_lock(&mu);
	if (current != NULL) {
		if (n_old == KEEP_OLD) {
			dropped = old[0];
			memmove(old, old + 1, (KEEP_OLD - 1) * sizeof old[0]);
			n_old--;
		}
		old[n_old++] = current;
	}
	current = g;
	pthread_mutex_unlock(&mu);
	generation_free(dropped);
	return 0;
}

void api__tls_unload(void)
{
	pthread_mutex_lock(&mu);
	generation_free(current);
	current = NULL;
	for (unsigned i = 0; i < n_old; i++)
		generation_free(old[i]);
	n_old = 0;
	pthread_mutex_unlock(&mu);
}

int api__tls_retrieve_cb(gnutls_session_t session,
			 const gnutls_datum_t *req_ca_rdn, int nreqs,
			 const gnutls_pk_algorithm_t *pk_algos,
			 int pk_algos_length, gnutls_pcert_st **pcert,
			 unsigned int *pcert_length, gnutls_privkey_t *pkey)
{
	int rv = -1;

	pthread_mutex_lock(&mu);
	if (current != NULL) {
		*pcert = current->chain;
		*pcert_length = current->n_chain;
		*pkey = current->key;
		rv = 0;
	}
	pthread_mutex_unlock(&mu);
	return rv;
}
