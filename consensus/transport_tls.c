/* transport_tls.c - Raft's transport over mutually authenticated TLS: a
 * struct raft_uv_transport whose connections are GnuTLS sessions on TCP,
 * relayed to raft's uv code through a socketpair.
 *
 * DESIGN
 * raft_uv reads and writes whatever uv_stream_t the transport hands it. We
 * keep the TLS session on the real TCP socket and hand raft one end of a
 * socketpair(AF_UNIX) opened as a uv_pipe_t; a relay on the loop moves
 * bytes between the session and the other end (the design go-dqlite uses).
 * One `struct tunnel` per TCP connection holds: the TCP handle, a deadline
 * timer, the GnuTLS session (non-blocking, its push/pull functions on our
 * own buffers) and, once handed over, our end of the pair.
 *
 * Happy path, accepting: the listener accepts -> server session with
 * GNUTLS_CERT_REQUIRE and the peer's certificate verified against the CA
 * (purpose: TLS client) inside the handshake, and again after it -> read
 * raft's preamble from the decrypted stream (protocol uint64 = 1, server id,
 * address length padded to 8, the NUL-terminated address; all little
 * endian, raft's src/uv_tcp_listen.c) -> socketpair -> accept_cb(id,
 * address, raft's end) -> relay. Connecting: TCP connect -> client session,
 * the server's certificate verified (purpose: TLS server; no host name:
 * nodes are identified by the CA) -> write raft's preamble (our id and
 * address) into the session -> socketpair -> connect cb(raft's end, 0) ->
 * relay. A peer's CN, the TLS version and the claimed id are logged.
 *
 * Relay: ciphertext read from TCP goes into `in` (GnuTLS's pull takes it
 * from there), decrypted records are written to our pipe end; what raft
 * writes to its end is read from ours and sent with gnutls_record_send,
 * whose push writes to TCP (uv_try_write, then a queued uv_write). Both
 * directions are bounded: when one side's write queue holds RELAY_HIGH
 * bytes we stop reading the other side, and read it again below RELAY_LOW.
 * raft never reads a connection it opened, nor writes one it accepted, so
 * data arriving on an outgoing connection is read and dropped (keeping TCP
 * read, so that an alert or EOF is seen at once).
 *
 * Failure modes (each closes the tunnel; nothing reaches raft before the
 * handshake, the certificate check and the preamble all passed):
 * - no certificate, one from another CA, an expired one, plain TCP or
 *   garbage: the handshake fails; we send GnuTLS's alert, log a refusal
 *   (warn, rate-limited) and close. Under TLS 1.3 a connecting client
 *   finishes its handshake before the server checks the client's
 *   certificate; a server that refuses ours answers with an alert, which
 *   the relay sees and logs; raft sees its stream fail and retries.
 * - a peer that stays silent, or is slow: the deadline (handshake_ms,
 *   from accept or connect until raft has the stream) closes it.
 * - more than CONSENSUS_TLS_MAX_PENDING handshakes at once (or
 *   MAX_INCOMING accepted connections): the new one is accepted and closed.
 * - a preamble with another protocol, id 0, an address longer than
 *   MAX_ADDRESS or not NUL-terminated (raft 0.15 would assert or read past
 *   the buffer): refused.
 * - TLS renegotiation (TLS 1.2), any TLS error, EOF or a write error on
 *   either side during the relay: the tunnel closes; raft sees EOF on an
 *   accepted stream or a write error on its own (flowd ignores SIGPIPE)
 *   and reconnects after its retry delay. Bytes in flight are lost, which
 *   Raft tolerates (messages may be lost).
 * - close (raft_uv's io close): the listener and every tunnel, relaying or
 *   not, are closed; a connect still pending calls back with RAFT_CANCELED;
 *   the close callback fires once every handle is closed.
 * Credentials are reference counted: a session holds the ones it began
 * with, so reload swaps them for new connections only.
 *
 * Threads: everything runs on the loop thread (raft's). GnuTLS sessions
 * are used from there only; there is no relay thread and no lock. A
 * handshake costs the loop one ECDHE and a signature check (~1 ms with
 * P-256 keys), records cost AES-GCM, so the loop is not held up.
 * Memory: a tunnel is one block (~33 KiB of buffers) freed in the close
 * callback of its last handle; write requests own a copy of their bytes. */
#include "consensus/transport_tls.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <uv.h>

#include "consensus/consensus.h"
#include "core/log.h"

#define PROTOCOL 1             /* raft's handshake version (uv_tcp.h) */
#define MAX_ADDRESS 256        /* longest address (padded) we accept */
#define IN_SIZE 16384          /* ciphertext read, not yet pulled */
#define CHUNK 16384            /* plaintext per read of raft's bytes */
#define RELAY_HIGH (256 * 1024) /* pause reading the other side above */
#define RELAY_LOW (64 * 1024)  /* and resume below */
#define BACKLOG 64
#define REFUSALS_PER_WINDOW 10 /* refusal lines per window */
#define REFUSAL_WINDOW_MS 10000
/* TLS 1.3, or 1.2, with ciphers of at least 128-bit security. */
#define PRIORITY "SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* Certificate purposes checked on the peer (static: GnuTLS may keep the
 * pointer). The server checks its client's, the client its server's. */
static gnutls_typed_vdata_st purpose_client[] = {
	{GNUTLS_DT_KEY_PURPOSE_OID, (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT,
	 0},
};
static gnutls_typed_vdata_st purpose_server[] = {
	{GNUTLS_DT_KEY_PURPOSE_OID, (unsigned char *)GNUTLS_KP_TLS_WWW_SERVER,
	 0},
};

/* ---------------------------------------------------------------- types */

struct creds {
	gnutls_certificate_credentials_t x509;
	unsigned refs;                 /* the transport's + one per session */
	char cn[64];                   /* our certificate's CN, for logs */
};

enum tunnel_state {
	T_CONNECTING = 0,              /* outgoing: TCP connect pending */
	T_HANDSHAKE,                   /* TLS handshake */
	T_PREAMBLE,                    /* incoming: reading raft's preamble */
	T_RELAY,                       /* raft has its end */
	T_CLOSING,                     /* handles closing; freed after */
};

struct tls_transport;

struct tunnel {
	struct tls_transport *tt;
	struct tunnel *prev, *next;    /* tt->tunnels */
	int incoming;
	int pending;                   /* counted in tt->n_pending */
	enum tunnel_state state;
	unsigned handles;              /* close callbacks still to come */
	int status;                    /* for a pending connect's callback */
	char peer[64];                 /* "a.b.c.d:port", for logs */
	char cn[64];                   /* the peer certificate's CN */

	uv_tcp_t tcp;
	uv_timer_t timer;              /* handshake deadline */
	uv_connect_t connect;
	uv_pipe_t pipe;                /* our end of the pair (T_RELAY) */
	int pipe_open;
	uv_pipe_t *raft_end;           /* raft_malloc'd; ours until handed */
	int tcp_paused;                /* TCP read stopped: pipe queue full */
	int pipe_paused;               /* pipe read stopped: TCP queue full */
	int tcp_eof;

	gnutls_session_t session;
	struct creds *creds;           /* a reference */

	/* Outgoing. */
	struct raft_uv_connect *req;   /* until its callback runs */
	raft_id peer_id;
	uint64_t dropped;              /* bytes the peer sent us, dropped */

	/* Incoming: raft's preamble. */
	uint64_t preamble[3];
	size_t preamble_got;
	char *address;                 /* malloc'd, address_len bytes */
	size_t address_len;
	size_t address_got;

	size_t in_start, in_end;       /* unread ciphertext: in[start, end) */
	char in[IN_SIZE];
	char plain[CHUNK];             /* raft's bytes, read from the pipe */
};

struct tls_transport {
	struct raft_uv_transport *transport;
	uv_loop_t *loop;
	raft_id id;
	char *address;                 /* ours, copied at init */
	char *ca_file, *cert_file, *key_file;
	struct creds *creds;           /* for new sessions */
	gnutls_priority_t priority;
	unsigned handshake_ms;

	uv_tcp_t listener;
	int listener_open;             /* uv_tcp_init'ed, not yet closed */
	raft_uv_accept_cb accept_cb;

	struct tunnel *tunnels;        /* every tunnel not yet freed */
	unsigned n_pending;            /* incoming, not handed to raft */
	unsigned n_incoming;           /* incoming in all */
	unsigned n_rejects;            /* rejected handles still closing */

	int closing;
	raft_uv_transport_close_cb close_cb;

	/* Refusal log rate limit. */
	uint64_t refusal_window;
	unsigned refusals_logged;
	unsigned refusals_dropped;
};

/* A connection accepted only to be closed (too many pending). */
struct reject {
	uv_tcp_t tcp;
	struct tls_transport *tt;
};

/* A write with its own copy of the bytes. */
struct wreq {
	uv_write_t req;
	struct tunnel *tn;
	char data[];
};

static void drive(struct tunnel *tn);

/* ---------------------------------------------------------------- errors */

static void set_err(char *errmsg, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *errmsg, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errmsg == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(errmsg, errlen, fmt, ap);
	va_end(ap);
}

/* Replace what is not printable (or would break key=value) in a name that
 * came off the wire. */
static void sanitize(char *s)
{
	for (; *s != '\0'; s++)
		if (*s <= ' ' || *s > '~' || *s == '"' || *s == '=')
			*s = '_';
}

/* A verification status in words, into buf. */
static void status_text(unsigned status, char *buf, size_t len)
{
	gnutls_datum_t out = {NULL, 0};

	if (gnutls_certificate_verification_status_print(
		    status, GNUTLS_CRT_X509, &out, 0) == 0 &&
	    out.data != NULL) {
		snprintf(buf, len, "%s", (const char *)out.data);
	} else {
		snprintf(buf, len, "verification status 0x%x", status);
	}
	gnutls_free(out.data);
	for (size_t n = strlen(buf); n > 0 && buf[n - 1] == ' '; n--)
		buf[n - 1] = '\0';
}

/* Why a GnuTLS call of this tunnel failed with rv. */
static void describe(struct tunnel *tn, int rv, char *buf, size_t len)
{
	if (rv == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
		char st[160];

		status_text(gnutls_session_get_verify_cert_status(tn->session),
			    st, sizeof st);
		snprintf(buf, len, "certificate refused: %s", st);
	} else if (rv == GNUTLS_E_FATAL_ALERT_RECEIVED ||
		   rv == GNUTLS_E_WARNING_ALERT_RECEIVED) {
		const char *name = gnutls_alert_get_name(gnutls_alert_get(
			tn->session));

		snprintf(buf, len, "alert from peer: %s",
			 name != NULL ? name : "unknown");
	} else {
		snprintf(buf, len, "%s", gnutls_strerror(rv));
	}
}

/* -------------------------------------------------------------- credentials */

static void creds_unref(struct creds *c)
{
	if (c == NULL || --c->refs > 0)
		return;
	gnutls_certificate_free_credentials(c->x509);
	free(c);
}

/* The CN of `crt` into buf ("?" when it has none). */
static void crt_cn(gnutls_x509_crt_t crt, char *buf, size_t len)
{
	size_t size = len;

	if (gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0,
					  0, buf, &size) != 0)
		snprintf(buf, len, "?");
	sanitize(buf);
}

/* Our own certificate must chain to the CA for both purposes: every peer
 * would refuse it otherwise (a wrong file, an expired certificate). */
static int creds_check_own(struct creds *c, char *errmsg, size_t errlen)
{
	gnutls_x509_crt_t *crts = NULL;
	gnutls_x509_trust_list_t tl = NULL;
	unsigned n = 0, status = 0;
	char st[160];
	int rv, ret = CONSENSUS_ERROR;

	rv = gnutls_certificate_get_x509_crt(c->x509, 0, &crts, &n);
	if (rv < 0 || n == 0) {
		set_err(errmsg, errlen, "tls: cert_file: %s",
			rv < 0 ? gnutls_strerror(rv) : "no certificate");
		goto out;
	}
	crt_cn(crts[0], c->cn, sizeof c->cn);
	gnutls_certificate_get_trust_list(c->x509, &tl);
	for (int i = 0; i < 2; i++) {
		gnutls_typed_vdata_st *p =
			i == 0 ? purpose_server : purpose_client;

		rv = gnutls_x509_trust_list_verify_crt2(tl, crts, n, p, 1, 0,
							&status, NULL);
		if (rv < 0) {
			set_err(errmsg, errlen, "tls: cert_file: %s",
				gnutls_strerror(rv));
			goto out;
		}
		if (status != 0) {
			status_text(status, st, sizeof st);
			set_err(errmsg, errlen,
				"tls: cert_file (CN=%s) does not verify "
				"against ca_file as a TLS %s: %s",
				c->cn, i == 0 ? "server" : "client", st);
			goto out;
		}
	}
	ret = 0;
out:
	for (unsigned i = 0; i < n; i++)
		gnutls_x509_crt_deinit(crts[i]);
	gnutls_free(crts);
	return ret;
}

static int creds_load(const char *ca_file, const char *cert_file,
		      const char *key_file, struct creds **out, char *errmsg,
		      size_t errlen)
{
	struct creds *c;
	int rv;

	c = calloc(1, sizeof *c);
	if (c == NULL) {
		set_err(errmsg, errlen, "tls: out of memory");
		return CONSENSUS_NOMEM;
	}
	rv = gnutls_certificate_allocate_credentials(&c->x509);
	if (rv < 0) {
		set_err(errmsg, errlen, "tls: credentials: %s",
			gnutls_strerror(rv));
		goto err_free;
	}
	rv = gnutls_certificate_set_x509_trust_file(c->x509, ca_file,
						    GNUTLS_X509_FMT_PEM);
	if (rv <= 0) {
		set_err(errmsg, errlen, "tls: ca_file %s: %s", ca_file,
			rv < 0 ? gnutls_strerror(rv) : "no certificate in it");
		goto err_creds;
	}
	rv = gnutls_certificate_set_x509_key_file(c->x509, cert_file, key_file,
						  GNUTLS_X509_FMT_PEM);
	if (rv < 0) {
		set_err(errmsg, errlen, "tls: cert_file %s, key_file %s: %s",
			cert_file, key_file, gnutls_strerror(rv));
		goto err_creds;
	}
	if (creds_check_own(c, errmsg, errlen) != 0)
		goto err_creds;
	c->refs = 1;
	*out = c;
	return 0;

err_creds:
	gnutls_certificate_free_credentials(c->x509);
err_free:
	free(c);
	return CONSENSUS_ERROR;
}

/* ---------------------------------------------------------------- logging */

/* May a refusal be logged now? At most REFUSALS_PER_WINDOW per window; the
 * number left out is logged when the next window opens. */
static int refusal_log_ok(struct tls_transport *tt)
{
	uint64_t now = uv_now(tt->loop);

	if (now - tt->refusal_window >= REFUSAL_WINDOW_MS) {
		if (tt->refusals_dropped > 0)
			log_warn("raft-tls: refused=%u not logged in the last "
				 "%d ms", tt->refusals_dropped,
				 REFUSAL_WINDOW_MS);
		tt->refusal_window = now;
		tt->refusals_logged = 0;
		tt->refusals_dropped = 0;
	}
	if (tt->refusals_logged < REFUSALS_PER_WINDOW) {
		tt->refusals_logged++;
		return 1;
	}
	tt->refusals_dropped++;
	return 0;
}

/* ---------------------------------------------------------- tunnel lifetime */

static void maybe_closed(struct tls_transport *tt)
{
	raft_uv_transport_close_cb cb;

	if (!tt->closing || tt->listener_open || tt->tunnels != NULL ||
	    tt->n_rejects > 0 || tt->close_cb == NULL)
		return;
	cb = tt->close_cb;
	tt->close_cb = NULL;
	cb(tt->transport);
}

static void tunnel_free(struct tunnel *tn)
{
	struct tls_transport *tt = tn->tt;
	struct raft_uv_connect *req = tn->req;
	int status = tn->status != 0 ? tn->status : RAFT_NOCONNECTION;

	if (tn->prev != NULL)
		tn->prev->next = tn->next;
	else
		tt->tunnels = tn->next;
	if (tn->next != NULL)
		tn->next->prev = tn->prev;
	if (tn->incoming)
		tt->n_incoming--;
	if (tn->session != NULL)
		gnutls_deinit(tn->session);
	creds_unref(tn->creds);
	free(tn->address);
	free(tn);
	/* A connect that never got its stream: raft_uv_tcp reports it after
	 * the handle closed, and so do we. */
	if (req != NULL)
		req->cb(req, NULL, status);
	maybe_closed(tt);
}

static void handle_closed_cb(uv_handle_t *handle)
{
	struct tunnel *tn = handle->data;

	if (tn->raft_end != NULL && handle == (uv_handle_t *)tn->raft_end) {
		raft_free(tn->raft_end);
		tn->raft_end = NULL;
	}
	if (--tn->handles == 0)
		tunnel_free(tn);
}

/* Close every handle of the tunnel; it is freed after the last close
 * callback (pending writes are cancelled before it). `status` is what a
 * pending connect reports. Safe to call more than once. */
static void tunnel_close(struct tunnel *tn, int status)
{
	if (tn->state == T_CLOSING)
		return;
	if (tn->pending) {
		tn->pending = 0;
		tn->tt->n_pending--;
	}
	tn->state = T_CLOSING;
	tn->status = status;
	uv_close((uv_handle_t *)&tn->tcp, handle_closed_cb);
	uv_close((uv_handle_t *)&tn->timer, handle_closed_cb);
	if (tn->pipe_open)
		uv_close((uv_handle_t *)&tn->pipe, handle_closed_cb);
	if (tn->raft_end != NULL)
		uv_close((uv_handle_t *)tn->raft_end, handle_closed_cb);
}

/* The peer did not get in (or we did not get into the peer): log why (at
 * warn, rate-limited), tell the peer with an alert when the handshake
 * failed, and close. */
static void refuse(struct tunnel *tn, int alert_rv, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void refuse(struct tunnel *tn, int alert_rv, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	if (refusal_log_ok(tn->tt)) {
		if (tn->incoming)
			log_warn("raft-tls: refused connection peer=%s "
				 "reason=\"%s\"", tn->peer, why);
		else
			log_warn("raft-tls: could not connect to id=%llu "
				 "address=%s reason=\"%s\"",
				 (unsigned long long)tn->peer_id, tn->peer,
				 why);
	}
	if (alert_rv < 0 && tn->session != NULL &&
	    alert_rv != GNUTLS_E_FATAL_ALERT_RECEIVED &&
	    alert_rv != GNUTLS_E_PREMATURE_TERMINATION &&
	    alert_rv != GNUTLS_E_PUSH_ERROR)
		gnutls_alert_send_appropriate(tn->session, alert_rv);
	tunnel_close(tn, RAFT_NOCONNECTION);
}

static void deadline_cb(uv_timer_t *timer)
{
	struct tunnel *tn = timer->data;

	if (tn->state == T_CLOSING || tn->state == T_RELAY)
		return;
	static const char *const what[] = {"tcp connect", "tls handshake",
					   "raft preamble"};

	refuse(tn, 0, "%s not done within %u ms", what[tn->state],
	       tn->tt->handshake_ms);
}

static struct tunnel *tunnel_new(struct tls_transport *tt, int incoming)
{
	struct tunnel *tn = calloc(1, sizeof *tn);

	if (tn == NULL)
		return NULL;
	tn->tt = tt;
	tn->incoming = incoming;
	uv_tcp_init(tt->loop, &tn->tcp);
	tn->tcp.data = tn;
	uv_timer_init(tt->loop, &tn->timer);
	tn->timer.data = tn;
	tn->handles = 2;
	tn->connect.data = tn;
	snprintf(tn->peer, sizeof tn->peer, "?");
	snprintf(tn->cn, sizeof tn->cn, "?");
	tn->next = tt->tunnels;
	if (tt->tunnels != NULL)
		tt->tunnels->prev = tn;
	tt->tunnels = tn;
	if (incoming) {
		tt->n_incoming++;
		tt->n_pending++;
		tn->pending = 1;
	}
	return tn;
}

/* ---------------------------------------------------------------- writes */

static void pipe_alloc_cb(uv_handle_t *handle, size_t size, uv_buf_t *buf);
static void pipe_read_cb(uv_stream_t *stream, ssize_t nread,
			 const uv_buf_t *buf);
static void tcp_alloc_cb(uv_handle_t *handle, size_t size, uv_buf_t *buf);
static void tcp_read_cb(uv_stream_t *stream, ssize_t nread,
			const uv_buf_t *buf);

static size_t queued(void *stream)
{
	return uv_stream_get_write_queue_size((uv_stream_t *)stream);
}

static void write_cb(uv_write_t *req, int status)
{
	struct wreq *w = req->data;
	struct tunnel *tn = w->tn;
	uv_stream_t *stream = req->handle;

	free(w);
	if (tn->state == T_CLOSING)
		return; /* cancelled by the close */
	if (status < 0) {
		log_debug("raft-tls: write peer=%s: %s", tn->peer,
			  uv_strerror(status));
		tunnel_close(tn, RAFT_NOCONNECTION);
		return;
	}
	if (stream == (uv_stream_t *)&tn->tcp) {
		if (tn->pipe_paused && queued(&tn->tcp) < RELAY_LOW) {
			tn->pipe_paused = 0;
			uv_read_start((uv_stream_t *)&tn->pipe, pipe_alloc_cb,
				      pipe_read_cb);
		}
	} else if (tn->tcp_paused && queued(&tn->pipe) < RELAY_LOW) {
		tn->tcp_paused = 0;
		drive(tn); /* what GnuTLS and `in` still hold first */
		if (tn->state == T_RELAY && !tn->tcp_paused)
			uv_read_start((uv_stream_t *)&tn->tcp, tcp_alloc_cb,
				      tcp_read_cb);
	}
}

/* Write len bytes to `stream`: directly if its queue is empty and the
 * socket takes them, else (the rest) as a queued write with a copy.
 * Returns 0 or a uv error. */
static int stream_send(struct tunnel *tn, uv_stream_t *stream,
		       const char *data, size_t len)
{
	uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
	struct wreq *w;
	int n = 0, rv;

	if (queued(stream) == 0) {
		n = uv_try_write(stream, &b, 1);
		if (n == UV_EAGAIN || n == UV_ENOSYS)
			n = 0;
		else if (n < 0)
			return n;
		if ((size_t)n == len)
			return 0;
	}
	w = malloc(sizeof *w + (len - (size_t)n));
	if (w == NULL)
		return UV_ENOMEM;
	memcpy(w->data, data + n, len - (size_t)n);
	w->tn = tn;
	w->req.data = w;
	b = uv_buf_init(w->data, (unsigned)(len - (size_t)n));
	rv = uv_write(&w->req, stream, &b, 1, write_cb);
	if (rv != 0) {
		free(w);
		return rv;
	}
	return 0;
}

/* --------------------------------------------------------- GnuTLS transport */

static ssize_t push_fn(gnutls_transport_ptr_t ptr, const void *data,
		       size_t len)
{
	struct tunnel *tn = ptr;
	int rv;

	if (tn->state == T_CLOSING) {
		gnutls_transport_set_errno(tn->session, EPIPE);
		return -1;
	}
	rv = stream_send(tn, (uv_stream_t *)&tn->tcp, data, len);
	if (rv != 0) {
		log_debug("raft-tls: send peer=%s: %s", tn->peer,
			  uv_strerror(rv));
		gnutls_transport_set_errno(tn->session,
					   rv == UV_ENOMEM ? ENOMEM : EPIPE);
		return -1;
	}
	return (ssize_t)len;
}

static ssize_t pull_fn(gnutls_transport_ptr_t ptr, void *data, size_t len)
{
	struct tunnel *tn = ptr;
	size_t avail = tn->in_end - tn->in_start;

	if (avail == 0) {
		if (tn->tcp_eof)
			return 0;
		gnutls_transport_set_errno(tn->session, EAGAIN);
		return -1;
	}
	if (len > avail)
		len = avail;
	memcpy(data, tn->in + tn->in_start, len);
	tn->in_start += len;
	if (tn->in_start == tn->in_end)
		tn->in_start = tn->in_end = 0;
	return (ssize_t)len;
}

/* Non-blocking: never waits, only says whether bytes are there. */
static int pull_timeout_fn(gnutls_transport_ptr_t ptr, unsigned ms)
{
	struct tunnel *tn = ptr;

	(void)ms;
	return tn->in_end > tn->in_start || tn->tcp_eof ? 1 : 0;
}

static int session_start(struct tunnel *tn)
{
	struct tls_transport *tt = tn->tt;
	unsigned flags = (tn->incoming ? GNUTLS_SERVER : GNUTLS_CLIENT) |
			 GNUTLS_NONBLOCK | GNUTLS_NO_TICKETS;
	int rv;

	rv = gnutls_init(&tn->session, flags);
	if (rv < 0) {
		tn->session = NULL;
		return rv;
	}
	tn->creds = tt->creds;
	tn->creds->refs++;
	rv = gnutls_priority_set(tn->session, tt->priority);
	if (rv < 0)
		return rv;
	rv = gnutls_credentials_set(tn->session, GNUTLS_CRD_CERTIFICATE,
				    tn->creds->x509);
	if (rv < 0)
		return rv;
	if (tn->incoming)
		gnutls_certificate_server_set_request(tn->session,
						      GNUTLS_CERT_REQUIRE);
	/* The peer's chain is verified against the CA inside the handshake,
	 * for the purpose its role needs; no host name (DESIGN). */
	gnutls_session_set_verify_cert2(
		tn->session, tn->incoming ? purpose_client : purpose_server, 1,
		0);
	gnutls_handshake_set_timeout(tn->session, 0); /* our deadline */
	gnutls_transport_set_ptr(tn->session, tn);
	gnutls_transport_set_push_function(tn->session, push_fn);
	gnutls_transport_set_pull_function(tn->session, pull_fn);
	gnutls_transport_set_pull_timeout_function(tn->session,
						   pull_timeout_fn);
	return 0;
}

/* gnutls_record_recv, hiding the GNUTLS_E_AGAIN it returns after a record
 * that carried no data (a TLS 1.3 post-handshake message) while `in` still
 * holds ciphertext. Returns 0 with *n > 0 (data) or *n == 0 (nothing to
 * read now), 1 at the peer's close_notify, or a GnuTLS error. */
static int tls_recv(struct tunnel *tn, void *buf, size_t len, size_t *n)
{
	*n = 0;
	for (int i = 0; i < 64; i++) {
		size_t before = tn->in_end - tn->in_start;
		ssize_t rv = gnutls_record_recv(tn->session, buf, len);

		if (rv > 0) {
			*n = (size_t)rv;
			return 0;
		}
		if (rv == 0)
			return 1;
		if (rv != GNUTLS_E_AGAIN && rv != GNUTLS_E_INTERRUPTED)
			return (int)rv;
		if (tn->in_end - tn->in_start == 0 ||
		    tn->in_end - tn->in_start == before)
			return 0;
	}
	return 0;
}

/* gnutls_record_send all of it (push never blocks: DESIGN). 0 or error. */
static int tls_send(struct tunnel *tn, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t rv = gnutls_record_send(tn->session, data, len);

		if (rv < 0)
			return (int)rv;
		data += rv;
		len -= (size_t)rv;
	}
	return 0;
}

/* ---------------------------------------------------------------- relay */

static void pipe_alloc_cb(uv_handle_t *handle, size_t size, uv_buf_t *buf)
{
	struct tunnel *tn = handle->data;

	(void)size;
	*buf = uv_buf_init(tn->plain, sizeof tn->plain);
}

/* raft wrote to its end: encrypt and send. */
static void pipe_read_cb(uv_stream_t *stream, ssize_t nread,
			 const uv_buf_t *buf)
{
	struct tunnel *tn = stream->data;
	char why[256];
	int rv;

	if (tn->state == T_CLOSING || nread == 0)
		return;
	if (nread < 0) {
		/* raft closed its end (it is done with this connection). */
		log_debug("raft-tls: raft closed its end peer=%s: %s",
			  tn->peer, uv_strerror((int)nread));
		tunnel_close(tn, 0);
		return;
	}
	rv = tls_send(tn, buf->base, (size_t)nread);
	if (rv < 0) {
		describe(tn, rv, why, sizeof why);
		log_info("raft-tls: connection lost peer=%s cn=%s reason=\"%s\"",
			 tn->peer, tn->cn, why);
		tunnel_close(tn, RAFT_NOCONNECTION);
		return;
	}
	if (queued(&tn->tcp) >= RELAY_HIGH) {
		tn->pipe_paused = 1;
		uv_read_stop((uv_stream_t *)&tn->pipe);
	}
}

/* Decrypt what the peer sent and hand it to raft (or drop it, on a
 * connection raft opened and never reads), until GnuTLS has nothing more
 * or our pipe end's queue is full. */
static void relay_in(struct tunnel *tn)
{
	char buf[CHUNK];
	char why[256];
	size_t n;
	int rv;

	while (tn->state == T_RELAY) {
		if (tn->incoming && queued(&tn->pipe) >= RELAY_HIGH) {
			tn->tcp_paused = 1;
			uv_read_stop((uv_stream_t *)&tn->tcp);
			return;
		}
		rv = tls_recv(tn, buf, sizeof buf, &n);
		if (rv == 1) {
			log_info("raft-tls: connection closed by peer=%s cn=%s",
				 tn->peer, tn->cn);
			tunnel_close(tn, 0);
			return;
		}
		if (rv < 0) {
			describe(tn, rv, why, sizeof why);
			/* An alert right after our handshake: under TLS 1.3
			 * that is how a peer refuses our certificate. */
			if (rv == GNUTLS_E_FATAL_ALERT_RECEIVED) {
				if (refusal_log_ok(tn->tt))
					log_warn("raft-tls: connection refused "
						 "by peer=%s cn=%s reason=\"%s\"",
						 tn->peer, tn->cn, why);
			} else {
				log_info("raft-tls: connection lost peer=%s "
					 "cn=%s reason=\"%s\"", tn->peer,
					 tn->cn, why);
			}
			tunnel_close(tn, RAFT_NOCONNECTION);
			return;
		}
		if (n == 0)
			return;
		if (!tn->incoming) {
			if (tn->dropped == 0)
				log_debug("raft-tls: dropping data on outgoing "
					  "connection peer=%s", tn->peer);
			tn->dropped += n;
			continue;
		}
		rv = stream_send(tn, (uv_stream_t *)&tn->pipe, buf, n);
		if (rv != 0) {
			log_debug("raft-tls: write to raft peer=%s: %s",
				  tn->peer, uv_strerror(rv));
			tunnel_close(tn, RAFT_NOCONNECTION);
			return;
		}
	}
}

/* The socketpair: our end starts reading, raft's end is returned (NULL
 * when it failed; the tunnel is then closing). */
static uv_stream_t *hand_over(struct tunnel *tn)
{
	uv_loop_t *loop = tn->tt->loop;
	uv_pipe_t *end;
	int fds[2];
	int rv;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
		refuse(tn, 0, "socketpair: %s", strerror(errno));
		return NULL;
	}
	end = raft_malloc(sizeof *end);
	if (end == NULL) {
		close(fds[0]);
		close(fds[1]);
		refuse(tn, 0, "out of memory");
		return NULL;
	}
	uv_pipe_init(loop, &tn->pipe, 0);
	tn->pipe.data = tn;
	tn->pipe_open = 1;
	tn->handles++;
	uv_pipe_init(loop, end, 0);
	end->data = tn;
	tn->raft_end = end;
	tn->handles++;
	rv = uv_pipe_open(&tn->pipe, fds[0]);
	if (rv != 0) {
		close(fds[0]);
		close(fds[1]);
		refuse(tn, 0, "pipe: %s", uv_strerror(rv));
		return NULL;
	}
	rv = uv_pipe_open(end, fds[1]);
	if (rv != 0) {
		close(fds[1]);
		refuse(tn, 0, "pipe: %s", uv_strerror(rv));
		return NULL;
	}
	rv = uv_read_start((uv_stream_t *)&tn->pipe, pipe_alloc_cb,
			   pipe_read_cb);
	if (rv != 0) {
		refuse(tn, 0, "pipe read: %s", uv_strerror(rv));
		return NULL;
	}
	/* raft's from here on: it closes and frees it. */
	tn->raft_end = NULL;
	tn->handles--;
	end->data = NULL;
	uv_timer_stop(&tn->timer);
	tn->state = T_RELAY;
	if (tn->pending) {
		tn->pending = 0;
		tn->tt->n_pending--;
	}
	return (uv_stream_t *)end;
}

/* ---------------------------------------------------------------- handshake */

/* After the handshake: a certificate must be there and verify (GnuTLS did
 * it inside the handshake already; this does not depend on that). */
static int verify_peer(struct tunnel *tn, char *why, size_t len)
{
	unsigned n = 0, status = 0;
	int rv;

	if (gnutls_certificate_type_get2(tn->session, GNUTLS_CTYPE_PEERS) !=
	    GNUTLS_CRT_X509) {
		snprintf(why, len, "no X.509 certificate");
		return -1;
	}
	if (gnutls_certificate_get_peers(tn->session, &n) == NULL || n == 0) {
		snprintf(why, len, "no certificate");
		return -1;
	}
	rv = gnutls_certificate_verify_peers(
		tn->session, tn->incoming ? purpose_client : purpose_server, 1,
		&status);
	if (rv < 0) {
		snprintf(why, len, "verify: %s", gnutls_strerror(rv));
		return -1;
	}
	if (status != 0) {
		char st[160];

		status_text(status, st, sizeof st);
		snprintf(why, len, "certificate refused: %s", st);
		return -1;
	}
	return 0;
}

static void peer_cn(struct tunnel *tn)
{
	const gnutls_datum_t *list;
	gnutls_x509_crt_t crt;
	unsigned n = 0;

	list = gnutls_certificate_get_peers(tn->session, &n);
	if (list == NULL || n == 0 || gnutls_x509_crt_init(&crt) < 0)
		return;
	if (gnutls_x509_crt_import(crt, &list[0], GNUTLS_X509_FMT_DER) == 0)
		crt_cn(crt, tn->cn, sizeof tn->cn);
	gnutls_x509_crt_deinit(crt);
}

/* Outgoing, handshake done: raft's preamble into the session, then the
 * stream to raft. */
static void connected(struct tunnel *tn)
{
	struct tls_transport *tt = tn->tt;
	struct raft_uv_connect *req;
	size_t alen = (strlen(tt->address) + 1 + 7) / 8 * 8;
	size_t len = 24 + alen;
	char why[256];
	uv_stream_t *end;
	char *buf;
	uint64_t v;
	int rv;

	buf = calloc(1, len);
	if (buf == NULL) {
		refuse(tn, 0, "out of memory");
		return;
	}
	v = htole64(PROTOCOL);
	memcpy(buf, &v, 8);
	v = htole64(tt->id);
	memcpy(buf + 8, &v, 8);
	v = htole64(alen);
	memcpy(buf + 16, &v, 8);
	memcpy(buf + 24, tt->address, strlen(tt->address));
	rv = tls_send(tn, buf, len);
	free(buf);
	if (rv < 0) {
		describe(tn, rv, why, sizeof why);
		refuse(tn, rv, "sending the preamble: %s", why);
		return;
	}
	end = hand_over(tn);
	if (end == NULL)
		return;
	log_info("raft-tls: connected to id=%llu address=%s cn=%s version=%s",
		 (unsigned long long)tn->peer_id, tn->peer, tn->cn,
		 gnutls_protocol_get_name(gnutls_protocol_get_version(
			 tn->session)));
	req = tn->req;
	tn->req = NULL;
	req->cb(req, end, 0);
}

static void handshake_step(struct tunnel *tn)
{
	char why[256];
	int rv;
	int i = 0;

	do {
		rv = gnutls_handshake(tn->session);
	} while (rv < 0 && rv != GNUTLS_E_AGAIN &&
		 !gnutls_error_is_fatal(rv) && ++i < 16);
	if (rv == GNUTLS_E_AGAIN)
		return;
	if (rv < 0) {
		describe(tn, rv, why, sizeof why);
		refuse(tn, rv, "handshake: %s", why);
		return;
	}
	if (verify_peer(tn, why, sizeof why) != 0) {
		refuse(tn, GNUTLS_E_CERTIFICATE_ERROR, "%s", why);
		return;
	}
	peer_cn(tn);
	if (tn->incoming)
		tn->state = T_PREAMBLE;
	else
		connected(tn);
}

/* Read into buf until `need` bytes are there. Returns 1 when they are, 0
 * when more must come, -1 when the tunnel was refused. */
static int recv_exact(struct tunnel *tn, void *buf, size_t need, size_t *got)
{
	char why[256];
	size_t n;
	int rv;

	while (*got < need) {
		rv = tls_recv(tn, (char *)buf + *got, need - *got, &n);
		if (rv == 1) {
			refuse(tn, 0, "closed before raft's preamble "
				      "(cn=%s)", tn->cn);
			return -1;
		}
		if (rv < 0) {
			describe(tn, rv, why, sizeof why);
			refuse(tn, 0, "reading raft's preamble (cn=%s): %s",
			       tn->cn, why);
			return -1;
		}
		if (n == 0)
			return 0;
		*got += n;
	}
	return 1;
}

/* Incoming: raft's preamble, checked more strictly than raft_uv_tcp does
 * (DESIGN), then the stream goes to raft's accept callback. */
static void preamble_step(struct tunnel *tn)
{
	struct tls_transport *tt = tn->tt;
	uint64_t protocol, id, alen;
	uv_stream_t *end;

	if (tn->address == NULL) {
		if (recv_exact(tn, tn->preamble, sizeof tn->preamble,
			       &tn->preamble_got) != 1)
			return;
		protocol = le64toh(tn->preamble[0]);
		id = le64toh(tn->preamble[1]);
		alen = le64toh(tn->preamble[2]);
		if (protocol != PROTOCOL) {
			refuse(tn, 0, "raft protocol %llu (cn=%s)",
			       (unsigned long long)protocol, tn->cn);
			return;
		}
		if (id == 0) {
			refuse(tn, 0, "server id 0 (cn=%s)", tn->cn);
			return;
		}
		if (alen == 0 || alen > MAX_ADDRESS) {
			refuse(tn, 0, "address length %llu (cn=%s)",
			       (unsigned long long)alen, tn->cn);
			return;
		}
		tn->address = malloc((size_t)alen);
		if (tn->address == NULL) {
			refuse(tn, 0, "out of memory");
			return;
		}
		tn->address_len = (size_t)alen;
	}
	if (recv_exact(tn, tn->address, tn->address_len, &tn->address_got) !=
	    1)
		return;
	if (memchr(tn->address, '\0', tn->address_len) == NULL) {
		refuse(tn, 0, "address not terminated (cn=%s)", tn->cn);
		return;
	}
	sanitize(tn->address);
	id = le64toh(tn->preamble[1]);
	end = hand_over(tn);
	if (end == NULL)
		return;
	log_info("raft-tls: accepted peer=%s id=%llu address=%s cn=%s "
		 "version=%s", tn->peer, (unsigned long long)id, tn->address,
		 tn->cn,
		 gnutls_protocol_get_name(gnutls_protocol_get_version(
			 tn->session)));
	tt->accept_cb(tt->transport, id, tn->address, end);
	free(tn->address);
	tn->address = NULL;
}

/* Move the tunnel on as far as the bytes in `in` allow. */
static void drive(struct tunnel *tn)
{
	if (tn->state == T_HANDSHAKE)
		handshake_step(tn);
	if (tn->state == T_PREAMBLE)
		preamble_step(tn);
	if (tn->state == T_RELAY)
		relay_in(tn);
}

/* ---------------------------------------------------------------- TCP side */

static void tcp_alloc_cb(uv_handle_t *handle, size_t size, uv_buf_t *buf)
{
	struct tunnel *tn = handle->data;

	(void)size;
	if (tn->in_start > 0) {
		memmove(tn->in, tn->in + tn->in_start,
			tn->in_end - tn->in_start);
		tn->in_end -= tn->in_start;
		tn->in_start = 0;
	}
	/* Empty only if the relay did not drain `in` while reading, which it
	 * always does (it stops reading instead); libuv then reports
	 * UV_ENOBUFS and the tunnel closes. */
	*buf = uv_buf_init(tn->in + tn->in_end,
			   (unsigned)(sizeof tn->in - tn->in_end));
}

static void tcp_read_cb(uv_stream_t *stream, ssize_t nread,
			const uv_buf_t *buf)
{
	struct tunnel *tn = stream->data;

	(void)buf;
	if (tn->state == T_CLOSING || nread == 0)
		return;
	if (nread < 0) {
		tn->tcp_eof = 1;
		if (tn->state == T_RELAY) {
			log_info("raft-tls: connection closed peer=%s cn=%s: %s",
				 tn->peer, tn->cn, uv_strerror((int)nread));
			tunnel_close(tn, RAFT_NOCONNECTION);
		} else {
			refuse(tn, 0, "connection closed during the handshake: "
				      "%s", uv_strerror((int)nread));
		}
		return;
	}
	tn->in_end += (size_t)nread;
	drive(tn);
}

static void peer_name(struct tunnel *tn)
{
	struct sockaddr_storage ss;
	int len = sizeof ss;
	char ip[48];

	if (uv_tcp_getpeername(&tn->tcp, (struct sockaddr *)&ss, &len) != 0 ||
	    ss.ss_family != AF_INET)
		return;
	uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
	snprintf(tn->peer, sizeof tn->peer, "%s:%d", ip,
		 ntohs(((struct sockaddr_in *)&ss)->sin_port));
}

/* TCP is up (either way): start the TLS handshake. */
static void tcp_up(struct tunnel *tn)
{
	int rv;

	uv_tcp_nodelay(&tn->tcp, 1);
	rv = session_start(tn);
	if (rv < 0) {
		refuse(tn, 0, "session: %s", gnutls_strerror(rv));
		return;
	}
	rv = uv_read_start((uv_stream_t *)&tn->tcp, tcp_alloc_cb, tcp_read_cb);
	if (rv != 0) {
		refuse(tn, 0, "read: %s", uv_strerror(rv));
		return;
	}
	tn->state = T_HANDSHAKE;
	drive(tn); /* a client sends its hello now */
}

static void reject_closed_cb(uv_handle_t *handle)
{
	struct reject *r = handle->data;
	struct tls_transport *tt = r->tt;

	free(r);
	tt->n_rejects--;
	maybe_closed(tt);
}

/* Too many connections: accept this one and close it. */
static void reject(struct tls_transport *tt)
{
	struct reject *r = malloc(sizeof *r);

	if (r == NULL)
		return; /* libuv waits for an accept; we cannot give one */
	r->tt = tt;
	uv_tcp_init(tt->loop, &r->tcp);
	r->tcp.data = r;
	tt->n_rejects++;
	uv_accept((uv_stream_t *)&tt->listener, (uv_stream_t *)&r->tcp);
	uv_close((uv_handle_t *)&r->tcp, reject_closed_cb);
	if (refusal_log_ok(tt))
		log_warn("raft-tls: refused connection reason=\"too many "
			 "connections\" pending=%u incoming=%u",
			 tt->n_pending, tt->n_incoming);
}

static void listen_cb(uv_stream_t *server, int status)
{
	struct tls_transport *tt = server->data;
	struct tunnel *tn;
	int rv;

	if (status < 0) {
		log_warn("raft-tls: accept: %s", uv_strerror(status));
		return;
	}
	if (tt->closing)
		return;
	if (tt->n_pending >= CONSENSUS_TLS_MAX_PENDING ||
	    tt->n_incoming >= CONSENSUS_TLS_MAX_INCOMING) {
		reject(tt);
		return;
	}
	tn = tunnel_new(tt, 1);
	if (tn == NULL) {
		reject(tt);
		return;
	}
	rv = uv_accept(server, (uv_stream_t *)&tn->tcp);
	if (rv != 0) {
		log_warn("raft-tls: accept: %s", uv_strerror(rv));
		tunnel_close(tn, 0);
		return;
	}
	peer_name(tn);
	uv_timer_start(&tn->timer, deadline_cb, tt->handshake_ms, 0);
	tcp_up(tn);
}

static void connect_cb(uv_connect_t *c, int status)
{
	struct tunnel *tn = c->data;

	if (tn->state == T_CLOSING)
		return;
	if (status < 0) {
		/* raft retries every second: not worth a warning each time. */
		log_debug("raft-tls: connect id=%llu address=%s: %s",
			  (unsigned long long)tn->peer_id, tn->peer,
			  uv_strerror(status));
		snprintf(tn->tt->transport->errmsg, RAFT_ERRMSG_BUF_SIZE,
			 "uv_tcp_connect(): %s", uv_strerror(status));
		tunnel_close(tn, RAFT_NOCONNECTION);
		return;
	}
	tcp_up(tn);
}

/* -------------------------------------------------------- raft_uv_transport */

/* "a.b.c.d:port" as raft_uv parses it (IPv4 only). */
static int parse_address(const char *address, struct sockaddr_in *sa)
{
	char host[64];
	const char *colon = strrchr(address, ':');
	char *end;
	long port;

	if (colon == NULL || (size_t)(colon - address) >= sizeof host)
		return -1;
	memcpy(host, address, (size_t)(colon - address));
	host[colon - address] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || end == colon + 1 || port < 1 || port > 65535)
		return -1;
	return uv_ip4_addr(host, (int)port, sa) == 0 ? 0 : -1;
}

static int transport_init(struct raft_uv_transport *t, raft_id id,
			  const char *address)
{
	struct tls_transport *tt = t->impl;

	tt->id = id;
	free(tt->address);
	tt->address = strdup(address);
	if (tt->address == NULL) {
		snprintf(t->errmsg, RAFT_ERRMSG_BUF_SIZE, "out of memory");
		return RAFT_NOMEM;
	}
	/* The only handle opened before listen; closed by t->close. */
	uv_tcp_init(tt->loop, &tt->listener);
	tt->listener.data = tt;
	tt->listener_open = 1;
	return 0;
}

static int transport_listen(struct raft_uv_transport *t, raft_uv_accept_cb cb)
{
	struct tls_transport *tt = t->impl;
	struct sockaddr_in sa;
	int rv;

	tt->accept_cb = cb;
	if (parse_address(tt->address, &sa) != 0) {
		snprintf(t->errmsg, RAFT_ERRMSG_BUF_SIZE,
			 "tls: bad address %s", tt->address);
		return RAFT_NOCONNECTION;
	}
	rv = uv_tcp_bind(&tt->listener, (const struct sockaddr *)&sa, 0);
	if (rv == 0)
		rv = uv_listen((uv_stream_t *)&tt->listener, BACKLOG,
			       listen_cb);
	if (rv != 0) {
		snprintf(t->errmsg, RAFT_ERRMSG_BUF_SIZE, "tls: listen %s: %s",
			 tt->address, uv_strerror(rv));
		return RAFT_IOERR;
	}
	log_info("raft-tls: listening address=%s cn=%s", tt->address,
		 tt->creds->cn);
	return 0;
}

static int transport_connect(struct raft_uv_transport *t,
			     struct raft_uv_connect *req, raft_id id,
			     const char *address, raft_uv_connect_cb cb)
{
	struct tls_transport *tt = t->impl;
	struct sockaddr_in sa;
	struct tunnel *tn;
	int rv;

	if (tt->closing)
		return RAFT_CANCELED;
	if (parse_address(address, &sa) != 0) {
		snprintf(t->errmsg, RAFT_ERRMSG_BUF_SIZE,
			 "tls: bad address %s", address);
		return RAFT_NOCONNECTION;
	}
	tn = tunnel_new(tt, 0);
	if (tn == NULL) {
		snprintf(t->errmsg, RAFT_ERRMSG_BUF_SIZE, "out of memory");
		return RAFT_NOMEM;
	}
	tn->peer_id = id;
	snprintf(tn->peer, sizeof tn->peer, "%s", address);
	rv = uv_tcp_connect(&tn->connect, &tn->tcp,
			    (const struct sockaddr *)&sa, connect_cb);
	if (rv != 0) {
		/* Fails now: the callback must not fire (req stays unset). */
		snprintf(t->errmsg, RAFT_ERRMSG_BUF_SIZE,
			 "uv_tcp_connect(): %s", uv_strerror(rv));
		tunnel_close(tn, RAFT_NOCONNECTION);
		return RAFT_NOCONNECTION;
	}
	req->cb = cb;
	tn->req = req;
	uv_timer_start(&tn->timer, deadline_cb, tt->handshake_ms, 0);
	return 0;
}

static void listener_closed_cb(uv_handle_t *handle)
{
	struct tls_transport *tt = handle->data;

	tt->listener_open = 0;
	maybe_closed(tt);
}

static void transport_close_fn(struct raft_uv_transport *t,
			       raft_uv_transport_close_cb cb)
{
	struct tls_transport *tt = t->impl;

	tt->closing = 1;
	tt->close_cb = cb;
	for (struct tunnel *tn = tt->tunnels; tn != NULL; tn = tn->next)
		tunnel_close(tn, RAFT_CANCELED);
	if (tt->listener_open)
		uv_close((uv_handle_t *)&tt->listener, listener_closed_cb);
	else
		maybe_closed(tt); /* cannot happen: raft inits first */
}

/* ---------------------------------------------------------------- public */

int consensus_tls_transport_init(struct raft_uv_transport *t,
				 struct uv_loop_s *loop, const char *ca_file,
				 const char *cert_file, const char *key_file,
				 char *errmsg, size_t errlen)
{
	void *data = t->data;
	struct tls_transport *tt;
	const char *errpos = NULL;
	int rv;

	memset(t, 0, sizeof *t);
	t->data = data;
	if (ca_file == NULL || cert_file == NULL || key_file == NULL) {
		set_err(errmsg, errlen,
			"tls: ca_file, cert_file and key_file are all needed");
		return CONSENSUS_ERROR;
	}
	tt = calloc(1, sizeof *tt);
	if (tt == NULL) {
		set_err(errmsg, errlen, "tls: out of memory");
		return CONSENSUS_NOMEM;
	}
	tt->transport = t;
	tt->loop = loop;
	tt->handshake_ms = CONSENSUS_TLS_HANDSHAKE_MS;
	tt->ca_file = strdup(ca_file);
	tt->cert_file = strdup(cert_file);
	tt->key_file = strdup(key_file);
	if (tt->ca_file == NULL || tt->cert_file == NULL ||
	    tt->key_file == NULL) {
		set_err(errmsg, errlen, "tls: out of memory");
		rv = CONSENSUS_NOMEM;
		goto err_free;
	}
	rv = gnutls_priority_init(&tt->priority, PRIORITY, &errpos);
	if (rv < 0) {
		set_err(errmsg, errlen, "tls: priority \"%s\": %s", PRIORITY,
			gnutls_strerror(rv));
		rv = CONSENSUS_ERROR;
		goto err_free;
	}
	rv = creds_load(ca_file, cert_file, key_file, &tt->creds, errmsg,
			errlen);
	if (rv != 0)
		goto err_priority;
	t->impl = tt;
	t->init = transport_init;
	t->listen = transport_listen;
	t->connect = transport_connect;
	t->close = transport_close_fn;
	log_info("raft-tls: credentials loaded cn=%s ca=%s", tt->creds->cn,
		 ca_file);
	return 0;

err_priority:
	gnutls_priority_deinit(tt->priority);
err_free:
	free(tt->ca_file);
	free(tt->cert_file);
	free(tt->key_file);
	free(tt);
	return rv;
}

void consensus_tls_transport_close(struct raft_uv_transport *t)
{
	struct tls_transport *tt = t->impl;

	if (tt == NULL)
		return;
	if (tt->tunnels != NULL || tt->listener_open || tt->n_rejects > 0)
		log_error("raft-tls: transport freed with handles open");
	creds_unref(tt->creds);
	gnutls_priority_deinit(tt->priority);
	free(tt->address);
	free(tt->ca_file);
	free(tt->cert_file);
	free(tt->key_file);
	free(tt);
	t->impl = NULL;
}

int consensus_tls_transport_reload(struct raft_uv_transport *t, char *errmsg,
				   size_t errlen)
{
	struct tls_transport *tt = t->impl;
	struct creds *c;
	int rv;

	rv = creds_load(tt->ca_file, tt->cert_file, tt->key_file, &c, errmsg,
			errlen);
	if (rv != 0) {
		log_warn("raft-tls: reload failed, keeping the credentials in "
			 "use: %s", errmsg != NULL ? errmsg : "");
		return rv;
	}
	creds_unref(tt->creds);
	tt->creds = c;
	log_info("raft-tls: credentials reloaded cn=%s", c->cn);
	return 0;
}

void consensus_tls_transport_set_handshake_ms(struct raft_uv_transport *t,
					      unsigned ms)
{
	struct tls_transport *tt = t->impl;

	tt->handshake_ms = ms;
}

bool consensus_tls_transport_is(const struct raft_uv_transport *t)
{
	return t->init == transport_init;
}
