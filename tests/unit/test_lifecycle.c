/* test_lifecycle.c - the state machine's side of a run's life cycle
 * (core/fsm_lifecycle.c): tags, resume and redrive, their refusals, their
 * rows, and a snapshot of what they leave; no I/O. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/fsm.h"
#include "core/spec.h"

struct fx {
	struct fsm f;
	uint64_t index;
	char *rows;      /* the last records taken */
};

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof *x);

	fsm_init(&x->f, NULL);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;

	free(x->rows);
	fsm_close(&x->f);
	free(x);
	return 0;
}

static struct fsm_result *apply(struct fx *x, char *buf, size_t len)
{
	struct fsm_result *r;
	uint64_t index;

	assert_non_null(buf);
	r = fsm_apply(&x->f, ++x->index, buf, len);
	free(buf);
	free(x->rows);
	x->rows = fsm_take_records(&x->f, &index);
	return r;
}

/* a -> (b, c) -> d, no retries but c's one */
#define DIAMOND                                                              \
	"{\"tags\":[\"nightly\"],\"steps\":["                                 \
	"{\"name\":\"a\",\"command\":[\"true\"]},"                            \
	"{\"name\":\"b\",\"command\":[\"true\"],\"depends_on\":[\"a\"]},"     \
	"{\"name\":\"c\",\"command\":[\"true\"],\"depends_on\":[\"a\"],"      \
	"\"retries\":{\"max\":1,\"backoff_s\":0}},"                           \
	"{\"name\":\"d\",\"command\":[\"true\"],\"depends_on\":[\"b\",\"c\"]}]}"

static void deploy(struct fx *x, const char *text)
{
	struct flowd_limits lim;
	struct flowd_error err;
	struct flow_spec *spec;
	json_t *doc = json_loads(text, 0, NULL);
	char *buf;
	size_t len;

	flowd_limits_defaults(&lim);
	assert_int_equal(spec_parse(doc, &lim, &spec, &err), 0);
	assert_int_equal(fsm_cmd_deploy(1000, "etl", spec->doc, &buf, &len), 0);
	spec_free(spec);
	json_decref(doc);
	assert_int_equal(apply(x, buf, len)->err.errc, FLOWD_OK);
}

static struct fsm_run *start(struct fx *x, const char *tags)
{
	json_t *t = tags ? json_loads(tags, 0, NULL) : NULL;
	char *buf;
	size_t len;
	struct fsm_result *r;

	assert_int_equal(fsm_cmd_run_create(2000, "etl", NULL, NULL, t, NULL,
					    &buf, &len), 0);
	json_decref(t);
	r = apply(x, buf, len);
	assert_int_equal(r->err.errc, FLOWD_OK);
	return r->run;
}

static void finish(struct fx *x, struct fsm_run *r, const char *step,
		   int code, int64_t ts)
{
	unsigned n = 0;

	for (size_t i = 0; i < r->spec->n_steps; i++)
		if (strcmp(r->spec->steps[i].name, step) == 0)
			n = r->steps[i].n_attempts;
	struct fsm_finish fin = {.run_id = r->id, .step = step, .attempt = n,
				 .node = 1, .exit_code = code,
				 .reason = "exited", .out = "", .err = ""};
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_task_finish(ts, &fin, &buf, &len), 0);
	apply(x, buf, len);
}

static struct fsm_step *step(struct fsm_run *r, const char *name)
{
	for (size_t i = 0; i < r->spec->n_steps; i++)
		if (strcmp(r->spec->steps[i].name, name) == 0)
			return &r->steps[i];
	fail_msg("no step %s", name);
	return NULL;
}

/* A diamond run that failed at d (a, b, c succeeded; c after a retry). */
static struct fsm_run *failed_at_d(struct fx *x)
{
	char *buf;
	size_t len;
	struct fsm_run *r;

	deploy(x, DIAMOND);
	assert_int_equal(fsm_cmd_node_up(1000, 1, 7, 8, "127.0.0.1:1", &buf,
					 &len), 0);
	apply(x, buf, len);
	r = start(x, NULL);
	finish(x, r, "a", 0, 3000);
	finish(x, r, "b", 0, 3100);
	finish(x, r, "c", 1, 3200); /* retried at once */
	finish(x, r, "c", 0, 3300);
	finish(x, r, "d", 2, 3400);
	assert_int_equal(r->status, FSM_RUN_FAILED);
	return r;
}

static struct fsm_result *resume(struct fx *x, const char *id,
				 const char *from, bool current,
				 const char *key, int64_t ts)
{
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_run_resume(ts, id, from, current, key, NULL,
					    NULL, &buf, &len), 0);
	return apply(x, buf, len);
}

static struct fsm_result *redrive(struct fx *x, const char *id,
				  unsigned window_s, const char *key,
				  int64_t ts)
{
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_run_redrive(ts, id, window_s, key, &buf, &len),
			 0);
	return apply(x, buf, len);
}

static struct fsm_result *tags(struct fx *x, const char *id, const char *add,
			       const char *remove, unsigned max)
{
	json_t *a = json_loads(add, 0, NULL), *r = json_loads(remove, 0, NULL);
	struct fsm_retention keep = {.max_tags = max};
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_run_tags(5000, id, a, r, &keep, &buf, &len), 0);
	json_decref(a);
	json_decref(r);
	return apply(x, buf, len);
}

static char *dump(const json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
}

static void tags_merge_spec_defaults_and_change_idempotently(void **state)
{
	struct fx *x = *state;
	struct fsm_result *res;
	struct fsm_run *r;
	char *t;

	deploy(x, DIAMOND);
	r = start(x, "[\"zz\",\"exp\",\"exp\"]");
	t = dump(r->tags);
	assert_string_equal(t, "[\"exp\",\"nightly\",\"zz\"]");
	free(t);
	assert_non_null(strstr(x->rows, "\"t\":\"run_meta\""));

	res = tags(x, r->id, "[\"keep\"]", "[\"zz\",\"absent\"]", 0);
	assert_int_equal(res->err.errc, FLOWD_OK);
	t = dump(r->tags);
	assert_string_equal(t, "[\"exp\",\"keep\",\"nightly\"]");
	free(t);
	/* the same change again changes nothing, and writes no row */
	res = tags(x, r->id, "[\"keep\"]", "[\"zz\"]", 0);
	assert_int_equal(res->err.errc, FLOWD_OK);
	assert_null(x->rows);

	/* refusals change nothing */
	res = tags(x, r->id, "[\"flow:x\"]", "[]", 0);
	assert_int_equal(res->err.errc, FLOWD_E_INVALID);
	assert_string_equal(res->err.field, "add[0]");
	res = tags(x, r->id, "[]", "[\"version:1\"]", 0);
	assert_int_equal(res->err.errc, FLOWD_E_INVALID);
	assert_string_equal(res->err.field, "remove[0]");
	res = tags(x, r->id, "[\"a\",\"b\"]", "[]", 4);
	assert_int_equal(res->err.errc, FLOWD_E_INVALID);
	assert_string_equal(res->err.code, "too_many_tags");
	t = dump(r->tags);
	assert_string_equal(t, "[\"exp\",\"keep\",\"nightly\"]");
	free(t);
	res = tags(x, "r-000000000099", "[\"a\"]", "[]", 0);
	assert_int_equal(res->err.errc, FLOWD_E_NOT_FOUND);

	/* removing every tag leaves [], which its row says */
	res = tags(x, r->id, "[]", "[\"exp\",\"keep\",\"nightly\"]", 0);
	assert_int_equal(res->err.errc, FLOWD_OK);
	assert_int_equal(json_array_size(r->tags), 0);
	assert_non_null(strstr(x->rows, "\"tags\":[]"));
}

static void system_tags_name_the_run(void **state)
{
	json_t *trig = json_pack("{s:s}", "type", "schedule");
	json_t *t = fsm_system_tags("etl", 3, trig, "r-000000000001");
	char *s = dump(t);

	assert_string_equal(s, "[\"project:default\",\"branch:main\","
			       "\"flow:etl\",\"version:3\",\"trigger:schedule\","
			       "\"origin:r-000000000001\"]");
	free(s);
	json_decref(t);
	t = fsm_system_tags("etl", 1, NULL, NULL);
	s = dump(t);
	assert_string_equal(s, "[\"project:default\",\"branch:main\","
			       "\"flow:etl\",\"version:1\",\"trigger:manual\"]");
	free(s);
	json_decref(t);
	json_decref(trig);
	(void)state;
}

static void resume_reuses_what_succeeded_and_runs_the_rest(void **state)
{
	struct fx *x = *state;
	struct fsm_run *o = failed_at_d(x), *r;
	struct fsm_result *res;

	res = resume(x, o->id, NULL, false, "k1", 5000);
	assert_int_equal(res->err.errc, FLOWD_OK);
	assert_true(res->created);
	r = res->run;
	assert_string_equal(r->origin_id, o->id);
	assert_int_equal(step(r, "a")->status, FSM_STEP_REUSED);
	assert_int_equal(step(r, "b")->status, FSM_STEP_REUSED);
	assert_int_equal(step(r, "c")->status, FSM_STEP_REUSED);
	/* linked to the attempt that succeeded: c's second */
	assert_int_equal(step(r, "c")->reused_seq, o->seq);
	assert_int_equal(step(r, "c")->reused_attempt, 2);
	assert_int_equal(step(r, "c")->n_attempts, 0);
	assert_int_equal(step(r, "d")->status, FSM_STEP_RUNNING);
	assert_int_equal(r->status, FSM_RUN_RUNNING);
	assert_non_null(strstr(x->rows, "\"reused\":[{\"step\":\"a\""));
	/* the same key: the same run, nothing new */
	res = resume(x, o->id, NULL, false, "k1", 5100);
	assert_int_equal(res->err.errc, FLOWD_OK);
	assert_false(res->created);
	assert_ptr_equal(res->run, r);
	finish(x, r, "d", 0, 6000);
	assert_int_equal(r->status, FSM_RUN_SUCCEEDED);

	/* from b: b and d run, a and c keep pointing at the first run */
	res = resume(x, r->id, "b", false, NULL, 7000);
	assert_int_equal(res->err.errc, FLOWD_OK);
	assert_int_equal(step(res->run, "a")->status, FSM_STEP_REUSED);
	assert_int_equal(step(res->run, "a")->reused_seq, o->seq);
	assert_int_equal(step(res->run, "b")->status, FSM_STEP_RUNNING);
	assert_int_equal(step(res->run, "c")->status, FSM_STEP_REUSED);
	assert_int_equal(step(res->run, "d")->status, FSM_STEP_PENDING);
	assert_int_equal(step(res->run, "d")->deps_left, 1);
}

static void resume_refusals_change_nothing(void **state)
{
	struct fx *x = *state;
	struct fsm_run *o = failed_at_d(x), *r;
	struct fsm_result *res;
	uint64_t next = x->f.next_seq;

	res = resume(x, o->id, "nope", false, NULL, 5000);
	assert_int_equal(res->err.errc, FLOWD_E_INVALID);
	assert_string_equal(res->err.field, "from_step");
	res = resume(x, "r-000000000042", NULL, false, NULL, 5000);
	assert_int_equal(res->err.errc, FLOWD_E_NOT_FOUND);
	/* the current version changed a step that would be reused */
	deploy(x, "{\"steps\":["
		  "{\"name\":\"a\",\"command\":[\"false\"]},"
		  "{\"name\":\"b\",\"command\":[\"true\"],\"depends_on\":[\"a\"]},"
		  "{\"name\":\"c\",\"command\":[\"true\"],\"depends_on\":[\"a\"],"
		  "\"retries\":{\"max\":1,\"backoff_s\":0}},"
		  "{\"name\":\"d\",\"command\":[\"true\"],\"depends_on\":[\"b\",\"c\"]}]}");
	res = resume(x, o->id, NULL, true, NULL, 5000);
	assert_int_equal(res->err.errc, FLOWD_E_CONFLICT);
	assert_string_equal(res->err.code, "step_changed");
	assert_non_null(strstr(res->err.message, "step a "));
	assert_int_equal(x->f.next_seq, next);
	/* of the origin's version it goes */
	res = resume(x, o->id, NULL, false, NULL, 5000);
	assert_int_equal(res->err.errc, FLOWD_OK);
	r = res->run;
	assert_int_equal(r->version, 1);
	/* a run still running is not resumed */
	res = resume(x, r->id, NULL, false, NULL, 5000);
	assert_int_equal(res->err.errc, FLOWD_E_CONFLICT);
	assert_string_equal(res->err.code, "run_active");
}

static void redrive_restarts_in_place_within_its_window(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r = failed_at_d(x);
	struct fsm_result *res;

	/* past the window: refused */
	res = redrive(x, r->id, 60, NULL, 3400 + 61000);
	assert_int_equal(res->err.errc, FLOWD_E_CONFLICT);
	assert_string_equal(res->err.code, "redrive_window_passed");
	assert_int_equal(r->status, FSM_RUN_FAILED);
	assert_true(r->settled);

	res = redrive(x, r->id, 60, "rk", 3400 + 59000);
	assert_int_equal(res->err.errc, FLOWD_OK);
	assert_ptr_equal(res->run, r);
	assert_int_equal(r->status, FSM_RUN_RUNNING);
	assert_false(r->settled);
	assert_int_equal(r->redrive_count, 1);
	assert_int_equal(step(r, "a")->n_attempts, 1);
	assert_int_equal(step(r, "d")->status, FSM_STEP_RUNNING);
	assert_int_equal(step(r, "d")->n_attempts, 2);
	assert_int_equal(step(r, "d")->attempt_base, 1);
	assert_non_null(strstr(x->rows, "\"redrive_count\":1"));
	/* the same key again: nothing */
	res = redrive(x, r->id, 60, "rk", 3400 + 59500);
	assert_int_equal(res->err.errc, FLOWD_OK);
	assert_int_equal(r->redrive_count, 1);
	/* a running run is not redriven */
	res = redrive(x, r->id, 60, "other", 3400 + 59500);
	assert_int_equal(res->err.errc, FLOWD_E_CONFLICT);
	assert_string_equal(res->err.code, "run_active");

	/* fails again: its retry policy counts from the redrive */
	finish(x, r, "d", 3, 70000);
	assert_int_equal(r->status, FSM_RUN_FAILED);
	res = redrive(x, r->id, 60, NULL, 71000);
	assert_int_equal(res->err.errc, FLOWD_OK);
	assert_int_equal(r->redrive_count, 2);
	finish(x, r, "d", 0, 72000);
	assert_int_equal(r->status, FSM_RUN_SUCCEEDED);
	assert_int_equal(step(r, "d")->n_attempts, 3);
	res = redrive(x, r->id, 60, NULL, 73000);
	assert_int_equal(res->err.errc, FLOWD_E_CONFLICT);
	assert_string_equal(res->err.code, "run_succeeded");
}

static void a_snapshot_keeps_the_life_cycle(void **state)
{
	struct fx *x = *state;
	struct fsm_run *o = failed_at_d(x), *r;
	struct fsm g;
	char *s1, *s2;
	size_t len;

	tags(x, o->id, "[\"t1\"]", "[]", 0);
	r = resume(x, o->id, NULL, false, "k", 5000)->run;
	assert_non_null(r);
	redrive(x, o->id, 0, "rk", 6000);
	assert_int_equal(fsm_snapshot(&x->f, &s1, &len), 0);
	assert_non_null(strstr(s1, "\"ru\":["));
	assert_non_null(strstr(s1, "\"origin\":\"r-"));
	assert_non_null(strstr(s1, "\"rkey\":\"rk\""));
	fsm_init(&g, NULL);
	assert_int_equal(fsm_restore(&g, s1, len), 0);
	assert_int_equal(fsm_snapshot(&g, &s2, &len), 0);
	assert_string_equal(s1, s2);
	assert_int_equal(fsm_run_get(&g, r->id)->steps[0].status,
			 FSM_STEP_REUSED);
	assert_int_equal(fsm_run_get(&g, o->id)->redrive_count, 1);
	free(s2);

	/* a reused step that names a later run is refused */
	char *bad = strdup(s1), *p = strstr(bad, "\"ru\":[");
	assert_non_null(p);
	p[6] = '9';
	assert_int_equal(fsm_restore(&g, bad, strlen(bad)), -1);
	free(bad);
	free(s1);
	fsm_close(&g);
}

static struct fsm_result *record(struct fx *x, const char *origin,
				 const char *steps)
{
	json_t *st = json_loads(steps, 0, NULL);
	char *buf;
	size_t len;

	assert_non_null(st);
	assert_int_equal(fsm_cmd_run_record(9000, "etl", origin, NULL, st, NULL,
					    NULL, &buf, &len), 0);
	json_decref(st);
	return apply(x, buf, len);
}

static void a_record_is_a_finished_run_that_ran_elsewhere(void **state)
{
	struct fx *x = *state;
	struct fsm_run *o = failed_at_d(x), *r;
	struct fsm_result *res;
	struct fsm g;
	char *s1, *s2;
	size_t len;

	res = record(x, o->id,
		     "[{\"name\":\"a\",\"status\":\"reused\",\"started_ms\":1,"
		     "\"finished_ms\":2,\"reused_from\":{\"run_id\":\"r-000000000001\","
		     "\"attempt\":1}},"
		     "{\"name\":\"b\",\"status\":\"succeeded\",\"started_ms\":3,\"finished_ms\":4},"
		     "{\"name\":\"c\",\"status\":\"succeeded\",\"started_ms\":3,\"finished_ms\":4},"
		     "{\"name\":\"d\",\"status\":\"failed\",\"started_ms\":5,\"finished_ms\":6}]");
	assert_int_equal(res->err.errc, FLOWD_OK);
	r = res->run;
	assert_int_equal(r->status, FSM_RUN_FAILED);
	assert_true(r->settled);
	assert_string_equal(r->origin_id, o->id);
	assert_string_equal(json_string_value(json_object_get(r->trigger, "type")),
			    "local_resume");
	assert_int_equal(r->steps[0].status, FSM_STEP_REUSED);
	assert_int_equal(r->steps[3].n_attempts, 0);
	/* a snapshot keeps it as it is */
	assert_int_equal(fsm_snapshot(&x->f, &s1, &len), 0);
	fsm_init(&g, NULL);
	assert_int_equal(fsm_restore(&g, s1, len), 0);
	assert_int_equal(fsm_snapshot(&g, &s2, &len), 0);
	assert_string_equal(s1, s2);
	free(s1);
	free(s2);
	fsm_close(&g);

	/* resuming the recorded run: its steps that succeeded elsewhere have
	 * no attempt to link to, so they run again; its reused one stays
	 * linked; and the state still snapshots and restores */
	res = resume(x, r->id, NULL, false, NULL, 9500);
	assert_int_equal(res->err.errc, FLOWD_OK);
	assert_int_equal(res->run->steps[0].status, FSM_STEP_REUSED);
	assert_int_equal(res->run->steps[0].reused_seq, o->seq);
	assert_int_equal(res->run->steps[0].reused_attempt, 1);
	assert_int_equal(res->run->steps[1].status, FSM_STEP_RUNNING);
	assert_int_equal(fsm_snapshot(&x->f, &s1, &len), 0);
	fsm_init(&g, NULL);
	assert_int_equal(fsm_restore(&g, s1, len), 0);
	free(s1);
	fsm_close(&g);

	/* refused: a step that ran before its dependency succeeded, a
	 * missing step, a status that is not one, a reused step without its
	 * origin */
	res = record(x, o->id,
		     "[{\"name\":\"a\",\"status\":\"failed\"},"
		     "{\"name\":\"b\",\"status\":\"succeeded\"},"
		     "{\"name\":\"c\",\"status\":\"skipped\"},"
		     "{\"name\":\"d\",\"status\":\"skipped\"}]");
	assert_int_equal(res->err.errc, FLOWD_E_INVALID);
	assert_string_equal(res->err.field, "steps");
	res = record(x, o->id, "[{\"name\":\"a\",\"status\":\"succeeded\"}]");
	assert_int_equal(res->err.errc, FLOWD_E_INVALID);
	res = record(x, o->id,
		     "[{\"name\":\"a\",\"status\":\"running\"},"
		     "{\"name\":\"b\",\"status\":\"skipped\"},"
		     "{\"name\":\"c\",\"status\":\"skipped\"},"
		     "{\"name\":\"d\",\"status\":\"skipped\"}]");
	assert_int_equal(res->err.errc, FLOWD_E_INVALID);
	res = record(x, o->id,
		     "[{\"name\":\"a\",\"status\":\"reused\"},"
		     "{\"name\":\"b\",\"status\":\"skipped\"},"
		     "{\"name\":\"c\",\"status\":\"skipped\"},"
		     "{\"name\":\"d\",\"status\":\"skipped\"}]");
	assert_int_equal(res->err.errc, FLOWD_E_INVALID);
}

static void a_run_cancelled_before_it_started_is_queued_again(void **state)
{
	struct fx *x = *state;
	struct fsm_run *r;
	char *buf;
	size_t len;

	deploy(x, DIAMOND);
	r = start(x, NULL); /* no node: it waits, queued */
	assert_int_equal(r->status, FSM_RUN_QUEUED);
	assert_int_equal(fsm_cmd_run_cancel(2500, r->id, &buf, &len), 0);
	apply(x, buf, len);
	assert_int_equal(r->status, FSM_RUN_CANCELLED);
	assert_int_equal(redrive(x, r->id, 60, NULL, 3000)->err.errc, FLOWD_OK);
	assert_int_equal(r->status, FSM_RUN_QUEUED);
	assert_int_equal(fsm_cmd_node_up(3500, 1, 7, 8, "127.0.0.1:1", &buf, &len),
			 0);
	apply(x, buf, len);
	assert_int_equal(r->status, FSM_RUN_RUNNING);
	assert_true(r->started_ms > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(tags_merge_spec_defaults_and_change_idempotently),
		T(system_tags_name_the_run),
		T(resume_reuses_what_succeeded_and_runs_the_rest),
		T(resume_refusals_change_nothing),
		T(redrive_restarts_in_place_within_its_window),
		T(a_snapshot_keeps_the_life_cycle),
		T(a_record_is_a_finished_run_that_ran_elsewhere),
		T(a_run_cancelled_before_it_started_is_queued_again),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
