/* test_fsm.c - the state machine driven by command sequences, no I/O. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/fsm.h"
#include "core/tz.h"
#include "core/view.h"
#include "daemon/tzdata.h"

/* What the hooks saw. */
struct seen {
	unsigned placed, stopped, records;
	unsigned counted[FSM_COUNT_EVENT + 1]; /* by enum fsm_count_kind */
	unsigned attempts[FSM_ATTEMPT_CANCELLED + 1]; /* ended, by status */
	uint64_t last_index;
	char last_placed[128];
};

static void take_records(struct fsm *f, struct seen *s)
{
	uint64_t index = 0;
	char *text = fsm_take_records(f, &index);
	json_error_t e;
	json_t *j;

	if (text == NULL)
		return;
	j = json_loads(text, 0, &e);
	assert_non_null(j);
	assert_true(json_is_array(j));
	assert_true(index > s->last_index);
	assert_int_equal(index, f->applied_index);
	s->last_index = index;
	s->records += (unsigned)json_array_size(j);
	json_decref(j);
	free(text);
}

static void on_placed(void *arg, struct fsm_run *r, struct fsm_step *st,
		      struct fsm_attempt *a)
{
	struct seen *s = arg;

	s->placed++;
	snprintf(s->last_placed, sizeof s->last_placed, "%s/%s/%u", r->id,
		 r->spec->steps[st->index].name, a->n);
}

static void on_stop(void *arg, struct fsm_run *r, struct fsm_step *st,
		    struct fsm_attempt *a)
{
	((struct seen *)arg)->stopped++;
}

static void on_count(void *arg, const struct fsm_count *c)
{
	struct seen *s = arg;

	s->counted[c->kind]++;
	if (c->kind == FSM_COUNT_ATTEMPT_ENDED)
		s->attempts[c->attempt->status]++;
	if (c->kind == FSM_COUNT_RUN_ENDED)
		assert_true(c->run->status == FSM_RUN_SUCCEEDED ||
			    c->run->status == FSM_RUN_FAILED ||
			    c->run->status == FSM_RUN_CANCELLED);
}

struct fx {
	struct fsm f;
	struct seen seen;
	uint64_t index;
	struct view_store *views;   /* the read view of f */
};

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof *x);
	struct fsm_hooks h = {.arg = &x->seen,
			      .attempt_placed = on_placed,
			      .attempt_stop = on_stop,
			      .count = on_count};

	fsm_init(&x->f, &h);
	x->views = view_store_new();
	assert_non_null(x->views);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;

	view_store_free(x->views);
	fsm_close(&x->f);
	free(x);
	return 0;
}

/* Publish the read view of `f` into `vs` as the loop does after a batch. */
static void publish(struct view_store *vs, struct fsm *f)
{
	static const struct view_cluster cl = {.role = "leader"};

	view_store_update(vs, f);
	view_store_publish(vs, &cl);
}

/* GET /v1/runs as the read view answers it (a new reference). */
static json_t *page_of(struct view_store *vs, struct fsm *f, const char *flow,
		       int status, unsigned limit, uint64_t cursor,
		       uint64_t *before, unsigned *more)
{
	struct view_guard g;
	const struct view *v;
	char *text;
	json_t *j;

	publish(vs, f);
	v = view_acquire(vs, &g);
	text = view_runs_page_text(v, flow, status, limit, cursor, before, more);
	view_release(&g);
	assert_non_null(text);
	j = json_loads(text, 0, NULL);
	assert_non_null(j);
	free(text);
	return j;
}

static json_t *page(struct fx *x, const char *flow, int status,
		    unsigned limit, uint64_t cursor, uint64_t *before,
		    unsigned *more)
{
	return page_of(x->views, &x->f, flow, status, limit, cursor, before,
		       more);
}

/* GET /v1/runs/{id} as the read view answers it, or NULL when not in it. */
static json_t *run_view(struct fx *x, const char *id)
{
	struct view_guard g;
	const struct view *v;
	char *text = NULL;
	json_t *j = NULL;

	publish(x->views, &x->f);
	v = view_acquire(x->views, &g);
	if (view_run_text(v, id, &text) == VIEW_FOUND) {
		j = json_loads(text, 0, NULL);
		assert_non_null(j);
	}
	view_release(&g);
	free(text);
	return j;
}

/* A result as the tests read it: the error's kind, else OK or CREATED. */
enum { OK = 100, CREATED = 101 };

static int outcome(const struct fsm_result *r)
{
	if (r->err.errc != FLOWD_OK)
		return (int)r->err.errc;
	return r->created ? CREATED : OK;
}

static struct fsm_result *apply(struct fx *x, char *buf, size_t len)
{
	struct fsm_result *r = fsm_apply(&x->f, ++x->index, buf, len);

	free(buf);
	take_records(&x->f, &x->seen);
	return r;
}

#define DIAMOND                                                              \
	"{\"parameters\":{\"region\":{\"type\":\"string\",\"required\":true}," \
	"\"alpha\":{\"type\":\"float\",\"default\":0.5}},"                     \
	"\"steps\":[{\"name\":\"a\",\"command\":[\"true\"]},"                 \
	"{\"name\":\"b\",\"command\":[\"true\"],\"depends_on\":[\"a\"],"      \
	"\"retries\":{\"max\":1,\"backoff_s\":0}},"                           \
	"{\"name\":\"c\",\"command\":[\"true\"],\"depends_on\":[\"a\"],"      \
	"\"retries\":{\"max\":2,\"backoff_s\":10}},"                          \
	"{\"name\":\"d\",\"shell\":\"true\",\"depends_on\":[\"b\",\"c\"]}]}"

static struct fsm_result *deploy(struct fx *x, const char *flow,
				 const char *spec_text)
{
	struct flowd_limits lim;
	struct flowd_error err;
	struct flow_spec *spec;
	json_t *doc = json_loads(spec_text, 0, NULL);
	char *buf;
	size_t len;

	flowd_limits_defaults(&lim);
	assert_int_equal(spec_parse(doc, &lim, &spec, &err), 0);
	assert_int_equal(fsm_cmd_deploy(1000, flow, spec->doc, &buf, &len), 0);
	spec_free(spec);
	json_decref(doc);
	return apply(x, buf, len);
}

static struct fsm_result *node_up(struct fx *x, uint64_t node, uint64_t boot,
				  unsigned cap)
{
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_node_up(1000, node, boot, cap, "127.0.0.1:1", &buf, &len), 0);
	return apply(x, buf, len);
}

static struct fsm_result *create(struct fx *x, const char *flow,
				 const char *params, const char *key)
{
	json_t *p = params ? json_loads(params, 0, NULL) : NULL;
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_run_create(2000, flow, p, key, NULL, NULL, &buf, &len), 0);
	json_decref(p);
	return apply(x, buf, len);
}

static struct fsm_result *finish(struct fx *x, const char *run,
				 const char *step, unsigned attempt,
				 uint64_t node, int code, const char *reason,
				 int64_t ts)
{
	struct fsm_finish fin = {.run_id = run, .step = step,
				 .attempt = attempt, .node = node,
				 .exit_code = code, .reason = reason,
				 .out = "hello\n", .err = ""};
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_task_finish(ts, &fin, &buf, &len), 0);
	return apply(x, buf, len);
}

static struct fsm_step *step(struct fsm_run *r, const char *name)
{
	for (size_t i = 0; i < r->spec->n_steps; i++)
		if (strcmp(r->spec->steps[i].name, name) == 0)
			return &r->steps[i];
	fail_msg("no step %s", name);
	return NULL;
}

static void deploy_is_versioned_and_idempotent(void **state)
{
	struct fx *x = *state;
	struct fsm_result *r;

	r = deploy(x, "etl", DIAMOND);
	assert_int_equal(outcome(r), CREATED);
	assert_int_equal(r->flow->current, 1);
	r = deploy(x, "etl", DIAMOND);
	assert_int_equal(outcome(r), OK);
	assert_false(r->created);
	assert_int_equal(r->flow->n_versions, 1);
	r = deploy(x, "etl", "{\"steps\":[{\"name\":\"a\",\"command\":[\"x\"]}]}");
	assert_int_equal(outcome(r), CREATED);
	assert_int_equal(r->flow->current, 2);
}

static void undeployed_flow_refuses_runs_but_keeps_history(void **state)
{
	struct fx *x = *state;
	char *buf;
	size_t len;

	deploy(x, "etl", DIAMOND);
	assert_int_equal(fsm_cmd_undeploy(1500, "etl", &buf, &len), 0);
	assert_int_equal(outcome(apply(x, buf, len)), OK);
	assert_int_equal(fsm_flow_get(&x->f, "etl")->current, 0);
	assert_int_equal(fsm_flow_get(&x->f, "etl")->n_versions, 1);
	assert_int_equal(outcome(create(x, "etl", "{\"region\":\"eu\"}", NULL)), FLOWD_E_CONFLICT);
	assert_int_equal(outcome(create(x, "nope", NULL, NULL)), FLOWD_E_NOT_FOUND);
}

static void diamond_runs_to_success(void **state)
{
	struct fx *x = *state;
	struct fsm_result *res;
	struct fsm_run *r;

	deploy(x, "etl", DIAMOND);
	node_up(x, 1, 77, 8);
	res = create(x, "etl", "{\"region\":\"eu\"}", NULL);
	assert_int_equal(outcome(res), CREATED);
	r = res->run;
	assert_int_equal(r->status, FSM_RUN_RUNNING);
	assert_int_equal(step(r, "a")->status, FSM_STEP_RUNNING);
	assert_int_equal(step(r, "b")->status, FSM_STEP_PENDING);
	assert_int_equal(x->seen.placed, 1);
	assert_int_equal(step(r, "a")->attempts[0].boot, 77);
	/* the default parameter was resolved */
	assert_true(json_real_value(json_object_get(r->params, "alpha")) == 0.5);

	finish(x, r->id, "a", 1, 1, 0, "exited", 3000);
	assert_int_equal(step(r, "b")->status, FSM_STEP_RUNNING);
	assert_int_equal(step(r, "c")->status, FSM_STEP_RUNNING);
	finish(x, r->id, "b", 1, 1, 0, "exited", 3100);
	assert_int_equal(step(r, "d")->status, FSM_STEP_PENDING);
	finish(x, r->id, "c", 1, 1, 0, "exited", 3200);
	assert_int_equal(step(r, "d")->status, FSM_STEP_RUNNING);
	finish(x, r->id, "d", 1, 1, 0, "exited", 3300);
	assert_int_equal(r->status, FSM_RUN_SUCCEEDED);
	assert_int_equal(r->finished_ms, 3300);
	assert_int_equal(x->f.nodes[0].running, 0);
	assert_int_equal(x->seen.placed, 4);
	assert_true(x->seen.records > 0);
}

static void failed_step_retries_immediately_then_fails_run(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r;

	deploy(x, "etl", DIAMOND);
	node_up(x, 1, 1, 8);
	r = create(x, "etl", "{\"region\":\"eu\"}", NULL)->run;
	finish(x, r->id, "a", 1, 1, 0, "exited", 3000);
	/* b: retries.max 1, backoff 0: re-placed in the same apply */
	finish(x, r->id, "b", 1, 1, 1, "exited", 3100);
	assert_int_equal(step(r, "b")->status, FSM_STEP_RUNNING);
	assert_int_equal(step(r, "b")->n_attempts, 2);
	assert_int_equal(step(r, "b")->attempts[0].status, FSM_ATTEMPT_FAILED);
	finish(x, r->id, "b", 2, 1, 1, "exited", 3200);
	assert_int_equal(step(r, "b")->status, FSM_STEP_FAILED);
	assert_int_equal(r->status, FSM_RUN_FAILED);
	assert_string_equal(r->reason, "step b failed with exit code 1");
	/* c was running: asked to stop; d never ran */
	assert_int_equal(x->seen.stopped, 1);
	assert_int_equal(step(r, "d")->status, FSM_STEP_SKIPPED);
	assert_int_equal(step(r, "c")->status, FSM_STEP_CANCELLED);
	finish(x, r->id, "c", 1, 1, -1, "stopped", 3300);
	assert_int_equal(step(r, "c")->attempts[0].status, FSM_ATTEMPT_CANCELLED);
	assert_int_equal(x->f.nodes[0].running, 0);
	/* what metrics count: each event once */
	assert_int_equal(x->seen.counted[FSM_COUNT_RUN_CREATED], 1);
	assert_int_equal(x->seen.counted[FSM_COUNT_RUN_ENDED], 1);
	assert_int_equal(x->seen.counted[FSM_COUNT_RETRY], 1);
	assert_int_equal(x->seen.counted[FSM_COUNT_ATTEMPT_ENDED], 4);
	assert_int_equal(x->seen.attempts[FSM_ATTEMPT_SUCCEEDED], 1);
	assert_int_equal(x->seen.attempts[FSM_ATTEMPT_FAILED], 2);
	assert_int_equal(x->seen.attempts[FSM_ATTEMPT_CANCELLED], 1);
}

static void backoff_waits_for_wake_and_grows(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r;
	char *buf;
	size_t len;

	deploy(x, "etl", DIAMOND);
	node_up(x, 1, 1, 8);
	r = create(x, "etl", "{\"region\":\"eu\"}", NULL)->run;
	finish(x, r->id, "a", 1, 1, 0, "exited", 3000);
	finish(x, r->id, "c", 1, 1, 0, "timeout", 4000);
	assert_int_equal(step(r, "c")->status, FSM_STEP_RETRY_WAIT);
	assert_int_equal(fsm_next_due(&x->f), 14000);
	/* too early: nothing happens */
	assert_int_equal(fsm_cmd_wake(13999, &buf, &len), 0);
	apply(x, buf, len);
	assert_int_equal(step(r, "c")->status, FSM_STEP_RETRY_WAIT);
	assert_int_equal(fsm_cmd_wake(14000, &buf, &len), 0);
	apply(x, buf, len);
	assert_int_equal(step(r, "c")->status, FSM_STEP_RUNNING);
	assert_int_equal(fsm_next_due(&x->f), 0);
	/* second failure: backoff doubles (10 s -> 20 s) */
	finish(x, r->id, "c", 2, 1, 2, "exited", 20000);
	assert_int_equal(fsm_next_due(&x->f), 40000);
}

static void stale_and_foreign_results_are_ignored(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r;

	deploy(x, "etl", DIAMOND);
	node_up(x, 1, 1, 8);
	r = create(x, "etl", "{\"region\":\"eu\"}", NULL)->run;
	/* from another node: fenced */
	finish(x, r->id, "a", 1, 2, 0, "exited", 3000);
	assert_int_equal(step(r, "a")->status, FSM_STEP_RUNNING);
	finish(x, r->id, "a", 1, 1, 0, "exited", 3000);
	assert_int_equal(step(r, "a")->status, FSM_STEP_SUCCEEDED);
	/* the same result again: no change */
	unsigned placed = x->seen.placed;
	finish(x, r->id, "a", 1, 1, 1, "exited", 3100);
	assert_int_equal(step(r, "a")->status, FSM_STEP_SUCCEEDED);
	assert_int_equal(x->seen.placed, placed);
	/* an attempt that does not exist */
	assert_int_equal(outcome(finish(x, r->id, "a", 9, 1, 0, "exited", 1)), FLOWD_E_NOT_FOUND);
}

static void node_restart_marks_attempts_lost_and_retries(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r;

	deploy(x, "etl", DIAMOND);
	node_up(x, 1, 1, 8);
	r = create(x, "etl", "{\"region\":\"eu\"}", NULL)->run;
	finish(x, r->id, "a", 1, 1, 0, "exited", 3000);
	/* b (retries 1) and c (retries 2) run; the node restarts */
	node_up(x, 1, 2, 8);
	assert_int_equal(step(r, "b")->attempts[0].status, FSM_ATTEMPT_LOST);
	assert_int_equal(step(r, "b")->status, FSM_STEP_RUNNING);
	assert_int_equal(step(r, "b")->attempts[1].boot, 2);
	assert_int_equal(step(r, "c")->status, FSM_STEP_RETRY_WAIT);
	/* lost again with no retries left: the run fails */
	node_up(x, 1, 3, 8);
	assert_int_equal(r->status, FSM_RUN_FAILED);
	assert_string_equal(r->reason, "step b lost its node");
	assert_int_equal(x->f.nodes[0].running, 0);
	/* the same boot again changes nothing */
	node_up(x, 1, 3, 8);
	assert_int_equal(r->status, FSM_RUN_FAILED);
}

static void cancel_stops_running_and_cancels_the_rest(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r;
	char *buf;
	size_t len;

	deploy(x, "etl", DIAMOND);
	node_up(x, 1, 1, 8);
	r = create(x, "etl", "{\"region\":\"eu\"}", NULL)->run;
	assert_int_equal(fsm_cmd_run_cancel(2500, r->id, &buf, &len), 0);
	assert_int_equal(outcome(apply(x, buf, len)), OK);
	assert_int_equal(r->status, FSM_RUN_CANCELLED);
	assert_int_equal(x->seen.stopped, 1);
	assert_int_equal(step(r, "b")->status, FSM_STEP_CANCELLED);
	assert_int_equal(fsm_cmd_run_cancel(2600, r->id, &buf, &len), 0);
	assert_int_equal(outcome(apply(x, buf, len)), FLOWD_E_CONFLICT);
	finish(x, r->id, "a", 1, 1, -1, "stopped", 2700);
	assert_int_equal(step(r, "a")->attempts[0].status, FSM_ATTEMPT_CANCELLED);
	assert_int_equal(r->status, FSM_RUN_CANCELLED);
}

static void idempotency_key_returns_the_same_run(void **state)
{
	struct fx *x = *state;
	struct fsm_result *a, *b;
	char id[64];

	deploy(x, "etl", DIAMOND);
	a = create(x, "etl", "{\"region\":\"eu\"}", "k1");
	assert_int_equal(outcome(a), CREATED);
	strcpy(id, a->run->id);
	b = create(x, "etl", "{\"region\":\"us\"}", "k1");
	assert_int_equal(outcome(b), OK);
	assert_string_equal(b->run->id, id);
	assert_int_equal(x->f.n_runs, 1);
	/* the same key on another flow is another run */
	deploy(x, "other", DIAMOND);
	assert_int_equal(outcome(create(x, "other", "{\"region\":\"eu\"}", "k1")), CREATED);
}

static void bad_parameters_are_a_result_not_a_failure(void **state)
{
	struct fx *x = *state;
	struct fsm_result *r;

	deploy(x, "etl", DIAMOND);
	r = create(x, "etl", "{}", NULL);
	assert_int_equal(outcome(r), FLOWD_E_INVALID);
	assert_string_equal(r->err.field, "parameters.region");
	r = create(x, "etl", "{\"region\":\"eu\",\"zzz\":1}", NULL);
	assert_int_equal(outcome(r), FLOWD_E_INVALID);
	assert_int_equal(x->f.n_runs, 0);
	/* garbage is ignored */
	char *junk = strdup("{not json");
	assert_int_equal(outcome(apply(x, junk, strlen(junk))), FLOWD_E_INVALID);
}

static void capacity_queues_ready_steps_in_order(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r1, *r2;

	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}]}");
	/* no node yet: queued */
	r1 = create(x, "one", NULL, NULL)->run;
	r2 = create(x, "one", NULL, NULL)->run;
	assert_int_equal(r1->status, FSM_RUN_QUEUED);
	assert_int_equal(x->f.n_ready, 2);
	node_up(x, 1, 1, 1);
	assert_int_equal(r1->status, FSM_RUN_RUNNING);
	assert_int_equal(r2->status, FSM_RUN_QUEUED);
	assert_int_equal(x->f.n_ready, 1);
	finish(x, r1->id, "s", 1, 1, 0, "exited", 5000);
	assert_int_equal(r2->status, FSM_RUN_RUNNING);
	assert_int_equal(r2->started_ms, 5000);
	assert_int_equal(x->f.n_ready, 0);
	/* a cancelled queued run leaves the ready queue */
	struct fsm_run *r3 = create(x, "one", NULL, NULL)->run;
	assert_int_equal(x->f.n_ready, 1);
	char *buf;
	size_t len;
	assert_int_equal(fsm_cmd_run_cancel(5100, r3->id, &buf, &len), 0);
	assert_int_equal(outcome(apply(x, buf, len)), OK);
	assert_int_equal(x->f.n_ready, 0);
}

static void placement_prefers_the_freest_node(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r;

	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}]}");
	node_up(x, 2, 1, 4);
	node_up(x, 1, 1, 4);
	r = create(x, "one", NULL, NULL)->run;
	assert_int_equal(r->steps[0].attempts[0].node, 1); /* tie: lowest id */
	r = create(x, "one", NULL, NULL)->run;
	assert_int_equal(r->steps[0].attempts[0].node, 2);
}

static char *snap(struct fsm *f)
{
	char *buf;
	size_t len;

	assert_int_equal(fsm_snapshot(f, &buf, &len), 0);
	assert_int_equal(strlen(buf), len);
	return buf;
}

static void snapshot_restore_round_trip(void **state)
{
	struct fx *x = *state;
	struct fsm g;
	struct fsm_run *r, *rg;
	char *s1, *s2;
	char *buf;
	size_t len;

	deploy(x, "etl", DIAMOND);
	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}]}");
	node_up(x, 1, 5, 2);
	r = create(x, "etl", "{\"region\":\"eu\"}", "key")->run;
	finish(x, r->id, "a", 1, 1, 0, "exited", 3000);
	finish(x, r->id, "c", 1, 1, 1, "exited", 3100); /* retry_wait */
	create(x, "one", NULL, NULL);                   /* ready, no room */
	create(x, "one", NULL, NULL);
	s1 = snap(&x->f);

	fsm_init(&g, NULL);
	assert_int_equal(fsm_restore(&g, s1, strlen(s1)), 0);
	s2 = snap(&g);
	assert_string_equal(s1, s2);
	assert_int_equal(g.nodes[0].running, x->f.nodes[0].running);
	assert_int_equal(fsm_next_due(&g), fsm_next_due(&x->f));
	rg = fsm_run_get(&g, r->id);
	assert_non_null(rg);
	assert_int_equal(rg->active_attempts, r->active_attempts);

	/* both continue identically */
	assert_int_equal(fsm_cmd_wake(100000, &buf, &len), 0);
	fsm_apply(&g, 100, buf, len);
	fsm_apply(&x->f, 100, buf, len);
	free(buf);
	free(s1);
	free(s2);
	s1 = snap(&x->f);
	s2 = snap(&g);
	/* applied index differs only if the fixture did; both are 100 now */
	assert_string_equal(s1, s2);

	/* a corrupt snapshot leaves the state alone */
	assert_int_equal(fsm_restore(&g, "{\"v\":1,\"runs\":[{}]}", 19), -1);
	assert_non_null(fsm_run_get(&g, r->id));
	free(s1);
	free(s2);
	fsm_close(&g);
}

static void command_encoding_round_trip(void **state)
{
	struct fsm_finish fin = {.run_id = "r-1", .step = "s", .attempt = 3,
				 .node = 7, .exit_code = 2, .term_signal = 0,
				 .reason = "exited", .detail = "d",
				 .out = "o\xc3\xa9", .err = "e", .truncated = true};
	char *buf;
	size_t len;
	json_t *j;

	assert_int_equal(fsm_cmd_task_finish(42, &fin, &buf, &len), 0);
	j = json_loadb(buf, len, 0, NULL);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "v")), 1);
	assert_string_equal(json_string_value(json_object_get(j, "op")), "task_finish");
	assert_int_equal(json_integer_value(json_object_get(j, "ts")), 42);
	assert_int_equal(json_integer_value(json_object_get(j, "attempt")), 3);
	assert_int_equal(json_integer_value(json_object_get(j, "node")), 7);
	assert_string_equal(json_string_value(json_object_get(j, "stdout")), "o\xc3\xa9");
	assert_true(json_is_true(json_object_get(j, "truncated")));
	json_decref(j);
	free(buf);
}

static void utf8_sanitize_drops_nul_and_replaces_garbage(void **state)
{
	char *s = flowd_utf8_sanitize("a\0b\xff" "c\xc3\xa9\xe2\x82", 9);

	assert_string_equal(s, "ab\xEF\xBF\xBD" "c\xc3\xa9\xEF\xBF\xBD\xEF\xBF\xBD");
	free(s);
}

static void runs_page_is_newest_first_with_cursor(void **state)
{
	struct fx *x = *state;
	json_t *p, *runs;
	const char *cur;

	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}]}");
	for (int i = 0; i < 5; i++)
		create(x, "one", NULL, NULL);
	uint64_t before;
	unsigned more;

	p = page(x, NULL, -1, 2, 0, &before, &more);
	assert_int_equal(more, 0);
	runs = json_object_get(p, "runs");
	assert_int_equal(json_array_size(runs), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(runs, 0), "id")),
			    "r-000000000005");
	cur = json_string_value(json_object_get(p, "next_cursor"));
	assert_string_equal(cur, "4");
	json_t *q = page(x, NULL, -1, 10, 4, &before, &more);
	assert_int_equal(json_array_size(json_object_get(q, "runs")), 3);
	assert_true(json_is_null(json_object_get(q, "next_cursor")));
	json_decref(q);
	json_decref(p);
	p = page(x, "one", FSM_RUN_RUNNING, 10, 0, &before, &more);
	assert_int_equal(json_array_size(json_object_get(p, "runs")), 0);
	json_decref(p);
}

static void records_coalesce_rows_changed_by_many_entries(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r;
	char *buf, *text;
	size_t len;
	uint64_t index;
	json_t *rows;
	size_t i, runs = 0, logs = 0;
	json_t *row;

	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}]}");
	node_up(x, 1, 1, 4);
	/* two entries applied, records taken once */
	assert_int_equal(fsm_cmd_run_create(10, "one", NULL, NULL, NULL, NULL, &buf, &len), 0);
	r = fsm_apply(&x->f, ++x->index, buf, len)->run;
	free(buf);
	struct fsm_finish fin = {.run_id = r->id, .step = "s", .attempt = 1,
				 .node = 1, .exit_code = 0, .reason = "exited",
				 .out = "o", .err = ""};
	assert_int_equal(fsm_cmd_task_finish(20, &fin, &buf, &len), 0);
	fsm_apply(&x->f, ++x->index, buf, len);
	free(buf);
	text = fsm_take_records(&x->f, &index);
	assert_non_null(text);
	assert_int_equal(index, x->index);
	rows = json_loads(text, 0, NULL);
	json_array_foreach(rows, i, row)
	{
		const char *t = json_string_value(json_object_get(row, "t"));
		if (strcmp(t, "run") == 0) {
			runs++;
			assert_string_equal(json_string_value(json_object_get(row, "status")),
					    "succeeded");
		}
		if (strcmp(t, "log") == 0)
			logs++;
	}
	assert_int_equal(runs, 1);
	assert_int_equal(logs, 1);
	json_decref(rows);
	free(text);
	/* nothing changed since: nothing to write */
	assert_null(fsm_take_records(&x->f, &index));
}

static struct fsm_result *create_retain(struct fx *x, const char *flow,
					const char *key, uint64_t retain)
{
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_run_create(2000, flow, NULL, key, NULL,
					    &(struct fsm_retention){.runs = retain},
					    &buf, &len), 0);
	return apply(x, buf, len);
}

static void settled_runs_beyond_retain_leave_memory_oldest_first(void **state)
{
	struct fx *x = *state;
	char ids[5][32];
	uint64_t before;
	unsigned more;
	json_t *p;
	char *snap1, *snap2;
	struct fsm g;

	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}]}");
	node_up(x, 1, 1, 8);
	for (int i = 0; i < 5; i++) {
		char key[16];
		snprintf(key, sizeof key, "k%d", i);
		strcpy(ids[i], create_retain(x, "one", key, 2)->run->id);
	}
	/* finish runs 0, 1, 2, 3 in that order: two stay, two leave */
	for (int i = 0; i < 4; i++)
		finish(x, ids[i], "s", 1, 1, 0, "exited", 3000 + i);
	assert_null(fsm_run_get(&x->f, ids[0]));
	assert_null(fsm_run_get(&x->f, ids[1]));
	assert_non_null(fsm_run_get(&x->f, ids[2]));
	assert_non_null(fsm_run_get(&x->f, ids[4])); /* still running */
	assert_true(fsm_run_evicted(&x->f, ids[0]));
	assert_false(fsm_run_evicted(&x->f, ids[2]));
	assert_false(fsm_run_evicted(&x->f, "r-000000000099"));
	assert_int_equal(x->f.n_settled, 2);
	/* its rows went out, and a snapshot must wait for them */
	assert_true(x->seen.records > 0);

	/* an idempotency key of an evicted run still names it */
	struct fsm_result *r = create_retain(x, "one", "k0", 2);
	assert_int_equal(outcome(r), OK);
	assert_null(r->run);
	assert_string_equal(r->run_id, ids[0]);

	/* the page stops at the first evicted run and hands over */
	p = page(x, NULL, -1, 10, 0, &before, &more);
	assert_int_equal(json_array_size(json_object_get(p, "runs")), 3);
	assert_int_equal(before, 3); /* runs with seq < 3 come from PostgreSQL */
	assert_int_equal(more, 7);
	json_decref(p);

	/* snapshot and restore keep the settled order, keys and retain */
	snap1 = snap(&x->f);
	fsm_init(&g, NULL);
	assert_int_equal(fsm_restore(&g, snap1, strlen(snap1)), 0);
	snap2 = snap(&g);
	assert_int_equal(strlen(snap1), strlen(snap2));
	assert_int_equal(g.retain, 2);
	assert_int_equal(g.n_settled, 2);
	assert_true(fsm_run_evicted(&g, ids[1]));
	struct fsm_run *run;
	assert_string_equal(fsm_idem_lookup(&g, "one", "k1", &run), ids[1]);
	assert_null(run);
	/* the view of the restored state hands over at the same run */
	struct view_store *gv = view_store_new();
	p = page_of(gv, &g, NULL, -1, 10, 0, &before, &more);
	assert_int_equal(json_array_size(json_object_get(p, "runs")), 3);
	assert_int_equal(before, 3);
	json_decref(p);
	view_store_free(gv);
	free(snap1);
	free(snap2);
	fsm_close(&g);
}

/* A keyed run_create at `ts` carrying a key retention. */
static struct fsm_result *create_keyed(struct fx *x, const char *key,
				       int64_t ts, uint64_t runs,
				       uint64_t keys, uint64_t ttl_s)
{
	struct fsm_retention keep = {.runs = runs, .keys = keys,
				     .key_ttl_s = ttl_s};
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_run_create(ts, "one", NULL, key, NULL, &keep, &buf,
					    &len), 0);
	return apply(x, buf, len);
}

/* Keys are kept for key_ttl_s and key_max at most (as of each command's
 * time), oldest first; a retry past that makes a new run. Snapshots keep
 * them with their times. */
static void idempotency_keys_have_a_retention(void **state)
{
	struct fx *x = *state;
	char first[32], *s1, *s2;
	struct fsm_result *r;
	struct fsm_run *run;
	struct fsm g;

	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}]}");
	node_up(x, 1, 1, 100);
	r = create_keyed(x, "a", 10000, 0, 3, 60);
	assert_int_equal(outcome(r), CREATED);
	snprintf(first, sizeof first, "%s", r->run->id);
	/* within the retention: the same run */
	r = create_keyed(x, "a", 69000, 0, 3, 60);
	assert_int_equal(outcome(r), OK);
	assert_string_equal(r->run_id, first);
	/* 61 s later the key is gone: a new run */
	r = create_keyed(x, "a", 71000, 0, 3, 60);
	assert_int_equal(outcome(r), CREATED);
	assert_string_not_equal(r->run->id, first);
	/* at most three keys: b, c, d push "a" out */
	create_keyed(x, "b", 72000, 0, 3, 60);
	create_keyed(x, "c", 73000, 0, 3, 60);
	create_keyed(x, "d", 74000, 0, 3, 60);
	assert_null(fsm_idem_lookup(&x->f, "one", "a", &run));
	assert_non_null(fsm_idem_lookup(&x->f, "one", "b", &run));
	assert_int_equal(idem_count(&x->f.idem), 3);
	/* a snapshot keeps keys, times and the retention */
	s1 = snap(&x->f);
	fsm_init(&g, NULL);
	assert_int_equal(fsm_restore(&g, s1, strlen(s1)), 0);
	s2 = snap(&g);
	assert_string_equal(s1, s2);
	assert_int_equal(g.idem_max, 3);
	assert_int_equal(g.idem_ttl_ms, 60000);
	assert_non_null(fsm_idem_lookup(&g, "one", "d", &run));
	free(s1);
	free(s2);
	fsm_close(&g);
}

/* Only the newest version's spec and those of runs still in memory stay;
 * the others are read from PostgreSQL. */
static void old_specs_leave_memory_when_no_run_uses_them(void **state)
{
	struct fx *x = *state;
	struct fsm_flow *fl;
	char old_run[32], *s1, *s2;
	struct fsm g;

	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"v1\"]}]}");
	node_up(x, 1, 1, 100);
	snprintf(old_run, sizeof old_run, "%s",
		 create_retain(x, "one", NULL, 1)->run->id);
	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"v2\"]}]}");
	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"v3\"]}]}");
	fl = fsm_flow_get(&x->f, "one");
	assert_int_equal(fl->n_versions, 3);
	/* while PostgreSQL does not hold version 2's row, its spec stays */
	fsm_release_specs(&x->f, fl->versions[1].index - 1);
	assert_non_null(fl->versions[1].spec);
	fsm_release_specs(&x->f, fl->versions[1].index);
	s1 = snap(&x->f);
	assert_non_null(fl->versions[0].spec); /* its run still runs */
	assert_null(fl->versions[1].spec);     /* nobody uses it */
	assert_non_null(fl->versions[2].spec); /* the newest */
	/* a snapshot without v2's spec restores, and v1 stays for its run */
	fsm_init(&g, NULL);
	assert_int_equal(fsm_restore(&g, s1, strlen(s1)), 0);
	s2 = snap(&g);
	assert_string_equal(s1, s2);
	assert_non_null(fsm_flow_get(&g, "one")->versions[0].spec);
	assert_null(fsm_flow_get(&g, "one")->versions[1].spec);
	free(s1);
	free(s2);
	fsm_close(&g);
	/* the v1 run ends and leaves memory (retain 1, a newer one settles) */
	finish(x, old_run, "s", 1, 1, 0, "exited", 3000);
	finish(x, create_retain(x, "one", NULL, 1)->run->id, "s", 1, 1, 0,
	       "exited", 3001);
	assert_null(fsm_run_get(&x->f, old_run));
	assert_non_null(fl->versions[0].spec); /* until released */
	fsm_release_specs(&x->f, UINT64_MAX);
	assert_null(fl->versions[0].spec);
	assert_non_null(fl->versions[2].spec);
}

/* The run index spans the oldest run in memory to the newest, not every
 * run ever made. */
static void the_run_index_follows_the_runs_in_memory(void **state)
{
	struct fx *x = *state;

	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}]}");
	node_up(x, 1, 1, 100);
	for (int i = 0; i < 5000; i++)
		finish(x, create_retain(x, "one", NULL, 10)->run->id, "s", 1, 1,
		       0, "exited", 3000 + i);
	assert_int_equal(x->f.n_runs, 5000);
	assert_true(x->f.run_lo > 4000);
	assert_true(x->f.cap_runs <= 512);
	assert_null(fsm_run_at(&x->f, 100));
	assert_non_null(fsm_run_at(&x->f, 5000));
	assert_true(fsm_run_evicted(&x->f, "r-000000000100"));
	assert_false(fsm_run_evicted(&x->f, "r-000000005000"));
}

/* Snapshot text is cached per run until the run changes: a snapshot taken
 * after changes that did not place anything (a join's dependency count going
 * down) must still describe them, as a restore of it shows. */
static void cached_snapshot_text_follows_every_change(void **state)
{
	struct fx *x = *state;
	struct fsm g;
	struct fsm_run *r;
	char *s1, *s2;

	deploy(x, "etl", DIAMOND);
	node_up(x, 1, 1, 8);
	r = create(x, "etl", "{\"region\":\"eu\"}", NULL)->run;
	free(snap(&x->f)); /* caches every run's text */
	finish(x, r->id, "a", 1, 1, 0, "exited", 3000);
	free(snap(&x->f));
	finish(x, r->id, "b", 1, 1, 0, "exited", 3100); /* d: 2 deps -> 1 */
	assert_int_equal(step(r, "d")->deps_left, 1);
	s1 = snap(&x->f);
	fsm_init(&g, NULL);
	assert_int_equal(fsm_restore(&g, s1, strlen(s1)), 0);
	s2 = snap(&g); /* from fresh structures, no cache */
	assert_string_equal(s1, s2);
	assert_int_equal(fsm_run_get(&g, r->id)->steps[3].deps_left, 1);
	free(s1);
	free(s2);
	fsm_close(&g);
}

static void node_down_loses_its_attempts_and_alive_brings_it_back(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r;
	char *buf;
	size_t len;

	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"],"
			 "\"retries\":{\"max\":1,\"backoff_s\":0}}]}");
	node_up(x, 1, 11, 1);
	node_up(x, 2, 22, 1);
	r = create(x, "one", NULL, NULL)->run;
	assert_int_equal(r->steps[0].attempts[0].node, 1);
	/* a node_down for another boot changes nothing */
	assert_int_equal(fsm_cmd_node_down(5000, 1, 99, &buf, &len), 0);
	apply(x, buf, len);
	assert_int_equal(r->steps[0].n_attempts, 1);
	assert_int_equal(fsm_cmd_node_down(5000, 1, 11, &buf, &len), 0);
	apply(x, buf, len);
	assert_int_equal(r->steps[0].attempts[0].status, FSM_ATTEMPT_LOST);
	assert_int_equal(x->seen.stopped, 1); /* node 1 must stop it if alive */
	assert_int_equal(r->steps[0].attempts[1].node, 2);
	assert_false(x->f.nodes[0].live);
	/* work is not placed on a down node; alive brings it back */
	struct fsm_run *r2 = create(x, "one", NULL, NULL)->run;
	assert_int_equal(r2->status, FSM_RUN_QUEUED);
	assert_int_equal(fsm_cmd_node_alive(6000, 1, 11, &buf, &len), 0);
	apply(x, buf, len);
	assert_true(x->f.nodes[0].live);
	assert_int_equal(r2->steps[0].attempts[0].node, 1);
	/* the late result of the lost attempt is fenced */
	finish(x, r->id, "s", 1, 1, 0, "exited", 6100);
	assert_int_equal(r->steps[0].attempts[0].status, FSM_ATTEMPT_LOST);
	assert_int_equal(r->status, FSM_RUN_RUNNING);
}

static void a_removed_node_takes_no_work_until_admitted(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r;
	char *buf;
	size_t len;

	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"],"
			 "\"retries\":{\"max\":1,\"backoff_s\":0}}]}");
	node_up(x, 1, 11, 4);
	node_up(x, 2, 22, 4);
	r = create(x, "one", NULL, NULL)->run;
	assert_int_equal(r->steps[0].attempts[0].node, 1);
	assert_int_equal(fsm_cmd_node_remove(5000, 1, false, &buf, &len), 0);
	apply(x, buf, len);
	assert_int_equal(r->steps[0].attempts[0].status, FSM_ATTEMPT_LOST);
	assert_int_equal(r->steps[0].attempts[1].node, 2);
	/* its heartbeats and a new registration do not bring it back */
	assert_int_equal(fsm_cmd_node_alive(5100, 1, 11, &buf, &len), 0);
	apply(x, buf, len);
	assert_false(x->f.nodes[0].live);
	assert_int_equal(outcome(node_up(x, 1, 12, 4)), FLOWD_E_CONFLICT);
	assert_false(x->f.nodes[0].live);
	for (int i = 0; i < 3; i++)
		assert_int_equal(create(x, "one", NULL, NULL)->run->steps[0].attempts[0].node, 2);
	/* admitted again, it registers and takes work */
	assert_int_equal(fsm_cmd_node_remove(6000, 1, true, &buf, &len), 0);
	apply(x, buf, len);
	assert_int_equal(outcome(node_up(x, 1, 13, 4)), OK);
	assert_true(x->f.nodes[0].live);
	assert_int_equal(create(x, "one", NULL, NULL)->run->steps[0].attempts[0].node, 1);
}

/* ------------------------------------------------------------------------
 * Triggers
 */

#define TICKING                                                              \
	"{\"steps\":[{\"name\":\"s\",\"command\":[\"true\"]}],"               \
	"\"triggers\":{\"schedules\":[{\"cron\":\"* * * * * *\"}]}}"

static struct fsm_result *fire(struct fx *x, const char *flow, const char *key,
			       int64_t prev, int64_t nominal, int64_t missed,
			       bool fire_it)
{
	json_t *items = json_pack("[{s:s, s:i, s:s, s:I, s:I, s:I, s:b}]",
				  "flow", flow, "schedule", 0, "key", key,
				  "prev", (json_int_t)prev, "nominal",
				  (json_int_t)nominal, "missed",
				  (json_int_t)missed, "fire", fire_it);
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_fire(nominal * 1000, items, 10, &buf, &len), 0);
	json_decref(items);
	return apply(x, buf, len);
}

static struct fsm_result *event(struct fx *x, const char *name, const char *id,
				const char *payload)
{
	json_t *p = payload ? json_loads(payload, 0, NULL) : NULL;
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_event(5000, name, id, p, 3600, 100, 10, &buf,
				       &len), 0);
	json_decref(p);
	return apply(x, buf, len);
}

static const struct fsm_schedule_state *sched0(struct fx *x, const char *flow)
{
	struct fsm_flow *fl = fsm_flow_get(&x->f, flow);

	assert_non_null(fl);
	assert_true(fl->n_sched >= 1);
	return &fl->sched[0];
}

static void schedule_ticks_fire_once_by_the_cursor(void **state)
{
	struct fx *x = *state;
	const char *key;
	size_t runs;

	node_up(x, 1, 5, 8);
	deploy(x, "tick", TICKING);            /* at ts 1000 ms: cursor 1 s */
	key = sched0(x, "tick")->key;
	assert_int_equal(sched0(x, "tick")->cursor, 1);
	runs = x->f.n_runs;

	fire(x, "tick", key, 1, 2, 0, true);
	assert_int_equal(x->f.n_runs, runs + 1);
	assert_int_equal(sched0(x, "tick")->cursor, 2);
	/* The same decision again, a stale one, a wrong identity: nothing. */
	fire(x, "tick", key, 1, 2, 0, true);
	fire(x, "tick", key, 1, 3, 0, true);
	fire(x, "tick", "0 0 * * *\x1fUTC\x1f" "0\x1f" "0", 2, 3, 0, true);
	fire(x, "tick", key, 2, 2, 0, true);
	assert_int_equal(x->f.n_runs, runs + 1);
	/* Late: two ticks missed before the one that fires. */
	fire(x, "tick", key, 2, 5, 2, true);
	assert_int_equal(x->f.n_runs, runs + 2);
	assert_int_equal(sched0(x, "tick")->counts[FSM_FIRE_FIRED], 2);
	assert_int_equal(sched0(x, "tick")->counts[FSM_FIRE_MISSED], 2);
	/* Missed only (catch-up none): the cursor moves, nothing runs. */
	fire(x, "tick", key, 5, 9, 4, false);
	assert_int_equal(x->f.n_runs, runs + 2);
	assert_int_equal(sched0(x, "tick")->cursor, 9);
	assert_int_equal(sched0(x, "tick")->counts[FSM_FIRE_MISSED], 6);
	/* The run carries its tick. */
	json_t *j = run_view(x, fsm_run_at(&x->f, x->f.n_runs)->id);
	json_t *t = json_object_get(j, "trigger");
	assert_string_equal(json_string_value(json_object_get(t, "type")), "schedule");
	assert_string_equal(json_string_value(json_object_get(t, "nominal_time")),
			    "1970-01-01T00:00:05.000Z");
	json_decref(j);
}

static void pause_records_ticks_as_skipped(void **state)
{
	struct fx *x = *state;
	const char *key;
	char *buf;
	size_t len, runs;

	deploy(x, "tick", TICKING);
	key = sched0(x, "tick")->key;
	assert_int_equal(fsm_cmd_pause(1500, "tick", true, &buf, &len), 0);
	assert_int_equal(outcome(apply(x, buf, len)), OK);
	runs = x->f.n_runs;
	fire(x, "tick", key, 1, 2, 0, true);
	assert_int_equal(x->f.n_runs, runs);
	assert_int_equal(sched0(x, "tick")->counts[FSM_FIRE_SKIPPED], 1);
	assert_int_equal(sched0(x, "tick")->cursor, 2);
	assert_int_equal(fsm_cmd_pause(2500, "tick", false, &buf, &len), 0);
	apply(x, buf, len);
	fire(x, "tick", key, 2, 3, 0, true);
	assert_int_equal(x->f.n_runs, runs + 1);
	assert_int_equal(fsm_cmd_pause(2500, "nope", true, &buf, &len), 0);
	assert_int_equal(outcome(apply(x, buf, len)), FLOWD_E_NOT_FOUND);
}

/* The paused flag of every flow, paused or not, is among the rows written
 * again after a restore: PostgreSQL may have missed the unpause (it lagged,
 * a snapshot was taken, the node crashed), and the flows upsert leaves the
 * column alone. */
static void rows_after_a_restore_carry_every_paused_flag(void **state)
{
	struct fx *x = *state;
	char *buf, *text;
	size_t len, i;
	uint64_t index;
	json_t *rows, *row;
	int seen = 0;

	deploy(x, "tick", TICKING);
	assert_int_equal(fsm_cmd_pause(1500, "tick", true, &buf, &len), 0);
	apply(x, buf, len);
	assert_int_equal(fsm_cmd_pause(2500, "tick", false, &buf, &len), 0);
	apply(x, buf, len);
	free(fsm_take_records(&x->f, &index)); /* PostgreSQL "missed" these */
	fsm_mark_all_dirty(&x->f);
	text = fsm_take_records(&x->f, &index);
	assert_non_null(text);
	rows = json_loads(text, 0, NULL);
	assert_non_null(rows);
	json_array_foreach(rows, i, row)
	{
		if (strcmp(json_string_value(json_object_get(row, "t")),
			   "flow_paused") != 0)
			continue;
		assert_string_equal(json_string_value(json_object_get(row, "flow")),
				    "tick");
		assert_true(json_is_false(json_object_get(row, "paused")));
		seen++;
	}
	assert_int_equal(seen, 1);
	json_decref(rows);
	free(text);
}

static void redeploy_keeps_the_cursor_of_an_unchanged_schedule(void **state)
{
	struct fx *x = *state;
	const char *key;

	deploy(x, "tick", TICKING);
	key = sched0(x, "tick")->key;
	fire(x, "tick", key, 1, 7, 0, true);
	/* Another step, same schedule: cursor and counters stay. */
	deploy(x, "tick",
	       "{\"steps\":[{\"name\":\"other\",\"command\":[\"true\"]}],"
	       "\"triggers\":{\"schedules\":[{\"cron\":\"* * * * * *\"}]}}");
	assert_int_equal(sched0(x, "tick")->cursor, 7);
	assert_int_equal(sched0(x, "tick")->counts[FSM_FIRE_FIRED], 1);
	/* A different schedule starts from the deploy. */
	deploy(x, "tick",
	       "{\"steps\":[{\"name\":\"other\",\"command\":[\"true\"]}],"
	       "\"triggers\":{\"schedules\":[{\"cron\":\"*/5 * * * * *\"}]}}");
	assert_int_equal(sched0(x, "tick")->cursor, 1);
	assert_int_equal(sched0(x, "tick")->counts[FSM_FIRE_FIRED], 0);
}

static void events_are_deduplicated_by_id(void **state)
{
	struct fx *x = *state;
	struct fsm_result *r;
	json_t *first;
	size_t runs;

	deploy(x, "ev",
	       "{\"parameters\":{\"region\":{\"type\":\"string\"}},"
	       "\"steps\":[{\"name\":\"s\",\"command\":[\"true\"]}],"
	       "\"triggers\":{\"events\":[{\"event\":\"go\","
	       "\"filter\":{\"k\":1}}]}}");
	runs = x->f.n_runs;
	r = event(x, "go", "a", "{\"k\":1,\"region\":\"eu\",\"x\":2}");
	assert_int_equal(outcome(r), CREATED);
	first = json_deep_copy(json_object_get(r->body, "runs"));
	assert_int_equal(json_array_size(first), 1);
	assert_int_equal(x->f.n_runs, runs + 1);
	assert_string_equal(json_string_value(json_object_get(
		fsm_run_at(&x->f, x->f.n_runs)->params, "region")), "eu");
	r = event(x, "go", "a", "{\"k\":1}");
	assert_int_equal(outcome(r), OK);
	assert_true(json_is_true(json_object_get(r->body, "duplicate")));
	assert_true(json_equal(json_object_get(r->body, "runs"), first));
	assert_int_equal(x->f.n_runs, runs + 1);
	/* A filter that does not match, an unknown event: no run. */
	event(x, "go", "b", "{\"k\":2}");
	event(x, "other", "c", NULL);
	assert_int_equal(x->f.n_runs, runs + 1);
	json_decref(first);
}

static void on_finish_starts_downstream_once(void **state)
{
	struct fx *x = *state;
	struct fsm_run *up, *down;

	node_up(x, 1, 5, 8);
	deploy(x, "up", "{\"steps\":[{\"name\":\"s\",\"command\":[\"true\"]}]}");
	deploy(x, "down",
	       "{\"parameters\":{\"upstream_run_id\":{\"type\":\"string\"}},"
	       "\"steps\":[{\"name\":\"s\",\"command\":[\"true\"]}],"
	       "\"triggers\":{\"on_finish\":[{\"flow\":\"up\"}]}}");
	up = create(x, "up", NULL, NULL)->run;
	finish(x, up->id, "s", 1, 1, 0, "exited", 3000);
	down = fsm_run_at(&x->f, x->f.n_runs);
	assert_string_equal(down->flow->name, "down");
	assert_string_equal(json_string_value(json_object_get(down->params,
							      "upstream_run_id")),
			    up->id);
	/* A late duplicate result of the same attempt starts nothing. */
	finish(x, up->id, "s", 1, 1, 0, "exited", 3001);
	assert_string_equal(fsm_run_at(&x->f, x->f.n_runs)->id, down->id);
	/* status "succeeded" (the default) ignores a failure. */
	up = create(x, "up", NULL, NULL)->run;
	finish(x, up->id, "s", 1, 1, 1, "exited", 3100);
	assert_string_equal(fsm_run_at(&x->f, x->f.n_runs)->id, up->id);
}

static void overlap_policies_decide_by_active_runs(void **state)
{
	struct fx *x = *state;
	struct fsm_result *r;
	const char *outcome;

	node_up(x, 1, 5, 8);
	deploy(x, "sk",
	       "{\"steps\":[{\"name\":\"s\",\"command\":[\"true\"]}],"
	       "\"triggers\":{\"events\":[{\"event\":\"go\","
	       "\"overlap\":\"skip\"}]}}");
	deploy(x, "b1",
	       "{\"steps\":[{\"name\":\"s\",\"command\":[\"true\"]}],"
	       "\"triggers\":{\"events\":[{\"event\":\"go\","
	       "\"overlap\":\"buffer_one\"}]}}");
	event(x, "go", "1", NULL);
	r = event(x, "go", "2", NULL);
	outcome = json_string_value(json_object_get(
		json_array_get(json_object_get(r->body, "runs"), 1), "outcome"));
	assert_string_equal(outcome, "skipped");   /* "sk" sorts after "b1" */
	outcome = json_string_value(json_object_get(
		json_array_get(json_object_get(r->body, "runs"), 0), "outcome"));
	assert_string_equal(outcome, "buffered");
	r = event(x, "go", "3", NULL);
	outcome = json_string_value(json_object_get(
		json_array_get(json_object_get(r->body, "runs"), 0), "outcome"));
	assert_string_equal(outcome, "dropped");
	assert_int_equal(fsm_flow_get(&x->f, "b1")->n_buffered, 1);
	/* The first b1 run ends: the buffered one starts in the same apply. */
	struct fsm_run *first = fsm_run_get(&x->f, json_string_value(json_object_get(
		json_array_get(json_object_get(event(x, "go", "1", NULL)->body, "runs"), 0),
		"run_id")));
	size_t runs = x->f.n_runs;
	finish(x, first->id, "s", 1, 1, 0, "exited", 6000);
	assert_int_equal(x->f.n_runs, runs + 1);
	assert_int_equal(fsm_flow_get(&x->f, "b1")->n_buffered, 0);
}

static void trigger_state_survives_snapshot_and_restore(void **state)
{
	struct fx *x = *state;
	const char *key;
	struct fsm g;
	char *s1, *s2;

	node_up(x, 1, 5, 1);
	deploy(x, "tick", TICKING);
	deploy(x, "b1",
	       "{\"steps\":[{\"name\":\"s\",\"command\":[\"true\"]}],"
	       "\"triggers\":{\"events\":[{\"event\":\"go\","
	       "\"overlap\":\"buffer_all\"},{\"all\":[{\"event\":\"l\"},"
	       "{\"event\":\"r\"}],\"window_s\":60}]}}");
	key = sched0(x, "tick")->key;
	fire(x, "tick", key, 1, 4, 2, true);
	{
		char *buf;
		size_t len;

		assert_int_equal(fsm_cmd_pause(1500, "tick", true, &buf, &len), 0);
		apply(x, buf, len);
	}
	event(x, "go", "1", NULL);
	event(x, "go", "2", NULL);     /* buffered */
	event(x, "l", "3", "{\"v\":1}"); /* collected */
	s1 = snap(&x->f);
	fsm_init(&g, NULL);
	assert_int_equal(fsm_restore(&g, s1, strlen(s1)), 0);
	s2 = snap(&g);
	assert_string_equal(s1, s2);
	free(s2);
	assert_int_equal(g.flows.size, x->f.flows.size);
	assert_int_equal(fsm_flow_get(&g, "b1")->n_buffered, 1);
	assert_int_equal(fsm_flow_get(&g, "b1")->active,
			 fsm_flow_get(&x->f, "b1")->active);
	assert_int_equal(fsm_flow_get(&g, "tick")->sched[0].cursor, 4);
	/* The same duplicate is recognised after the restore. */
	{
		char *buf;
		size_t len;
		struct fsm_result *r;

		assert_int_equal(fsm_cmd_event(5000, "go", "1", NULL, 3600, 100,
					       10, &buf, &len), 0);
		r = fsm_apply(&g, 1000, buf, len);
		free(buf);
		assert_int_equal(outcome(r), OK);
		assert_int_equal(fsm_cmd_event(5000, "r", "4", NULL, 3600, 100,
					       10, &buf, &len), 0);
		r = fsm_apply(&g, 1001, buf, len);
		free(buf);
		assert_string_equal(json_string_value(json_object_get(json_array_get(
					    json_object_get(r->body, "runs"), 0), "outcome")),
				    "fired"); /* completed; allow_all needs no room */
	}
	free(s1);
	fsm_close(&g);
}

static void a_batch_applies_its_commands_in_order(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r1, *r2;
	struct fsm_finish f1 = {.step = "s", .attempt = 1, .node = 1,
				.exit_code = 0, .reason = "exited", .out = "",
				.err = ""};
	struct fsm_finish f2 = f1;
	char *t[3], *buf;
	size_t l[3], len;

	node_up(x, 1, 5, 8);
	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}]}");
	r1 = create(x, "one", NULL, NULL)->run;
	r2 = create(x, "one", NULL, NULL)->run;
	f1.run_id = r1->id;
	f2.run_id = r2->id;
	f2.exit_code = 3;
	assert_int_equal(fsm_cmd_task_finish(3000, &f1, &t[0], &l[0]), 0);
	assert_int_equal(fsm_cmd_task_finish(3000, &f2, &t[1], &l[1]), 0);
	assert_int_equal(fsm_cmd_batch(3001, (const char *const *)t, l, 2, &buf, &len), 0);
	apply(x, buf, len);
	assert_int_equal(r1->status, FSM_RUN_SUCCEEDED);
	assert_int_equal(r2->status, FSM_RUN_FAILED);
	/* A batch inside a batch is refused, the rest still applies. */
	assert_int_equal(fsm_cmd_batch(3001, (const char *const *)t, l, 2, &buf, &len), 0);
	assert_int_equal(fsm_cmd_nop(4000, &t[2], &l[2]), 0);
	{
		const char *two[2] = {buf, t[2]};
		size_t lens[2] = {len, l[2]};
		char *outer;
		size_t olen;

		assert_int_equal(fsm_cmd_batch(4001, two, lens, 2, &outer, &olen), 0);
		assert_int_equal(outcome(apply(x, outer, olen)), OK); /* the nop */
	}
	free(buf);
	free(t[0]);
	free(t[1]);
	free(t[2]);
}

/* An on-finish trigger with cancel_other ends a run that the same entry
 * touched earlier: it must still settle and let the new run start. */
static void a_run_ended_late_in_an_entry_still_settles(void **state)
{
	struct fx *x = *state;
	struct fsm_run *a, *r, *newest;
	struct fsm_finish fa = {.step = "s", .attempt = 1, .node = 1,
				.exit_code = 0, .reason = "exited", .out = "",
				.err = ""};
	struct fsm_finish fr = fa;
	char *t[2], *buf;
	size_t l[2], len;

	node_up(x, 1, 5, 8);
	deploy(x, "a", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}]}");
	deploy(x, "b",
	       "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"],"
	       "\"retries\":{\"max\":1,\"backoff_s\":60}}],"
	       "\"max_active_runs\":1,\"triggers\":{\"on_finish\":"
	       "[{\"flow\":\"a\",\"overlap\":\"cancel_other\"}]}}");
	r = create(x, "b", NULL, NULL)->run;
	a = create(x, "a", NULL, NULL)->run;
	fr.run_id = r->id;
	fr.exit_code = 1; /* fails: waits for its retry, not ended */
	fa.run_id = a->id;
	assert_int_equal(fsm_cmd_task_finish(3000, &fr, &t[0], &l[0]), 0);
	assert_int_equal(fsm_cmd_task_finish(3000, &fa, &t[1], &l[1]), 0);
	assert_int_equal(fsm_cmd_batch(3001, (const char *const *)t, l, 2, &buf, &len), 0);
	apply(x, buf, len);
	free(t[0]);
	free(t[1]);
	assert_int_equal(r->status, FSM_RUN_CANCELLED);
	assert_true(r->settled);
	newest = fsm_run_at(&x->f, x->f.n_runs);
	assert_string_equal(newest->flow->name, "b");
	assert_ptr_not_equal(newest, r);
	assert_int_equal(fsm_flow_get(&x->f, "b")->n_buffered, 0);
	assert_int_equal(fsm_flow_get(&x->f, "b")->active, 1);
}

static void all_of_collections_survive_a_redeploy_of_other_parts(void **state)
{
	struct fx *x = *state;
	const char *v1 =
		"{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}],"
		"\"triggers\":{\"events\":[{\"all\":[{\"event\":\"l\"},"
		"{\"event\":\"r\"}],\"window_s\":60}]}}";
	const char *v2 =
		"{\"steps\":[{\"name\":\"other\",\"command\":[\"y\"]}],"
		"\"triggers\":{\"events\":[{\"all\":[{\"event\":\"l\"},"
		"{\"event\":\"r\"}],\"window_s\":60}]}}";
	struct fsm_result *res;

	deploy(x, "both", v1);
	event(x, "l", "1", NULL);
	deploy(x, "both", v2);
	res = event(x, "r", "2", NULL);
	assert_string_equal(json_string_value(json_object_get(json_array_get(
				    json_object_get(res->body, "runs"), 0), "outcome")),
			    "fired");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(deploy_is_versioned_and_idempotent),
		T(undeployed_flow_refuses_runs_but_keeps_history),
		T(diamond_runs_to_success),
		T(failed_step_retries_immediately_then_fails_run),
		T(backoff_waits_for_wake_and_grows),
		T(stale_and_foreign_results_are_ignored),
		T(node_restart_marks_attempts_lost_and_retries),
		T(cancel_stops_running_and_cancels_the_rest),
		T(idempotency_key_returns_the_same_run),
		T(bad_parameters_are_a_result_not_a_failure),
		T(capacity_queues_ready_steps_in_order),
		T(placement_prefers_the_freest_node),
		T(snapshot_restore_round_trip),
		T(command_encoding_round_trip),
		T(utf8_sanitize_drops_nul_and_replaces_garbage),
		T(runs_page_is_newest_first_with_cursor),
		T(records_coalesce_rows_changed_by_many_entries),
		T(settled_runs_beyond_retain_leave_memory_oldest_first),
		T(cached_snapshot_text_follows_every_change),
		T(node_down_loses_its_attempts_and_alive_brings_it_back),
		T(a_removed_node_takes_no_work_until_admitted),
		T(schedule_ticks_fire_once_by_the_cursor),
		T(rows_after_a_restore_carry_every_paused_flag),
		T(idempotency_keys_have_a_retention),
		T(old_specs_leave_memory_when_no_run_uses_them),
		T(the_run_index_follows_the_runs_in_memory),
		T(pause_records_ticks_as_skipped),
		T(redeploy_keeps_the_cursor_of_an_unchanged_schedule),
		T(events_are_deduplicated_by_id),
		T(on_finish_starts_downstream_once),
		T(overlap_policies_decide_by_active_runs),
		T(trigger_state_survives_snapshot_and_restore),
		T(a_batch_applies_its_commands_in_order),
		T(a_run_ended_late_in_an_entry_still_settles),
		T(all_of_collections_survive_a_redeploy_of_other_parts),
	};
	tz_set_loader(tzdata_load);
	return cmocka_run_group_tests_name("fsm", tests, NULL, NULL);
}
