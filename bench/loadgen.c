/* loadgen.c - HTTP/1.1 keep-alive load generator (epoll, pthreads), over
 * plain TCP or TLS (GnuTLS, non-blocking), and the `--stamp` step helper. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 16
#define MAX_CONNS 10000
#define MAX_THREADS 64
#define RBUF_INIT 16384
#define RBUF_MAX (8u << 20)
#define HIST_SUB 64 /* sub-buckets per power of two: ~1.5% resolution */
#define HIST_N (48 * HIST_SUB)
#define RETRY_MIN_NS 20000000LL   /* first reconnect delay, 20 ms */
#define RETRY_MAX_NS 1000000000LL /* longest reconnect delay */
#define TICK_MS 50                /* housekeeping: timeouts, reconnects */

enum cstate { C_DOWN, C_CONNECTING, C_HANDSHAKE, C_IDLE, C_BUSY };

struct target {
	struct sockaddr_in addr;
	char host[160]; /* Host header value: "host:port" */
	char name[128]; /* the URL's host: the name the certificate must hold */
	bool tls;       /* https:// */
};

struct conn {
	int fd;
	gnutls_session_t sess; /* NULL: plain TCP (or not connected yet) */
	enum cstate state;
	int target;
	bool want_out;
	/* request */
	char *wbuf;
	size_t wlen, woff, wcap;
	int64_t ref_ns;    /* latency reference, CLOCK_MONOTONIC */
	int64_t sent_ns;   /* actual send, CLOCK_MONOTONIC */
	int64_t sent_real; /* actual send, CLOCK_REALTIME */
	/* response */
	char *rbuf;
	size_t rlen, rcap;
	size_t hdr_end;  /* 0 until the header block is complete */
	int status;
	long long clen;  /* -1 unknown */
	bool chunked, until_close, close_after, done;
	size_t chunk_pos; /* raw parse offset of the next chunk line */
	size_t dec_len;   /* decoded chunked body bytes at rbuf + hdr_end */
	/* reconnect */
	int64_t retry_at;
	int64_t backoff;
	bool was_ready; /* counted in G.ready */
};

struct thr {
	int idx;
	pthread_t tid;
	int ep, tfd;
	struct conn *conns;
	int nconns, first_conn;
	int *idle; /* stack of idle connection indexes (open loop) */
	int nidle;
	int busy;
	double rate; /* this thread's share, per second; 0 = closed loop */
	unsigned turn; /* which of G.paths the next request asks for */
	uint64_t slot;
	uint64_t seq;
	bool stopping;
	/* results */
	uint64_t hist[HIST_N];
	uint64_t status[600];
	uint64_t sent, ok, responses, conn_errors, timeouts, connect_errors;
	uint64_t tls_errors; /* failed or timed-out handshakes */
	uint64_t unsent;
	int64_t max_lat;
	int64_t end_ns;
};

static struct {
	struct target targets[MAX_TARGETS];
	int ntargets;
	const char *path, *method, *body, *token, *print_ids, *tls_ca;
	bool any_tls;
	gnutls_certificate_credentials_t cred; /* shared by every session */
	atomic_bool tls_reported; /* the first handshake failure was printed */
	const char *paths[8]; /* --path, then each --also-path: taken in turn */
	int npaths;
	int connections, threads;
	double duration, rate, timeout;
	uint64_t requests;
	bool unique_key;
	double warmup;       /* --warmup S; < 0: none */
	atomic_bool started; /* G.t0 and G.t_end are set */
	atomic_int ready;    /* connections that were ready at least once */
	double connect_s;    /* --warmup: until every connection was up */
	size_t body_len;
	char key_prefix[64];
	FILE *ids;
	int64_t t0, t_end, req_timeout;
	atomic_uint_fast64_t claimed;
	atomic_bool exhausted;
} G;

static int64_t now_ns(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t mono(void)
{
	return now_ns(CLOCK_MONOTONIC);
}

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "loadgen: ");
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	exit(2);
}

static void *xmalloc(size_t n)
{
	void *p = calloc(1, n);
	if (!p)
		die("%s", "out of memory");
	return p;
}

/* ---- --stamp: a flow step that records when its process started. ---- */

static int stamp(const char *dir, int64_t start)
{
	const char *id = getenv("FLOWD_RUN_ID");
	char path[PATH_MAX], tmp[PATH_MAX], line[32];
	if (!id || !*id || strchr(id, '/') || id[0] == '.') {
		fprintf(stderr, "loadgen --stamp: FLOWD_RUN_ID missing or bad\n");
		return 2;
	}
	if (snprintf(path, sizeof path, "%s/%s", dir, id) >= (int)sizeof path ||
	    snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, id) >= (int)sizeof tmp) {
		fprintf(stderr, "loadgen --stamp: path too long\n");
		return 2;
	}
	int n = snprintf(line, sizeof line, "%" PRId64 "\n", start);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, line, (size_t)n) != n || close(fd) != 0 ||
	    rename(tmp, path) != 0) {
		perror("loadgen --stamp");
		return 1;
	}
	return 0;
}

/* ---- latency histogram (microseconds) ---- */

static int hist_index(int64_t us)
{
	if (us < 0)
		us = 0;
	if (us < 2 * HIST_SUB)
		return (int)us;
	int msb = 63 - __builtin_clzll((unsigned long long)us);
	int e = msb - 6; /* log2(HIST_SUB) == 6 */
	int i = e * HIST_SUB + (int)(us >> e);
	return i < HIST_N ? i : HIST_N - 1;
}

static double hist_value_us(int i)
{
	if (i < 2 * HIST_SUB)
		return i;
	int e = i / HIST_SUB - 1;
	int m = i - e * HIST_SUB;
	return (double)((int64_t)m << e) + (double)((int64_t)1 << e) / 2.0;
}

static double hist_pct_ms(const uint64_t *h, uint64_t total, double p)
{
	if (total == 0)
		return 0;
	uint64_t want = (uint64_t)ceil(p * (double)total);
	if (want < 1)
		want = 1;
	uint64_t acc = 0;
	for (int i = 0; i < HIST_N; i++) {
		acc += h[i];
		if (acc >= want)
			return hist_value_us(i) / 1000.0;
	}
	return hist_value_us(HIST_N - 1) / 1000.0;
}

/* ---- URLs ---- */

static void parse_url(const char *url, struct target *t, const char **pathp)
{
	char host[128];
	const char *p = url;
	int port = 80;
	t->tls = false;
	if (strncmp(p, "http://", 7) == 0) {
		p += 7;
	} else if (strncmp(p, "https://", 8) == 0) {
		p += 8;
		port = 443;
		t->tls = true;
	} else if (strstr(p, "://")) {
		die("only http:// and https:// URLs: %s", url);
	}
	size_t hl = strcspn(p, ":/");
	if (hl == 0 || hl >= sizeof host)
		die("bad URL: %s", url);
	memcpy(host, p, hl);
	host[hl] = 0;
	p += hl;
	if (*p == ':') {
		char *end;
		long v = strtol(p + 1, &end, 10);
		if (v <= 0 || v > 65535)
			die("bad port in URL: %s", url);
		port = (int)v;
		p = end;
	}
	if (*p && *p != '/')
		die("bad URL: %s", url);
	if (*p && strcmp(p, "/") != 0 && pathp && !*pathp)
		*pathp = p;
	struct addrinfo hints = {.ai_family = AF_INET,
				 .ai_socktype = SOCK_STREAM};
	struct addrinfo *res;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
		die("cannot resolve %s", host);
	memcpy(&t->addr, res->ai_addr, sizeof t->addr);
	t->addr.sin_port = htons((uint16_t)port);
	freeaddrinfo(res);
	snprintf(t->host, sizeof t->host, "%s:%d", host, port);
	snprintf(t->name, sizeof t->name, "%s", host);
}

/* ---- connections ---- */

static void ep_set(struct thr *t, struct conn *c, bool out)
{
	struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0),
				 .data.ptr = c};
	if (c->want_out != out) {
		epoll_ctl(t->ep, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = out;
	}
}

static void conn_close(struct thr *t, struct conn *c, bool failed)
{
	if (c->sess) {
		/* no close_notify: the socket is non-blocking and going away */
		gnutls_deinit(c->sess);
		c->sess = NULL;
	}
	if (c->fd >= 0) {
		epoll_ctl(t->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
		c->fd = -1;
	}
	if (c->state == C_BUSY) {
		t->busy--;
		if (!c->done)
			failed = true;
	}
	if (c->state == C_IDLE) {
		for (int i = 0; i < t->nidle; i++) {
			if (&t->conns[t->idle[i]] == c) {
				t->idle[i] = t->idle[--t->nidle];
				break;
			}
		}
	}
	c->state = C_DOWN;
	int64_t now = mono();
	if (failed) {
		c->backoff = c->backoff ? c->backoff * 2 : RETRY_MIN_NS;
		if (c->backoff > RETRY_MAX_NS)
			c->backoff = RETRY_MAX_NS;
		c->retry_at = now + c->backoff;
	} else {
		c->retry_at = now;
	}
}

static void conn_idle(struct thr *t, struct conn *c);

/* ---- TLS ---- */

static void tls_failed(struct thr *t, struct conn *c, int err)
{
	t->tls_errors++;
	if (!atomic_exchange(&G.tls_reported, true)) {
		/* the first failure only: the cause, not a flood */
		const char *why = gnutls_strerror(err);
		gnutls_datum_t st = {0};
		if (err == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR &&
		    gnutls_certificate_verification_status_print(
			    gnutls_session_get_verify_cert_status(c->sess),
			    GNUTLS_CRT_X509, &st, 0) == 0)
			why = (const char *)st.data;
		fprintf(stderr, "loadgen: TLS handshake with %s failed: %s\n",
			G.targets[c->target].host, why);
		gnutls_free(st.data);
	}
	conn_close(t, c, true);
}

/* Drive the handshake as far as the socket allows. */
static void tls_handshake(struct thr *t, struct conn *c)
{
	for (;;) {
		int r = gnutls_handshake(c->sess);
		if (r == GNUTLS_E_SUCCESS) {
			ep_set(t, c, false);
			conn_idle(t, c);
			return;
		}
		if (r == GNUTLS_E_INTERRUPTED)
			continue;
		if (r == GNUTLS_E_AGAIN) {
			ep_set(t, c, gnutls_record_get_direction(c->sess) == 1);
			return;
		}
		if (!gnutls_error_is_fatal(r))
			continue; /* e.g. a warning alert: go on */
		tls_failed(t, c, r);
		return;
	}
}

/* The TCP connection is up: start TLS on it, or use it as it is. */
static void conn_connected(struct thr *t, struct conn *c)
{
	struct target *tg = &G.targets[c->target];
	if (!tg->tls) {
		ep_set(t, c, false);
		conn_idle(t, c);
		return;
	}
	int r = gnutls_init(&c->sess, GNUTLS_CLIENT | GNUTLS_NONBLOCK);
	if (r != GNUTLS_E_SUCCESS) {
		c->sess = NULL;
		t->tls_errors++;
		conn_close(t, c, true);
		return;
	}
	if ((r = gnutls_set_default_priority(c->sess)) != GNUTLS_E_SUCCESS ||
	    (r = gnutls_credentials_set(c->sess, GNUTLS_CRD_CERTIFICATE,
					G.cred)) != GNUTLS_E_SUCCESS) {
		tls_failed(t, c, r);
		return;
	}
	/* the chain against the CA, and the URL's host (an IP address is
	 * matched against the certificate's IP subjectAltNames); no SNI */
	gnutls_session_set_verify_cert(c->sess, tg->name, 0);
	gnutls_transport_set_int(c->sess, c->fd);
	c->state = C_HANDSHAKE;
	tls_handshake(t, c);
}

static void conn_open(struct thr *t, struct conn *c)
{
	struct target *tg = &G.targets[c->target];
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		t->connect_errors++;
		conn_close(t, c, true);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->fd = fd;
	c->want_out = true;
	c->retry_at = mono(); /* connect start, for the connect timeout */
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
	epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev);
	if (connect(fd, (struct sockaddr *)&tg->addr, sizeof tg->addr) == 0) {
		conn_connected(t, c);
	} else if (errno == EINPROGRESS) {
		c->state = C_CONNECTING;
	} else {
		t->connect_errors++;
		conn_close(t, c, true);
	}
}

/* Claim one request from the --requests budget. */
static bool claim(void)
{
	if (atomic_load(&G.exhausted))
		return false;
	if (G.requests &&
	    atomic_fetch_add(&G.claimed, 1) >= G.requests) {
		atomic_store(&G.exhausted, true);
		return false;
	}
	return true;
}

static void wreserve(struct conn *c, size_t n)
{
	if (c->wcap >= n)
		return;
	c->wcap = n + 256;
	c->wbuf = realloc(c->wbuf, c->wcap);
	if (!c->wbuf)
		die("%s", "out of memory");
}

static void build_request(struct thr *t, struct conn *c)
{
	char key[128] = "";
	const char *body = G.body;
	size_t blen = G.body_len;
	size_t klen = 0, split = 0;
	bool comma = false;
	if (G.unique_key) {
		/* insert "idempotency_key" right after the body's first '{' */
		const char *brace = body ? strchr(body, '{') : NULL;
		if (!brace) {
			body = "{}";
			blen = 2;
			brace = body;
		}
		split = (size_t)(brace - body) + 1;
		const char *q = brace + 1;
		while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
			q++;
		comma = *q != '}';
		klen = (size_t)snprintf(key, sizeof key,
					"\"idempotency_key\":\"%s-%d-%" PRIu64
					"\"%s",
					G.key_prefix, t->idx, t->seq++,
					comma ? "," : "");
	}
	size_t total = blen + klen;
	bool has_body = body != NULL;
	const char *path = G.npaths > 1 ? G.paths[t->turn++ % (unsigned)G.npaths]
					: G.path;
	wreserve(c, 1024 + strlen(path) + total + (G.token ? strlen(G.token) : 0));
	int n = snprintf(c->wbuf, c->wcap,
			 "%s %s HTTP/1.1\r\nHost: %s\r\n"
			 "Connection: keep-alive\r\n%s%s%s",
			 G.method, path, G.targets[c->target].host,
			 G.token ? "Authorization: Bearer " : "",
			 G.token ? G.token : "", G.token ? "\r\n" : "");
	if (has_body)
		n += snprintf(c->wbuf + n, c->wcap - (size_t)n,
			      "Content-Type: application/json\r\n"
			      "Content-Length: %zu\r\n\r\n",
			      total);
	else
		n += snprintf(c->wbuf + n, c->wcap - (size_t)n, "\r\n");
	size_t len = (size_t)n;
	if (has_body) {
		memcpy(c->wbuf + len, body, split);
		len += split;
		memcpy(c->wbuf + len, key, klen);
		len += klen;
		memcpy(c->wbuf + len, body + split, blen - split);
		len += blen - split;
	}
	c->wlen = len;
	c->woff = 0;
}

static void conn_write(struct thr *t, struct conn *c)
{
	while (c->sess && c->woff < c->wlen) {
		/* after GNUTLS_E_AGAIN the same data is offered again: that is
		 * what gnutls_record_send wants */
		ssize_t w = gnutls_record_send(c->sess, c->wbuf + c->woff,
					       c->wlen - c->woff);
		if (w > 0) {
			c->woff += (size_t)w;
			continue;
		}
		if (w == GNUTLS_E_INTERRUPTED)
			continue;
		if (w == GNUTLS_E_AGAIN) {
			ep_set(t, c, gnutls_record_get_direction(c->sess) == 1);
			return;
		}
		t->conn_errors++;
		conn_close(t, c, true);
		return;
	}
	while (c->woff < c->wlen) {
		ssize_t w = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff,
				 MSG_NOSIGNAL);
		if (w > 0) {
			c->woff += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			ep_set(t, c, true);
			return;
		}
		t->conn_errors++;
		conn_close(t, c, true);
		return;
	}
	ep_set(t, c, false);
}

/* Send one request on an idle connection; ref_ns is the latency origin. */
static void conn_send(struct thr *t, struct conn *c, int64_t ref_ns)
{
	build_request(t, c);
	c->state = C_BUSY;
	t->busy++;
	c->rlen = 0;
	c->hdr_end = 0;
	c->status = 0;
	c->clen = -1;
	c->chunked = c->until_close = c->close_after = c->done = false;
	c->chunk_pos = c->dec_len = 0;
	c->sent_ns = mono();
	c->sent_real = now_ns(CLOCK_REALTIME);
	c->ref_ns = ref_ns ? ref_ns : c->sent_ns;
	t->sent++;
	conn_write(t, c);
}

/* Open-loop schedule: the threads interleave their slots, so the whole
 * process sends at G.rate evenly spaced. */
static int64_t slot_time(struct thr *t, uint64_t slot)
{
	double k = (double)slot * G.threads + t->idx;
	return G.t0 + (int64_t)(k * 1e9 / G.rate);
}

/* Open loop: send every due slot while idle connections last. */
static void dispatch_due(struct thr *t)
{
	if (t->stopping || t->rate <= 0)
		return;
	int64_t now = mono();
	while (t->nidle > 0) {
		int64_t due = slot_time(t, t->slot);
		if (due > now || due >= G.t_end)
			break;
		if (!claim()) {
			t->stopping = true;
			break;
		}
		struct conn *c = &t->conns[t->idle[--t->nidle]];
		t->slot++;
		conn_send(t, c, due);
	}
}

static void conn_idle(struct thr *t, struct conn *c)
{
	c->state = C_IDLE;
	c->backoff = 0;
	if (!c->was_ready) {
		c->was_ready = true;
		atomic_fetch_add(&G.ready, 1);
	}
	if (t->stopping)
		return;
	if (!atomic_load(&G.started)) { /* --warmup: not yet */
		if (t->rate > 0)
			t->idle[t->nidle++] = (int)(c - t->conns);
		return;
	}
	if (t->rate > 0) {
		t->idle[t->nidle++] = (int)(c - t->conns);
		dispatch_due(t);
		return;
	}
	if (mono() >= G.t_end || !claim()) {
		t->stopping = true;
		return;
	}
	conn_send(t, c, 0);
}

static void extract_id(const struct conn *c, const char *body, size_t len)
{
	const char *end = body + len;
	for (const char *p = body; p + 4 <= end; p++) {
		if (memcmp(p, "\"id\"", 4) != 0)
			continue;
		p += 4;
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' ||
				   *p == '\r'))
			p++;
		if (p >= end || *p != ':')
			continue;
		p++;
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' ||
				   *p == '\r'))
			p++;
		if (p >= end || *p != '"')
			continue;
		const char *s = ++p;
		while (p < end && *p != '"' && *p > ' ' && *p != '\\')
			p++;
		if (p >= end || *p != '"' || p - s > 200 || p == s)
			return;
		fprintf(G.ids, "%.*s %" PRId64 "\n", (int)(p - s), s,
			c->sent_real);
		return;
	}
}

static void response_done(struct thr *t, struct conn *c)
{
	int64_t now = mono();
	c->done = true;
	t->responses++;
	if (c->status >= 100 && c->status < 600)
		t->status[c->status]++;
	if (c->status >= 200 && c->status < 300) {
		int64_t lat = now - c->ref_ns;
		t->ok++;
		t->hist[hist_index(lat / 1000)]++;
		if (lat > t->max_lat)
			t->max_lat = lat;
		if (G.ids) {
			const char *b = c->rbuf + c->hdr_end;
			size_t bl = c->chunked ? c->dec_len : c->rlen - c->hdr_end;
			extract_id(c, b, bl);
		}
	}
	t->busy--;
	c->state = C_IDLE;
	if (c->close_after) {
		c->state = C_DOWN;
		conn_close(t, c, false);
		return;
	}
	conn_idle(t, c);
}

static bool hdr_is(const char *line, size_t len, const char *name)
{
	size_t n = strlen(name);
	return len > n && strncasecmp(line, name, n) == 0 && line[n] == ':';
}

static bool hdr_has(const char *v, size_t len, const char *word)
{
	size_t n = strlen(word);
	for (size_t i = 0; i + n <= len; i++)
		if (strncasecmp(v + i, word, n) == 0)
			return true;
	return false;
}

/* Parse the header block; returns -1 on a malformed response, 0 on need
 * more, 1 when headers are complete. */
static int parse_headers(struct conn *c)
{
	char *e = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
	if (!e)
		return c->rlen > 65536 ? -1 : 0;
	size_t hend = (size_t)(e - c->rbuf) + 4;
	if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.", 7) != 0)
		return -1;
	int st = atoi(c->rbuf + 9);
	if (st < 100 || st > 599)
		return -1;
	bool http10 = c->rbuf[7] == '0';
	bool keepalive = false;
	c->status = st;
	c->clen = -1;
	c->chunked = false;
	c->close_after = false;
	char *line = (char *)memchr(c->rbuf, '\n', hend) + 1;
	while (line < c->rbuf + hend - 2) {
		char *nl = memchr(line, '\n', (size_t)(c->rbuf + hend - line));
		size_t len = (size_t)(nl - line);
		char *v = memchr(line, ':', len);
		size_t vlen = v ? (size_t)(nl - v) : 0;
		if (hdr_is(line, len, "content-length"))
			c->clen = strtoll(v + 1, NULL, 10);
		else if (hdr_is(line, len, "transfer-encoding") &&
			 hdr_has(v, vlen, "chunked"))
			c->chunked = true;
		else if (hdr_is(line, len, "connection")) {
			if (hdr_has(v, vlen, "close"))
				c->close_after = true;
			if (hdr_has(v, vlen, "keep-alive"))
				keepalive = true;
		}
		line = nl + 1;
	}
	if (http10 && !keepalive)
		c->close_after = true;
	c->hdr_end = hend;
	if (st < 200) { /* interim: drop it and parse what follows */
		memmove(c->rbuf, c->rbuf + hend, c->rlen - hend);
		c->rlen -= hend;
		c->hdr_end = 0;
		return parse_headers(c);
	}
	if (c->chunked) {
		c->clen = -1;
		c->chunk_pos = hend;
		c->dec_len = 0;
	} else if (c->clen < 0) {
		if (st == 204 || st == 304 || strcmp(G.method, "HEAD") == 0)
			c->clen = 0;
		else
			c->until_close = c->close_after = true;
	}
	return 1;
}

/* Decode complete chunks in place; -1 malformed, 0 more, 1 complete. */
static int parse_chunks(struct conn *c)
{
	for (;;) {
		char *p = c->rbuf + c->chunk_pos;
		size_t avail = c->rlen - c->chunk_pos;
		char *nl = memchr(p, '\n', avail);
		if (!nl)
			return avail > 1024 ? -1 : 0;
		char *end;
		unsigned long long sz = strtoull(p, &end, 16);
		if (end == p)
			return -1;
		size_t hl = (size_t)(nl - p) + 1;
		if (sz == 0) {
			if (avail >= hl + 2 && memcmp(nl + 1, "\r\n", 2) == 0)
				return 1;
			if (memmem(nl + 1, avail - hl, "\r\n\r\n", 4))
				return 1;
			return 0;
		}
		if (sz > RBUF_MAX)
			return -1;
		if (avail < hl + sz + 2)
			return 0;
		memmove(c->rbuf + c->hdr_end + c->dec_len, p + hl, sz);
		c->dec_len += sz;
		c->chunk_pos += hl + sz + 2;
	}
}

/* recv(2), or gnutls_record_recv mapped onto its conventions: > 0 bytes,
 * 0 the peer closed, -1 with errno (EAGAIN: wait for the socket). */
static ssize_t conn_recv(struct conn *c, char *buf, size_t len)
{
	if (!c->sess)
		return recv(c->fd, buf, len, 0);
	for (;;) {
		ssize_t r = gnutls_record_recv(c->sess, buf, len);
		if (r >= 0)
			return r;
		if (r == GNUTLS_E_AGAIN) {
			errno = EAGAIN;
			return -1;
		}
		if (r == GNUTLS_E_INTERRUPTED)
			continue;
		if (r == GNUTLS_E_PREMATURE_TERMINATION)
			return 0; /* closed without close_notify: a close */
		if (!gnutls_error_is_fatal(r))
			continue; /* a warning alert, a renegotiation request */
		errno = ECONNRESET;
		return -1;
	}
}

static void conn_read(struct thr *t, struct conn *c)
{
	for (;;) {
		if (c->rcap - c->rlen < 4096) {
			if (c->rcap >= RBUF_MAX) {
				t->conn_errors++;
				conn_close(t, c, true);
				return;
			}
			c->rcap = c->rcap ? c->rcap * 2 : RBUF_INIT;
			c->rbuf = realloc(c->rbuf, c->rcap);
			if (!c->rbuf)
				die("%s", "out of memory");
		}
		ssize_t r = conn_recv(c, c->rbuf + c->rlen,
				      c->rcap - c->rlen - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0) {
			/* closed by the peer (or reset) */
			if (c->state == C_BUSY && c->hdr_end && c->until_close) {
				response_done(t, c);
				return;
			}
			if (c->state == C_BUSY)
				t->conn_errors++;
			conn_close(t, c, c->state == C_BUSY || r < 0);
			return;
		}
		if (c->state != C_BUSY) {
			/* unsolicited bytes (e.g. a 408 before close): drop */
			continue;
		}
		c->rlen += (size_t)r;
		if (!c->hdr_end) {
			int h = parse_headers(c);
			if (h < 0) {
				t->conn_errors++;
				conn_close(t, c, true);
				return;
			}
			if (h == 0)
				continue;
		}
		int done = 0;
		if (c->chunked)
			done = parse_chunks(c);
		else if (c->clen >= 0)
			done = c->rlen - c->hdr_end >= (size_t)c->clen;
		if (done < 0) {
			t->conn_errors++;
			conn_close(t, c, true);
			return;
		}
		if (done) {
			response_done(t, c);
			/* idle or down: nothing more to read now, unless GnuTLS
			 * holds decrypted bytes the socket will not signal */
			if (c->state != C_BUSY &&
			    !(c->sess && gnutls_record_check_pending(c->sess)))
				return;
		}
	}
}

static void conn_event(struct thr *t, struct conn *c, uint32_t ev)
{
	if (c->state == C_CONNECTING) {
		int err = 0;
		socklen_t l = sizeof err;
		if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			return;
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
		if (err || (ev & (EPOLLERR | EPOLLHUP))) {
			t->connect_errors++;
			conn_close(t, c, true);
			return;
		}
		conn_connected(t, c);
		return;
	}
	if (c->state == C_HANDSHAKE) {
		tls_handshake(t, c);
		return;
	}
	/* a TLS record half sent may wait on either direction */
	if ((c->sess || (ev & EPOLLOUT)) && c->state == C_BUSY &&
	    c->woff < c->wlen) {
		conn_write(t, c);
		if (c->fd < 0)
			return;
	}
	if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
		conn_read(t, c);
}

static void housekeeping(struct thr *t, int64_t now)
{
	for (int i = 0; i < t->nconns; i++) {
		struct conn *c = &t->conns[i];
		if (c->state == C_BUSY && now - c->sent_ns > G.req_timeout) {
			t->timeouts++;
			conn_close(t, c, false);
		} else if (c->state == C_CONNECTING &&
			   now - c->retry_at > G.req_timeout) {
			t->connect_errors++;
			conn_close(t, c, true);
		} else if (c->state == C_HANDSHAKE &&
			   now - c->retry_at > G.req_timeout) {
			tls_failed(t, c, GNUTLS_E_TIMEDOUT);
		}
		if (c->state == C_DOWN && !t->stopping && now >= c->retry_at)
			conn_open(t, c);
	}
}

static void arm_timer(struct thr *t)
{
	struct itimerspec its = {0};
	if (t->rate > 0 && !t->stopping && t->nidle > 0) {
		int64_t due = slot_time(t, t->slot);
		if (due < G.t_end) {
			its.it_value.tv_sec = due / 1000000000LL;
			its.it_value.tv_nsec = due % 1000000000LL;
			if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
				its.it_value.tv_nsec = 1;
		}
	}
	timerfd_settime(t->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void *thread_main(void *arg)
{
	struct thr *t = arg;
	struct epoll_event evs[256];
	t->ep = epoll_create1(EPOLL_CLOEXEC);
	t->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (t->ep < 0 || t->tfd < 0)
		die("%s", "epoll/timerfd failed");
	struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
	epoll_ctl(t->ep, EPOLL_CTL_ADD, t->tfd, &tev);
	for (int i = 0; i < t->nconns; i++) {
		struct conn *c = &t->conns[i];
		c->fd = -1;
		c->target = (t->first_conn + i) % G.ntargets;
		c->state = C_DOWN;
		conn_open(t, c);
	}
	/* --warmup: connect (and handshake) until main starts the clock,
	 * then set the closed loop's idle connections going */
	if (!atomic_load(&G.started)) {
		while (!atomic_load(&G.started)) {
			int n = epoll_wait(t->ep, evs, 256, 1);
			for (int i = 0; i < n; i++) {
				struct conn *c = evs[i].data.ptr;
				if (c && c->fd >= 0)
					conn_event(t, c, evs[i].events);
			}
			housekeeping(t, mono());
		}
		for (int i = 0; i < t->nconns && t->rate <= 0; i++)
			if (t->conns[i].state == C_IDLE)
				conn_idle(t, &t->conns[i]);
	}
	int64_t grace_end = 0;
	for (;;) {
		int64_t now = mono();
		if (!t->stopping &&
		    (now >= G.t_end || atomic_load(&G.exhausted)))
			t->stopping = true;
		if (t->stopping) {
			if (!grace_end)
				grace_end = now + G.req_timeout;
			if (t->busy == 0 || now >= grace_end)
				break;
		}
		dispatch_due(t);
		arm_timer(t);
		if (t->stopping && !grace_end)
			continue; /* dispatch_due just stopped: recheck */
		int64_t wait = t->stopping ? grace_end - now : G.t_end - now;
		int ms = wait > 0 ? (int)(wait / 1000000) + 1 : 0;
		if (ms > TICK_MS)
			ms = TICK_MS;
		int n = epoll_wait(t->ep, evs, 256, ms);
		if (n < 0 && errno != EINTR)
			die("%s", "epoll_wait failed");
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				uint64_t x;
				if (read(t->tfd, &x, sizeof x) < 0) {
					/* spurious: nothing to drain */
				}
				continue;
			}
			if (c->fd >= 0)
				conn_event(t, c, evs[i].events);
		}
		housekeeping(t, mono());
	}
	t->end_ns = mono();
	/* slots that were due but never sent (no idle connection) */
	if (t->rate > 0) {
		int64_t last = t->end_ns < G.t_end ? t->end_ns : G.t_end;
		double x = ((double)(last - G.t0) / 1e9 * G.rate - t->idx) /
			   G.threads;
		uint64_t due = x > 0 ? (uint64_t)ceil(x) : 0;
		if (due > t->slot && !atomic_load(&G.exhausted))
			t->unsent = due - t->slot;
	}
	for (int i = 0; i < t->nconns; i++) {
		struct conn *c = &t->conns[i];
		if (c->state == C_BUSY)
			t->timeouts++;
		if (c->sess)
			gnutls_deinit(c->sess);
		if (c->fd >= 0)
			close(c->fd);
		free(c->wbuf);
		free(c->rbuf);
	}
	close(t->ep);
	close(t->tfd);
	return NULL;
}

/* ---- main ---- */

static void on_alarm(int sig)
{
	static const char msg[] = "loadgen: hard deadline passed, aborting\n";
	(void)sig;
	if (write(2, msg, sizeof msg - 1) < 0) {
		/* nothing left to do */
	}
	_exit(3);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: loadgen --url http[s]://HOST:PORT [--targets URL,URL,...]\n"
		"         [--tls-ca FILE] [--path /p] [--also-path /q ...] [--method M]\n"
		"         [--body JSON] [--token T]\n"
		"         [--connections N] [--threads N] [--duration S]\n"
		"         [--requests N] [--rate R] [--unique-key]\n"
		"         [--print-ids FILE] [--timeout S] [--warmup S]\n"
		"       loadgen --stamp DIR   (writes DIR/$FLOWD_RUN_ID)\n");
	exit(2);
}

static double num(const char *s, const char *opt)
{
	char *end;
	double v = strtod(s, &end);
	if (*s == 0 || *end || !(v >= 0) || v > 1e12)
		die("bad number for %s", opt);
	return v;
}

static void add_target(const char *url, const char **pathp)
{
	if (G.ntargets >= MAX_TARGETS)
		die("%s", "too many targets");
	parse_url(url, &G.targets[G.ntargets++], pathp);
}

int main(int argc, char **argv)
{
	int64_t start_real = now_ns(CLOCK_REALTIME);
	if (argc == 3 && strcmp(argv[1], "--stamp") == 0)
		return stamp(argv[2], start_real);

	static const struct option opts[] = {
		{"url", required_argument, NULL, 'u'},
		{"targets", required_argument, NULL, 'T'},
		{"path", required_argument, NULL, 'p'},
		{"also-path", required_argument, NULL, 'A'},
		{"method", required_argument, NULL, 'm'},
		{"body", required_argument, NULL, 'b'},
		{"token", required_argument, NULL, 'k'},
		{"connections", required_argument, NULL, 'c'},
		{"threads", required_argument, NULL, 't'},
		{"duration", required_argument, NULL, 'd'},
		{"requests", required_argument, NULL, 'n'},
		{"rate", required_argument, NULL, 'r'},
		{"unique-key", no_argument, NULL, 'U'},
		{"print-ids", required_argument, NULL, 'P'},
		{"timeout", required_argument, NULL, 'o'},
		{"stamp", required_argument, NULL, 'S'},
		{"tls-ca", required_argument, NULL, 'C'},
		{"warmup", required_argument, NULL, 'W'},
		{"help", no_argument, NULL, 'h'},
		{0, 0, 0, 0},
	};
	const char *url = NULL, *targets = NULL;
	G.connections = 1;
	G.threads = 1;
	G.duration = 10;
	G.timeout = 10;
	G.warmup = -1;
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'u': url = optarg; break;
		case 'T': targets = optarg; break;
		case 'p': G.path = optarg; break;
		case 'A':
			if (G.npaths >= 7)
				die("%s", "at most 7 --also-path");
			G.paths[++G.npaths] = optarg;
			break;
		case 'm': G.method = optarg; break;
		case 'b': G.body = optarg; break;
		case 'k': G.token = *optarg ? optarg : NULL; break;
		case 'c': G.connections = (int)num(optarg, "--connections"); break;
		case 't': G.threads = (int)num(optarg, "--threads"); break;
		case 'd': G.duration = num(optarg, "--duration"); break;
		case 'n': G.requests = (uint64_t)num(optarg, "--requests"); break;
		case 'r': G.rate = num(optarg, "--rate"); break;
		case 'U': G.unique_key = true; break;
		case 'P': G.print_ids = optarg; break;
		case 'o': G.timeout = num(optarg, "--timeout"); break;
		case 'S': return stamp(optarg, start_real);
		case 'C': G.tls_ca = optarg; break;
		case 'W': G.warmup = num(optarg, "--warmup"); break;
		default: usage();
		}
	}
	if (optind != argc || (!url && !targets))
		usage();
	if (G.connections < 1 || G.connections > MAX_CONNS)
		die("%s", "--connections must be 1..10000");
	if (G.threads < 1 || G.threads > MAX_THREADS)
		die("%s", "--threads must be 1..64");
	if (G.threads > G.connections)
		G.threads = G.connections;
	if (G.duration <= 0 || G.duration > 86400)
		die("%s", "--duration must be > 0 s");
	if (G.timeout <= 0 || G.timeout > 3600)
		die("%s", "--timeout must be > 0 s");
	if (G.warmup > 3600)
		die("%s", "--warmup must be at most 3600 s");
	if (targets) {
		char *copy = strdup(targets), *save = NULL;
		for (char *s = strtok_r(copy, ",", &save); s;
		     s = strtok_r(NULL, ",", &save))
			add_target(s, &G.path);
		/* target strings are not kept: the path was copied below */
		if (G.path && G.path >= copy && G.path < copy + strlen(targets))
			G.path = strdup(G.path);
		free(copy);
	} else {
		add_target(url, &G.path);
	}
	if (G.ntargets == 0)
		usage();
	for (int i = 0; i < G.ntargets; i++)
		G.any_tls |= G.targets[i].tls;
	if (G.tls_ca && !G.any_tls)
		die("%s", "--tls-ca needs https:// URLs");
	if (G.any_tls) {
		int r = gnutls_certificate_allocate_credentials(&G.cred);
		if (r != GNUTLS_E_SUCCESS)
			die("gnutls: %s", gnutls_strerror(r));
		if (G.tls_ca)
			r = gnutls_certificate_set_x509_trust_file(
				G.cred, G.tls_ca, GNUTLS_X509_FMT_PEM);
		else
			r = gnutls_certificate_set_x509_system_trust(G.cred);
		if (r <= 0)
			die("no CA certificate loaded from %s",
			    G.tls_ca ? G.tls_ca : "the system trust store");
	}
	if (!G.path)
		G.path = "/";
	G.paths[0] = G.path;
	G.npaths++; /* requests take G.paths[0..npaths) in turn */
	if (!G.method)
		G.method = G.body || G.unique_key ? "POST" : "GET";
	if (G.unique_key && !G.body)
		G.body = "{}";
	G.body_len = G.body ? strlen(G.body) : 0;
	snprintf(G.key_prefix, sizeof G.key_prefix, "lg%x-%" PRIx64,
		 (unsigned)getpid(), (uint64_t)start_real);
	if (G.print_ids) {
		G.ids = fopen(G.print_ids, "w");
		if (!G.ids)
			die("cannot open %s", G.print_ids);
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur < (rlim_t)G.connections + 64 && rl.rlim_max != rl.rlim_cur) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGALRM, on_alarm);
	alarm((unsigned)(G.duration + G.timeout + 10 +
			 (G.warmup >= 0 ? G.warmup + G.timeout : 0)));

	struct thr *thr = xmalloc(sizeof *thr * (size_t)G.threads);
	G.req_timeout = (int64_t)(G.timeout * 1e9);
	G.t0 = mono();
	G.t_end = G.t0 + (int64_t)(G.duration * 1e9);
	atomic_store(&G.started, G.warmup < 0);
	int first = 0;
	for (int i = 0; i < G.threads; i++) {
		struct thr *t = &thr[i];
		t->idx = i;
		t->nconns = G.connections / G.threads +
			    (i < G.connections % G.threads ? 1 : 0);
		t->first_conn = first;
		first += t->nconns;
		t->conns = xmalloc(sizeof *t->conns * (size_t)t->nconns);
		t->idle = xmalloc(sizeof *t->idle * (size_t)t->nconns);
		t->rate = G.rate / G.threads;
		if (pthread_create(&t->tid, NULL, thread_main, t) != 0)
			die("%s", "pthread_create failed");
	}
	if (G.warmup >= 0) {
		/* every connection up (at most --timeout), and --warmup seconds
		 * since the start, then the clock */
		int64_t w0 = G.t0, give_up = w0 + G.req_timeout;
		while (atomic_load(&G.ready) < G.connections && mono() < give_up)
			usleep(1000);
		G.connect_s = (double)(mono() - w0) / 1e9;
		int64_t at = w0 + (int64_t)(G.warmup * 1e9);
		while (mono() < at)
			usleep(1000);
		G.t0 = mono();
		G.t_end = G.t0 + (int64_t)(G.duration * 1e9);
		atomic_store(&G.started, true);
	}
	static uint64_t hist[HIST_N], status[600];
	uint64_t sent = 0, ok = 0, responses = 0, cerr = 0, tmo = 0, conerr = 0;
	uint64_t tlserr = 0;
	uint64_t unsent = 0;
	int64_t max_lat = 0, end = G.t0;
	for (int i = 0; i < G.threads; i++) {
		struct thr *t = &thr[i];
		pthread_join(t->tid, NULL);
		for (int j = 0; j < HIST_N; j++)
			hist[j] += t->hist[j];
		for (int j = 0; j < 600; j++)
			status[j] += t->status[j];
		sent += t->sent;
		ok += t->ok;
		responses += t->responses;
		cerr += t->conn_errors;
		tmo += t->timeouts;
		conerr += t->connect_errors;
		tlserr += t->tls_errors;
		unsent += t->unsent;
		if (t->max_lat > max_lat)
			max_lat = t->max_lat;
		if (t->end_ns > end)
			end = t->end_ns;
		free(t->conns);
		free(t->idle);
	}
	alarm(0);
	if (G.ids && fclose(G.ids) != 0)
		perror("loadgen: --print-ids");
	double secs = (double)(end - G.t0) / 1e9;
	if (secs <= 0)
		secs = 1e-9;
	/* a failed handshake is no request, but it is a failure to count */
	uint64_t errors = sent - ok + tlserr;
	char tlsnote[48] = "";
	if (G.any_tls)
		snprintf(tlsnote, sizeof tlsnote, ", tls %" PRIu64, tlserr);
	double p50 = hist_pct_ms(hist, ok, 0.50);
	double p90 = hist_pct_ms(hist, ok, 0.90);
	double p99 = hist_pct_ms(hist, ok, 0.99);
	double mx = (double)max_lat / 1e6;
	char st[4096];
	size_t sl = 0;
	st[0] = 0;
	for (int j = 100; j < 600; j++) {
		if (!status[j])
			continue;
		sl += (size_t)snprintf(st + sl, sizeof st - sl, "%s\"%d\":%" PRIu64,
				       sl ? "," : "", j, status[j]);
		if (sl >= sizeof st - 32)
			break;
	}
	printf("loadgen: %s %s%s%s x%d conns/%d threads%s: %" PRIu64
	       " requests in %.2f s, %.1f ok/s, ok %" PRIu64 ", errors %" PRIu64
	       " (conn %" PRIu64 ", timeout %" PRIu64 ", connect %" PRIu64
	       "%s), latency ms p50 %.3f p90 %.3f p99 %.3f max %.3f\n",
	       G.method, G.any_tls ? "https://" : "", G.targets[0].host, G.path,
	       G.connections, G.threads, G.rate > 0 ? " open-loop" : "", sent,
	       secs, (double)ok / secs, ok, errors, cerr, tmo, conerr, tlsnote,
	       p50, p90, p99, mx);
	printf("{\"requests\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"errors\":%" PRIu64
	       ",\"status\":{%s},\"duration_s\":%.3f,\"rps\":%.1f,"
	       "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
	       "\"responses\":%" PRIu64 ",\"conn_errors\":%" PRIu64
	       ",\"timeouts\":%" PRIu64 ",\"connect_errors\":%" PRIu64
	       ",\"connections\":%d,\"rate\":%.1f,\"unsent\":%" PRIu64
	       ",\"tls\":%s,\"tls_errors\":%" PRIu64 ",\"connect_s\":%.3f}\n",
	       sent, ok, errors, st, secs, (double)ok / secs, p50, p90, p99, mx,
	       responses, cerr, tmo, conerr, G.connections, G.rate, unsent,
	       G.any_tls ? "true" : "false", tlserr, G.connect_s);
	fflush(stdout);
	free(thr);
	if (G.cred)
		gnutls_certificate_free_credentials(G.cred);
	return ok > 0 ? 0 : 1;
}
