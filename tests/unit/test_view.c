/* test_view.c - the read view (core/view.c): versions that stay as they were
 * while a reader holds them, copy-on-write chunks, runs that leave memory,
 * the flow name table, a restore, and readers on threads while the loop
 * publishes. No I/O. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/fsm.h"
#include "core/view.h"

struct fx {
	struct fsm f;
	struct view_store *vs;
	uint64_t index;
};

static int setup(void **state)
{
	struct fx *x = calloc(1, sizeof *x);

	fsm_init(&x->f, NULL);
	x->vs = view_store_new();
	assert_non_null(x->vs);
	*state = x;
	return 0;
}

static int teardown(void **state)
{
	struct fx *x = *state;

	view_store_free(x->vs);
	fsm_close(&x->f);
	free(x);
	return 0;
}

static struct fsm_result *apply(struct fx *x, char *buf, size_t len)
{
	struct fsm_result *r = fsm_apply(&x->f, ++x->index, buf, len);

	free(buf);
	free(fsm_take_records(&x->f, &(uint64_t){0}));
	return r;
}

static void publish(struct fx *x)
{
	static const struct view_cluster cl = {.role = "leader", .node_id = 1};

	view_store_update(x->vs, &x->f);
	view_store_publish(x->vs, &cl);
}

static void deploy(struct fx *x, const char *flow)
{
	json_t *doc = json_pack("{s:[{s:s, s:[s]}]}", "steps", "name", "s",
				"command", "true");
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_deploy(1000, flow, doc, &buf, &len), 0);
	json_decref(doc);
	assert_int_equal(apply(x, buf, len)->err.errc, FLOWD_OK);
}

static void node_up(struct fx *x, unsigned cap)
{
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_node_up(1000, 1, 1, cap, "127.0.0.1:1", &buf,
					 &len), 0);
	apply(x, buf, len);
}

/* A run of `flow`; retain as run_create carries it (0 = keep all). */
static const char *create(struct fx *x, const char *flow, uint64_t retain)
{
	static char id[32];
	struct fsm_result *r;
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_run_create(2000, flow, NULL, NULL, NULL,
					    &(struct fsm_retention){.runs = retain},
					    &buf, &len), 0);
	r = apply(x, buf, len);
	assert_non_null(r->run);
	snprintf(id, sizeof id, "%s", r->run->id);
	return id;
}

static void finish(struct fx *x, const char *run)
{
	struct fsm_finish fin = {.run_id = run, .step = "s", .attempt = 1,
				 .node = 1, .exit_code = 0, .reason = "exited",
				 .out = "", .err = ""};
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_task_finish(3000, &fin, &buf, &len), 0);
	apply(x, buf, len);
}

static void cancel(struct fx *x, const char *run)
{
	char *buf;
	size_t len;

	assert_int_equal(fsm_cmd_run_cancel(3000, run, &buf, &len), 0);
	apply(x, buf, len);
}

/* The status of run `id` in `v`, as GET /v1/runs/{id} shows it, or a
 * VIEW_* code as a word. */
static const char *status_in(const struct view *v, const char *id, char *out,
			     size_t n)
{
	char *text = NULL;
	json_t *j;

	switch (view_run_text(v, id, &text)) {
	case VIEW_NOT_FOUND:
		return "not_found";
	case VIEW_EVICTED:
		return "evicted";
	case VIEW_FOUND:
		break;
	}
	assert_non_null(text);
	j = json_loads(text, 0, NULL);
	assert_non_null(j);
	snprintf(out, n, "%s", json_string_value(json_object_get(j, "status")));
	json_decref(j);
	free(text);
	return out;
}

static void a_held_version_stays_as_it_was(void **state)
{
	struct fx *x = *state;
	struct view_guard g1, g2;
	const struct view *v1, *v2;
	char id[32], b1[32], b2[32];

	deploy(x, "one");
	node_up(x, 4);
	snprintf(id, sizeof id, "%s", create(x, "one", 0));
	publish(x);
	v1 = view_acquire(x->vs, &g1);
	assert_string_equal(status_in(v1, id, b1, sizeof b1), "running");

	/* the loop goes on: the run finishes, a second run appears */
	finish(x, id);
	create(x, "one", 0);
	for (int i = 0; i < 5; i++)
		publish(x);
	assert_true(view_store_retained(x->vs) >= 2); /* v1 is kept */

	v2 = view_acquire(x->vs, &g2);
	assert_string_equal(status_in(v1, id, b1, sizeof b1), "running");
	assert_string_equal(status_in(v1, "r-000000000002", b1, sizeof b1),
			    "not_found");
	assert_string_equal(status_in(v2, id, b2, sizeof b2), "succeeded");
	assert_string_equal(status_in(v2, "r-000000000002", b2, sizeof b2),
			    "running");
	view_release(&g1);
	view_release(&g2);
	publish(x);
	assert_int_equal(view_store_retained(x->vs), 1); /* freed */
}

/* 600 runs span three chunks; a change to one run in a chunk a reader
 * holds copies that chunk only for the next version. */
static void changes_copy_the_chunk_a_reader_holds(void **state)
{
	struct fx *x = *state;
	char ids[600][16], b1[32], b2[32];
	struct view_guard g1, g2;
	const struct view *v1, *v2;

	deploy(x, "one");
	node_up(x, 1000);
	for (int i = 0; i < 600; i++)
		snprintf(ids[i], sizeof ids[i], "%s", create(x, "one", 0));
	publish(x);
	v1 = view_acquire(x->vs, &g1);
	cancel(x, ids[10]);
	cancel(x, ids[300]);
	publish(x);
	v2 = view_acquire(x->vs, &g2);
	for (int i = 0; i < 600; i++) {
		const char *want = i == 10 || i == 300 ? "cancelled" : "running";

		assert_string_equal(status_in(v1, ids[i], b1, sizeof b1),
				    "running");
		assert_string_equal(status_in(v2, ids[i], b2, sizeof b2), want);
	}
	view_release(&g1);
	view_release(&g2);
}

static void runs_that_left_memory_read_as_evicted(void **state)
{
	struct fx *x = *state;
	char ids[700][16], b[32];
	struct view_guard g;
	const struct view *v;
	uint64_t before;
	unsigned more;
	char *text;

	deploy(x, "one");
	node_up(x, 1000);
	for (int i = 0; i < 700; i++)
		snprintf(ids[i], sizeof ids[i], "%s", create(x, "one", 10));
	for (int i = 0; i < 690; i++) {
		finish(x, ids[i]);
		if (i % 100 == 0)
			publish(x);
	}
	publish(x);
	v = view_acquire(x->vs, &g);
	assert_string_equal(status_in(v, ids[0], b, sizeof b), "evicted");
	assert_string_equal(status_in(v, ids[679], b, sizeof b), "evicted");
	assert_string_equal(status_in(v, ids[680], b, sizeof b), "succeeded");
	assert_string_equal(status_in(v, ids[699], b, sizeof b), "running");
	assert_string_equal(status_in(v, "r-000000000701", b, sizeof b),
			    "not_found");
	/* not the one spelling of an id */
	assert_string_equal(status_in(v, "r-700", b, sizeof b), "not_found");
	assert_string_equal(status_in(v, "r-0000000000700", b, sizeof b),
			    "not_found");
	/* a page of 30 hands over to PostgreSQL below run 681 */
	text = view_runs_page_text(v, NULL, -1, 30, 0, &before, &more);
	assert_non_null(text);
	assert_int_equal(before, 681);
	assert_int_equal(more, 10);
	free(text);
	view_release(&g);
}

static void flows_are_found_by_name_as_the_table_grows(void **state)
{
	struct fx *x = *state;
	struct view_guard g1, g2;
	const struct view *v1, *v2;
	enum view_found found;
	char name[32], *text;

	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof name, "flow-%03d", i);
		deploy(x, name);
		if (i % 7 == 0)
			publish(x);
	}
	publish(x);
	v1 = view_acquire(x->vs, &g1);
	deploy(x, "late");
	publish(x);
	v2 = view_acquire(x->vs, &g2);
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof name, "flow-%03d", i);
		text = view_flow_text(v1, name, false, &found);
		assert_int_equal(found, VIEW_FOUND);
		assert_non_null(strstr(text, name));
		free(text);
	}
	/* a flow newer than the version is not in it */
	assert_null(view_flow_text(v1, "late", false, &found));
	assert_int_equal(found, VIEW_NOT_FOUND);
	text = view_flow_text(v2, "late", true, &found);
	assert_int_equal(found, VIEW_FOUND);
	assert_non_null(strstr(text, "\"spec\""));
	free(text);
	assert_null(view_flow_text(v2, "never", false, &found));
	assert_int_equal(found, VIEW_NOT_FOUND);
	text = view_flows_text(v2);
	assert_non_null(strstr(text, "\"flow-000\""));
	assert_true(strstr(text, "\"flow-000\"") < strstr(text, "\"late\""));
	free(text);
	view_release(&g1);
	view_release(&g2);
}

/* A restore replaces the state: the view copies all of it again, and a
 * version held from before stays readable. */
static void a_restore_is_copied_whole(void **state)
{
	struct fx *x = *state;
	struct view_guard g1, g2;
	const struct view *v1, *v2;
	char id[32], b[32], *snap;
	size_t len;
	enum view_found found;

	deploy(x, "one");
	node_up(x, 4);
	snprintf(id, sizeof id, "%s", create(x, "one", 0));
	publish(x);
	assert_int_equal(fsm_snapshot(&x->f, &snap, &len), 0);
	v1 = view_acquire(x->vs, &g1);
	finish(x, id);
	deploy(x, "two");
	assert_int_equal(fsm_restore(&x->f, snap, len), 0);
	free(snap);
	publish(x);
	v2 = view_acquire(x->vs, &g2);
	assert_string_equal(status_in(v1, id, b, sizeof b), "running");
	assert_string_equal(status_in(v2, id, b, sizeof b), "running");
	free(view_flow_text(v2, "one", false, &found));
	assert_int_equal(found, VIEW_FOUND);
	assert_null(view_flow_text(v2, "two", false, &found));
	assert_int_equal(found, VIEW_NOT_FOUND);
	view_release(&g1);
	view_release(&g2);
}

static void cluster_and_readiness_come_from_the_publish(void **state)
{
	struct fx *x = *state;
	struct view_cluster cl = {.node_id = 3, .role = "follower", .term = 7,
				  .commit_index = 40, .applied_index = 39,
				  .not_ready = "applying the log"};
	struct view_guard g;
	const struct view *v;
	char *text;
	json_t *j;

	view_store_set_text(x->vs, VIEW_TEXT_MEMBERS, "[{\"id\":3}]");
	view_store_publish(x->vs, &cl);
	v = view_acquire(x->vs, &g);
	text = view_cluster_text(v);
	j = json_loads(text, 0, NULL);
	assert_non_null(j);
	assert_int_equal(json_integer_value(json_object_get(j, "node_id")), 3);
	assert_string_equal(json_string_value(json_object_get(j, "role")),
			    "follower");
	assert_int_equal(json_integer_value(json_object_get(j, "term")), 7);
	assert_true(json_is_null(json_object_get(j, "leader")));
	assert_int_equal(json_array_size(json_object_get(j, "members")), 1);
	assert_string_equal(view_not_ready(v), "applying the log");
	json_decref(j);
	free(text);
	view_release(&g);
}

/* Readers on threads render runs and pages while the loop applies and
 * publishes; under the sanitizers this finds any use of freed memory. */
struct reader_arg {
	struct view_store *vs;
	atomic_bool stop;
	atomic_ulong reads;
};

static void *reader_main(void *p)
{
	struct reader_arg *a = p;

	while (!atomic_load(&a->stop)) {
		struct view_guard g;
		const struct view *v = view_acquire(a->vs, &g);
		uint64_t before;
		unsigned more;
		char *text = NULL;

		if (v == NULL)
			continue;
		view_run_text(v, "r-000000000001", &text);
		free(text);
		text = view_runs_page_text(v, NULL, -1, 20, 0, &before, &more);
		if (text == NULL || strncmp(text, "{\"runs\":[", 9) != 0)
			abort();
		free(text);
		free(view_flows_text(v));
		view_release(&g);
		atomic_fetch_add(&a->reads, 1);
	}
	return NULL;
}

static void readers_on_threads_while_the_loop_publishes(void **state)
{
	struct fx *x = *state;
	struct reader_arg a = {.vs = x->vs};
	pthread_t th[4];
	char ids[64][16];

	deploy(x, "one");
	node_up(x, 64);
	publish(x);
	atomic_init(&a.stop, false);
	atomic_init(&a.reads, 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader_main, &a), 0);
	for (int round = 0; round < 200; round++) {
		for (int i = 0; i < 64; i++)
			snprintf(ids[i], sizeof ids[i], "%s",
				 create(x, "one", 500));
		publish(x);
		for (int i = 0; i < 64; i++) {
			finish(x, ids[i]);
			if (i % 16 == 0)
				publish(x);
		}
		publish(x);
	}
	atomic_store(&a.stop, true);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	assert_true(atomic_load(&a.reads) > 0);
	publish(x);
	assert_int_equal(view_store_retained(x->vs), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(a_held_version_stays_as_it_was,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			changes_copy_the_chunk_a_reader_holds, setup, teardown),
		cmocka_unit_test_setup_teardown(
			runs_that_left_memory_read_as_evicted, setup, teardown),
		cmocka_unit_test_setup_teardown(
			flows_are_found_by_name_as_the_table_grows, setup,
			teardown),
		cmocka_unit_test_setup_teardown(a_restore_is_copied_whole, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			cluster_and_readiness_come_from_the_publish, setup,
			teardown),
		cmocka_unit_test_setup_teardown(
			readers_on_threads_while_the_loop_publishes, setup,
			teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
