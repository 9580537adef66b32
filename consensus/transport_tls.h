/* transport_tls.h - a raft_uv_transport (raft/uv.h) that carries Raft's
 * connections inside mutually authenticated TLS (GnuTLS): a peer proves a
 * certificate from the cluster CA, or nothing it sends reaches raft. Loop
 * thread only; DESIGN in transport_tls.c. */
#ifndef FLOWD_CONSENSUS_TRANSPORT_TLS_H
#define FLOWD_CONSENSUS_TRANSPORT_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <raft.h>
#include <raft/uv.h>

/* How long a connection may take from TCP accept (or connect) until raft
 * has it: TLS handshake and, when accepting, raft's preamble. */
#define CONSENSUS_TLS_HANDSHAKE_MS 5000
/* Accepted connections still in their handshake; more are closed at once. */
#define CONSENSUS_TLS_MAX_PENDING 16
/* Accepted connections in all (handshaking or handed to raft). */
#define CONSENSUS_TLS_MAX_INCOMING 128

/* Fill `t` (embedded by the caller) with the TLS transport, to be passed to
 * raft_uv_init like raft_uv_tcp_init's. t->data is kept, as raft_uv_tcp
 * does. The three paths are PEM files, copied (reload reads them again):
 * `ca_file` the cluster CA every peer certificate must chain to, `cert_file`
 * this node's certificate (chain) and `key_file` its key. The certificate
 * must verify against the CA for both TLS server and client use, else this
 * fails. `loop` is borrowed. Opens no uv handle (raft's init does, through
 * t->init). Returns 0, or CONSENSUS_ERROR/CONSENSUS_NOMEM with errmsg
 * ("tls: ..."); on failure nothing needs closing. */
int consensus_tls_transport_init(struct raft_uv_transport *t,
				 struct uv_loop_s *loop, const char *ca_file,
				 const char *cert_file, const char *key_file,
				 char *errmsg, size_t errlen);

/* Release the memory of a transport set up by consensus_tls_transport_init:
 * after raft_close's callback (raft has then closed it through t->close),
 * or when raft_init failed (like raft_uv_tcp_close, it only frees). */
void consensus_tls_transport_close(struct raft_uv_transport *t);

/* Read the three files again; connections accepted or opened from now on
 * use them, established ones keep the credentials they started with. On
 * failure (errmsg says why) the previous credentials stay in use. Returns 0
 * or CONSENSUS_ERROR/CONSENSUS_NOMEM. Loop thread. */
int consensus_tls_transport_reload(struct raft_uv_transport *t, char *errmsg,
				   size_t errlen);

/* Tests: replace CONSENSUS_TLS_HANDSHAKE_MS (before t->init). */
void consensus_tls_transport_set_handshake_ms(struct raft_uv_transport *t,
					      unsigned ms);

/* Is `t` a transport made by consensus_tls_transport_init? (So that the
 * owner knows which close to call.) */
bool consensus_tls_transport_is(const struct raft_uv_transport *t);

#endif
