/* feed.c - the change feed behind GET /v1/watch (feed.h): a ring of events
 * numbered by a local sequence, each event one allocation holding its
 * filter keys and its text. */
#include "core/feed.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

struct feed_ev {
	struct feed_id id;
	const char *flow;           /* into blob, or NULL */
	const char *run;            /* into blob, or NULL */
	const char *text;           /* into blob */
	size_t len;
	char *blob;                 /* owned */
};

struct feed {
	pthread_mutex_t mu;
	struct feed_ev *ring;       /* cap slots; seq s lives at s % cap */
	size_t cap;
	uint64_t lo, hi;            /* the ring holds seqs [lo, hi) */
	uint64_t visible;           /* readers see seqs below it */
	struct feed_id floor;       /* the newest id that may be missing */
	uint64_t epoch;             /* losses (feed_lost) so far */
	struct feed_id last;        /* the newest id added */
	uint32_t next_k;            /* the rank of the next event of last.index */
	uint64_t added;
};

int feed_id_parse(const char *s, struct feed_id *out)
{
	uint64_t v[2] = {0, 0};
	int part = 0, digits = 0;

	if (s == NULL)
		return -1;
	for (; *s != '\0'; s++) {
		if (*s == '-' && part == 0 && digits > 0) {
			part = 1;
			digits = 0;
			continue;
		}
		if (*s < '0' || *s > '9' || digits == 19)
			return -1;
		v[part] = v[part] * 10 + (uint64_t)(*s - '0');
		digits++;
	}
	if (part != 1 || digits == 0 || v[1] > UINT32_MAX)
		return -1;
	out->index = v[0];
	out->k = (uint32_t)v[1];
	return 0;
}

void feed_id_format(struct feed_id id, char *buf, size_t len)
{
	snprintf(buf, len, "%" PRIu64 "-%" PRIu32, id.index, id.k);
}

int feed_id_cmp(struct feed_id a, struct feed_id b)
{
	if (a.index != b.index)
		return a.index < b.index ? -1 : 1;
	if (a.k != b.k)
		return a.k < b.k ? -1 : 1;
	return 0;
}

struct feed *feed_new(size_t cap)
{
	struct feed *f = calloc(1, sizeof *f);

	if (f == NULL || cap == 0)
		goto fail;
	f->ring = calloc(cap, sizeof *f->ring);
	if (f->ring == NULL)
		goto fail;
	f->cap = cap;
	f->lo = f->hi = f->visible = 1;
	pthread_mutex_init(&f->mu, NULL);
	return f;
fail:
	free(f);
	return NULL;
}

void feed_free(struct feed *f)
{
	if (f == NULL)
		return;
	for (uint64_t s = f->lo; s < f->hi; s++)
		free(f->ring[s % f->cap].blob);
	free(f->ring);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

static struct feed_ev *at(struct feed *f, uint64_t seq)
{
	return &f->ring[seq % f->cap];
}

static void raise_floor(struct feed *f, struct feed_id id)
{
	if (feed_id_cmp(id, f->floor) > 0)
		f->floor = id;
}

/* Drop the oldest event (the ring is not empty). */
static void drop_oldest(struct feed *f)
{
	struct feed_ev *e = at(f, f->lo);

	raise_floor(f, e->id);
	free(e->blob);
	memset(e, 0, sizeof *e);
	f->lo++;
	if (f->visible < f->lo)
		f->visible = f->lo;
}

struct feed_id feed_add(struct feed *f, uint64_t index, const char *flow,
			const char *run, const char *event, const char *data,
			size_t len)
{
	size_t nf = flow ? strlen(flow) + 1 : 0, nr = run ? strlen(run) + 1 : 0;
	size_t head_max = 64 + strlen(event);
	struct feed_id id = {.index = index};
	char *blob = malloc(nf + nr + head_max + len + 3);
	char idtext[32];
	int head;

	pthread_mutex_lock(&f->mu);
	if (index != f->last.index || f->added == 0)
		f->next_k = 0;
	id.k = f->next_k++;
	f->last = id;
	if (blob == NULL) {
		raise_floor(f, id); /* a reader resuming before it starts over */
		pthread_mutex_unlock(&f->mu);
		return (struct feed_id){0, 0};
	}
	if (f->hi - f->lo == f->cap)
		drop_oldest(f);
	struct feed_ev *e = at(f, f->hi);
	char *p = blob;
	e->flow = e->run = NULL;
	if (flow != NULL) {
		memcpy(p, flow, nf);
		e->flow = p;
		p += nf;
	}
	if (run != NULL) {
		memcpy(p, run, nr);
		e->run = p;
		p += nr;
	}
	feed_id_format(id, idtext, sizeof idtext);
	head = snprintf(p, head_max, "id: %s\nevent: %s\ndata: ", idtext,
			event);
	memcpy(p + head, data, len);
	memcpy(p + head + len, "\n\n", 3);
	e->text = p;
	e->len = (size_t)head + len + 2;
	e->blob = blob;
	e->id = id;
	f->hi++;
	f->added++;
	pthread_mutex_unlock(&f->mu);
	return id;
}

bool feed_publish(struct feed *f)
{
	bool moved;

	pthread_mutex_lock(&f->mu);
	moved = f->visible != f->hi;
	f->visible = f->hi;
	pthread_mutex_unlock(&f->mu);
	return moved;
}

void feed_lost(struct feed *f, uint64_t index)
{
	pthread_mutex_lock(&f->mu);
	raise_floor(f, (struct feed_id){index, UINT32_MAX});
	f->epoch++;
	pthread_mutex_unlock(&f->mu);
}

/* The first seq in [lo, hi) whose id is after `after` (hi when none). */
static uint64_t first_after(struct feed *f, struct feed_id after)
{
	uint64_t a = f->lo, b = f->hi;

	while (a < b) {
		uint64_t m = a + (b - a) / 2;
		if (feed_id_cmp(at(f, m)->id, after) > 0)
			b = m;
		else
			a = m + 1;
	}
	return a;
}

/* Where a reader that starts over goes on from: the newest visible id,
 * or the floor when that is later (an id below it would be reset again). */
static struct feed_id go_on_from(struct feed *f)
{
	struct feed_id newest = f->visible > f->lo ? at(f, f->visible - 1)->id
						   : (struct feed_id){0, 0};

	return feed_id_cmp(newest, f->floor) >= 0 ? newest : f->floor;
}

enum feed_start feed_start(struct feed *f, const struct feed_id *after,
			   struct feed_reader *r, struct feed_id *last)
{
	enum feed_start rc = FEED_OK;

	memset(r, 0, sizeof *r);
	pthread_mutex_lock(&f->mu);
	r->epoch = f->epoch;
	*last = go_on_from(f);
	if (after == NULL) {
		r->pos = f->visible;
	} else if (feed_id_cmp(*after, f->floor) < 0) {
		rc = FEED_RESET;
		r->pos = f->visible;
	} else {
		r->pos = first_after(f, *after);
		r->after = *after;
		r->skip = true; /* entries this node has yet to apply */
	}
	pthread_mutex_unlock(&f->mu);
	return rc;
}

static bool passes(struct feed_reader *r, const struct feed_ev *e,
		   const struct feed_filter *flt)
{
	if (r->skip) {
		if (feed_id_cmp(e->id, r->after) <= 0)
			return false;
		r->skip = false;
	}
	if (flt == NULL)
		return true;
	if (flt->flow != NULL &&
	    (e->flow == NULL || strcmp(flt->flow, e->flow) != 0))
		return false;
	if (flt->run != NULL &&
	    (e->run == NULL || strcmp(flt->run, e->run) != 0))
		return false;
	return true;
}

/* With mu held: whether the reader missed events. */
static bool missed(struct feed *f, const struct feed_reader *r)
{
	return r->epoch != f->epoch || r->pos < f->lo;
}

int feed_read(struct feed *f, struct feed_reader *r,
	      const struct feed_filter *flt, size_t max, char **out,
	      size_t *len, size_t *cap, struct feed_id *last)
{
	int n = 0;

	pthread_mutex_lock(&f->mu);
	if (missed(f, r)) {
		r->pos = f->visible;
		r->epoch = f->epoch;
		r->skip = false;
		*last = go_on_from(f);
		pthread_mutex_unlock(&f->mu);
		return FEED_READ_RESET;
	}
	for (; r->pos < f->visible; r->pos++) {
		const struct feed_ev *e = at(f, r->pos);
		if (!passes(r, e, flt))
			continue;
		if (n > 0 && *len + e->len > max)
			break;
		if (flowd_buf_append(out, len, cap, e->text, e->len) != 0) {
			pthread_mutex_unlock(&f->mu);
			return FEED_READ_NOMEM;
		}
		n++;
	}
	pthread_mutex_unlock(&f->mu);
	return n;
}

bool feed_pending(struct feed *f, struct feed_reader *r,
		  const struct feed_filter *flt)
{
	bool found = false;

	pthread_mutex_lock(&f->mu);
	if (missed(f, r)) {
		found = true;
	} else {
		for (; r->pos < f->visible; r->pos++)
			if (passes(r, at(f, r->pos), flt)) {
				found = true;
				break;
			}
	}
	pthread_mutex_unlock(&f->mu);
	return found;
}

void feed_stats(struct feed *f, struct feed_stats *out)
{
	pthread_mutex_lock(&f->mu);
	out->events = (size_t)(f->hi - f->lo);
	out->cap = f->cap;
	out->added = f->added;
	out->floor = f->floor;
	pthread_mutex_unlock(&f->mu);
}
