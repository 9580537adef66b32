/* test_transport_tls.c - consensus/transport_tls.c without raft: two or more
 * TLS transports and raw TCP clients on one loop over loopback, certificates
 * from scripts/make-certs.sh under build/tmp-transport-tls-test/<pid>/, the
 * streams used the way raft_uv uses them, and every loop closed with
 * uv_loop_close() == 0. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <endian.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "consensus/consensus.h"
#include "consensus/transport_tls.h"
#include "core/log.h"

#define PAYLOAD (3 * 1024 * 1024 + 17) /* several records and pauses */

static char root[512];   /* build/tmp-transport-tls-test/<pid> */
static char good[600];   /* certificates of the cluster CA */
static char other[600];  /* another CA and its certificates */

/* ---------------------------------------------------------------- helpers */

static int rm_entry(const char *path, const struct stat *st, int flag,
		    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_rf(const char *path)
{
	nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int free_port(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int port = -1;

	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static void path(char *buf, size_t len, const char *dir, const char *file)
{
	snprintf(buf, len, "%s/%s", dir, file);
}

static void expire_cb(uv_timer_t *timer)
{
	*(int *)timer->data = 1;
}

static void flag_close_cb(uv_handle_t *handle)
{
	*(int *)handle->data = 1;
}

/* Run the loop until pred(arg) holds or timeout_ms of loop time passed. */
static int run_until(uv_loop_t *loop, int (*pred)(void *), void *arg,
		     unsigned timeout_ms)
{
	uv_timer_t timer;
	int expired = 0;
	int closed = 0;
	int ok;

	uv_timer_init(loop, &timer);
	timer.data = &expired;
	uv_timer_start(&timer, expire_cb, timeout_ms, 0);
	while (!(ok = pred(arg)) && !expired)
		uv_run(loop, UV_RUN_ONCE);
	timer.data = &closed;
	uv_close((uv_handle_t *)&timer, flag_close_cb);
	while (!closed)
		uv_run(loop, UV_RUN_ONCE);
	return ok;
}

static int never(void *arg)
{
	(void)arg;
	return 0;
}

/* ---------------------------------------------------------------- a raft stand-in */

/* One transport and what raft_uv would do with it: read accepted streams
 * (checking the bytes), write on the streams it connects. */
struct side {
	uv_loop_t *loop;
	struct raft_uv_transport t;
	raft_id id;
	char address[32];
	int accepted;
	raft_id acc_id;
	char acc_address[64];
	uv_stream_t *acc_stream;
	size_t received;
	int received_bad;
	int acc_eof;
	struct raft_uv_connect req;
	int connect_done;
	int connect_status;
	uv_stream_t *conn_stream;
	uv_write_t write;
	char *payload;
	int written;
	int closed;
};

static unsigned char pattern(size_t i)
{
	return (unsigned char)((i * 7 + i / 4096) & 0xff);
}

static void acc_alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
	static char chunk[65536];

	(void)h;
	(void)size;
	*buf = uv_buf_init(chunk, sizeof chunk);
}

static void acc_read_cb(uv_stream_t *stream, ssize_t nread,
			const uv_buf_t *buf)
{
	struct side *s = stream->data;

	if (nread < 0) {
		s->acc_eof = 1;
		uv_read_stop(stream);
		return;
	}
	for (ssize_t i = 0; i < nread; i++)
		if ((unsigned char)buf->base[i] != pattern(s->received + (size_t)i))
			s->received_bad++;
	s->received += (size_t)nread;
}

static void accept_cb(struct raft_uv_transport *t, raft_id id,
		      const char *address, struct uv_stream_s *stream)
{
	struct side *s = t->data;

	s->accepted++;
	s->acc_id = id;
	snprintf(s->acc_address, sizeof s->acc_address, "%s", address);
	if (s->acc_stream != NULL) {
		/* Keep the first; close the others as raft would. */
		uv_close((uv_handle_t *)stream, (uv_close_cb)raft_free);
		return;
	}
	s->acc_stream = stream;
	stream->data = s;
	uv_read_start(stream, acc_alloc_cb, acc_read_cb);
}

static void connect_cb(struct raft_uv_connect *req, struct uv_stream_s *stream,
		       int status)
{
	struct side *s = req->data;

	s->connect_done = 1;
	s->connect_status = status;
	if (status == 0) {
		s->conn_stream = stream;
		stream->data = s;
	}
}

static void write_cb(uv_write_t *w, int status)
{
	struct side *s = w->data;

	s->written = status == 0 ? 1 : -1;
}

static void closed_cb(struct raft_uv_transport *t)
{
	struct side *s = t->data;

	s->closed = 1;
}

static void side_init(struct side *s, uv_loop_t *loop, raft_id id,
		      const char *dir, const char *name, const char *ca_dir)
{
	char ca[700], cert[700], key[700], file[64], err[256] = "";

	memset(s, 0, sizeof *s);
	s->loop = loop;
	s->id = id;
	snprintf(s->address, sizeof s->address, "127.0.0.1:%d", free_port());
	path(ca, sizeof ca, ca_dir != NULL ? ca_dir : dir, "ca.pem");
	snprintf(file, sizeof file, "%s.pem", name);
	path(cert, sizeof cert, dir, file);
	snprintf(file, sizeof file, "%s.key", name);
	path(key, sizeof key, dir, file);
	s->t.data = s;
	if (consensus_tls_transport_init(&s->t, loop, ca, cert, key, err,
					 sizeof err) != 0)
		fail_msg("init: %s", err);
	assert_ptr_equal(s->t.data, s);
	assert_true(consensus_tls_transport_is(&s->t));
	assert_int_equal(s->t.init(&s->t, id, s->address), 0);
}

static void side_listen(struct side *s)
{
	assert_int_equal(s->t.listen(&s->t, accept_cb), 0);
}

static void side_connect(struct side *s, const struct side *to)
{
	s->req.data = s;
	assert_int_equal(s->t.connect(&s->t, &s->req, to->id, to->address,
				      connect_cb),
			 0);
}

/* Close the streams (as raft does), then the transport, then free it. */
static int side_closed(void *arg)
{
	return ((struct side *)arg)->closed;
}

static void side_close(struct side *s)
{
	if (s->acc_stream != NULL)
		uv_close((uv_handle_t *)s->acc_stream, (uv_close_cb)raft_free);
	if (s->conn_stream != NULL)
		uv_close((uv_handle_t *)s->conn_stream, (uv_close_cb)raft_free);
	s->acc_stream = s->conn_stream = NULL;
	s->t.close(&s->t, closed_cb);
	assert_true(run_until(s->loop, side_closed, s, 5000));
	consensus_tls_transport_close(&s->t);
	free(s->payload);
	s->payload = NULL;
}

static void loop_done(uv_loop_t *loop)
{
	uv_run(loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(loop), 0);
}

/* ---------------------------------------------------------------- a raw TCP client */

struct raw {
	uv_tcp_t tcp;
	uv_connect_t connect;
	uv_write_t write;
	uv_buf_t out;
	int connected;
	int eof;                 /* the server closed the connection */
	size_t got;              /* bytes the server sent */
	int closed;
	char buf[4096];
};

static void raw_alloc_cb(uv_handle_t *h, size_t size, uv_buf_t *buf)
{
	struct raw *r = h->data;

	(void)size;
	*buf = uv_buf_init(r->buf, sizeof r->buf);
}

static void raw_read_cb(uv_stream_t *stream, ssize_t nread,
			const uv_buf_t *buf)
{
	struct raw *r = stream->data;

	(void)buf;
	if (nread < 0) {
		r->eof = 1;
		uv_read_stop(stream);
		return;
	}
	r->got += (size_t)nread;
}

static void raw_write_cb(uv_write_t *w, int status)
{
	(void)w;
	(void)status;
}

static void raw_connect_cb(uv_connect_t *c, int status)
{
	struct raw *r = c->data;

	if (status != 0) {
		r->eof = 1;
		return;
	}
	r->connected = 1;
	uv_read_start((uv_stream_t *)&r->tcp, raw_alloc_cb, raw_read_cb);
	if (r->out.len > 0)
		uv_write(&r->write, (uv_stream_t *)&r->tcp, &r->out, 1,
			 raw_write_cb);
}

static void raw_connect(struct raw *r, uv_loop_t *loop, const char *address,
			const void *send, size_t len)
{
	struct sockaddr_in sa;
	char host[32];
	const char *colon = strrchr(address, ':');

	memset(r, 0, sizeof *r);
	snprintf(host, sizeof host, "%.*s", (int)(colon - address), address);
	assert_int_equal(uv_ip4_addr(host, atoi(colon + 1), &sa), 0);
	uv_tcp_init(loop, &r->tcp);
	r->tcp.data = r;
	r->connect.data = r;
	r->out = uv_buf_init((char *)send, (unsigned)len);
	assert_int_equal(uv_tcp_connect(&r->connect, &r->tcp,
					(struct sockaddr *)&sa, raw_connect_cb),
			 0);
}

static void raw_close(struct raw *r)
{
	r->tcp.data = &r->closed;
	uv_close((uv_handle_t *)&r->tcp, flag_close_cb);
	while (!r->closed)
		uv_run(r->tcp.loop, UV_RUN_ONCE);
}

/* raft's handshake in clear, as raft_uv_tcp sends it. */
static size_t raft_preamble(char *buf, uint64_t id, const char *address)
{
	uint64_t v[3] = {htole64(1), htole64(id), htole64(24)};

	memset(buf, 0, 48);
	memcpy(buf, v, sizeof v);
	snprintf(buf + 24, 24, "%s", address);
	return 48;
}

/* ---------------------------------------------------------------- preds */

struct two {
	struct side *a, *b;
};

static int all_received(void *arg)
{
	struct two *p = arg;

	return p->a->received >= PAYLOAD && p->b->written != 0;
}

static int acc_eof(void *arg)
{
	return ((struct side *)arg)->acc_eof;
}

static int connect_done(void *arg)
{
	return ((struct side *)arg)->connect_done;
}

static int raw_eof(void *arg)
{
	return ((struct raw *)arg)->eof;
}

struct raws {
	struct raw *r;
	int n;
	int want;
};

static int raws_eof(void *arg)
{
	struct raws *p = arg;
	int n = 0;

	for (int i = 0; i < p->n; i++)
		n += p->r[i].eof;
	return n >= p->want;
}

static int raws_connected(void *arg)
{
	struct raws *p = arg;
	int n = 0;

	for (int i = 0; i < p->n; i++)
		n += p->r[i].connected;
	return n >= p->n;
}

/* ---------------------------------------------------------------- tests */

/* B (node 2) connects to A (node 1): A's accept callback gets B's id and
 * address and a stream that carries, decrypted and in order, what B wrote
 * on its stream; closing both leaves nothing on the loop. */
static void connected_peer_is_accepted_with_its_id_and_its_bytes(void **state)
{
	uv_loop_t loop;
	struct side a, b;
	struct two p = {&a, &b};
	uv_buf_t buf;

	(void)state;
	uv_loop_init(&loop);
	side_init(&a, &loop, 1, good, "node-1", NULL);
	side_init(&b, &loop, 2, good, "node-2", NULL);
	side_listen(&a);
	side_listen(&b);
	side_connect(&b, &a);
	assert_true(run_until(&loop, connect_done, &b, 5000));
	assert_int_equal(b.connect_status, 0);
	assert_non_null(b.conn_stream);

	b.payload = malloc(PAYLOAD);
	assert_non_null(b.payload);
	for (size_t i = 0; i < PAYLOAD; i++)
		b.payload[i] = (char)pattern(i);
	buf = uv_buf_init(b.payload, PAYLOAD);
	b.write.data = &b;
	assert_int_equal(uv_write(&b.write, b.conn_stream, &buf, 1, write_cb),
			 0);
	assert_true(run_until(&loop, all_received, &p, 20000));
	assert_int_equal(a.accepted, 1);
	assert_int_equal(a.acc_id, 2);
	assert_string_equal(a.acc_address, b.address);
	assert_int_equal(a.received, PAYLOAD);
	assert_int_equal(a.received_bad, 0);
	assert_int_equal(b.written, 1);

	/* raft closes the connecting end: the acceptor sees EOF. */
	uv_close((uv_handle_t *)b.conn_stream, (uv_close_cb)raft_free);
	b.conn_stream = NULL;
	assert_true(run_until(&loop, acc_eof, &a, 5000));
	side_close(&b);
	side_close(&a);
	loop_done(&loop);
}

/* A node with a certificate of another CA cannot connect (it cannot verify
 * A either), and A's accept callback never runs. */
static void peer_of_another_ca_never_reaches_raft(void **state)
{
	uv_loop_t loop;
	struct side a, c;

	(void)state;
	uv_loop_init(&loop);
	side_init(&a, &loop, 1, good, "node-1", NULL);
	side_init(&c, &loop, 3, other, "node-3", NULL);
	side_listen(&a);
	side_connect(&c, &a);
	assert_true(run_until(&loop, connect_done, &c, 5000));
	assert_int_equal(c.connect_status, RAFT_NOCONNECTION);
	assert_null(c.conn_stream);
	run_until(&loop, never, NULL, 200);
	assert_int_equal(a.accepted, 0);
	side_close(&c);
	side_close(&a);
	loop_done(&loop);
}

/* A certificate the CA did not sign is refused when loading, with a
 * message; nothing is left to close. */
static void init_refuses_a_certificate_the_ca_did_not_sign(void **state)
{
	struct raft_uv_transport t;
	uv_loop_t loop;
	char ca[700], cert[700], key[700], err[256] = "";

	(void)state;
	uv_loop_init(&loop);
	path(ca, sizeof ca, good, "ca.pem");
	path(cert, sizeof cert, other, "node-3.pem");
	path(key, sizeof key, other, "node-3.key");
	assert_int_equal(consensus_tls_transport_init(&t, &loop, ca, cert, key,
						      err, sizeof err),
			 CONSENSUS_ERROR);
	assert_non_null(strstr(err, "does not verify"));
	path(cert, sizeof cert, good, "missing.pem");
	assert_int_equal(consensus_tls_transport_init(&t, &loop, ca, cert, key,
						      err, sizeof err),
			 CONSENSUS_ERROR);
	assert_non_null(strstr(err, "cert_file"));
	loop_done(&loop);
}

/* Raft's preamble in clear, and a client that says nothing: both are
 * closed (the silent one at the handshake deadline), and nothing reaches
 * the accept callback. */
static void plain_tcp_and_silence_are_closed(void **state)
{
	uv_loop_t loop;
	struct side a;
	struct raw plain, silent;
	char pre[48];
	size_t len;

	(void)state;
	uv_loop_init(&loop);
	side_init(&a, &loop, 1, good, "node-1", NULL);
	consensus_tls_transport_set_handshake_ms(&a.t, 300);
	side_listen(&a);
	len = raft_preamble(pre, 2, "127.0.0.1:9");
	raw_connect(&plain, &loop, a.address, pre, len);
	raw_connect(&silent, &loop, a.address, NULL, 0);
	assert_true(run_until(&loop, raw_eof, &plain, 2000));
	assert_true(run_until(&loop, raw_eof, &silent, 2000));
	assert_int_equal(a.accepted, 0);
	raw_close(&plain);
	raw_close(&silent);
	side_close(&a);
	loop_done(&loop);
}

/* More handshakes than CONSENSUS_TLS_MAX_PENDING at once: the extra ones
 * are closed at once, the others wait for their deadline. */
static void extra_pending_connections_are_closed_at_once(void **state)
{
	enum { EXTRA = 4, N = CONSENSUS_TLS_MAX_PENDING + EXTRA };
	uv_loop_t loop;
	struct side a;
	struct raw r[N];
	struct raws p = {r, N, EXTRA};
	int eof = 0;

	(void)state;
	uv_loop_init(&loop);
	side_init(&a, &loop, 1, good, "node-1", NULL);
	side_listen(&a);
	for (int i = 0; i < N; i++)
		raw_connect(&r[i], &loop, a.address, NULL, 0);
	assert_true(run_until(&loop, raws_connected, &p, 2000));
	assert_true(run_until(&loop, raws_eof, &p, 2000));
	run_until(&loop, never, NULL, 100);
	for (int i = 0; i < N; i++)
		eof += r[i].eof;
	assert_int_equal(eof, EXTRA);
	for (int i = 0; i < N; i++)
		raw_close(&r[i]);
	side_close(&a);
	loop_done(&loop);
}

/* Closing a transport with a connect in flight calls it back with
 * RAFT_CANCELED before the close callback, and leaves nothing behind. */
static void close_cancels_a_pending_connect(void **state)
{
	uv_loop_t loop;
	struct side a, b;

	(void)state;
	uv_loop_init(&loop);
	side_init(&a, &loop, 1, good, "node-1", NULL);
	side_init(&b, &loop, 2, good, "node-2", NULL);
	side_listen(&a);
	side_connect(&b, &a);
	b.t.close(&b.t, closed_cb);
	while (!b.closed) {
		uv_run(&loop, UV_RUN_ONCE);
		if (!b.connect_done)
			assert_false(b.closed);
	}
	assert_int_equal(b.connect_done, 1);
	assert_int_equal(b.connect_status, RAFT_CANCELED);
	consensus_tls_transport_close(&b.t);
	run_until(&loop, never, NULL, 100);
	side_close(&a);
	loop_done(&loop);
}

/* A reload that cannot read the files keeps the credentials in use; one
 * that can swaps them, and new connections still work. */
static void reload_keeps_the_old_credentials_on_failure(void **state)
{
	uv_loop_t loop;
	struct side a, b;
	char key[700], moved[720], err[256] = "";

	(void)state;
	uv_loop_init(&loop);
	side_init(&a, &loop, 1, good, "node-1", NULL);
	side_init(&b, &loop, 2, good, "node-2", NULL);
	side_listen(&a);
	path(key, sizeof key, good, "node-1.key");
	snprintf(moved, sizeof moved, "%s.moved", key);
	assert_int_equal(rename(key, moved), 0);
	assert_int_equal(consensus_tls_transport_reload(&a.t, err, sizeof err),
			 CONSENSUS_ERROR);
	assert_non_null(strstr(err, "key_file"));
	assert_int_equal(rename(moved, key), 0);
	assert_int_equal(consensus_tls_transport_reload(&a.t, err, sizeof err),
			 0);
	side_connect(&b, &a);
	assert_true(run_until(&loop, connect_done, &b, 5000));
	assert_int_equal(b.connect_status, 0);
	side_close(&b);
	side_close(&a);
	loop_done(&loop);
}

/* ---------------------------------------------------------------- main */

static int make_certs(const char *dir, const char *names)
{
	char cmd[1400];

	snprintf(cmd, sizeof cmd, "scripts/make-certs.sh '%s' %s >/dev/null",
		 dir, names);
	return system(cmd);
}

static int group_setup(void **state)
{
	struct stat st;

	(void)state;
	if (stat("scripts/make-certs.sh", &st) != 0 && chdir("/work/main") != 0)
		return -1;
	mkdir("build", 0755);
	mkdir("build/tmp-transport-tls-test", 0755);
	snprintf(root, sizeof root, "build/tmp-transport-tls-test/%d",
		 (int)getpid());
	rm_rf(root);
	snprintf(good, sizeof good, "%s/good", root);
	snprintf(other, sizeof other, "%s/other", root);
	if (mkdir(root, 0755) != 0 || make_certs(good, "node-1 node-2") != 0 ||
	    make_certs(other, "node-3") != 0)
		return -1;
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	rm_rf(root);
	rmdir("build/tmp-transport-tls-test");
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(
			connected_peer_is_accepted_with_its_id_and_its_bytes),
		cmocka_unit_test(peer_of_another_ca_never_reaches_raft),
		cmocka_unit_test(init_refuses_a_certificate_the_ca_did_not_sign),
		cmocka_unit_test(plain_tcp_and_silence_are_closed),
		cmocka_unit_test(extra_pending_connections_are_closed_at_once),
		cmocka_unit_test(close_cancels_a_pending_connect),
		cmocka_unit_test(reload_keeps_the_old_credentials_on_failure),
	};

	flowd_log_level = getenv("FLOWD_TRACE") != NULL ? FLOWD_LOG_DEBUG
						       : FLOWD_LOG_WARN;
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
