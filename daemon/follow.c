/* follow.c - followed logs: GET /v1/runs/{id}/steps/{step}/logs?follow=true
 * (docs/api.md, "Streams"), answered by any node.
 *
 * Where the output is. The read view says which node runs the attempt:
 * - this node: its tail (daemon/tail.c), from the start of the output,
 *   as it comes, then the end;
 * - another node: this node relays that node's own followed stream (a
 *   thread running libcurl per relay, at most api.max_log_follows at once;
 *   the request carries X-Flowd-Forwarded so the other node never relays
 *   it further);
 * - nowhere any more (the attempt ended, or the run left memory): the log
 *   PostgreSQL stores, as the same events, then the end.
 * Every stream ends with `event: end`, data {"attempt","status",
 * "exit_code"?,"reason"?}; a relay that fails sends `event: error` and
 * ends. */
#include "daemon/follow.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/thread.h"

/* ------------------------------------------------------------------------
 * Text helpers
 */



/* ------------------------------------------------------------------------
 * A finished text (the stored log, or an error): sent, then the end
 */

struct canned {
	char *text;
	size_t len;
	bool sent;
};

static int canned_pull(void *state, char **buf, size_t *len, size_t *cap)
{
	struct canned *c = state;

	if (!c->sent && flowd_buf_append(buf, len, cap, c->text, c->len) != 0)
		return -1;
	c->sent = true;
	return -1;
}

static void canned_free(void *state)
{
	struct canned *c = state;

	free(c->text);
	free(c);
}

static const struct api_stream_ops canned_ops = {
	.pull = canned_pull, .ready = NULL, .free = canned_free};

/* ------------------------------------------------------------------------
 * This node's tail
 */

struct local {
	struct tails *tails;
	struct tail *tail;
	size_t off;
};

static int local_pull(void *state, char **buf, size_t *len, size_t *cap)
{
	struct local *l = state;

	return tail_pull(l->tails, l->tail, &l->off, buf, len, cap);
}

static bool local_ready(void *state)
{
	struct local *l = state;

	return tail_ready(l->tails, l->tail, l->off);
}

static void local_free(void *state)
{
	struct local *l = state;

	tail_close(l->tails, l->tail);
	free(l);
}

static const struct api_stream_ops local_ops = {
	.pull = local_pull, .ready = local_ready, .free = local_free};

/* ------------------------------------------------------------------------
 * A relay of another node's stream
 */

/* What a relay holds at most for a client that does not read. */
#define RELAY_MAX (1024 * 1024)
/* A relay asks the node running the attempt again this often, this many
 * times, while it answers 404 or 503 (it has not applied the placement). */
#define RELAY_RETRY_MS 100
#define RELAY_TRIES 50

struct relay {
	pthread_mutex_t mu;
	unsigned refs;              /* the stream's and the thread's */
	CURL *h;                    /* the thread's */
	char *buf;                  /* received, not yet pulled */
	size_t len, cap;
	size_t whole;               /* buf[0..whole) is whole events */
	bool overflow;              /* the client read too slowly */
	bool done;                  /* the thread has finished */
	bool cancelled;             /* the client went away */
	char *url;
	struct curl_slist *hdrs;    /* signed as this node (nodecred.h) */
	struct reads *rd;
};

static void relay_unref(struct relay *r)
{
	bool last;

	pthread_mutex_lock(&r->mu);
	last = --r->refs == 0;
	pthread_mutex_unlock(&r->mu);
	if (!last)
		return;
	atomic_fetch_sub(&r->rd->relays, 1);
	pthread_mutex_destroy(&r->mu);
	free(r->buf);
	free(r->url);
	curl_slist_free_all(r->hdrs);
	free(r);
}

static void relay_kick(struct relay *r)
{
	if (r->rd->kick != NULL)
		r->rd->kick(r->rd->kick_arg);
}

static size_t relay_write_cb(char *data, size_t size, size_t n, void *arg)
{
	struct relay *r = arg;
	size_t bytes = size * n;
	long status = 0;
	bool ok, more = false;

	curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200)
		return bytes; /* an error body is not an event: dropped */
	pthread_mutex_lock(&r->mu);
	if (r->len + bytes > RELAY_MAX)
		r->overflow = true;
	ok = !r->cancelled && !r->overflow &&
	     flowd_buf_append(&r->buf, &r->len, &r->cap, data, bytes) == 0;
	if (ok) {
		/* only whole events go to the client */
		for (size_t i = r->len; i >= r->whole + 2; i--)
			if (r->buf[i - 1] == '\n' && r->buf[i - 2] == '\n') {
				more = i > r->whole;
				r->whole = i;
				break;
			}
	}
	pthread_mutex_unlock(&r->mu);
	if (!ok)
		return 0; /* abort the transfer */
	if (more)
		relay_kick(r);
	return bytes;
}

static int relay_progress_cb(void *arg, curl_off_t dt, curl_off_t dn,
			     curl_off_t ut, curl_off_t un)
{
	struct relay *r = arg;
	bool cancelled;

	pthread_mutex_lock(&r->mu);
	cancelled = r->cancelled;
	pthread_mutex_unlock(&r->mu);
	return cancelled ? 1 : 0;
}

static void *relay_main(void *arg)
{
	struct relay *r = arg;
	CURL *h = curl_easy_init();

	r->h = h;
	struct curl_slist *hdrs = r->hdrs;
	CURLcode rc = CURLE_FAILED_INIT;
	long status = 0;

	flowd_thread_nicer(r->rd->thread_nice);
	if (h != NULL) {
		struct curl_slist *more;

		if ((more = curl_slist_append(hdrs, "X-Flowd-Forwarded: 1")) != NULL)
			hdrs = more;
		if ((more = curl_slist_append(hdrs, "Accept: text/event-stream")) != NULL)
			hdrs = more;
		r->hdrs = hdrs;
		curl_easy_setopt(h, CURLOPT_URL, r->url);
		nodecred_curl_tls(r->rd->cred, h);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, relay_write_cb);
		curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
		curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, relay_progress_cb);
		curl_easy_setopt(h, CURLOPT_XFERINFODATA, r);
		curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		/* a quiet stream still sends keep-alives: 60 s of nothing
		 * means the other node is gone */
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
		curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L);
		/* The node running the attempt may not have applied its
		 * placement yet (404, or 503 not_stored_yet): ask again for
		 * a few seconds, as a client would. */
		for (int tries = 0;; tries++) {
			bool cancelled;
			rc = curl_easy_perform(h);
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
			pthread_mutex_lock(&r->mu);
			cancelled = r->cancelled;
			pthread_mutex_unlock(&r->mu);
			if (cancelled || tries == RELAY_TRIES ||
			    (rc == CURLE_OK && status != 404 && status != 503))
				break;
			usleep(RELAY_RETRY_MS * 1000);
		}
	}
	pthread_mutex_lock(&r->mu);
	r->len = r->whole; /* a cut event is dropped */
	if (!r->cancelled && (rc != CURLE_OK || status != 200)) {
		char msg[256];
		if (r->overflow)
			snprintf(msg, sizeof msg,
				 "the client read too slowly (over %d bytes "
				 "waiting): follow again",
				 RELAY_MAX);
		else
			snprintf(msg, sizeof msg,
				 "the node running the step did not stream its "
				 "log (%s, HTTP %ld): follow again",
				 rc != CURLE_OK ? curl_easy_strerror(rc)
						: "answered",
				 status);
		flowd_buf_event(&r->buf, &r->len, &r->cap, "error",
				json_pack("{s:s}", "message", msg));
	}
	r->whole = r->len;
	r->done = true;
	pthread_mutex_unlock(&r->mu);
	relay_kick(r);
	if (h != NULL)
		curl_easy_cleanup(h);
	relay_unref(r);
	return NULL;
}

static int relay_pull(void *state, char **buf, size_t *len, size_t *cap)
{
	struct relay *r = state;
	int rc;

	pthread_mutex_lock(&r->mu);
	if (r->whole > 0 &&
	    flowd_buf_append(buf, len, cap, r->buf, r->whole) != 0) {
		pthread_mutex_unlock(&r->mu);
		return -1;
	}
	rc = r->whole > 0 ? 1 : 0;
	if (r->whole > 0) {
		memmove(r->buf, r->buf + r->whole, r->len - r->whole);
		r->len -= r->whole;
		r->whole = 0;
	}
	if (r->done)
		rc = -1; /* after what was appended */
	pthread_mutex_unlock(&r->mu);
	return rc;
}

static bool relay_ready(void *state)
{
	struct relay *r = state;
	bool ready;

	pthread_mutex_lock(&r->mu);
	ready = r->whole > 0 || r->done;
	pthread_mutex_unlock(&r->mu);
	return ready;
}

static void relay_free(void *state)
{
	struct relay *r = state;

	pthread_mutex_lock(&r->mu);
	r->cancelled = true;
	pthread_mutex_unlock(&r->mu);
	relay_unref(r);
}

static const struct api_stream_ops relay_ops = {
	.pull = relay_pull, .ready = relay_ready, .free = relay_free};

/* ------------------------------------------------------------------------
 * Where the attempt is
 */

/* The API address of node `id` from the view's members, or NULL. */
static char *node_api(const struct view *v, uint64_t id)
{
	char *text = view_cluster_text(v), *out = NULL;
	json_t *c = text ? json_loads(text, 0, NULL) : NULL, *m;
	size_t i;

	json_array_foreach(json_object_get(c, "members"), i, m) {
		const char *api = json_string_value(json_object_get(m, "api_address"));
		if ((uint64_t)json_integer_value(json_object_get(m, "id")) == id &&
		    api != NULL && api[0] != '\0') {
			out = strdup(api);
			break;
		}
	}
	json_decref(c);
	free(text);
	return out;
}

/* ------------------------------------------------------------------------
 * The handler
 */

/* The stored log as events and its end. */
static void stored(struct reads *rd, struct api_request *req, int attempt,
		   const struct reads_attempt *w)
{
	struct flowd_error err;
	json_t *log = NULL;
	struct canned *c;
	const char *out, *errs;
	size_t cap = 0;

	flowd_error_clear(&err);
	if (rd->reader == NULL) {
		flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "unavailable", "",
				"task logs need the PostgreSQL reader");
		api_request_reply_error(req, &err);
		return;
	}
	if (storage_reader_logs(rd->reader, req->run_id, req->step, attempt,
				&log, &err) != 0) {
		if (err.errc == FLOWD_E_NOT_FOUND && w->known)
			/* the run knows the step: its log is still to come */
			flowd_error_set(&err, FLOWD_E_UNAVAILABLE,
					"not_stored_yet", "",
					"the log is not stored yet: retry");
		api_request_reply_error(req, &err);
		return;
	}
	c = calloc(1, sizeof *c);
	out = json_string_value(json_object_get(log, "stdout"));
	errs = json_string_value(json_object_get(log, "stderr"));
	if (c == NULL ||
	    (out != NULL && out[0] != '\0' &&
	     flowd_buf_event(&c->text, &c->len, &cap, "output",
			  json_pack("{s:s, s:s}", "stream", "stdout", "text",
				    out)) != 0) ||
	    (errs != NULL && errs[0] != '\0' &&
	     flowd_buf_event(&c->text, &c->len, &cap, "output",
			  json_pack("{s:s, s:s}", "stream", "stderr", "text",
				    errs)) != 0) ||
	    flowd_buf_event(&c->text, &c->len, &cap, "end",
			 json_pack("{s:O, s:s, s:b}", "attempt",
				   json_object_get(log, "attempt"), "status",
				   "stored", "truncated",
				   json_is_true(json_object_get(log,
								"truncated")))) !=
		    0) {
		if (c != NULL)
			canned_free(c);
		json_decref(log);
		flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "unavailable", "",
				"out of memory");
		api_request_reply_error(req, &err);
		return;
	}
	json_decref(log);
	api_request_reply_stream(req, &canned_ops, c);
}

void follow_logs(struct reads *rd, const struct view *v,
		 struct api_request *req, int attempt)
{
	struct reads_attempt w = reads_attempt_of(v, req->run_id, req->step, attempt);
	struct flowd_error err;
	char key[512];

	if (!w.running || w.attempt == 0) {
		stored(rd, req, attempt, &w);
		return;
	}
	if (w.node == rd->node_id) {
		struct tail *t;
		struct local *l;

		snprintf(key, sizeof key, "%s/%s/%u", req->run_id, req->step,
			 w.attempt);
		t = rd->tails != NULL ? tails_open(rd->tails, key) : NULL;
		if (t == NULL) { /* from before this node's start: lost */
			stored(rd, req, attempt, &w);
			return;
		}
		l = calloc(1, sizeof *l);
		if (l == NULL) {
			tail_close(rd->tails, t);
			goto oom;
		}
		l->tails = rd->tails;
		l->tail = t;
		api_request_reply_stream(req, &local_ops, l);
		return;
	}
	if (req->forwarded) { /* relayed to us, yet not ours: no loops */
		stored(rd, req, attempt, &w);
		return;
	}
	/* the node's listener for nodes first ([peers], third address) */
	const char *internal =
		rd->cfg != NULL ? config_internal_address(rd->cfg, w.node) : NULL;
	char *api = internal != NULL ? strdup(internal) : node_api(v, w.node);
	if (api == NULL) {
		stored(rd, req, attempt, &w);
		return;
	}
	if (atomic_fetch_add(&rd->relays, 1) >= rd->max_relays) {
		atomic_fetch_sub(&rd->relays, 1);
		free(api);
		flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "too_many_streams",
				"",
				"%u followed logs of other nodes are relayed "
				"(api.max_log_follows)",
				rd->max_relays);
		api_request_reply_error(req, &err);
		return;
	}
	struct relay *r = calloc(1, sizeof *r);
	char url[1024], behalf[API_ON_BEHALF_MAX];
	int n_target;
	pthread_t th;
	pthread_attr_t attr;

	n_target = snprintf(url, sizeof url, "%s://%s",
			    nodecred_scheme(rd->cred), api);
	snprintf(url + n_target, sizeof url - (size_t)n_target,
		 "/v1/runs/%s/steps/%s/logs?follow=true&attempt=%u",
		 req->run_id, req->step, w.attempt);
	nodecred_on_behalf(req, behalf);
	free(api);
	if (r == NULL) {
		atomic_fetch_sub(&rd->relays, 1);
		goto oom;
	}
	pthread_mutex_init(&r->mu, NULL);
	r->refs = 2;
	r->rd = rd;
	r->url = strdup(url);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	if (r->url == NULL ||
	    nodecred_headers(rd->cred, "GET", url + n_target, NULL, 0, behalf,
			     &r->hdrs) != 0 ||
	    pthread_create(&th, &attr, relay_main, r) != 0) {
		pthread_attr_destroy(&attr);
		r->refs = 1;
		relay_unref(r);
		goto oom;
	}
	pthread_attr_destroy(&attr);
	api_request_reply_stream(req, &relay_ops, r);
	return;
oom:
	flowd_error_set(&err, FLOWD_E_UNAVAILABLE, "unavailable", "",
			"out of memory");
	api_request_reply_error(req, &err);
}
