/* stream.c - streamed answers (stream.h): MHD's content reader over a
 * source's pull(), and the list of streams waiting, suspended, for
 * something to send.
 *
 * The park race. A stream that found nothing parks itself: it suspends its
 * connection from inside the content reader (the way microhttpd.h asks a
 * reader with nothing to send to behave) and joins the incoming list under
 * in_mu, a lock held only for that (the HTTP threads never wait for the
 * waker's walk over the parked streams). A kick that came between its pull
 * and its parking would be lost, so the reader notes the kick generation
 * before it pulls and does not park when the generation moved: it returns
 * 0 and MHD asks again. The waker (under mu) moves the incoming streams to
 * its own list and resumes from there. A parked stream is not freed while
 * parked (MHD does not close a suspended connection; the server resumes
 * every stream before it stops), but free_cb takes both locks and leaves
 * whichever list holds it all the same. */
#include "api/stream.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

enum { WHERE_NONE, WHERE_INCOMING, WHERE_PARKED };

struct api__stream {
	struct api__streams *owner;
	struct MHD_Connection *conn;
	const struct api_stream_ops *ops;
	void *state;
	char *buf;                  /* what pull gave, sent from off */
	size_t len, off, cap;
	bool ended;                 /* pull said the end */
	int where;                  /* WHERE_* */
	bool parked_once;           /* it has parked: free_cb must look */
	size_t slot;                /* its index in that list */
	int64_t sent_ms;            /* when bytes last went out */
};

int64_t api__now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

void api__streams_init(struct api__streams *ss, pthread_mutex_t *mu,
		       size_t max, unsigned heartbeat_ms)
{
	memset(ss, 0, sizeof *ss);
	ss->mu = mu;
	pthread_mutex_init(&ss->in_mu, NULL);
	atomic_init(&ss->gen, 0);
	atomic_init(&ss->open, 0);
	ss->max = max;
	ss->heartbeat_ms = heartbeat_ms;
}

void api__streams_close(struct api__streams *ss)
{
	free(ss->incoming);
	free(ss->parked);
	ss->incoming = ss->parked = NULL;
	ss->n_incoming = ss->cap_incoming = ss->n_parked = ss->cap_parked = 0;
	pthread_mutex_destroy(&ss->in_mu);
}

/* Append `st` to a list; 0, or -1 out of memory. */
static int list_add(struct api__stream ***list, size_t *n, size_t *cap,
		    struct api__stream *st, int where)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 64;
		struct api__stream **p = realloc(*list, c * sizeof *p);
		if (p == NULL)
			return -1;
		*list = p;
		*cap = c;
	}
	st->slot = *n;
	st->where = where;
	(*list)[(*n)++] = st;
	return 0;
}

/* Remove `st` from a list (order is not kept). */
static void list_del(struct api__stream **list, size_t *n,
		     struct api__stream *st)
{
	size_t last = --*n;

	if (st->slot != last) {
		list[st->slot] = list[last];
		list[st->slot]->slot = st->slot;
	}
	st->where = WHERE_NONE;
}

static ssize_t copy_out(struct api__stream *st, char *out, size_t max)
{
	size_t n = st->len - st->off;

	if (n > max)
		n = max;
	memcpy(out, st->buf + st->off, n);
	st->off += n;
	if (st->off == st->len) {
		st->off = st->len = 0;
		if (st->cap > 64 * 1024) { /* a burst's buffer is not kept */
			free(st->buf);
			st->buf = NULL;
			st->cap = 0;
		}
	}
	st->sent_ms = api__now_ms();
	return (ssize_t)n;
}

static ssize_t reader_cb(void *cls, uint64_t pos, char *out, size_t max)
{
	struct api__stream *st = cls;
	struct api__streams *ss = st->owner;
	uint64_t gen;
	int rc, tries = 0;

	if (st->off < st->len)
		return copy_out(st, out, max);
	if (st->ended)
		return MHD_CONTENT_READER_END_OF_STREAM;
again:
	gen = atomic_load(&ss->gen);
	rc = st->ops->pull(st->state, &st->buf, &st->len, &st->cap);
	if (rc < 0)
		st->ended = true;
	if (st->len > 0)
		return copy_out(st, out, max);
	if (st->ended)
		return MHD_CONTENT_READER_END_OF_STREAM;
	if (api__now_ms() - st->sent_ms >= (int64_t)ss->heartbeat_ms) {
		static const char beat[] = ": keep-alive\n\n";
		size_t n = sizeof beat - 1 < max ? sizeof beat - 1 : max;
		memcpy(out, beat, n);
		st->sent_ms = api__now_ms();
		return (ssize_t)n;
	}
	pthread_mutex_lock(&ss->in_mu);
	if (ss->stopping) {
		pthread_mutex_unlock(&ss->in_mu);
		st->ended = true;
		return MHD_CONTENT_READER_END_OF_STREAM;
	}
	if (atomic_load(&ss->gen) != gen && ++tries < 8) {
		/* kicked meanwhile: pull again rather than have MHD spin */
		pthread_mutex_unlock(&ss->in_mu);
		goto again;
	}
	if (list_add(&ss->incoming, &ss->n_incoming, &ss->cap_incoming, st,
		     WHERE_INCOMING) != 0) {
		/* no memory to wait: MHD asks again */
		pthread_mutex_unlock(&ss->in_mu);
		return 0;
	}
	st->parked_once = true;
	MHD_suspend_connection(st->conn);
	pthread_mutex_unlock(&ss->in_mu);
	return 0;
}

static void free_cb(void *cls)
{
	struct api__stream *st = cls;
	struct api__streams *ss = st->owner;

	/* A stream that never parked is on no list (parked_once is only
	 * touched by the connection's own thread): no lock to take. */
	if (st->parked_once) {
		pthread_mutex_lock(ss->mu);
		pthread_mutex_lock(&ss->in_mu);
		if (st->where == WHERE_INCOMING)
			list_del(ss->incoming, &ss->n_incoming, st);
		else if (st->where == WHERE_PARKED)
			list_del(ss->parked, &ss->n_parked, st);
		pthread_mutex_unlock(&ss->in_mu);
		pthread_mutex_unlock(ss->mu);
	}
	atomic_fetch_sub(&ss->open, 1);
	st->ops->free(st->state);
	free(st->buf);
	free(st);
}

struct MHD_Response *api__stream_response(struct api__streams *ss,
					  struct MHD_Connection *conn,
					  const struct api_stream_ops *ops,
					  void *state)
{
	struct api__stream *st = calloc(1, sizeof *st);
	struct MHD_Response *resp;

	if (st == NULL) {
		ops->free(state);
		return NULL;
	}
	st->owner = ss;
	st->conn = conn;
	st->ops = ops;
	st->state = state;
	st->sent_ms = api__now_ms();
	atomic_fetch_add(&ss->open, 1);
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384,
						 reader_cb, st, free_cb);
	if (resp == NULL)
		free_cb(st);
	return resp;
}

/* Take the incoming streams into the waker's list (mu held). A stream
 * that cannot be kept (out of memory) is resumed: it parks again. */
static void take_incoming(struct api__streams *ss)
{
	pthread_mutex_lock(&ss->in_mu);
	for (size_t i = 0; i < ss->n_incoming; i++) {
		struct api__stream *st = ss->incoming[i];
		if (list_add(&ss->parked, &ss->n_parked, &ss->cap_parked, st,
			     WHERE_PARKED) != 0) {
			st->where = WHERE_NONE;
			MHD_resume_connection(st->conn);
		}
	}
	ss->n_incoming = 0;
	pthread_mutex_unlock(&ss->in_mu);
}

static void resume(struct api__streams *ss, struct api__stream *st)
{
	list_del(ss->parked, &ss->n_parked, st);
	MHD_resume_connection(st->conn);
}

size_t api__streams_wake(struct api__streams *ss, int64_t now_ms)
{
	uint64_t gen = atomic_load(&ss->gen);
	bool kicked = gen != ss->gen_seen;

	ss->gen_seen = gen;
	take_incoming(ss);
	for (size_t i = 0; i < ss->n_parked;) {
		struct api__stream *st = ss->parked[i];
		bool go = now_ms - st->sent_ms >= (int64_t)ss->heartbeat_ms ||
			  (kicked && (st->ops->ready == NULL ||
				      st->ops->ready(st->state)));
		if (go)
			resume(ss, st); /* moves the last one into slot i */
		else
			i++;
	}
	return ss->n_parked;
}

bool api__streams_waiting(struct api__streams *ss)
{
	bool any;

	pthread_mutex_lock(&ss->in_mu);
	any = ss->n_incoming > 0;
	pthread_mutex_unlock(&ss->in_mu);
	return any || ss->n_parked > 0;
}

void api__streams_stop(struct api__streams *ss)
{
	pthread_mutex_lock(&ss->in_mu);
	ss->stopping = true;
	pthread_mutex_unlock(&ss->in_mu);
	take_incoming(ss);
	while (ss->n_parked > 0)
		resume(ss, ss->parked[ss->n_parked - 1]);
}
