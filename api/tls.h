/* tls.h - the API's certificate, reloadable (tls.c). Internal to api/. */
#ifndef FLOWD_API_TLS_H
#define FLOWD_API_TLS_H

#include <stddef.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>

/* Read the PEM certificate chain and key and make them what new
 * handshakes present. Returns 0, or -1 with errmsg naming the file; the
 * certificate in use before stays. */
int api__tls_load(const char *cert_file, const char *key_file, char *errmsg,
		  size_t errlen);

/* Free every generation (after the servers stopped). */
void api__tls_unload(void);

/* MHD_OPTION_HTTPS_CERT_CALLBACK. */
int api__tls_retrieve_cb(gnutls_session_t session,
			 const gnutls_datum_t *req_ca_rdn, int nreqs,
			 const gnutls_pk_algorithm_t *pk_algos,
			 int pk_algos_length, gnutls_pcert_st **pcert,
			 unsigned int *pcert_length, gnutls_privkey_t *pkey);

#endif
