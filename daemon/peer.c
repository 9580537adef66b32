/* peer.c - HTTP requests to another node's REST API, run by a libcurl worker thread. */

/*
 * DESIGN
 *
 * Why a thread. A follower forwards client writes to the leader and proposes
 * internal commands through it. libcurl's multi interface could be driven
 * from libuv (CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION), but that couples every
 * libcurl quirk to the loop; one worker thread that owns a multi handle and
 * blocks in curl_multi_poll() is simpler and keeps DNS, connect and TLS-free
 * HTTP/1.1 I/O off the loop entirely. The multi handle keeps a connection
 * cache, so consecutive requests to the same peer reuse a keep-alive
 * connection (at most PEER_MAX_HOST_CONNS per peer; more wait inside libcurl).
 *
 * Happy path.
 *   1. peer_send() (loop) copies the request into a struct preq (URL
 *      "http://<address><target>", method, header list, body), appends it to
 *      p->incoming under p->mu and calls curl_multi_wakeup(), which is
 *      thread-safe and sticky: a wakeup sent before the worker reaches
 *      curl_multi_poll() makes that poll return at once, so the worker never
 *      sleeps while work waits.
 *   2. The worker takes the whole incoming list, creates one easy handle per
 *      request (CURLOPT_TIMEOUT_MS = timeout_ms, NOSIGNAL, no proxy, "Expect:"
 *      to skip 100-continue, body via POSTFIELDS), adds it to the multi and
 *      links it into its private in-flight list. curl_multi_perform() moves
 *      the transfers; the write callback collects the body (at most
 *      MAX_BODY bytes), the header callback picks up Retry-After.
 *   3. On CURLMSG_DONE the worker reads CURLINFO_RESPONSE_CODE (for a 4xx,
 *      a refusal, it also reads the error out of the body, so that callers
 *      can log why), cleans the easy handle up, appends the request to
 *      p->done and wakes the loop (wake.h).
 *   4. The wake callback (loop) takes the whole done list (wakes coalesce)
 *      and calls each cb once, then frees the request.
 *
 * Failure modes.
 *   - No answer (connection refused, DNS, reset, timeout): status 0 and
 *     `error` is libcurl's error buffer (e.g. "Failed to connect to ...",
 *     "Operation timed out after 300 milliseconds ..."). timeout_ms counts
 *     from the moment the worker adds the transfer, so time spent waiting for
 *     one of the PEER_MAX_HOST_CONNS connections is included.
 *   - Response body over MAX_BODY: the transfer is aborted and completes with
 *     status 0, error "response body too large" (a truncated JSON body would
 *     be worse than none).
 *   - A header value containing CR or LF (header injection) or an easy handle
 *     that cannot be set up: completes with status 0 and an error text; cb
 *     still fires exactly once. peer_send() returns -1 only when closing or
 *     out of memory, and then cb never fires.
 *   - peer_close(): p->closing is set under p->mu and the worker woken. It
 *     fails everything still incoming or in flight with status 0,
 *     "shutting down", marks itself exited and wakes the loop; the wake
 *     callback delivers those completions first, then joins the thread,
 *     frees the multi handle and closes the wake handle. `done` runs from
 *     the close callback, and the peer is freed after it.
 *
 * Threads. peer_new/peer_send/peer_close and every callback: the loop
 * thread. The worker owns the multi handle and every easy handle; the loop
 * only calls curl_multi_wakeup() on the multi, and frees it after the join.
 * p->incoming, p->done, p->closing and p->exited are guarded by p->mu. The
 * worker blocks every signal so that signals reach the loop thread.
 *
 * libcurl global state. curl_global_init() is not thread-safe in general
 * and must run before any thread uses libcurl: peer_new() calls it once (a
 * static flag; peer_new runs at start on the loop thread).
 * curl_global_cleanup() is never called: another libcurl user could exist
 * in the process, and the OS reclaims it at exit.
 */
#include "daemon/peer.h"
#include "daemon/nodecred.h"
#include "daemon/wake.h"

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "core/log.h"

#define MAX_BODY (16u * 1024 * 1024)
#define POLL_MS 1000

struct preq {
	struct preq *next;        /* incoming or done list */
	struct preq *fl_prev;     /* worker's in-flight list */
	struct preq *fl_next;

	char *url;
	char *method;
	char *body;               /* NULL when none */
	size_t body_len;
	struct curl_slist *headers;
	peer_done_cb cb;
	void *arg;
	int on_worker;            /* cb runs on the worker thread */

	CURL *easy;               /* worker only */
	char *resp;               /* NUL-terminated when non-NULL */
	size_t resp_len;
	size_t resp_cap;
	int too_large;
	unsigned retry_after;

	int status;
	char error[CURL_ERROR_SIZE];
};

struct peer {
	uv_loop_t *loop;
	unsigned timeout_ms;
	struct nodecred cred;     /* its strings borrowed from the config */
	struct wake wake;
	pthread_t thread;
	CURLM *multi;

	pthread_mutex_t mu;
	struct preq *in_head;     /* guarded by mu */
	struct preq *in_tail;
	struct preq *done_head;
	struct preq *done_tail;
	int closing;
	int exited;

	struct preq *inflight;    /* worker only */

	int joined;               /* loop only */
	void (*close_done)(void *arg);
	void *close_arg;
};

static int curl_ready;

/* ---- requests ---------------------------------------------------------- */

static void preq_free(struct preq *r)
{
	curl_slist_free_all(r->headers);
	free(r->url);
	free(r->method);
	free(r->body);
	free(r->resp);
	free(r);
}

static int has_crlf(const char *s)
{
	return s != NULL && strpbrk(s, "\r\n") != NULL;
}

static char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = malloc(n);

	if (d != NULL)
		memcpy(d, s, n);
	return d;
}

static int add_header(struct curl_slist **list, const char *name,
		      const char *value)
{
	struct curl_slist *l;
	size_t n = strlen(name) + strlen(value) + 3;
	char *line = malloc(n);

	if (line == NULL)
		return -1;
	snprintf(line, n, "%s: %s", name, value);
	l = curl_slist_append(*list, line);
	free(line);
	if (l == NULL)
		return -1;
	*list = l;
	return 0;
}

/* Copies everything peer_send() borrows. Returns NULL when out of memory. */
static struct preq *preq_new(const struct nodecred *cred,
			     const struct peer_request *req)
{
	struct preq *r = calloc(1, sizeof(*r));
	size_t n;

	if (r == NULL)
		return NULL;
	n = strlen("https://") + strlen(req->address) + strlen(req->target) + 1;
	r->url = malloc(n);
	if (r->url == NULL)
		goto err_free;
	snprintf(r->url, n, "%s://%s%s", nodecred_scheme(cred), req->address,
		 req->target);
	r->method = xstrdup(req->method);
	if (r->method == NULL)
		goto err_free;
	if (req->body != NULL) {
		r->body = malloc(req->body_len + 1);
		if (r->body == NULL)
			goto err_free;
		memcpy(r->body, req->body, req->body_len);
		r->body[req->body_len] = '\0';
		r->body_len = req->body_len;
	}
	/* signed as this node, never with a user's token (nodecred.h) */
	if (nodecred_headers(cred, req->method, req->target, req->body,
			     req->body != NULL ? req->body_len : 0,
			     req->on_behalf, &r->headers) != 0)
		goto err_free;
	/* An empty "Content-Type:" removes the form type libcurl would add
	 * for POSTFIELDS. */
	if (add_header(&r->headers, "Content-Type",
		       req->content_type != NULL ? req->content_type : "") != 0)
		goto err_free;
	if (req->forwarded &&
	    add_header(&r->headers, "X-Flowd-Forwarded", "1") != 0)
		goto err_free;
	/* No "Expect: 100-continue" round trip for bodies over 1 KiB. */
	if (add_header(&r->headers, "Expect", "") != 0)
		goto err_free;
	return r;

err_free:
	preq_free(r);
	return NULL;
}

/* ---- worker thread ----------------------------------------------------- */

/* Hand the outcome to the caller's callback, and free the request. */
static void deliver(struct preq *r)
{
	struct peer_result res;

	res.status = r->status;
	/* No answer, no body: never a partial one. */
	res.body = r->status != 0 && r->resp != NULL ? r->resp : "";
	res.body_len = r->status != 0 ? r->resp_len : 0;
	res.retry_after = r->retry_after;
	res.error = r->error; /* "" unless status 0 or 4xx */
	r->cb(r->arg, &res);
	preq_free(r);
}

/* Any thread (worker, or the sender for a request rejected in peer_send). */
static void complete(struct peer *p, struct preq *r)
{
	if (r->on_worker) {
		deliver(r); /* peer_send_any: the callback is thread-safe */
		return;
	}
	pthread_mutex_lock(&p->mu);
	r->next = NULL;
	if (p->done_tail != NULL)
		p->done_tail->next = r;
	else
		p->done_head = r;
	p->done_tail = r;
	pthread_mutex_unlock(&p->mu);
	wake_send(&p->wake);
}

static void fail(struct peer *p, struct preq *r, const char *why)
{
	r->status = 0;
	snprintf(r->error, sizeof(r->error), "%s", why);
	complete(p, r);
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	struct preq *r = userp;
	size_t n = size * nmemb;
	size_t cap;
	char *nr;

	if (n > MAX_BODY - r->resp_len) {
		r->too_large = 1;
		return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
	}
	if (r->resp_len + n + 1 > r->resp_cap) {
		cap = r->resp_cap != 0 ? r->resp_cap : 1024;
		while (cap < r->resp_len + n + 1)
			cap *= 2;
		nr = realloc(r->resp, cap);
		if (nr == NULL)
			return 0;
		r->resp = nr;
		r->resp_cap = cap;
	}
	memcpy(r->resp + r->resp_len, data, n);
	r->resp_len += n;
	r->resp[r->resp_len] = '\0';
	return n;
}

/* Retry-After is delay-seconds or an HTTP-date (RFC 9110 section 10.2.3). */
static unsigned parse_retry_after(const char *v, size_t len)
{
	char buf[128];
	unsigned long long secs = 0;
	time_t when;
	time_t now;
	size_t i;

	while (len > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		len--;
	}
	while (len > 0 && (v[len - 1] == '\r' || v[len - 1] == '\n' ||
			   v[len - 1] == ' ' || v[len - 1] == '\t'))
		len--;
	if (len == 0 || len >= sizeof(buf))
		return 0;
	memcpy(buf, v, len);
	buf[len] = '\0';
	if (buf[0] >= '0' && buf[0] <= '9') {
		for (i = 0; i < len; i++) {
			if (buf[i] < '0' || buf[i] > '9')
				return 0;
			secs = secs * 10 + (unsigned)(buf[i] - '0');
			if (secs > 86400u * 365)
				secs = 86400u * 365;
		}
		return (unsigned)secs;
	}
	when = curl_getdate(buf, NULL);
	now = time(NULL);
	if (when == (time_t)-1 || when <= now)
		return 0;
	return (unsigned)(when - now);
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	struct preq *r = userp;
	size_t n = size * nmemb;
	static const char name[] = "retry-after:";

	/* A new status line (after an interim 1xx) starts a new header set. */
	if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
		r->retry_after = 0;
	else if (n >= sizeof(name) - 1 &&
		 strncasecmp(data, name, sizeof(name) - 1) == 0)
		r->retry_after = parse_retry_after(data + sizeof(name) - 1,
						   n - (sizeof(name) - 1));
	return n;
}

static int easy_setup(struct peer *p, struct preq *r)
{
	CURL *e = curl_easy_init();
	CURLcode c = CURLE_OK;

	if (e == NULL)
		return -1;
	r->easy = e;
#define SET(opt, val) \
	do { \
		if (c == CURLE_OK) \
			c = curl_easy_setopt(e, opt, val); \
	} while (0)
	SET(CURLOPT_PRIVATE, r);
	SET(CURLOPT_ERRORBUFFER, r->error);
	SET(CURLOPT_URL, r->url);
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	SET(CURLOPT_PROXY, ""); /* never an http_proxy from the environment */
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_TIMEOUT_MS, (long)p->timeout_ms);
	SET(CURLOPT_TCP_KEEPALIVE, 1L);
	SET(CURLOPT_HTTPHEADER, r->headers);
	nodecred_curl_tls(&p->cred, e);
	SET(CURLOPT_WRITEFUNCTION, write_cb);
	SET(CURLOPT_WRITEDATA, r);
	SET(CURLOPT_HEADERFUNCTION, header_cb);
	SET(CURLOPT_HEADERDATA, r);
	if (r->body != NULL || strcmp(r->method, "POST") == 0 ||
	    strcmp(r->method, "PUT") == 0) {
		SET(CURLOPT_POSTFIELDS, r->body != NULL ? r->body : "");
		SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
		if (strcmp(r->method, "POST") != 0)
			SET(CURLOPT_CUSTOMREQUEST, r->method);
	} else if (strcmp(r->method, "GET") == 0) {
		SET(CURLOPT_HTTPGET, 1L);
	} else {
		SET(CURLOPT_CUSTOMREQUEST, r->method);
	}
#undef SET
	if (c != CURLE_OK) {
		snprintf(r->error, sizeof(r->error), "setup: %s",
			 curl_easy_strerror(c));
		return -1;
	}
	return 0;
}

static void inflight_link(struct peer *p, struct preq *r)
{
	r->fl_prev = NULL;
	r->fl_next = p->inflight;
	if (p->inflight != NULL)
		p->inflight->fl_prev = r;
	p->inflight = r;
}

static void inflight_unlink(struct peer *p, struct preq *r)
{
	if (r->fl_prev != NULL)
		r->fl_prev->fl_next = r->fl_next;
	else
		p->inflight = r->fl_next;
	if (r->fl_next != NULL)
		r->fl_next->fl_prev = r->fl_prev;
	r->fl_prev = r->fl_next = NULL;
}

static void easy_release(struct peer *p, struct preq *r)
{
	inflight_unlink(p, r);
	curl_multi_remove_handle(p->multi, r->easy);
	curl_easy_cleanup(r->easy);
	r->easy = NULL;
}

static void start(struct peer *p, struct preq *r)
{
	CURLMcode mc;

	r->error[0] = '\0';
	if (easy_setup(p, r) != 0) {
		curl_easy_cleanup(r->easy);
		r->easy = NULL;
		if (r->error[0] == '\0')
			snprintf(r->error, sizeof(r->error), "%s",
				 "setup: out of memory");
		r->status = 0;
		complete(p, r);
		return;
	}
	mc = curl_multi_add_handle(p->multi, r->easy);
	if (mc != CURLM_OK) {
		curl_easy_cleanup(r->easy);
		r->easy = NULL;
		fail(p, r, curl_multi_strerror(mc));
		return;
	}
	inflight_link(p, r);
}

/* A refusal's reason: flowd's error body {"error": {"code",
 * "message"}} as "code: message", else the start of the body on one line. */
static void error_from_body(struct preq *r)
{
	json_t *doc = r->resp != NULL
			      ? json_loadb(r->resp, r->resp_len, 0, NULL)
			      : NULL;
	json_t *e = json_object_get(doc, "error");
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));
	size_t n = 0;

	if (code != NULL && msg != NULL) {
		snprintf(r->error, sizeof(r->error), "%s: %s", code, msg);
	} else {
		for (; n < r->resp_len && n < sizeof(r->error) - 1; n++)
			r->error[n] = r->resp[n] == '\r' || r->resp[n] == '\n'
					      ? ' '
					      : r->resp[n];
		r->error[n] = '\0';
	}
	json_decref(doc);
}

static void finish(struct peer *p, struct preq *r, CURLcode res)
{
	long code = 0;

	if (res == CURLE_OK) {
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
		r->status = (int)code;
		r->error[0] = '\0';
		if (code >= 400 && code < 500)
			error_from_body(r);
	} else {
		r->status = 0;
		if (r->too_large)
			snprintf(r->error, sizeof(r->error),
				 "response body too large (over %u bytes)",
				 MAX_BODY);
		else if (r->error[0] == '\0')
			snprintf(r->error, sizeof(r->error), "%s",
				 curl_easy_strerror(res));
		log_debug("peer: request failed url=%s error=\"%s\"", r->url,
			  r->error);
	}
	easy_release(p, r);
	complete(p, r);
}

static void reap(struct peer *p)
{
	CURLMsg *m;
	int left;
	char *priv;

	while ((m = curl_multi_info_read(p->multi, &left)) != NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		priv = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
		assert(priv != NULL);
		finish(p, (struct preq *)priv, m->data.result);
	}
}

static void *worker_main(void *arg)
{
	struct peer *p = arg;
	struct preq *batch;
	struct preq *r;
	int stop;
	int running;
	CURLMcode mc;

	for (;;) {
		pthread_mutex_lock(&p->mu);
		batch = p->in_head;
		p->in_head = p->in_tail = NULL;
		stop = p->closing;
		pthread_mutex_unlock(&p->mu);

		while (batch != NULL) {
			r = batch;
			batch = r->next;
			if (stop)
				fail(p, r, "shutting down");
			else
				start(p, r);
		}
		if (stop)
			break;

		mc = curl_multi_perform(p->multi, &running);
		if (mc != CURLM_OK)
			log_error("peer: curl_multi_perform: %s",
				  curl_multi_strerror(mc));
		reap(p);
		mc = curl_multi_poll(p->multi, NULL, 0, POLL_MS, NULL);
		if (mc != CURLM_OK)
			log_error("peer: curl_multi_poll: %s",
				  curl_multi_strerror(mc));
	}

	while (p->inflight != NULL) {
		r = p->inflight;
		easy_release(p, r);
		fail(p, r, "shutting down");
	}

	pthread_mutex_lock(&p->mu);
	p->exited = 1;
	pthread_mutex_unlock(&p->mu);
	wake_send(&p->wake);
	return NULL;
}

/* ---- loop side --------------------------------------------------------- */

static void peer_free_cb(uv_handle_t *h)
{
	struct peer *p = h->data;

	if (p->close_done != NULL)
		p->close_done(p->close_arg);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

static void done_wake_cb(struct wake *w)
{
	struct peer *p = w->poll.data;
	struct preq *list;
	struct preq *r;
	int exited;

	for (;;) {
		pthread_mutex_lock(&p->mu);
		list = p->done_head;
		p->done_head = p->done_tail = NULL;
		exited = p->exited;
		pthread_mutex_unlock(&p->mu);
		if (list == NULL)
			break;
		while (list != NULL) {
			r = list;
			list = r->next;
			deliver(r);
		}
	}
	/* `exited` was read together with an empty done list: the worker has
	 * queued its last completion, and every one has been delivered. */
	if (!exited || p->joined)
		return;
	p->joined = 1;
	pthread_join(p->thread, NULL);
	curl_multi_cleanup(p->multi);
	p->multi = NULL;
	wake_close(&p->wake, peer_free_cb);
}

struct peer *peer_new(uv_loop_t *loop, unsigned timeout_ms,
		      const struct nodecred *cred)
{
	struct peer *p;
	sigset_t all;
	sigset_t old;
	int rc;

	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			log_error("peer: curl_global_init failed");
			return NULL;
		}
		curl_ready = 1;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return NULL;
	p->loop = loop;
	p->timeout_ms = timeout_ms;
	p->cred = *cred;
	if (pthread_mutex_init(&p->mu, NULL) != 0)
		goto err_free;
	p->multi = curl_multi_init();
	if (p->multi == NULL)
		goto err_mutex;
	curl_multi_setopt(p->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
			  PEER_MAX_HOST_CONNS);
	if (wake_init(loop, &p->wake, done_wake_cb) != 0)
		goto err_multi;
	p->wake.poll.data = p;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&p->thread, NULL, worker_main, p);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		log_error("peer: pthread_create: %s", strerror(rc));
		curl_multi_cleanup(p->multi);
		/* The wake handle is live: free p from its close callback. */
		wake_close(&p->wake, peer_free_cb);
		return NULL;
	}
	return p;

err_multi:
	curl_multi_cleanup(p->multi);
err_mutex:
	pthread_mutex_destroy(&p->mu);
err_free:
	free(p);
	return NULL;
}

static int send_request(struct peer *p, const struct peer_request *req,
			peer_done_cb cb, void *arg, int on_worker)
{
	struct preq *r;

	assert(req->address != NULL && req->method != NULL &&
	       req->target != NULL && cb != NULL);
	r = preq_new(&p->cred, req);
	if (r == NULL)
		return -1;
	r->cb = cb;
	r->arg = arg;
	r->on_worker = on_worker;
	if (has_crlf(req->address) || has_crlf(req->method) ||
	    has_crlf(req->target) || has_crlf(req->on_behalf) ||
	    has_crlf(req->content_type) || req->target[0] != '/') {
		/* Reported like a transport error, still on the loop. */
		fail(p, r, "invalid request (bad target or CR/LF in a header)");
		return 0;
	}

	pthread_mutex_lock(&p->mu);
	if (p->closing) {
		/* closing began since the look above (another thread) */
		pthread_mutex_unlock(&p->mu);
		preq_free(r);
		return -1;
	}
	r->next = NULL;
	if (p->in_tail != NULL)
		p->in_tail->next = r;
	else
		p->in_head = r;
	p->in_tail = r;
	/* under the lock: the multi handle outlives every send taken */
	curl_multi_wakeup(p->multi);
	pthread_mutex_unlock(&p->mu);
	return 0;
}

int peer_send(struct peer *p, const struct peer_request *req, peer_done_cb cb,
	      void *arg)
{
	return send_request(p, req, cb, arg, 0);
}

int peer_send_any(struct peer *p, const struct peer_request *req,
		  peer_done_cb cb, void *arg)
{
	return send_request(p, req, cb, arg, 1);
}

void peer_close(struct peer *p, void (*done)(void *arg), void *arg)
{
	assert(!p->closing);
	p->close_done = done;
	p->close_arg = arg;
	pthread_mutex_lock(&p->mu);
	p->closing = 1;
	pthread_mutex_unlock(&p->mu);
	curl_multi_wakeup(p->multi);
}
