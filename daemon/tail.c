/* tail.c - live output of the attempts running here (tail.h). A tail is a
 * log of records [stream: 1 byte][length: 4 bytes][bytes], appended in the
 * order the executor read them, so stdout and stderr interleave as they
 * were produced; a reader's offset is a byte offset into it. */
#include "daemon/tail.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/fsm.h"
#include "core/map.h"

#define PULL_MAX (32 * 1024) /* output bytes per pull at most */
/* Ended tails stay findable, the newest this many: a follower that comes
 * a moment after the end (the run still reads as running) gets the whole
 * output and the end, not a log PostgreSQL does not hold yet. */
#define ENDED_KEPT 64

struct tail {
	char *log;                  /* records */
	size_t len, cap;
	char *end_json;             /* set at the end */
	unsigned refs;              /* the map's, and each reader's */
};

struct tails {
	pthread_mutex_t mu;
	struct map by_key;          /* key -> struct tail* (one ref) */
	char *ended[ENDED_KEPT];    /* keys of ended tails, a ring */
	unsigned ended_head;
	void (*kick)(void *arg);
	void *kick_arg;
};

struct tails *tails_new(void (*kick)(void *arg), void *kick_arg)
{
	struct tails *ts = calloc(1, sizeof *ts);

	if (ts == NULL)
		return NULL;
	pthread_mutex_init(&ts->mu, NULL);
	map_init(&ts->by_key);
	ts->kick = kick;
	ts->kick_arg = kick_arg;
	return ts;
}

static void tail_free(struct tail *t)
{
	free(t->log);
	free(t->end_json);
	free(t);
}

void tails_free(struct tails *ts)
{
	if (ts == NULL)
		return;
	for (size_t b = 0; b < ts->by_key.n_buckets; b++)
		for (struct map_entry *e = ts->by_key.buckets[b]; e != NULL;
		     e = e->next)
			tail_free(e->value);
	map_close(&ts->by_key);
	for (unsigned i = 0; i < ENDED_KEPT; i++)
		free(ts->ended[i]);
	pthread_mutex_destroy(&ts->mu);
	free(ts);
}

/* With mu held: drop one reference. */
static void unref(struct tail *t)
{
	if (--t->refs == 0)
		tail_free(t);
}

void tails_begin(struct tails *ts, const char *key)
{
	struct tail *t = calloc(1, sizeof *t);

	if (t == NULL)
		return; /* followers then read the stored log at the end */
	t->refs = 1;
	pthread_mutex_lock(&ts->mu);
	struct tail *old = map_get(&ts->by_key, key);
	if (old != NULL || map_put(&ts->by_key, key, t) != 0) {
		pthread_mutex_unlock(&ts->mu);
		free(t);
		return;
	}
	pthread_mutex_unlock(&ts->mu);
}

void tails_output(void *arg, const char *key, int stream, const char *data,
		  size_t len)
{
	struct tails *ts = arg;
	struct tail *t;
	uint32_t n = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;

	pthread_mutex_lock(&ts->mu);
	t = map_get(&ts->by_key, key);
	if (t != NULL && t->end_json == NULL) {
		if (t->len + 5 + n > t->cap) {
			size_t cap = t->cap ? t->cap : 4096;
			while (cap < t->len + 5 + n)
				cap *= 2;
			char *p = realloc(t->log, cap);
			if (p == NULL) {
				pthread_mutex_unlock(&ts->mu);
				return;
			}
			t->log = p;
			t->cap = cap;
		}
		t->log[t->len] = (char)stream;
		memcpy(t->log + t->len + 1, &n, 4);
		memcpy(t->log + t->len + 5, data, n);
		t->len += 5 + n;
	}
	pthread_mutex_unlock(&ts->mu);
	if (t != NULL && ts->kick != NULL)
		ts->kick(ts->kick_arg);
}

void tails_end(struct tails *ts, const char *key, const char *end_json)
{
	struct tail *t;

	pthread_mutex_lock(&ts->mu);
	t = map_get(&ts->by_key, key);
	if (t != NULL && t->end_json == NULL) {
		char **slot = &ts->ended[ts->ended_head];
		t->end_json = strdup(end_json);
		if (t->end_json == NULL)
			t->end_json = strdup("{}");
		/* the oldest ended tail leaves the map */
		if (*slot != NULL) {
			struct tail *old = map_del(&ts->by_key, *slot);
			if (old != NULL)
				unref(old);
			free(*slot);
		}
		*slot = strdup(key);
		if (*slot == NULL) { /* cannot remember it: forget it now */
			map_del(&ts->by_key, key);
			unref(t);
		}
		ts->ended_head = (ts->ended_head + 1) % ENDED_KEPT;
	}
	pthread_mutex_unlock(&ts->mu);
	if (t != NULL && ts->kick != NULL)
		ts->kick(ts->kick_arg);
}

struct tail *tails_open(struct tails *ts, const char *key)
{
	struct tail *t;

	pthread_mutex_lock(&ts->mu);
	t = map_get(&ts->by_key, key);
	if (t != NULL)
		t->refs++;
	pthread_mutex_unlock(&ts->mu);
	return t;
}

void tail_close(struct tails *ts, struct tail *t)
{
	pthread_mutex_lock(&ts->mu);
	unref(t);
	pthread_mutex_unlock(&ts->mu);
}


/* One output event of `stream` with `text` (valid UTF-8). */
static int put_output(char **buf, size_t *len, size_t *cap, int stream,
		      const char *text)
{
	return flowd_buf_event(buf, len, cap, "output",
			       json_pack("{s:s, s:s}", "stream",
					 stream == 1 ? "stdout" : "stderr",
					 "text", text));
}

int tail_pull(struct tails *ts, struct tail *t, size_t *off, char **buf,
	      size_t *len, size_t *cap)
{
	char *chunk = NULL, *end = NULL;
	size_t n = 0, from = *off;
	int rc = 0;

	/* Copy what is there under the lock (records are written whole),
	 * render outside it. */
	pthread_mutex_lock(&ts->mu);
	if (from < t->len) {
		n = t->len - from;
		if (n > PULL_MAX) { /* whole records only */
			size_t k = from;
			while (k < t->len) {
				uint32_t r;
				memcpy(&r, t->log + k + 1, 4);
				if (k + 5 + r - from > PULL_MAX && k > from)
					break;
				k += 5 + r;
			}
			n = k - from;
		}
		chunk = malloc(n);
		if (chunk != NULL)
			memcpy(chunk, t->log + from, n);
	} else if (t->end_json != NULL) {
		end = strdup(t->end_json);
	}
	pthread_mutex_unlock(&ts->mu);
	if (n > 0 && chunk == NULL)
		return -1;
	/* consecutive records of one stream go out as one event, so that a
	 * character split between two reads stays whole */
	for (size_t k = 0; k < n && rc == 0;) {
		int stream = chunk[k];
		char *text = NULL;
		size_t tlen = 0, tcap = 0;
		while (k < n && chunk[k] == stream && rc == 0) {
			uint32_t r;
			memcpy(&r, chunk + k + 1, 4);
			if (flowd_buf_append(&text, &tlen, &tcap, chunk + k + 5, r) != 0)
				rc = -1;
			k += 5 + r;
		}
		char *clean = rc == 0 ? flowd_utf8_sanitize(text ? text : "", tlen)
				      : NULL;
		if (clean == NULL || put_output(buf, len, cap, stream, clean) != 0)
			rc = -1;
		free(clean);
		free(text);
	}
	free(chunk);
	if (rc != 0)
		return -1;
	*off = from + n;
	if (n > 0)
		return 1;
	if (end == NULL)
		return 0;
	/* the last event (out of memory here ends the stream all the same) */
	if (flowd_buf_append(buf, len, cap, "event: end\ndata: ", 17) == 0 &&
	    flowd_buf_append(buf, len, cap, end, strlen(end)) == 0)
		flowd_buf_append(buf, len, cap, "\n\n", 2);
	free(end);
	return -1;
}

bool tail_ready(struct tails *ts, struct tail *t, size_t off)
{
	bool ready;

	pthread_mutex_lock(&ts->mu);
	ready = off < t->len || t->end_json != NULL;
	pthread_mutex_unlock(&ts->mu);
	return ready;
}
