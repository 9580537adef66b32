/* test_snapshot_restore.c - a forged or corrupt snapshot is refused by
 * fsm_restore (core/fsm_snapshot.c): every field range-checked, every
 * reference sane, and the state left as it was. Each test takes a real
 * snapshot, breaks one thing, and restores it over a live state. And the
 * snapshot never leaves an attempt out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/fsm.h"
#include "core/log.h"
#include "core/tz.h"
#include "daemon/tzdata.h"

struct fx {
	struct fsm f;
	uint64_t index;
	char *snap;   /* the live state's snapshot */
	json_t *doc;  /* the same, parsed: each test breaks a copy */
};

static void apply(struct fx *x, char *buf, size_t len)
{
	assert_non_null(buf);
	fsm_apply(&x->f, ++x->index, buf, len);
	free(buf);
	free(fsm_take_records(&x->f, &(uint64_t){0}));
}

static void deploy(struct fx *x, const char *flow, const char *spec_text)
{
	json_t *doc = json_loads(spec_text, 0, NULL);
	char *buf;
	size_t len;

	assert_non_null(doc);
	assert_int_equal(fsm_cmd_deploy(1000, flow, doc, &buf, &len), 0);
	json_decref(doc);
	apply(x, buf, len);
}

static void create(struct fx *x, const char *flow, const char *key)
{
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_run_create(2000, flow, NULL, key, NULL, NULL, &buf,
					    &len),
			 0);
	apply(x, buf, len);
}

static void finish(struct fx *x, const char *run, const char *step)
{
	struct fsm_finish fin = {.run_id = run, .step = step, .attempt = 1,
				 .node = 1, .reason = "exited", .out = "",
				 .err = ""};
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_task_finish(3000, &fin, &buf, &len), 0);
	apply(x, buf, len);
}

/* A state with a bit of everything: flows with schedules and an event
 * trigger, a node, runs running, ready (no room) and settled, an
 * idempotency key, an event id. Runs: r-1 one (settled), r-2 etl (a
 * running, b pending), r-3 and r-4 sch (running), r-5 sch (ready: the
 * node has three slots). */
static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof *x);
	char *buf;
	size_t len;

	assert_non_null(x);
	fsm_init(&x->f, NULL);
	deploy(x, "etl",
	       "{\"steps\":[{\"name\":\"a\",\"command\":[\"x\"]},"
	       "{\"name\":\"b\",\"command\":[\"x\"],\"depends_on\":[\"a\"]}]}");
	deploy(x, "sch",
	       "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}],"
	       "\"max_active_runs\":5,"
	       "\"triggers\":{\"schedules\":[{\"cron\":\"*/5 * * * *\"},"
	       "{\"cron\":\"0 * * * *\"}],\"events\":[{\"event\":\"ping\"}]}}");
	deploy(x, "one", "{\"steps\":[{\"name\":\"s\",\"command\":[\"x\"]}]}");
	assert_int_equal(fsm_cmd_node_up(1000, 1, 5, 3, "127.0.0.1:1", &buf,
					 &len),
			 0);
	apply(x, buf, len);
	create(x, "one", NULL);
	finish(x, "r-000000000001", "s"); /* settled */
	create(x, "etl", "k1");
	create(x, "sch", NULL);
	create(x, "sch", NULL);
	create(x, "sch", NULL); /* no room: ready */
	assert_int_equal(fsm_cmd_event(4000, "other", "e1", NULL, 60, 10, 10,
				       &buf, &len),
			 0);
	apply(x, buf, len);
	assert_int_equal(fsm_snapshot(&x->f, &x->snap, &len), 0);
	x->doc = json_loads(x->snap, 0, NULL);
	assert_non_null(x->doc);
	/* the state as built: one ready step, one settled run */
	assert_int_equal(x->f.n_ready, 1);
	assert_int_equal(x->f.n_settled, 1);
	/* and the snapshot restores as it is */
	assert_int_equal(fsm_restore(&x->f, x->snap, len), 0);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;

	json_decref(x->doc);
	free(x->snap);
	fsm_close(&x->f);
	free(x);
	return 0;
}

/* Restore `doc` over the live state: refused, and nothing changed. */
static void refused(struct fx *x, json_t *doc)
{
	char *text = json_dumps(doc, JSON_COMPACT), *after;
	size_t len;

	assert_non_null(text);
	assert_int_equal(fsm_restore(&x->f, text, strlen(text)), -1);
	assert_int_equal(fsm_snapshot(&x->f, &after, &len), 0);
	assert_string_equal(after, x->snap);
	free(after);
	free(text);
	json_decref(doc);
}

static json_t *copy(struct fx *x)
{
	return json_deep_copy(x->doc);
}

static json_t *run_of(json_t *doc, uint64_t seq)
{
	size_t i;
	json_t *r;

	json_array_foreach(json_object_get(doc, "runs"), i, r) {
		json_t *s = json_object_get(r, "seq");

		if ((uint64_t)json_integer_value(s) == seq)
			return r;
	}
	fail_msg("no run %llu in the snapshot", (unsigned long long)seq);
	return NULL;
}

static json_t *step_of(json_t *doc, uint64_t seq, size_t i)
{
	return json_array_get(json_object_get(run_of(doc, seq), "steps"), i);
}

static json_t *flow_of(json_t *doc, const char *name)
{
	size_t i;
	json_t *fl;

	json_array_foreach(json_object_get(doc, "flows"), i, fl)
		if (strcmp(json_string_value(json_object_get(fl, "name")),
			   name) == 0)
			return fl;
	fail_msg("no flow %s in the snapshot", name);
	return NULL;
}

static void set(json_t *obj, const char *key, json_t *v)
{
	assert_int_equal(json_object_set_new(obj, key, v), 0);
}

/* ------------------------------------------------------------------------
 * Enums and ranges
 */

static void run_status_out_of_range_is_refused(void **state)
{
	json_t *d = copy(*state);

	/* run_status_names[] has five entries */
	set(run_of(d, 2), "st", json_integer(9));
	refused(*state, d);
	d = copy(*state);
	set(run_of(d, 2), "st", json_integer(-1));
	refused(*state, d);
}

static void a_status_of_the_wrong_type_is_refused(void **state)
{
	json_t *d = copy(*state);

	set(run_of(d, 2), "st", json_string("running"));
	refused(*state, d);
	d = copy(*state);
	set(step_of(d, 3, 0), "st", json_real(2.0));
	refused(*state, d);
}

static void step_status_out_of_range_is_refused(void **state)
{
	json_t *d = copy(*state);

	set(step_of(d, 2, 1), "st", json_integer(42));
	refused(*state, d);
}

static void attempt_status_out_of_range_is_refused(void **state)
{
	json_t *d = copy(*state);
	json_t *a = json_array_get(json_object_get(step_of(d, 3, 0), "att"), 0);

	set(a, "st", json_integer(-1));
	refused(*state, d);
}

static void negative_node_capacity_is_refused(void **state)
{
	json_t *d = copy(*state);

	set(json_array_get(json_object_get(d, "nodes"), 0), "cap",
	    json_integer(-5));
	refused(*state, d);
}

static void negative_and_huge_times_are_refused(void **state)
{
	json_t *d = copy(*state);

	set(run_of(d, 2), "t0", json_integer(-5));
	refused(*state, d);
	d = copy(*state);
	/* past year 9999: a cursor the scheduler's cron_next overflows on */
	set(json_array_get(json_object_get(json_object_get(flow_of(d, "sch"),
							   "trig"),
					   "sched"),
			   0),
	    "cursor", json_integer(INT64_MAX));
	refused(*state, d);
}

static void a_key_retention_past_its_bound_is_refused(void **state)
{
	json_t *d = copy(*state);

	/* now - ttl would overflow in idem_expire */
	set(d, "key_ttl_ms", json_integer(INT64_MAX));
	refused(*state, d);
}

static void a_negative_next_seq_is_refused(void **state)
{
	json_t *d = copy(*state);

	set(d, "next_seq", json_integer(-3));
	refused(*state, d);
}

/* ------------------------------------------------------------------------
 * Names and strings
 */

static void a_bad_flow_name_is_refused(void **state)
{
	json_t *d = copy(*state);

	set(flow_of(d, "one"), "name", json_string("../one"));
	set(run_of(d, 1), "flow", json_string("../one"));
	refused(*state, d);
}

static void a_run_id_that_is_not_its_seq_is_refused(void **state)
{
	json_t *d = copy(*state);

	set(run_of(d, 2), "id", json_string("r-000000000009"));
	refused(*state, d);
}

static void a_node_api_address_too_long_is_refused(void **state)
{
	json_t *d = copy(*state);
	char longer[100];

	memset(longer, 'a', sizeof longer - 1);
	longer[sizeof longer - 1] = '\0';
	set(json_array_get(json_object_get(d, "nodes"), 0), "api",
	    json_string(longer));
	refused(*state, d);
}

static void an_event_answer_that_is_not_an_object_is_refused(void **state)
{
	json_t *d = copy(*state);

	json_array_set_new(json_array_get(json_object_get(d, "events"), 0), 2,
			   json_string("x"));
	refused(*state, d);
}

/* ------------------------------------------------------------------------
 * Counts and indexes
 */

static void runs_out_of_seq_order_are_refused(void **state)
{
	json_t *d = copy(*state);
	json_t *runs = json_object_get(d, "runs");
	json_t *first = json_incref(json_array_get(runs, 0));

	/* the first run last: the run index would be written below its
	 * start (fsm__run_list_add aborts) */
	json_array_remove(runs, 0);
	json_array_append_new(runs, first);
	refused(*state, d);
}

static void a_run_at_or_past_next_seq_is_refused(void **state)
{
	json_t *d = copy(*state);

	/* the next run_create would make a second run with that seq */
	set(d, "next_seq", json_integer(4));
	refused(*state, d);
}

static void a_window_of_runs_too_wide_is_refused(void **state)
{
	json_t *d = copy(*state);
	json_t *last = run_of(d, 5);

	/* a run index of 2^40 pointers */
	set(d, "next_seq", json_integer((json_int_t)1 << 41));
	set(last, "seq", json_integer((json_int_t)1 << 40));
	set(last, "id", json_string("r-1099511627776"));
	json_array_set_new(json_array_get(json_object_get(d, "ready"), 0), 0,
			   json_integer((json_int_t)1 << 40));
	refused(*state, d);
}

static void a_running_step_without_an_attempt_is_refused(void **state)
{
	json_t *d = copy(*state);

	/* end_run would read attempts[-1] when the run is cancelled */
	json_array_clear(json_object_get(step_of(d, 3, 0), "att"));
	refused(*state, d);
}

static void an_older_attempt_still_running_is_refused(void **state)
{
	json_t *d = copy(*state);
	json_t *att = json_object_get(step_of(d, 3, 0), "att");
	json_t *second = json_deep_copy(json_array_get(att, 0));

	set(json_array_get(att, 0), "t1", json_integer(2500));
	set(second, "n", json_integer(2));
	json_array_append_new(att, second);
	/* attempt 1 and 2 both running: only the last is ever stopped */
	refused(*state, d);
}

static void a_waiting_step_with_a_running_attempt_is_refused(void **state)
{
	json_t *d = copy(*state);

	/* retry_wait while its attempt runs: a lost node would put it on
	 * the retry list twice */
	set(step_of(d, 3, 0), "st", json_integer(FSM_STEP_RETRY_WAIT));
	refused(*state, d);
}

static void dependencies_left_that_do_not_add_up_are_refused(void **state)
{
	json_t *d = copy(*state);

	/* b waits for a, which is running: 1 left, not 7 */
	set(step_of(d, 2, 1), "deps", json_integer(7));
	refused(*state, d);
	d = copy(*state);
	set(step_of(d, 2, 1), "deps", json_integer(-1));
	refused(*state, d);
}

static void an_attempt_on_an_unknown_node_is_refused(void **state)
{
	json_t *d = copy(*state);
	json_t *a = json_array_get(json_object_get(step_of(d, 3, 0), "att"), 0);

	set(a, "node", json_integer(99));
	refused(*state, d);
}

static void nodes_out_of_order_or_twice_are_refused(void **state)
{
	json_t *d = copy(*state);
	json_t *nodes = json_object_get(d, "nodes");

	json_array_append_new(nodes, json_deep_copy(json_array_get(nodes, 0)));
	refused(*state, d);
}

static void a_step_of_an_ended_run_still_waiting_is_refused(void **state)
{
	json_t *d = copy(*state);

	/* cancelled, with its step still ready: evicted, it would leave a
	 * dangling step in the ready FIFO */
	set(run_of(d, 5), "st", json_integer(FSM_RUN_CANCELLED));
	refused(*state, d);
}

static void a_settled_run_still_running_is_refused(void **state)
{
	json_t *d = copy(*state);

	json_array_append_new(json_object_get(d, "settled"), json_integer(3));
	refused(*state, d);
}

static void a_run_settled_twice_is_refused(void **state)
{
	json_t *d = copy(*state);

	/* the settled FIFO would loop on itself */
	json_array_append_new(json_object_get(d, "settled"), json_integer(1));
	refused(*state, d);
}

static void a_ready_step_twice_is_refused(void **state)
{
	json_t *d = copy(*state);
	json_t *ready = json_object_get(d, "ready");

	/* the ready FIFO would loop on itself */
	json_array_append_new(ready, json_deep_copy(json_array_get(ready, 0)));
	refused(*state, d);
}

static void a_ready_entry_that_is_not_ready_is_refused(void **state)
{
	json_t *d = copy(*state);

	/* r-3's step is running */
	json_array_append_new(json_object_get(d, "ready"),
			      json_pack("[i, i]", 3, 0));
	refused(*state, d);
}

static void schedule_states_not_one_per_schedule_are_refused(void **state)
{
	json_t *d = copy(*state);
	json_t *sched = json_object_get(json_object_get(flow_of(d, "sch"),
							"trig"),
					"sched");

	/* the scheduler reads spec->schedules[i] for each state */
	json_array_append_new(sched, json_deep_copy(json_array_get(sched, 0)));
	refused(*state, d);
	d = copy(*state);
	sched = json_object_get(json_object_get(flow_of(d, "sch"), "trig"),
				"sched");
	json_array_remove(sched, 1);
	refused(*state, d);
}

static void an_idempotency_key_twice_is_refused(void **state)
{
	json_t *d = copy(*state);
	json_t *keys = json_object_get(d, "keys");

	json_array_append_new(keys, json_deep_copy(json_array_get(keys, 0)));
	refused(*state, d);
}

static void a_current_version_of_the_wrong_type_is_refused(void **state)
{
	json_t *d = copy(*state);

	/* read as 0, it undeployed the flow */
	set(flow_of(d, "etl"), "current", json_string("1"));
	refused(*state, d);
}

/* argv[1], if given, runs only the tests whose names match it (a
 * cmocka filter, `*` a wildcard). */
/* ------------------------------------------------------------------------
 * Writing
 */

/* A reason cut inside a character (fsm_runs.c cuts at 299 bytes) is not
 * UTF-8: jansson refuses it, and the attempt was left out of the
 * snapshot. It is written with U+FFFD instead, and restores. */
static void an_attempt_whose_reason_is_not_utf8_stays_in_the_snapshot(
	void **state)
{
	struct fx *x = *state;
	struct fsm_run *r = fsm_run_get(&x->f, "r-000000000001");
	struct fsm g;
	char *snap;
	size_t len;
	json_t *doc, *a;

	free(r->steps[0].attempts[0].reason);
	r->steps[0].attempts[0].reason = strdup("exited: caf\xc3");
	free(r->snap_text); /* as a change does */
	r->snap_text = NULL;
	assert_int_equal(fsm_snapshot(&x->f, &snap, &len), 0);
	doc = json_loads(snap, 0, NULL);
	assert_non_null(doc);
	a = json_array_get(json_object_get(step_of(doc, 1, 0), "att"), 0);
	assert_non_null(a);
	assert_string_equal(json_string_value(json_object_get(a, "why")),
			    "exited: caf\xef\xbf\xbd");
	fsm_init(&g, NULL);
	assert_int_equal(fsm_restore(&g, snap, len), 0);
	assert_int_equal(fsm_run_get(&g, "r-000000000001")->steps[0].n_attempts,
			 1);
	fsm_close(&g);
	json_decref(doc);
	free(snap);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(run_status_out_of_range_is_refused),
		T(a_status_of_the_wrong_type_is_refused),
		T(step_status_out_of_range_is_refused),
		T(attempt_status_out_of_range_is_refused),
		T(negative_node_capacity_is_refused),
		T(negative_and_huge_times_are_refused),
		T(a_key_retention_past_its_bound_is_refused),
		T(a_negative_next_seq_is_refused),
		T(a_bad_flow_name_is_refused),
		T(a_run_id_that_is_not_its_seq_is_refused),
		T(a_node_api_address_too_long_is_refused),
		T(an_event_answer_that_is_not_an_object_is_refused),
		T(runs_out_of_seq_order_are_refused),
		T(a_run_at_or_past_next_seq_is_refused),
		T(a_window_of_runs_too_wide_is_refused),
		T(a_running_step_without_an_attempt_is_refused),
		T(an_older_attempt_still_running_is_refused),
		T(a_waiting_step_with_a_running_attempt_is_refused),
		T(dependencies_left_that_do_not_add_up_are_refused),
		T(an_attempt_on_an_unknown_node_is_refused),
		T(nodes_out_of_order_or_twice_are_refused),
		T(a_step_of_an_ended_run_still_waiting_is_refused),
		T(a_settled_run_still_running_is_refused),
		T(a_run_settled_twice_is_refused),
		T(a_ready_step_twice_is_refused),
		T(a_ready_entry_that_is_not_ready_is_refused),
		T(schedule_states_not_one_per_schedule_are_refused),
		T(an_idempotency_key_twice_is_refused),
		T(a_current_version_of_the_wrong_type_is_refused),
		T(an_attempt_whose_reason_is_not_utf8_stays_in_the_snapshot),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	tz_set_loader(tzdata_load);
	/* each refusal logs a line: shown with FLOWD_TRACE=1 */
	if (getenv("FLOWD_TRACE") == NULL)
		flowd_log_level = FLOWD_LOG_ERROR + 1;
	return cmocka_run_group_tests_name("snapshot_restore", tests, NULL,
					   NULL);
}
