/* tasks.c - where committed state turns into processes and back.
 *
 * DESIGN
 *
 * The state machine places attempts (core/fsm.c). When an entry placing an
 * attempt on this node is applied, and the attempt carries this process's
 * boot id, tasks_hook_placed() queues a start; the after-apply idle callback
 * then spawns the process through the executor (never inside apply, which
 * must stay short). When the process ends, tasks_exec_done() proposes a
 * task_finish with its outcome and captured output. A finish that cannot be
 * committed right now (no leader, leadership lost, timeout) stays queued and
 * is re-sent, so an outcome is never dropped; applying it twice is harmless
 * because apply ignores a result for an attempt that is no longer running.
 * A finish is never bigger than the leader takes (limits.max_body_bytes):
 * batches are bounded by bytes, an outcome too large alone is cut, and one
 * the leader refuses (4xx) goes again on its own, then without its logs,
 * so that its attempt always ends ("Finishing" below).
 *
 * Leader duties: after winning, this node proposes node_up (its boot id and
 * capacity), which marks attempts of its previous life as lost; and it keeps
 * one timer armed for the earliest retry that comes due, proposing `wake`.
 *
 * Thread: the loop thread.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "daemon/daemon.h"

static void task_key(char *buf, size_t n, const char *run_id,
		     const char *step, unsigned attempt)
{
	snprintf(buf, n, "%s/%s/%u", run_id, step, attempt);
}

static void ops_push(struct flowd *d, const char *run_id, unsigned step,
		     unsigned attempt, bool stop)
{
	struct task_op *op = calloc(1, sizeof *op);

	if (op == NULL || (op->run_id = strdup(run_id)) == NULL) {
		log_error("tasks: out of memory");
		abort();
	}
	op->step = step;
	op->attempt = attempt;
	op->stop = stop;
	if (d->ops_tail != NULL)
		d->ops_tail->next = op;
	else
		d->ops_head = op;
	d->ops_tail = op;
	tasks_kick(d);
}

void tasks_kick(struct flowd *d)
{
	if (!uv_is_active((uv_handle_t *)&d->after_apply))
		uv_idle_start(&d->after_apply, tasks_after_apply_cb);
}

void tasks_hook_placed(void *arg, struct fsm_run *run, struct fsm_step *step,
		       struct fsm_attempt *a)
{
	struct flowd *d = arg;

	if (a->node != d->cfg->node_id || a->boot != d->boot)
		return;
	ops_push(d, run->id, step->index, a->n, false);
}

void tasks_hook_stop(void *arg, struct fsm_run *run, struct fsm_step *step,
		     struct fsm_attempt *a)
{
	struct flowd *d = arg;

	if (a->node != d->cfg->node_id || a->boot != d->boot)
		return;
	ops_push(d, run->id, step->index, a->n, true);
}

void tasks_flush_records(struct flowd *d)
{
	uint64_t index;
	bool logs = d->fsm.pending_history;
	char *records = fsm_take_records(&d->fsm, &index);

	if (records == NULL) {
		/* Entries that changed no row still move PostgreSQL's index,
		 * so that its lag reads zero when it holds everything. */
		if (d->fsm.applied_index <= d->pushed_index ||
		    (records = strdup("[]")) == NULL)
			return;
		index = d->fsm.applied_index;
	}
	d->pushed_index = index;
	if (logs)
		d->log_pushed_index = index;
	if (d->applier != NULL)
		storage_applier_push(d->applier, index, records);
	else
		free(records);
}

/* ------------------------------------------------------------------------
 * Proposing from any node: through raft on the leader, through the leader's
 * POST /internal/v1/commands elsewhere
 */

/* A status beyond the CONSENSUS_* codes: the leader answered 4xx. The
 * request itself was bad (over the leader's body limit, not JSON, a token
 * the leader does not know), so sending it again as it is would only get
 * the same answer; the callback gets that answer as `refusal` and decides
 * what to send instead. */
#define PROPOSAL_REFUSED (-1)

/* status: a CONSENSUS_* code or PROPOSAL_REFUSED; refusal: the leader's
 * answer (borrowed for the call) with PROPOSAL_REFUSED, else NULL. */
typedef void (*propose_cb)(struct flowd *d, void *arg, int status,
			   const struct peer_result *refusal);

struct proposal {
	struct flowd *d;
	propose_cb cb;
	void *arg;
	size_t len;               /* of the command, for the log */
};

static void proposal_raft_cb(void *arg, int status, uint64_t index,
			     void *result)
{
	struct proposal *p = arg;

	p->cb(p->d, p->arg, status, NULL);
	free(p);
}

/* No answer (connection error, timeout) and 5xx (503: no leader there or
 * not ready; 504: the commit took too long) may go another way later: "not
 * leader", and the caller sends the same command again. A 4xx is the
 * leader refusing this request: an error, and PROPOSAL_REFUSED. */
static void proposal_peer_cb(void *arg, const struct peer_result *res)
{
	struct proposal *p = arg;

	if (res->status == 200) {
		p->cb(p->d, p->arg, CONSENSUS_OK, NULL);
	} else if (res->status >= 400 && res->status < 500) {
		log_error("tasks: the leader refused a command status=%d "
			  "bytes=%zu error=\"%s\"",
			  res->status, p->len, res->error);
		p->cb(p->d, p->arg, PROPOSAL_REFUSED, res);
	} else {
		FLOWD_LOG(res->status == 0 || res->status == 503 ||
				  res->status == 504
			  ? FLOWD_LOG_DEBUG
			  : FLOWD_LOG_WARN,
			  "tasks: forwarded command not taken status=%d "
			  "error=\"%s\"",
			  res->status, res->error);
		p->cb(p->d, p->arg, CONSENSUS_NOT_LEADER, NULL);
	}
	free(p);
}

/* Propose `buf` (malloc'd; always consumed) wherever the leader is. Returns
 * 0 when under way (cb fires once with a CONSENSUS_* status or
 * PROPOSAL_REFUSED), or -1 when no leader can take it now (cb never
 * fires). */
static int propose_anywhere(struct flowd *d, char *buf, size_t len,
			    propose_cb cb, void *arg)
{
	struct proposal *p = malloc(sizeof *p);
	const char *leader;
	char auth[300];
	int rv;

	if (p == NULL || d->stopping) {
		free(p);
		free(buf);
		return -1;
	}
	p->d = d;
	p->cb = cb;
	p->arg = arg;
	p->len = len;
	if (d->role == CONSENSUS_LEADER) {
		rv = consensus_propose(d->raft, buf, len,
				       d->cfg->apply_timeout_ms,
				       proposal_raft_cb, p);
		if (rv != CONSENSUS_OK)
			free(p);
		return rv == CONSENSUS_OK ? 0 : -1;
	}
	leader = service_leader_api(d);
	if (leader == NULL || d->peer == NULL) {
		free(p);
		free(buf);
		return -1;
	}
	/* Nodes share the cluster's admin tokens (docs/deploy.md). */
	if (d->cfg->admin_tokens[0] != NULL)
		snprintf(auth, sizeof auth, "Bearer %s", d->cfg->admin_tokens[0]);
	struct peer_request pr = {
		.address = leader,
		.method = "POST",
		.target = "/internal/v1/commands",
		.authorization = d->cfg->admin_tokens[0] ? auth : NULL,
		.content_type = "application/json",
		.body = buf,
		.body_len = len,
		.forwarded = 1,
	};
	rv = peer_send(d->peer, &pr, proposal_peer_cb, p);
	free(buf);
	if (rv != 0)
		free(p);
	return rv == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------
 * Finishing: propose task_finish, keep it until it commits
 *
 * Every command sent must be one the leader can take. On a follower it is
 * the body of a request to the leader, refused with 413 past the leader's
 * limits.max_body_bytes (a setting all nodes share); on the leader it is a
 * Raft entry, held in memory and written, replicated and applied whole. So
 * one bound, finish_budget(), applies to both: a batch is bounded by bytes
 * as well as by count, and an outcome over the budget on its own has its
 * stdout and stderr cut (at a character, `truncated` set) until it fits.
 * Output grows up to six-fold in JSON (a control byte is \u00XX), so 64 KiB
 * of such bytes on each stream is already ~786 KB.
 *
 * Should the leader refuse one anyway (4xx: nodes configured differently,
 * a bug), a refused batch is split and its outcomes sent one by one, and a
 * single outcome refused is sent once more without its logs (stderr says
 * why): the attempt must end, or its slot stays taken and its run stays
 * `running`. One refused even so is logged and sent again every second.
 * Anything else that did not commit (no answer, 5xx, no leader, timeout)
 * is sent again as it is after 100 ms.
 */

static void finish_send(struct flowd *d);

/* Under load, outcomes queue up while earlier ones are in flight and then
 * leave together: one `batch` command (one Raft entry, and on a follower
 * one request to the leader) for up to FINISH_BATCH_MAX of them, and at
 * most finish_budget() bytes. */
#define FINISH_BATCH_MAX 256
#define FINISH_INFLIGHT_MAX 2
/* What fsm_cmd_batch adds to the commands: its head and "]}" (under 128
 * bytes), and a comma per command. */
#define FINISH_BATCH_WRAP 128
#define FINISH_RETRY_MS 100
#define FINISH_REFUSED_RETRY_MS 1000

/* One outcome until its task_finish commits. d->finish_head queues its
 * `link` (struct finish_msg, daemon.h): only this file allocates queued
 * messages, and always as the first member of an outcome. */
struct outcome {
	struct finish_msg link;   /* buf: the encoded task_finish */
	struct fsm_finish fin;    /* owned copies; out and err NULL */
	int64_t ts;
	bool alone;               /* was in a refused batch: goes on its own */
	bool bare;                /* encoded without its logs */
};

static struct outcome *outcome_of(struct finish_msg *m)
{
	return (struct outcome *)m;
}

static void outcome_free(struct outcome *o)
{
	free(o->link.buf);
	free((char *)o->fin.run_id);
	free((char *)o->fin.step);
	free((char *)o->fin.reason);
	free((char *)o->fin.detail);
	free(o);
}

static void outcomes_free(struct finish_msg *head)
{
	while (head != NULL) {
		struct finish_msg *m = head;

		head = m->next;
		outcome_free(outcome_of(m));
	}
}

/* The largest command sent: the leader's body limit, less 1/16 of it. */
static size_t finish_budget(const struct flowd *d)
{
	size_t max = d->cfg->limits.max_body_bytes;

	return max - max / 16;
}

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
 * Replaces o->link.buf on success. Returns 0, or -1 when it cannot be
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
			log_info("tasks: outcome cut to fit run=%s step=%s "
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
		log_warn("tasks: outcome over the budget without its logs "
			 "run=%s step=%s attempt=%u bytes=%zu budget=%zu",
			 f.run_id, f.step, f.attempt, len, budget);
	free(o->link.buf);
	o->link.buf = buf;
	o->link.len = len;
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

/* Messages are linked through `next` in both the queue and a batch. */
static void finish_requeue(struct flowd *d, struct finish_msg *head)
{
	while (head != NULL) {
		struct finish_msg *m = head;

		head = m->next;
		m->next = NULL;
		if (d->finish_tail != NULL)
			d->finish_tail->next = m;
		else
			d->finish_head = m;
		d->finish_tail = m;
	}
}

/* Put first..last (linked) back in front of the queue, in order. */
static void finish_unshift(struct flowd *d, struct finish_msg *first,
			   struct finish_msg *last)
{
	last->next = d->finish_head;
	d->finish_head = first;
	if (d->finish_tail == NULL)
		d->finish_tail = last;
}

/* The leader refused `batch` with a 4xx (see the DESIGN note above). */
static void finish_refused(struct flowd *d, struct finish_msg *batch,
			   const struct peer_result *res)
{
	struct outcome *o = outcome_of(batch);
	struct finish_msg *last = batch;
	size_t n = 1;
	char why[400];

	while (last->next != NULL) {
		last = last->next;
		n++;
	}
	if (n > 1) {
		log_warn("tasks: the leader refused a batch of outcomes, "
			 "sending them one by one outcomes=%zu", n);
		for (struct finish_msg *m = batch; m != NULL; m = m->next)
			outcome_of(m)->alone = true;
		finish_unshift(d, batch, last);
		finish_send(d);
		return;
	}
	snprintf(why, sizeof why,
		 "the leader refused this outcome with them (status %d: %s)",
		 res->status, res->error);
	if (!o->bare && outcome_encode_bare(o, why, finish_budget(d)) == 0) {
		log_warn("tasks: sending an outcome without its logs run=%s "
			 "step=%s attempt=%u bytes=%zu",
			 o->fin.run_id, o->fin.step, o->fin.attempt,
			 o->link.len);
		o->alone = true;
		finish_unshift(d, batch, batch);
		finish_send(d);
		return;
	}
	log_error("tasks: the leader refused an outcome without logs, will "
		  "resend run=%s step=%s attempt=%u status=%d",
		  o->fin.run_id, o->fin.step, o->fin.attempt, res->status);
	finish_requeue(d, batch);
	if (!d->stopping)
		uv_timer_start(&d->finish_timer, tasks_finish_timer_cb,
			       FINISH_REFUSED_RETRY_MS, 0);
}

static void finish_done_cb(struct flowd *d, void *arg, int status,
			   const struct peer_result *refusal)
{
	struct finish_msg *batch = arg;

	d->finish_inflight--;
	if (status == CONSENSUS_OK) {
		outcomes_free(batch);
		finish_send(d);
		return;
	}
	if (status == PROPOSAL_REFUSED) {
		finish_refused(d, batch, refusal);
		return;
	}
	/* Not committed (or unknown): send again later. Applying it twice is
	 * harmless (the attempt is then no longer RUNNING). */
	log_debug("tasks: finish not committed status=%d, will resend",
		  status);
	finish_requeue(d, batch);
	if (status == CONSENSUS_IO) {
		log_error("tasks: raft disk error, exiting");
		exit(70);
	}
	if (!d->stopping)
		uv_timer_start(&d->finish_timer, tasks_finish_timer_cb,
			       FINISH_RETRY_MS, 0);
}

static void finish_send(struct flowd *d)
{
	size_t budget = finish_budget(d);

	while (d->finish_head != NULL && !d->stopping &&
	       d->finish_inflight < FINISH_INFLIGHT_MAX) {
		const char *texts[FINISH_BATCH_MAX];
		size_t lens[FINISH_BATCH_MAX], n = 0, size = FINISH_BATCH_WRAP;
		struct finish_msg *batch = d->finish_head, *last = NULL, *m;
		char *buf;
		size_t len;
		int rv;

		/* The first message always goes (it fits by construction);
		 * the next ones while the batch stays within the budget. One
		 * refused in a batch before goes on its own. */
		for (m = batch; m != NULL && n < FINISH_BATCH_MAX; m = m->next) {
			if (n > 0 && (outcome_of(m)->alone ||
				      size + m->len + 1 > budget))
				break;
			texts[n] = m->buf;
			lens[n++] = m->len;
			size += m->len + 1;
			last = m;
			if (outcome_of(m)->alone)
				break;
		}
		if (n == 1) {
			buf = malloc(batch->len);
			if (buf != NULL)
				memcpy(buf, batch->buf, batch->len);
			len = batch->len;
		} else if (fsm_cmd_batch(flowd_now_ms(), texts, lens, n, &buf,
					 &len) != 0) {
			buf = NULL;
		}
		if (buf == NULL)
			return;
		d->finish_head = last->next;
		if (d->finish_head == NULL)
			d->finish_tail = NULL;
		last->next = NULL;
		rv = propose_anywhere(d, buf, len, finish_done_cb, batch);
		if (rv != 0) {
			finish_unshift(d, batch, last);
			uv_timer_start(&d->finish_timer, tasks_finish_timer_cb,
				       FINISH_RETRY_MS, 0);
			return;
		}
		d->finish_inflight++;
	}
}

void tasks_finish_timer_cb(uv_timer_t *h)
{
	finish_send(h->data);
}

static char *strdup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

/* Queue `fin` (borrowed) until it commits. Output that cannot be encoded
 * is replaced by a note rather than losing the outcome. */
static void finish_queue(struct flowd *d, const struct fsm_finish *fin)
{
	struct outcome *o = calloc(1, sizeof *o);
	size_t budget = finish_budget(d);

	if (o == NULL) {
		log_error("tasks: out of memory run=%s step=%s", fin->run_id,
			  fin->step);
		return;
	}
	o->fin = *fin;
	o->fin.run_id = strdup_or_null(fin->run_id);
	o->fin.step = strdup_or_null(fin->step);
	o->fin.reason = strdup_or_null(fin->reason);
	o->fin.detail = strdup_or_null(fin->detail);
	o->fin.out = o->fin.err = NULL;
	o->ts = flowd_now_ms();
	if (o->fin.run_id == NULL || o->fin.step == NULL ||
	    o->fin.reason == NULL ||
	    (fin->detail != NULL && o->fin.detail == NULL) ||
	    (outcome_encode(o, fin->out ? fin->out : "",
			    fin->err ? fin->err : "", budget) != 0 &&
	     outcome_encode_bare(o, "they could not be encoded", budget) !=
		     0)) {
		log_error("tasks: cannot encode task_finish run=%s step=%s",
			  fin->run_id, fin->step);
		outcome_free(o);
		return;
	}
	finish_requeue(d, &o->link);
	finish_send(d);
}

/* The executor's ctx for one attempt. */
struct attempt_ctx {
	struct flowd *d;
	char *run_id;
	char *step;
	unsigned attempt;
};

void tasks_exec_done(struct executor *e, void *ctx,
		     const struct executor_result *res)
{
	struct attempt_ctx *ac = ctx;
	struct flowd *d = ac->d;
	struct fsm_finish fin = {0};
	char *out = NULL, *err = NULL;

	/* Failures at info, the (many) successes at debug. */
	FLOWD_LOG(res->exit_code == 0 && res->term_signal == 0 ? FLOWD_LOG_DEBUG
								: FLOWD_LOG_INFO,
		  "task finished run=%s step=%s attempt=%u reason=%s exit=%d "
		  "signal=%d",
		  ac->run_id, ac->step, ac->attempt, res->reason,
		  res->exit_code, res->term_signal);
	if (!d->stopping) {
		out = flowd_utf8_sanitize(res->out ? res->out : "", res->out_len);
		err = flowd_utf8_sanitize(res->err ? res->err : "", res->err_len);
		fin.run_id = ac->run_id;
		fin.step = ac->step;
		fin.attempt = ac->attempt;
		fin.node = d->cfg->node_id;
		fin.exit_code = res->exit_code;
		fin.term_signal = res->term_signal;
		fin.reason = res->reason;
		fin.detail = res->detail;
		fin.out = out;
		fin.err = err;
		fin.truncated = res->truncated;
		if (out != NULL && err != NULL)
			finish_queue(d, &fin);
	}
	free(out);
	free(err);
	free(ac->run_id);
	free(ac->step);
	free(ac);
}

/* ------------------------------------------------------------------------
 * Starting and stopping attempts (after apply)
 */

static char **build_env(struct flowd *d, const struct fsm_run *r,
			const struct spec_step *ss, unsigned attempt)
{
	size_t n = ss->n_env + json_object_size(r->params) + 6, i = 0;
	char **env = calloc(n, sizeof *env);
	const char *k;
	json_t *v;

	if (env == NULL)
		return NULL;
	for (size_t e = 0; e < ss->n_env; e++)
		env[i++] = strdup(ss->env[e]);
	json_object_foreach(r->params, k, v)
	{
		char *text = spec_param_env_value(v);
		char *name = NULL;
		if (text != NULL && asprintf(&name, "FLOWD_PARAM_%s=%s", k, text) < 0)
			name = NULL;
		/* Upper-case the parameter name part only. */
		for (char *p = name ? name + 12 : NULL; p && *p && *p != '='; p++)
			if (*p >= 'a' && *p <= 'z')
				*p = (char)(*p - 'a' + 'A');
		free(text);
		env[i++] = name;
	}
	if (asprintf(&env[i++], "FLOWD_RUN_ID=%s", r->id) < 0 ||
	    asprintf(&env[i++], "FLOWD_FLOW=%s", r->flow->name) < 0 ||
	    asprintf(&env[i++], "FLOWD_STEP=%s", ss->name) < 0 ||
	    asprintf(&env[i++], "FLOWD_ATTEMPT=%u", attempt) < 0)
		env[i - 1] = NULL;
	else {
		/* What started the run (docs/triggers.md), as JSON. */
		char *t = r->trigger ? json_dumps(r->trigger, JSON_COMPACT)
				     : strdup("{\"type\":\"manual\"}");
		if (t == NULL || asprintf(&env[i++], "FLOWD_TRIGGER=%s", t) < 0)
			env[i - 1] = NULL;
		free(t);
	}
	env[i] = NULL;
	for (size_t j = 0; j < i; j++) {
		if (env[j] == NULL) {
			for (size_t m = 0; m < i; m++)
				free(env[m]);
			free(env);
			return NULL;
		}
	}
	(void)d;
	return env;
}

static void free_env(char **env)
{
	for (size_t i = 0; env && env[i]; i++)
		free(env[i]);
	free(env);
}

static void op_start(struct flowd *d, struct task_op *op)
{
	struct fsm_run *r = fsm_run_get(&d->fsm, op->run_id);
	struct fsm_step *s;
	struct fsm_attempt *a;
	const struct spec_step *ss;
	struct attempt_ctx *ac;
	struct executor_task t = {0};
	char key[512];
	char **env;

	if (r == NULL)
		return;
	s = &r->steps[op->step];
	ss = &r->spec->steps[op->step];
	if (op->attempt > s->n_attempts)
		return;
	a = &s->attempts[op->attempt - 1];
	task_key(key, sizeof key, r->id, ss->name, a->n);
	if (a->status != FSM_ATTEMPT_RUNNING || executor_has(d->exec, key))
		return;
	if (a->stopping) {
		/* Stopped before it started: report it so its slot frees. */
		struct fsm_finish fin = {.run_id = r->id, .step = ss->name,
					 .attempt = a->n, .node = d->cfg->node_id,
					 .exit_code = -1, .reason = "stopped",
					 .out = "", .err = ""};
		finish_queue(d, &fin);
		return;
	}
	ac = calloc(1, sizeof *ac);
	env = build_env(d, r, ss, a->n);
	if (ac == NULL || env == NULL) {
		log_error("tasks: out of memory starting run=%s step=%s", r->id,
			  ss->name);
		free(ac);
		free_env(env);
		return;
	}
	ac->d = d;
	ac->run_id = strdup(r->id);
	ac->step = strdup(ss->name);
	ac->attempt = a->n;
	t.key = key;
	t.argv = ss->argv;
	t.shell = ss->shell;
	t.env = env;
	t.workdir = ss->workdir;
	t.timeout_s = ss->timeout_s;
	t.max_log_bytes = d->cfg->limits.max_log_bytes_per_task;
	log_debug("task start run=%s step=%s attempt=%u", r->id, ss->name, a->n);
	if (executor_start(d->exec, &t, ac) != 0) {
		struct fsm_finish fin = {.run_id = r->id, .step = ss->name,
					 .attempt = a->n, .node = d->cfg->node_id,
					 .exit_code = -1, .reason = "spawn_failed",
					 .detail = "executor refused the task",
					 .out = "", .err = ""};
		finish_queue(d, &fin);
		free(ac->run_id);
		free(ac->step);
		free(ac);
	}
	free_env(env);
}

static void op_stop(struct flowd *d, struct task_op *op)
{
	struct fsm_run *r = fsm_run_get(&d->fsm, op->run_id);
	char key[512];

	if (r == NULL)
		return;
	task_key(key, sizeof key, r->id, r->spec->steps[op->step].name,
		 op->attempt);
	if (executor_stop(d->exec, key) == 0)
		log_info("task stop run=%s step=%s attempt=%u", r->id,
			 r->spec->steps[op->step].name, op->attempt);
}

static void wake_rearm(struct flowd *d)
{
	int64_t due = fsm_next_due(&d->fsm), now;

	if (d->role != CONSENSUS_LEADER || due == 0 || d->stopping) {
		uv_timer_stop(&d->wake_timer);
		d->wake_armed_for = 0;
		return;
	}
	if (due == d->wake_armed_for && uv_is_active((uv_handle_t *)&d->wake_timer))
		return;
	now = flowd_now_ms();
	d->wake_armed_for = due;
	uv_timer_start(&d->wake_timer, tasks_wake_cb,
		       due > now ? (uint64_t)(due - now) : 0, 0);
}

static void wake_done_cb(void *arg, int status, uint64_t index, void *result)
{
	struct flowd *d = arg;

	d->wake_armed_for = 0;
	tasks_kick(d);
}

void tasks_wake_cb(uv_timer_t *h)
{
	struct flowd *d = h->data;
	char *buf;
	size_t len;

	if (d->role != CONSENSUS_LEADER || d->stopping)
		return;
	if (fsm_cmd_wake(flowd_now_ms(), &buf, &len) != 0)
		return;
	if (consensus_propose(d->raft, buf, len, d->cfg->apply_timeout_ms,
			      wake_done_cb, d) != CONSENSUS_OK) {
		d->wake_armed_for = 0;
		uv_timer_start(&d->wake_timer, tasks_wake_cb, 100, 0);
	}
}

void tasks_after_apply_cb(uv_idle_t *h)
{
	struct flowd *d = h->data;

	uv_idle_stop(h);
	/* Everything applied since the last pass reaches PostgreSQL as one
	 * set of row images, and the readers as one new view. */
	tasks_flush_records(d);
	readview_publish(d);
	while (d->ops_head != NULL) {
		struct task_op *op = d->ops_head;
		d->ops_head = op->next;
		if (d->ops_head == NULL)
			d->ops_tail = NULL;
		if (!d->stopping) {
			if (op->stop)
				op_stop(d, op);
			else
				op_start(d, op);
		}
		free(op->run_id);
		free(op);
	}
	wake_rearm(d);
}

/* ------------------------------------------------------------------------
 * Leadership
 */

static void node_up_done_cb(struct flowd *d, void *arg, int status,
			    const struct peer_result *refusal)
{
	d->node_up_inflight = false;
	if (status == CONSENSUS_OK) {
		d->node_up_done = true;
		log_info("node up node=%" PRIu64 " boot=%" PRIx64,
			 d->cfg->node_id, d->boot);
	}
}

void tasks_leader_timer_cb(uv_timer_t *h)
{
	struct flowd *d = h->data;
	char *buf;
	size_t len;

	/* Every node registers once per boot, through the leader. */
	if (d->stopping || d->node_up_done || d->node_up_inflight)
		return;
	if (fsm_cmd_node_up(flowd_now_ms(), d->cfg->node_id, d->boot,
			    d->cfg->limits.max_parallel_tasks, d->cfg->api_address,
			    &buf, &len) != 0)
		return;
	if (propose_anywhere(d, buf, len, node_up_done_cb, NULL) == 0)
		d->node_up_inflight = true;
}

void tasks_role_cb(void *arg, enum consensus_role role, uint64_t leader)
{
	struct flowd *d = arg;

	if (role != d->role)
		log_info("raft role=%d leader=%" PRIu64, (int)role, leader);
	/* A new leader gives every node a full timeout before judging it. */
	if (role == CONSENSUS_LEADER && d->role != CONSENSUS_LEADER)
		for (unsigned i = 0; i < d->n_heard; i++)
			d->heard[i].heard_ms = uv_now(d->loop);
	if (role == CONSENSUS_LEADER && d->role != CONSENSUS_LEADER) {
		d->role = role;
		scheduler_rebuild(d);
	}
	d->role = role;
	if (role == CONSENSUS_LEADER) {
		tasks_leader_timer_cb(&d->leader_timer);
		finish_send(d);
	}
	tasks_kick(d);
}

void tasks_clear(struct flowd *d)
{
	while (d->ops_head != NULL) {
		struct task_op *op = d->ops_head;
		d->ops_head = op->next;
		free(op->run_id);
		free(op);
	}
	d->ops_tail = NULL;
	outcomes_free(d->finish_head);
	d->finish_head = d->finish_tail = NULL;
}

/* ------------------------------------------------------------------------
 * Snapshots and PostgreSQL
 */

static void nop_done_cb(void *arg, int status, uint64_t index, void *result)
{
}

/* The applier advanced (its thread woke us). A snapshot that was postponed
 * until PostgreSQL held every task log can be taken now: raft looks at the
 * snapshot threshold only after applying an entry, so give it one. */
void tasks_db_progress_cb(uv_async_t *h)
{
	struct flowd *d = h->data;
	char *buf;
	size_t len;

	tasks_kick(d); /* the view shows PostgreSQL's progress */
	if (!d->snapshot_wanted || d->stopping || d->applier == NULL ||
	    d->role != CONSENSUS_LEADER ||
	    storage_applier_durable(d->applier) < d->log_pushed_index)
		return;
	if (fsm_cmd_nop(flowd_now_ms(), &buf, &len) != 0)
		return;
	if (consensus_propose(d->raft, buf, len, d->cfg->apply_timeout_ms,
			      nop_done_cb, d) == CONSENSUS_OK)
		d->snapshot_wanted = false;
}

/* ------------------------------------------------------------------------
 * Liveness
 */

static uint64_t *heard_slot(struct flowd *d, uint64_t node, bool add,
			    uint64_t **down_sent)
{
	for (unsigned i = 0; i < d->n_heard; i++) {
		if (d->heard[i].node == node) {
			*down_sent = &d->heard[i].down_sent_ms;
			return &d->heard[i].heard_ms;
		}
	}
	if (!add || d->n_heard == sizeof d->heard / sizeof d->heard[0])
		return NULL;
	d->heard[d->n_heard].node = node;
	d->heard[d->n_heard].heard_ms = uv_now(d->loop);
	d->heard[d->n_heard].down_sent_ms = 0;
	*down_sent = &d->heard[d->n_heard].down_sent_ms;
	return &d->heard[d->n_heard++].heard_ms;
}

void tasks_hook_node_heard(void *arg, uint64_t node)
{
	struct flowd *d = arg;
	uint64_t *down_sent;
	uint64_t *heard = heard_slot(d, node, true, &down_sent);

	if (heard != NULL) {
		*heard = uv_now(d->loop);
		*down_sent = 0;
	}
}

static void alive_done_cb(struct flowd *d, void *arg, int status,
			  const struct peer_result *refusal)
{
}

/* Every node: say "alive". The leader: mark silent nodes down. */
void tasks_alive_timer_cb(uv_timer_t *h)
{
	struct flowd *d = h->data;
	uint64_t now = uv_now(d->loop);
	char *buf;
	size_t len;

	if (d->stopping || !d->node_up_done)
		return;
	/* Registered, but the state says otherwise (this node was removed and
	 * added again, or marked down for another boot): after two looks in a
	 * row (the state may trail a moment), register anew. */
	struct fsm_node *me = NULL;
	for (unsigned i = 0; i < d->fsm.n_nodes; i++)
		if (d->fsm.nodes[i].id == d->cfg->node_id)
			me = &d->fsm.nodes[i];
	if (me == NULL || me->boot != d->boot || (!me->live && !me->removed)) {
		if (++d->unregistered_ticks >= 2) {
			d->unregistered_ticks = 0;
			d->node_up_done = false;
			return;
		}
	} else {
		d->unregistered_ticks = 0;
	}
	if (fsm_cmd_node_alive(flowd_now_ms(), d->cfg->node_id, d->boot, &buf,
			       &len) == 0)
		propose_anywhere(d, buf, len, alive_done_cb, NULL);
	if (d->role != CONSENSUS_LEADER)
		return;
	for (unsigned i = 0; i < d->fsm.n_nodes; i++) {
		struct fsm_node *n = &d->fsm.nodes[i];
		uint64_t *down_sent, *heard;
		if (!n->live || n->id == d->cfg->node_id)
			continue;
		heard = heard_slot(d, n->id, true, &down_sent);
		if (heard == NULL || now - *heard < d->cfg->node_timeout_ms)
			continue;
		if (*down_sent != 0 && now - *down_sent < d->cfg->node_timeout_ms)
			continue; /* one proposal per timeout */
		log_warn("node %" PRIu64 " silent for %" PRIu64 " ms: marking it "
			 "down", n->id, now - *heard);
		*down_sent = now;
		if (fsm_cmd_node_down(flowd_now_ms(), n->id, n->boot, &buf,
				      &len) == 0)
			propose_anywhere(d, buf, len, alive_done_cb, NULL);
	}
}
