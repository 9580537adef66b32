/* test_peer.c - peer requests against a tiny HTTP server run inside the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "core/log.h"
#include "daemon/peer.h"

/* ---- the test server --------------------------------------------------- */

/* Each connection runs in its own thread and answers requests in a
 * keep-alive loop. ANSWER replies "<method> <target>" with the status and
 * Retry-After taken from "status=NNN" and "retry=N" in the target; SILENT
 * reads the request and never answers. */
enum srv_mode { SRV_ANSWER, SRV_SILENT };

#define SRV_MAX_CONNS 256
#define REQ_BUF (64 * 1024)

struct server {
	int lfd;
	int port;
	int stop_pipe[2];
	pthread_t thread;
	enum srv_mode mode;

	pthread_mutex_t mu;
	int conns;
	int requests;
	char last_line[512];
	char last_headers[4096];
	char last_body[4096];
	size_t last_body_len;

	int fds[SRV_MAX_CONNS];
	pthread_t threads[SRV_MAX_CONNS];
	int nconn;
};

struct conn {
	struct server *s;
	int fd;
};

static int write_all(int fd, const char *p, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static size_t content_length(const char *headers)
{
	const char *h = headers;

	while ((h = strchr(h, '\n')) != NULL) {
		h++;
		if (strncasecmp(h, "Content-Length:", 15) == 0)
			return strtoul(h + 15, NULL, 10);
	}
	return 0;
}

/* 17 MiB of body: over peer.c's 16 MiB bound. Stops when the client hangs up. */
static void send_big(int fd)
{
	static const char head[] = "HTTP/1.1 200 OK\r\nContent-Length: 17825792\r\n\r\n";
	char *chunk = calloc(1, 64 * 1024);
	int i;

	if (write_all(fd, head, strlen(head)) == 0)
		for (i = 0; i < 17825792 / (64 * 1024); i++)
			if (write_all(fd, chunk, 64 * 1024) != 0)
				break;
	free(chunk);
}

static void *conn_main(void *arg)
{
	struct conn *c = arg;
	struct server *s = c->s;
	char *buf = malloc(REQ_BUF + 1);
	size_t len = 0;
	ssize_t n;
	char *end;
	size_t hlen;
	size_t blen;
	char method[16];
	char target[400];
	char resp[1024];
	char body[512];
	const char *q;
	int status;
	int retry;
	int m;

	for (;;) {
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
		if (end == NULL || len < (size_t)(end + 4 - buf) +
				      content_length(buf)) {
			if (len == REQ_BUF)
				break;
			n = recv(c->fd, buf + len, REQ_BUF - len, 0);
			if (n <= 0)
				break;
			len += (size_t)n;
			continue;
		}
		hlen = (size_t)(end + 4 - buf);
		blen = content_length(buf);

		pthread_mutex_lock(&s->mu);
		s->requests++;
		snprintf(s->last_line, sizeof(s->last_line), "%.*s",
			 (int)strcspn(buf, "\r\n"), buf);
		snprintf(s->last_headers, sizeof(s->last_headers), "%.*s",
			 (int)hlen, buf);
		s->last_body_len = blen < sizeof(s->last_body) ? blen : 0;
		memcpy(s->last_body, buf + hlen, s->last_body_len);
		pthread_mutex_unlock(&s->mu);

		if (s->mode == SRV_SILENT) {
			/* Hold the connection until the client or stop ends it. */
			while (recv(c->fd, buf, REQ_BUF, 0) > 0)
				;
			break;
		}

		method[0] = target[0] = '\0';
		sscanf(buf, "%15s %399s", method, target);
		if (strstr(target, "big=1") != NULL) {
			send_big(c->fd);
			break;
		}
		status = 200;
		retry = -1;
		if ((q = strstr(target, "status=")) != NULL)
			status = atoi(q + 7);
		if ((q = strstr(target, "retry=")) != NULL)
			retry = atoi(q + 6);
		snprintf(body, sizeof(body), "%s %s", method, target);
		m = snprintf(resp, sizeof(resp),
			     "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n"
			     "Content-Type: text/plain\r\n",
			     status, strlen(body));
		if (retry >= 0)
			m += snprintf(resp + m, sizeof(resp) - (size_t)m,
				      "Retry-After: %d\r\n", retry);
		m += snprintf(resp + m, sizeof(resp) - (size_t)m, "\r\n%s",
			      body);
		if (write_all(c->fd, resp, (size_t)m) != 0)
			break;
		memmove(buf, buf + hlen + blen, len - hlen - blen);
		len -= hlen + blen;
	}
	free(buf);
	free(c);
	return NULL;
}

static void *accept_main(void *arg)
{
	struct server *s = arg;
	struct pollfd pfd[2];
	struct conn *c;
	int fd;

	for (;;) {
		pfd[0].fd = s->lfd;
		pfd[0].events = POLLIN;
		pfd[1].fd = s->stop_pipe[0];
		pfd[1].events = POLLIN;
		if (poll(pfd, 2, -1) < 0)
			continue;
		if (pfd[1].revents != 0)
			break;
		fd = accept(s->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		if (s->nconn == SRV_MAX_CONNS) {
			close(fd);
			continue;
		}
		c = malloc(sizeof(*c));
		c->s = s;
		c->fd = fd;
		pthread_mutex_lock(&s->mu);
		s->conns++;
		pthread_mutex_unlock(&s->mu);
		s->fds[s->nconn] = fd;
		pthread_create(&s->threads[s->nconn], NULL, conn_main, c);
		s->nconn++;
	}
	return NULL;
}

static void server_start(struct server *s, enum srv_mode mode)
{
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int one = 1;

	memset(s, 0, sizeof(*s));
	s->mode = mode;
	pthread_mutex_init(&s->mu, NULL);
	assert_int_equal(pipe(s->stop_pipe), 0);
	s->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s->lfd >= 0);
	setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = 0;
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->lfd, 128), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &alen), 0);
	s->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&s->thread, NULL, accept_main, s), 0);
}

static void server_stop(struct server *s)
{
	int i;

	assert_int_equal(write(s->stop_pipe[1], "x", 1), 1);
	pthread_join(s->thread, NULL);
	for (i = 0; i < s->nconn; i++)
		shutdown(s->fds[i], SHUT_RDWR);
	for (i = 0; i < s->nconn; i++) {
		pthread_join(s->threads[i], NULL);
		close(s->fds[i]);
	}
	close(s->lfd);
	close(s->stop_pipe[0]);
	close(s->stop_pipe[1]);
	pthread_mutex_destroy(&s->mu);
}

static int server_requests(struct server *s)
{
	int n;

	pthread_mutex_lock(&s->mu);
	n = s->requests;
	pthread_mutex_unlock(&s->mu);
	return n;
}

static int server_conns(struct server *s)
{
	int n;

	pthread_mutex_lock(&s->mu);
	n = s->conns;
	pthread_mutex_unlock(&s->mu);
	return n;
}

/* ---- fixture ----------------------------------------------------------- */

#define MAX_GOT 128

struct got {
	struct fixture *f;
	int calls;
	int status;
	char body[512];
	size_t body_len;
	unsigned retry_after;
	char error[256];
	int on_loop;
	int seq;
};

struct fixture {
	uv_loop_t loop;
	pthread_t loop_thread;
	struct server srv;
	char addr[64];
	struct peer *p;
	struct got got[MAX_GOT];
	int completed;
	int closed;
	int closed_seq;
	int seq;
};

static void on_done(void *arg, const struct peer_result *res)
{
	struct got *g = arg;

	g->calls++;
	g->status = res->status;
	snprintf(g->body, sizeof(g->body), "%s", res->body);
	g->body_len = res->body_len;
	g->retry_after = res->retry_after;
	snprintf(g->error, sizeof(g->error), "%s", res->error);
	g->on_loop = pthread_equal(pthread_self(), g->f->loop_thread);
	g->seq = ++g->f->seq;
	g->f->completed++;
}

static void on_closed(void *arg)
{
	struct fixture *f = arg;

	f->closed++;
	f->closed_seq = ++f->seq;
}

static struct fixture *fixture_new(enum srv_mode mode, unsigned timeout_ms)
{
	struct fixture *f = calloc(1, sizeof(*f));
	int i;

	assert_non_null(f);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	f->loop_thread = pthread_self();
	server_start(&f->srv, mode);
	snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", f->srv.port);
	for (i = 0; i < MAX_GOT; i++)
		f->got[i].f = f;
	f->p = peer_new(&f->loop, timeout_ms,
			&(struct nodecred){.node_id = 7,
					   .secret = "peer-test-secret-000"});
	assert_non_null(f->p);
	alarm(30); /* a hang fails the test instead of blocking CI */
	return f;
}

static void run_until(struct fixture *f, int completed)
{
	while (f->completed < completed)
		uv_run(&f->loop, UV_RUN_ONCE);
}

static void peer_close_and_wait(struct fixture *f)
{
	peer_close(f->p, on_closed, f);
	while (!f->closed)
		uv_run(&f->loop, UV_RUN_ONCE);
	f->p = NULL;
	assert_int_equal(f->closed, 1);
}

static void fixture_free(struct fixture *f)
{
	if (f->p != NULL)
		peer_close_and_wait(f);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	server_stop(&f->srv);
	alarm(0);
	free(f);
}

static struct peer_request req_make(struct fixture *f, const char *method,
				    const char *target)
{
	struct peer_request r;

	memset(&r, 0, sizeof(r));
	r.address = f->addr;
	r.method = method;
	r.target = target;
	return r;
}

/* ---- tests ------------------------------------------------------------- */

static void post_roundtrip_headers_body_and_retry_after(void **state)
{
	struct fixture *f = fixture_new(SRV_ANSWER, 5000);
	struct peer_request r = req_make(f, "POST",
					 "/v1/runs?limit=5&status=503&retry=7");
	static const char body[] = "{\"task\":\"a\",\"n\":1}";
	struct got *g = &f->got[0];

	r.on_behalf = "operator ci-bot 127.0.0.2";
	r.content_type = "application/json";
	r.body = body;
	r.body_len = strlen(body);
	r.forwarded = 1;
	assert_int_equal(peer_send(f->p, &r, on_done, g), 0);
	run_until(f, 1);

	assert_int_equal(g->calls, 1);
	assert_true(g->on_loop);
	assert_int_equal(g->status, 503);
	assert_string_equal(g->body, "POST /v1/runs?limit=5&status=503&retry=7");
	assert_int_equal(g->body_len, strlen(g->body));
	assert_int_equal(g->retry_after, 7);
	assert_string_equal(g->error, "");

	assert_string_equal(f->srv.last_line,
			    "POST /v1/runs?limit=5&status=503&retry=7 HTTP/1.1");
	/* signed as node 7, for the client; never a user's token */
	assert_non_null(strstr(f->srv.last_headers, "\r\nX-Flowd-Node: 7\r\n"));
	assert_non_null(strstr(f->srv.last_headers, "\r\nX-Flowd-Node-Auth: "));
	assert_non_null(strstr(f->srv.last_headers,
			       "\r\nX-Flowd-On-Behalf: operator ci-bot "
			       "127.0.0.2\r\n"));
	assert_null(strcasestr(f->srv.last_headers, "Authorization:"));
	assert_non_null(strstr(f->srv.last_headers,
			       "\r\nContent-Type: application/json\r\n"));
	assert_non_null(strstr(f->srv.last_headers,
			       "\r\nX-Flowd-Forwarded: 1\r\n"));
	assert_null(strcasestr(f->srv.last_headers, "\r\nExpect:"));
	assert_int_equal(f->srv.last_body_len, strlen(body));
	assert_memory_equal(f->srv.last_body, body, strlen(body));

	/* A plain GET on the same peer: no optional headers, same connection. */
	r = req_make(f, "GET", "/v1/health");
	assert_int_equal(peer_send(f->p, &r, on_done, &f->got[1]), 0);
	run_until(f, 2);
	assert_int_equal(f->got[1].status, 200);
	assert_int_equal(f->got[1].retry_after, 0);
	assert_string_equal(f->got[1].body, "GET /v1/health");
	assert_string_equal(f->srv.last_line, "GET /v1/health HTTP/1.1");
	assert_null(strcasestr(f->srv.last_headers, "Authorization:"));
	assert_null(strcasestr(f->srv.last_headers, "X-Flowd-Forwarded:"));
	assert_null(strcasestr(f->srv.last_headers, "Content-Type:"));
	assert_int_equal(server_conns(&f->srv), 1); /* keep-alive reuse */
	fixture_free(f);
}

static void put_and_delete_use_their_methods(void **state)
{
	struct fixture *f = fixture_new(SRV_ANSWER, 5000);
	struct peer_request r = req_make(f, "PUT", "/v1/tasks/a?status=201");
	static const char body[] = "{\"command\":\"true\"}";

	r.content_type = "application/json";
	r.body = body;
	r.body_len = strlen(body);
	assert_int_equal(peer_send(f->p, &r, on_done, &f->got[0]), 0);
	run_until(f, 1);
	assert_int_equal(f->got[0].status, 201);
	assert_string_equal(f->got[0].body, "PUT /v1/tasks/a?status=201");
	assert_string_equal(f->srv.last_line,
			    "PUT /v1/tasks/a?status=201 HTTP/1.1");
	assert_int_equal(f->srv.last_body_len, strlen(body));
	assert_memory_equal(f->srv.last_body, body, strlen(body));

	r = req_make(f, "DELETE", "/v1/tasks/a?status=204");
	assert_int_equal(peer_send(f->p, &r, on_done, &f->got[1]), 0);
	run_until(f, 2);
	assert_int_equal(f->got[1].status, 204);
	assert_string_equal(f->got[1].body, "");
	assert_int_equal(f->got[1].body_len, 0);
	assert_string_equal(f->srv.last_line,
			    "DELETE /v1/tasks/a?status=204 HTTP/1.1");
	assert_int_equal(f->srv.last_body_len, 0);
	fixture_free(f);
}

static void hundred_concurrent_requests_complete_once(void **state)
{
	struct fixture *f = fixture_new(SRV_ANSWER, 10000);
	char targets[100][32];
	char want[64];
	struct peer_request r;
	int i;

	for (i = 0; i < 100; i++) {
		snprintf(targets[i], sizeof(targets[i]), "/r/%d", i);
		r = req_make(f, "GET", targets[i]);
		assert_int_equal(peer_send(f->p, &r, on_done, &f->got[i]), 0);
	}
	run_until(f, 100);
	for (i = 0; i < 100; i++) {
		snprintf(want, sizeof(want), "GET /r/%d", i);
		assert_int_equal(f->got[i].calls, 1);
		assert_true(f->got[i].on_loop);
		assert_int_equal(f->got[i].status, 200);
		assert_string_equal(f->got[i].body, want);
	}
	assert_int_equal(server_requests(&f->srv), 100);
	assert_true(server_conns(&f->srv) >= 1 &&
		    server_conns(&f->srv) <= PEER_MAX_HOST_CONNS);
	peer_close_and_wait(f);
	for (i = 0; i < 100; i++)
		assert_int_equal(f->got[i].calls, 1);
	fixture_free(f);
}

static void connection_refused_is_status_zero(void **state)
{
	struct fixture *f = fixture_new(SRV_ANSWER, 5000);
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct peer_request r;

	/* A port that was bound once and is now closed: nobody listens. */
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	close(fd);
	snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", ntohs(a.sin_port));

	r = req_make(f, "POST", "/v1/runs");
	assert_int_equal(peer_send(f->p, &r, on_done, &f->got[0]), 0);
	run_until(f, 1);
	assert_int_equal(f->got[0].calls, 1);
	assert_true(f->got[0].on_loop);
	assert_int_equal(f->got[0].status, 0);
	assert_string_equal(f->got[0].body, "");
	assert_true(strlen(f->got[0].error) > 0);
	fixture_free(f);
}

static void silent_server_times_out(void **state)
{
	struct fixture *f = fixture_new(SRV_SILENT, 300);
	struct peer_request r = req_make(f, "GET", "/v1/slow");
	uint64_t t0 = uv_hrtime();
	uint64_t ms;

	assert_int_equal(peer_send(f->p, &r, on_done, &f->got[0]), 0);
	run_until(f, 1);
	ms = (uv_hrtime() - t0) / 1000000;
	assert_int_equal(f->got[0].calls, 1);
	assert_int_equal(f->got[0].status, 0);
	assert_true(strlen(f->got[0].error) > 0);
	assert_true(ms >= 280 && ms < 3000);
	fixture_free(f);
}

static void close_fails_inflight_with_shutting_down(void **state)
{
	struct fixture *f = fixture_new(SRV_SILENT, 20000);
	struct peer_request r = req_make(f, "POST", "/v1/runs");
	int i;

	r.body = "x";
	r.body_len = 1;
	for (i = 0; i < 5; i++)
		assert_int_equal(peer_send(f->p, &r, on_done, &f->got[i]), 0);
	/* Wait until all five are on the wire (the server has read them). */
	for (i = 0; i < 1000 && server_requests(&f->srv) < 5; i++)
		usleep(5000);
	assert_int_equal(server_requests(&f->srv), 5);
	/* One more that is still queued when the close comes. */
	assert_int_equal(peer_send(f->p, &r, on_done, &f->got[5]), 0);

	peer_close(f->p, on_closed, f);
	assert_int_equal(peer_send(f->p, &r, on_done, &f->got[6]), -1);
	while (!f->closed)
		uv_run(&f->loop, UV_RUN_ONCE);
	f->p = NULL;
	for (i = 0; i < 6; i++) {
		assert_int_equal(f->got[i].calls, 1);
		assert_true(f->got[i].on_loop);
		assert_int_equal(f->got[i].status, 0);
		assert_string_equal(f->got[i].error, "shutting down");
		assert_true(f->got[i].seq < f->closed_seq);
	}
	assert_int_equal(f->got[6].calls, 0);
	fixture_free(f); /* checks uv_loop_close() == 0 */
}

static void oversized_body_is_status_zero(void **state)
{
	struct fixture *f = fixture_new(SRV_ANSWER, 10000);
	struct peer_request r = req_make(f, "GET", "/v1/dump?big=1");

	assert_int_equal(peer_send(f->p, &r, on_done, &f->got[0]), 0);
	run_until(f, 1);
	assert_int_equal(f->got[0].calls, 1);
	assert_int_equal(f->got[0].status, 0);
	assert_non_null(strstr(f->got[0].error, "too large"));
	assert_int_equal(f->got[0].body_len, 0);
	fixture_free(f);
}

static void crlf_in_header_is_rejected_async(void **state)
{
	struct fixture *f = fixture_new(SRV_ANSWER, 5000);
	struct peer_request r = req_make(f, "GET", "/v1/x");

	r.on_behalf = "admin a\r\nX-Evil: 1";
	assert_int_equal(peer_send(f->p, &r, on_done, &f->got[0]), 0);
	assert_int_equal(f->got[0].calls, 0); /* never synchronously */
	run_until(f, 1);
	assert_int_equal(f->got[0].calls, 1);
	assert_int_equal(f->got[0].status, 0);
	assert_non_null(strstr(f->got[0].error, "invalid request"));
	assert_int_equal(server_requests(&f->srv), 0);
	fixture_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(post_roundtrip_headers_body_and_retry_after),
		cmocka_unit_test(put_and_delete_use_their_methods),
		cmocka_unit_test(hundred_concurrent_requests_complete_once),
		cmocka_unit_test(connection_refused_is_status_zero),
		cmocka_unit_test(silent_server_times_out),
		cmocka_unit_test(close_fails_inflight_with_shutting_down),
		cmocka_unit_test(oversized_body_is_status_zero),
		cmocka_unit_test(crlf_in_header_is_rejected_async),
	};

	if (getenv("FLOWD_TRACE") != NULL)
		flowd_log_level = FLOWD_LOG_DEBUG;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
