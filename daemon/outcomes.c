/* outcomes.c - task_finish commands kept until they commit.
 *
 * DESIGN
 *
 * runner.c hands over each outcome of an attempt this node ran (exit code
 * or signal, reason, captured output). It is encoded as a task_finish at
 * once and queued here until a proposal of it commits; then it is freed.
 * Commands go out through the injected proposer (forward.c: raft on the
 * leader, POST /internal/v1/commands to the leader elsewhere), at most
 * OUTCOMES_INFLIGHT_MAX at a time; under load, outcomes that queue up while
 * earlier ones are in flight leave together in one `batch` command (one
 * Raft entry, and on a follower one request to the leader) of at most
 * OUTCOMES_BATCH_MAX of them. Applying an outcome twice is harmless (apply
 * ignores a result whose attempt is no longer RUNNING), so anything that
 * did not commit (no answer, 5xx, no leader, timeout) is sent again as it
 * is after OUTCOMES_RETRY_MS.
 *
 * Every command sent must be one the leader can take. On a follower it is
 * the body of a request to the leader, refused with 413 past the leader's
 * limits.max_body_bytes (a setting all nodes share); on the leader it is a
 * Raft entry, held in memory and written, replicated and applied whole. So
 * one bound, outcomes_budget(), applies to both: a batch is bounded by bytes
 * as well as by count, and an outcome over the budget on its own has its
 * stdout and stderr cut (at a character, `truncated` set) until it fits.
 * Output grows up to six-fold in JSON (a control byte is \u00XX), so 64 KiB
 * of such bytes on each stream is already ~786 KB.
 *
 * Should the leader refuse one anyway (4xx: nodes configured differently,
 * a bug), a refused batch is split and its outcomes sent one by one, and a
 * single outcome refused is sent once more without its logs (stderr says
 * why): the attempt must end, or its slot stays taken and its run stays
 * `running`. One refused even so is logged and sent again every
 * OUTCOMES_REFUSED_RETRY_MS. A raft disk error is fatal (exit 70).
 *
 * Thread: the loop thread.
 */
#include "daemon/outcomes.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* What fsm_cmd_batch adds to the commands: its head and "]}" (under 128
 * bytes), and a comma per command. */
#define BATCH_WRAP 128

/* One outcome until its task_finish commits, linked through `next` in the
 * queue and in a batch in flight. */
struct outcome {
	char *buf;                /* the encoded task_finish */
	size_t len;
	struct fsm_finish fin;    /* owned copies; out and err NULL */
	int64_t ts;
	bool alone;               /* was in a refused batch: goes on its own */
	bool bare;                /* encoded without its logs */
	struct outcomes *os;      /* the queue it belongs to */
	struct outcome *next;
};

struct outcomes {
	const struct flowd_config *cfg;
	struct flowd_clock clock;
	struct forward_proposer proposer;
	struct outcome *head, *tail;  /* waiting, oldest first */
	unsigned inflight;
	uv_timer_t timer;             /* send again what did not commit */
	bool stopping;
};

static void outcome_free(struct outcome *o)
{
	free(o->buf);
	free((char *)o->fin.run_id);
	free((char *)o->fin.step);
	free((char *)o->fin.reason);
	free((char *)o->fin.detail);
	free(o);
}

static void outcome_list_free(struct outcome *head)
{
	while (head != NULL) {
		struct outcome *o = head;

		head = o->next;
		outcome_free(o);
	}
}

size_t outcomes_budget(const struct outcomes *os)
{
	size_t max = os->cfg->limits.max_body_bytes;

	return max - max / 16;
}

/* ------------------------------------------------------------------------
 * Encoding
 */

/* Bytes a character takes inside a JSON string as jansson writes it
 * (json_dumps without JSON_ENSURE_ASCII): \" \\ \b \f \n \r \t take 2,
 * other control bytes 6 (\u00XX), the rest 1 per byte, UTF-8 included. */
static size_t json_byte_size(unsigned char c)
{
	switch (c) {
	case '"': case '\\': case '\b': case '\f': case '\n': case '\r':
	case '\t':
		return 2;
	default:
		return c < 0x20 ? 6 : 1;
	}
}

/* The length of the longest prefix of `s` (NUL-terminated UTF-8) that ends
 * between two characters and takes at most `room` bytes inside a JSON
 * string; *size gets the bytes it takes. */
static size_t json_prefix(const char *s, size_t room, size_t *size)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, used = 0;

	while (u[i] != '\0') {
		size_t n = u[i] < 0xc0 ? 1 : u[i] < 0xe0 ? 2 : u[i] < 0xf0 ? 3 : 4;
		size_t w;

		for (size_t k = 1; k < n; k++)
			if ((u[i + k] & 0xc0) != 0x80)
				n = k; /* not UTF-8 after all: byte by byte */
		w = n == 1 ? json_byte_size(u[i]) : n;
		if (w > room - used)
			break;
		used += w;
		i += n;
	}
	*size = used;
	return i;
}

/* Encode o's task_finish with `out` and `err` (valid UTF-8), cut until the
 * command takes at most `budget` bytes: room for the two is what the rest
 * leaves; a stream that needs at most half of it keeps all it has and the
 * other gets the rest, else each gets half. Should jansson disagree with
 * json_prefix(), the room halves, and the last try keeps no output at all.
 * Replaces o->buf on success. Returns 0, or -1 when it cannot be
 * encoded (out of memory, text that is not UTF-8). */
static int outcome_encode(struct outcome *o, const char *out, const char *err,
			  size_t budget)
{
	struct fsm_finish f = o->fin;
	size_t len, eo = 0, ee = 0, room = 0, so, se, skip;
	char *buf = NULL, *co = NULL, *ce = NULL;
	int rv;

	f.out = out;
	f.err = err;
	if (fsm_cmd_task_finish(o->ts, &f, &buf, &len) != 0)
		return -1;
	if (len > budget) {
		json_prefix(out, SIZE_MAX, &eo);
		json_prefix(err, SIZE_MAX, &ee);
		skip = len > eo + ee ? len - eo - ee : 0; /* the rest */
		room = budget > skip ? budget - skip : 0;
		f.truncated = true;
	}
	for (int tries = 0; len > budget && tries < 4; tries++) {
		if (tries == 3)
			room = 0;
		if (eo <= room / 2)
			so = eo, se = room - eo;
		else if (ee <= room / 2)
			se = ee, so = room - ee;
		else
			so = room / 2, se = room - room / 2;
		co = strndup(out, json_prefix(out, so, &skip));
		ce = strndup(err, json_prefix(err, se, &skip));
		free(buf);
		buf = NULL;
		f.out = co;
		f.err = ce;
		rv = co != NULL && ce != NULL
			     ? fsm_cmd_task_finish(o->ts, &f, &buf, &len)
			     : -1;
		if (rv == 0 && len <= budget)
			log_info("outcomes: cut to fit run=%s step=%s "
				 "attempt=%u stdout=%zu stderr=%zu bytes=%zu "
				 "budget=%zu",
				 f.run_id, f.step, f.attempt, strlen(co),
				 strlen(ce), len, budget);
		free(co);
		free(ce);
		if (rv != 0)
			return -1;
		room /= 2;
	}
	/* Over the budget even without output (a tiny max_body_bytes): sent
	 * anyway; a refusal is then logged and it is sent again. */
	if (len > budget)
		log_warn("outcomes: over the budget without its logs "
			 "run=%s step=%s attempt=%u bytes=%zu budget=%zu",
			 f.run_id, f.step, f.attempt, len, budget);
	free(o->buf);
	o->buf = buf;
	o->len = len;
	return 0;
}

/* Encode o again without its logs: stdout empty, stderr saying why. */
static int outcome_encode_bare(struct outcome *o, const char *why,
			       size_t budget)
{
	char note[512];
	char *text;
	int rv;

	snprintf(note, sizeof note,
		 "[flowd: the logs of this attempt were dropped: %s]\n", why);
	/* `why` may hold the leader's words, cut anywhere. */
	text = flowd_utf8_sanitize(note, strlen(note));
	if (text == NULL)
		return -1;
	o->fin.truncated = true;
	rv = outcome_encode(o, "", text, budget);
	free(text);
	if (rv == 0)
		o->bare = true;
	return rv;
}

/* ------------------------------------------------------------------------
 * The queue
 */

static void send_waiting(struct outcomes *os);

static void timer_cb(uv_timer_t *h)
{
	send_waiting(h->data);
}

static void retry_later(struct outcomes *os, uint64_t ms)
{
	if (!os->stopping)
		uv_timer_start(&os->timer, timer_cb, ms, 0);
}

/* Append the list at `head` to the queue, in order. */
static void requeue(struct outcomes *os, struct outcome *head)
{
	while (head != NULL) {
		struct outcome *o = head;

		head = o->next;
		o->next = NULL;
		if (os->tail != NULL)
			os->tail->next = o;
		else
			os->head = o;
		os->tail = o;
	}
}

/* Put first..last (linked) back in front of the queue, in order. */
static void unshift(struct outcomes *os, struct outcome *first,
		    struct outcome *last)
{
	last->next = os->head;
	os->head = first;
	if (os->tail == NULL)
		os->tail = last;
}

/* The leader refused `batch` with a 4xx (see the DESIGN note above). */
static void refused(struct outcomes *os, struct outcome *batch,
		    const struct peer_result *res)
{
	struct outcome *o = batch, *last = batch;
	size_t n = 1;
	char why[400];

	while (last->next != NULL) {
		last = last->next;
		n++;
	}
	if (n > 1) {
		log_warn("outcomes: the leader refused a batch of outcomes, "
			 "sending them one by one outcomes=%zu", n);
		for (struct outcome *m = batch; m != NULL; m = m->next)
			m->alone = true;
		unshift(os, batch, last);
		send_waiting(os);
		return;
	}
	snprintf(why, sizeof why,
		 "the leader refused this outcome with them (status %d: %s)",
		 res->status, res->error);
	if (!o->bare && outcome_encode_bare(o, why, outcomes_budget(os)) == 0) {
		log_warn("outcomes: sending an outcome without its logs run=%s "
			 "step=%s attempt=%u bytes=%zu",
			 o->fin.run_id, o->fin.step, o->fin.attempt, o->len);
		o->alone = true;
		unshift(os, batch, batch);
		send_waiting(os);
		return;
	}
	log_error("outcomes: the leader refused an outcome without logs, will "
		  "resend run=%s step=%s attempt=%u status=%d",
		  o->fin.run_id, o->fin.step, o->fin.attempt, res->status);
	requeue(os, batch);
	retry_later(os, OUTCOMES_REFUSED_RETRY_MS);
}

/* arg: the batch in flight (its outcomes, linked). */
static void sent_cb(void *arg, int status, const struct peer_result *refusal)
{
	struct outcome *batch = arg;
	struct outcomes *os = batch->os;

	os->inflight--;
	if (status == CONSENSUS_OK) {
		outcome_list_free(batch);
		send_waiting(os);
		return;
	}
	if (status == FORWARD_REFUSED) {
		refused(os, batch, refusal);
		return;
	}
	/* Not committed (or unknown): send again later. Applying it twice is
	 * harmless (the attempt is then no longer RUNNING). */
	log_debug("outcomes: finish not committed status=%d, will resend",
		  status);
	requeue(os, batch);
	if (status == CONSENSUS_IO) {
		log_error("outcomes: raft disk error, exiting");
		exit(70);
	}
	retry_later(os, OUTCOMES_RETRY_MS);
}

/* The next batch from the front of the queue: the first outcome always
 * goes (it fits by construction), the next ones while the batch stays
 * within the budget; one refused in a batch before goes on its own. *last
 * gets the batch's last outcome. Returns the command (malloc'd) or NULL. */
static char *batch_encode(struct outcomes *os, struct outcome **last,
			  size_t *len)
{
	const char *texts[OUTCOMES_BATCH_MAX];
	size_t lens[OUTCOMES_BATCH_MAX], n = 0, size = BATCH_WRAP;
	size_t budget = outcomes_budget(os);
	struct outcome *first = os->head, *m;
	char *buf;

	for (m = first; m != NULL && n < OUTCOMES_BATCH_MAX; m = m->next) {
		if (n > 0 && (m->alone || size + m->len + 1 > budget))
			break;
		texts[n] = m->buf;
		lens[n++] = m->len;
		size += m->len + 1;
		*last = m;
		if (m->alone)
			break;
	}
	if (n == 1) {
		buf = malloc(first->len);
		if (buf != NULL)
			memcpy(buf, first->buf, first->len);
		*len = first->len;
	} else if (fsm_cmd_batch(flowd_clock_now(&os->clock), texts, lens, n,
				 &buf, len) != 0) {
		buf = NULL;
	}
	return buf;
}

static void send_waiting(struct outcomes *os)
{
	while (os->head != NULL && !os->stopping &&
	       os->inflight < OUTCOMES_INFLIGHT_MAX) {
		struct outcome *batch = os->head, *last = NULL;
		size_t len;
		char *buf = batch_encode(os, &last, &len);

		if (buf == NULL)
			return;
		os->head = last->next;
		if (os->head == NULL)
			os->tail = NULL;
		last->next = NULL;
		if (os->proposer.propose(os->proposer.arg, buf, len, sent_cb,
					 batch) != 0) {
			unshift(os, batch, last);
			uv_timer_start(&os->timer, timer_cb, OUTCOMES_RETRY_MS,
				       0);
			return;
		}
		os->inflight++;
	}
}

/* ------------------------------------------------------------------------
 * Life cycle
 */

struct outcomes *outcomes_new(const struct outcomes_config *c)
{
	struct outcomes *os = calloc(1, sizeof *os);

	if (os == NULL)
		return NULL;
	os->cfg = c->cfg;
	os->clock = c->clock;
	os->proposer = c->proposer;
	uv_timer_init(c->loop, &os->timer);
	os->timer.data = os;
	return os;
}

static char *strdup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

void outcomes_queue(struct outcomes *os, const struct fsm_finish *fin)
{
	struct outcome *o = calloc(1, sizeof *o);
	size_t budget = outcomes_budget(os);

	if (o == NULL) {
		log_error("outcomes: out of memory run=%s step=%s", fin->run_id,
			  fin->step);
		return;
	}
	o->fin = *fin;
	o->fin.run_id = strdup_or_null(fin->run_id);
	o->fin.step = strdup_or_null(fin->step);
	o->fin.reason = strdup_or_null(fin->reason);
	o->fin.detail = strdup_or_null(fin->detail);
	o->fin.out = o->fin.err = NULL;
	o->ts = flowd_clock_now(&os->clock);
	o->os = os;
	if (o->fin.run_id == NULL || o->fin.step == NULL ||
	    o->fin.reason == NULL ||
	    (fin->detail != NULL && o->fin.detail == NULL) ||
	    (outcome_encode(o, fin->out ? fin->out : "",
			    fin->err ? fin->err : "", budget) != 0 &&
	     outcome_encode_bare(o, "they could not be encoded", budget) !=
		     0)) {
		log_error("outcomes: cannot encode task_finish run=%s step=%s",
			  fin->run_id, fin->step);
		outcome_free(o);
		return;
	}
	requeue(os, o);
	send_waiting(os);
}

void outcomes_send(struct outcomes *os)
{
	send_waiting(os);
}

size_t outcomes_waiting(const struct outcomes *os)
{
	size_t n = 0;

	for (const struct outcome *o = os->head; o != NULL; o = o->next)
		n++;
	return n;
}

void outcomes_stop(struct outcomes *os)
{
	os->stopping = true;
	uv_timer_stop(&os->timer);
}

static void closed_cb(uv_handle_t *h)
{
	free(h->data);
}

void outcomes_close(struct outcomes *os)
{
	outcome_list_free(os->head);
	os->head = os->tail = NULL;
	uv_close((uv_handle_t *)&os->timer, closed_cb);
}
