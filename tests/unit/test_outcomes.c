/* test_outcomes.c - outcomes.c against a stand-in leader: what it is sent
 * (batches bounded by count and by bytes, outcomes cut to fit), what it
 * does with the answers (committed, not taken, refused), on a virtual
 * clock. No socket, no raft: the proposer is a table of calls the test
 * answers. The retry timer is never waited for: outcomes_send() (what a new
 * leader triggers) stands in for it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "daemon/outcomes.h"

#define MAX_CALLS 64
#define TS 1800000000000LL

/* ---- the stand-in leader ------------------------------------------------ */

struct call {
	json_t *cmd;             /* the command as sent */
	size_t len;
	forward_done_cb cb;
	void *cb_arg;
	bool answered;
};

struct leader {
	struct call calls[MAX_CALLS];
	unsigned n;
	bool down;               /* no leader: propose returns -1 */
};

static int fake_propose(void *arg, char *buf, size_t len, forward_done_cb cb,
			void *cb_arg)
{
	struct leader *l = arg;
	json_error_t err;
	struct call *c;

	if (l->down) {
		free(buf);
		return -1;
	}
	assert_true(l->n < MAX_CALLS);
	c = &l->calls[l->n++];
	c->cmd = json_loadb(buf, len, 0, &err);
	if (c->cmd == NULL)
		fail_msg("not JSON (%s): %.80s", err.text, buf);
	c->len = len;
	c->cb = cb;
	c->cb_arg = cb_arg;
	free(buf);
	return 0;
}

static int64_t fake_now(void *arg)
{
	return *(int64_t *)arg;
}

/* The leader's answer to call i. */
static void answer(struct leader *l, unsigned i, int status, int http)
{
	struct peer_result res = {.status = http, .body = "", .error =
				  "too_large: body over the limit"};

	assert_true(i < l->n && !l->calls[i].answered);
	l->calls[i].answered = true;
	l->calls[i].cb(l->calls[i].cb_arg, status,
		       status == FORWARD_REFUSED ? &res : NULL);
}

/* The task_finish commands call i carries (one, or a batch's). */
static size_t finishes(const struct leader *l, unsigned i, json_t **out)
{
	json_t *cmd = l->calls[i].cmd;
	const char *op = json_string_value(json_object_get(cmd, "op"));

	if (strcmp(op, "task_finish") == 0) {
		*out = cmd;
		return 1;
	}
	assert_string_equal(op, "batch");
	assert_int_equal(json_integer_value(json_object_get(cmd, "ts")), TS);
	*out = json_object_get(cmd, "cmds");
	return json_array_size(*out);
}

static const char *finish_field(const struct leader *l, unsigned i,
				size_t k, const char *field)
{
	json_t *f;

	if (finishes(l, i, &f) > 1 || json_is_array(f))
		f = json_array_get(f, k);
	return json_string_value(json_object_get(f, field));
}

/* ---- fixture ----------------------------------------------------------- */

struct fixture {
	uv_loop_t loop;
	struct flowd_config cfg;
	int64_t now;
	struct leader leader;
	struct outcomes *os;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);

	assert_non_null(f);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	f->cfg.node_id = 2;
	f->cfg.limits.max_body_bytes = 64 * 1024;
	f->now = TS;
	f->os = outcomes_new(&(struct outcomes_config){
		.loop = &f->loop,
		.cfg = &f->cfg,
		.clock = {.now_ms = fake_now, .arg = &f->now},
		.proposer = {.propose = fake_propose, .arg = &f->leader},
	});
	assert_non_null(f->os);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	/* What is still in flight completes first (shutdown order). */
	outcomes_stop(f->os);
	for (unsigned i = 0; i < f->leader.n; i++)
		if (!f->leader.calls[i].answered)
			answer(&f->leader, i, CONSENSUS_SHUTDOWN, 0);
	outcomes_close(f->os);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	for (unsigned i = 0; i < f->leader.n; i++)
		json_decref(f->leader.calls[i].cmd);
	free(f);
	return 0;
}

/* Queue outcome `n` of a run with `out` and `err` as its output. */
static void queue(struct fixture *f, unsigned n, const char *out,
		  const char *err)
{
	char step[32];
	struct fsm_finish fin = {.run_id = "r-000000000001", .step = step,
				 .attempt = 1, .node = 2, .exit_code = 0,
				 .reason = "exited", .out = out, .err = err};

	snprintf(step, sizeof step, "s%u", n);
	outcomes_queue(f->os, &fin);
}

static char *repeat(const char *unit, size_t times)
{
	size_t u = strlen(unit);
	char *s = malloc(u * times + 1);

	assert_non_null(s);
	for (size_t i = 0; i < times; i++)
		memcpy(s + i * u, unit, u);
	s[u * times] = '\0';
	return s;
}

/* ---- tests ------------------------------------------------------------- */

static void an_outcome_is_proposed_at_once_as_its_task_finish(void **state)
{
	struct fixture *f = *state;
	json_t *fin;

	queue(f, 0, "hello\n", "");
	assert_int_equal(f->leader.n, 1);
	assert_int_equal(finishes(&f->leader, 0, &fin), 1);
	assert_string_equal(finish_field(&f->leader, 0, 0, "stdout"), "hello\n");
	assert_int_equal(json_integer_value(json_object_get(fin, "ts")), TS);
	assert_int_equal(json_integer_value(json_object_get(fin, "node")), 2);
	answer(&f->leader, 0, CONSENSUS_OK, 200);
	assert_int_equal(outcomes_waiting(f->os), 0);
}

static void outcomes_that_queue_up_leave_in_batches_of_at_most_256(void **state)
{
	struct fixture *f = *state;
	size_t sent = 0;
	json_t *fin;

	/* Two commands in flight at most; the 600 that queue behind them
	 * leave as 256 + 256 + 88. */
	for (unsigned i = 0; i < 602; i++)
		queue(f, i, "ok", "");
	assert_int_equal(f->leader.n, OUTCOMES_INFLIGHT_MAX);
	assert_int_equal(outcomes_waiting(f->os), 600);
	answer(&f->leader, 0, CONSENSUS_OK, 200);
	answer(&f->leader, 1, CONSENSUS_OK, 200);
	assert_int_equal(f->leader.n, 4);
	assert_int_equal(finishes(&f->leader, 2, &fin), OUTCOMES_BATCH_MAX);
	assert_int_equal(finishes(&f->leader, 3, &fin), OUTCOMES_BATCH_MAX);
	answer(&f->leader, 2, CONSENSUS_OK, 200);
	assert_int_equal(f->leader.n, 5);
	assert_int_equal(finishes(&f->leader, 4, &fin), 88);
	/* In order, none twice. */
	for (unsigned i = 0; i < f->leader.n; i++) {
		size_t n = finishes(&f->leader, i, &fin);

		for (size_t k = 0; k < n; k++) {
			char want[32];

			snprintf(want, sizeof want, "s%zu", sent++);
			assert_string_equal(finish_field(&f->leader, i, k, "step"),
					    want);
		}
	}
	assert_int_equal(sent, 602);
}

static void batches_stay_within_the_byte_budget(void **state)
{
	struct fixture *f = *state;
	size_t budget = outcomes_budget(f->os), total = 0;
	char *out = repeat("x", 12000);
	json_t *fin;

	/* 64 KiB less 1/16: 61,440 bytes. Outcomes of ~12 KB each: five to
	 * a command, never six. */
	assert_int_equal(budget, 61440);
	for (unsigned i = 0; i < 32; i++)
		queue(f, i, out, "");
	for (unsigned i = 0; i < f->leader.n; i++) {
		size_t n = finishes(&f->leader, i, &fin);

		assert_true(f->leader.calls[i].len <= budget);
		if (i >= OUTCOMES_INFLIGHT_MAX) {
			assert_true(n == 5 || total + n == 32);
		}
		total += n;
		answer(&f->leader, i, CONSENSUS_OK, 200);
	}
	assert_int_equal(total, 32);
	assert_int_equal(outcomes_waiting(f->os), 0);
	free(out);
}

static void an_outcome_over_the_budget_is_cut_between_characters(void **state)
{
	struct fixture *f = *state;
	char *out = repeat("\x01", 65536);  /* six bytes each in JSON */
	char *err = repeat("\xc3\xa9", 32768); /* é */
	const char *so, *se;
	json_t *fin;

	queue(f, 0, out, err);
	assert_int_equal(f->leader.n, 1);
	assert_true(f->leader.calls[0].len <= outcomes_budget(f->os));
	assert_int_equal(finishes(&f->leader, 0, &fin), 1);
	assert_true(json_is_true(json_object_get(fin, "truncated")));
	so = finish_field(&f->leader, 0, 0, "stdout");
	se = finish_field(&f->leader, 0, 0, "stderr");
	/* Both streams keep a share; stderr ends on a whole character
	 * (jansson parsed it, so it is valid UTF-8). */
	assert_true(strlen(so) > 0 && strlen(so) < 65536);
	assert_true(strlen(se) > 0 && strlen(se) < 65536);
	assert_int_equal(strlen(se) % 2, 0);
	assert_int_equal(strspn(so, "\x01"), strlen(so));
	answer(&f->leader, 0, CONSENSUS_OK, 200);
	free(out);
	free(err);
}

static void an_outcome_not_committed_is_kept_and_sent_again_as_it_is(
	void **state)
{
	struct fixture *f = *state;
	char *first;

	queue(f, 0, "partial", "");
	first = json_dumps(f->leader.calls[0].cmd, JSON_SORT_KEYS);
	/* No answer or 5xx from the leader: kept. */
	answer(&f->leader, 0, CONSENSUS_NOT_LEADER, 503);
	assert_int_equal(outcomes_waiting(f->os), 1);
	/* No leader at all: kept too, nothing in flight. */
	f->leader.down = true;
	outcomes_send(f->os);
	assert_int_equal(f->leader.n, 1);
	assert_int_equal(outcomes_waiting(f->os), 1);
	/* A leader again: the very same command. */
	f->leader.down = false;
	outcomes_send(f->os);
	assert_int_equal(f->leader.n, 2);
	{
		char *again = json_dumps(f->leader.calls[1].cmd, JSON_SORT_KEYS);

		assert_string_equal(again, first);
		free(again);
	}
	answer(&f->leader, 1, CONSENSUS_OK, 200);
	assert_int_equal(outcomes_waiting(f->os), 0);
	free(first);
}

static void a_refused_batch_goes_one_by_one_then_without_logs(void **state)
{
	struct fixture *f = *state;
	json_t *fin;

	/* Two in flight, three queued behind them: one batch of three. */
	for (unsigned i = 0; i < 5; i++)
		queue(f, i, "lots of output", "and more");
	answer(&f->leader, 0, CONSENSUS_OK, 200);
	assert_int_equal(finishes(&f->leader, 2, &fin), 3);
	/* The leader refuses the batch (413): its outcomes go alone. */
	answer(&f->leader, 2, FORWARD_REFUSED, 413);
	assert_int_equal(f->leader.n, 4);
	assert_int_equal(finishes(&f->leader, 3, &fin), 1);
	assert_string_equal(finish_field(&f->leader, 3, 0, "step"), "s2");
	answer(&f->leader, 1, CONSENSUS_OK, 200);
	assert_int_equal(f->leader.n, 5);
	assert_int_equal(finishes(&f->leader, 4, &fin), 1);
	assert_string_equal(finish_field(&f->leader, 4, 0, "step"), "s3");
	/* One refused alone: once more without its logs, saying why. */
	answer(&f->leader, 3, FORWARD_REFUSED, 413);
	assert_int_equal(f->leader.n, 6);
	assert_string_equal(finish_field(&f->leader, 5, 0, "step"), "s2");
	assert_string_equal(finish_field(&f->leader, 5, 0, "stdout"), "");
	assert_non_null(strstr(finish_field(&f->leader, 5, 0, "stderr"),
			       "were dropped"));
	assert_non_null(strstr(finish_field(&f->leader, 5, 0, "stderr"),
			       "status 413"));
	assert_string_equal(finish_field(&f->leader, 5, 0, "reason"), "exited");
	/* Refused even so: kept, for the slower retry. */
	answer(&f->leader, 5, FORWARD_REFUSED, 413);
	answer(&f->leader, 4, CONSENSUS_OK, 200);
	assert_int_equal(f->leader.n, 8);
	assert_string_equal(finish_field(&f->leader, 6, 0, "step"), "s4");
	assert_string_equal(finish_field(&f->leader, 7, 0, "step"), "s2");
	answer(&f->leader, 6, CONSENSUS_OK, 200);
	answer(&f->leader, 7, CONSENSUS_OK, 200);
	assert_int_equal(outcomes_waiting(f->os), 0);
}

static void nothing_is_sent_once_stopped(void **state)
{
	struct fixture *f = *state;

	outcomes_stop(f->os);
	queue(f, 0, "late", "");
	outcomes_send(f->os);
	assert_int_equal(f->leader.n, 0);
	assert_int_equal(outcomes_waiting(f->os), 1); /* freed by close */
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(an_outcome_is_proposed_at_once_as_its_task_finish),
		T(outcomes_that_queue_up_leave_in_batches_of_at_most_256),
		T(batches_stay_within_the_byte_budget),
		T(an_outcome_over_the_budget_is_cut_between_characters),
		T(an_outcome_not_committed_is_kept_and_sent_again_as_it_is),
		T(a_refused_batch_goes_one_by_one_then_without_logs),
		T(nothing_is_sent_once_stopped),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
