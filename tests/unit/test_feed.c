/* test_feed.c - the change feed (core/feed.h): ids, visibility after
 * publish, filters, the window and its floor, resuming, a reader that
 * falls behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/feed.h"

static struct feed_id add(struct feed *f, uint64_t index, const char *flow,
			  const char *run)
{
	return feed_add(f, index, flow, run, "run", "{}", 2);
}

/* Read everything visible from *pos with filter flt into a string. */
static struct feed_id last_seen;

static char *read_all(struct feed *f, struct feed_reader *pos,
		      const struct feed_filter *flt, int *n)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;

	*n = feed_read(f, pos, flt, 1 << 20, &buf, &len, &cap, &last_seen);
	if (buf == NULL)
		buf = strdup("");
	return buf;
}

static void ids_parse_and_order(void **state)
{
	struct feed_id id;
	char text[32];

	assert_int_equal(feed_id_parse("12-3", &id), 0);
	assert_int_equal(id.index, 12);
	assert_int_equal(id.k, 3);
	feed_id_format(id, text, sizeof text);
	assert_string_equal(text, "12-3");
	for (const char **bad = (const char *[]){"", "12", "-3", "12-", "1-2-3",
						 "a-1", "1-a", " 1-2",
						 "1-99999999999", NULL};
	     *bad != NULL; bad++)
		assert_int_equal(feed_id_parse(*bad, &id), -1);
	assert_true(feed_id_cmp((struct feed_id){1, 5}, (struct feed_id){2, 0}) < 0);
	assert_true(feed_id_cmp((struct feed_id){2, 1}, (struct feed_id){2, 0}) > 0);
	assert_int_equal(feed_id_cmp((struct feed_id){2, 1}, (struct feed_id){2, 1}), 0);
}

static void events_are_seen_after_publish_with_ranked_ids(void **state)
{
	struct feed *f = feed_new(8);
	struct feed_reader pos;
	struct feed_id last;
	int n;
	char *text;

	assert_int_equal(feed_start(f, NULL, &pos, &last), FEED_OK);
	assert_int_equal(add(f, 5, "a", "r-1").k, 0);
	assert_int_equal(add(f, 5, "a", "r-2").k, 1);
	assert_int_equal(add(f, 6, "b", NULL).k, 0);
	text = read_all(f, &pos, NULL, &n);
	assert_int_equal(n, 0); /* not published yet */
	free(text);
	assert_false(feed_pending(f, &pos, NULL));
	assert_true(feed_publish(f));
	assert_false(feed_publish(f));
	assert_true(feed_pending(f, &pos, NULL));
	text = read_all(f, &pos, NULL, &n);
	assert_int_equal(n, 3);
	assert_string_equal(text, "id: 5-0\nevent: run\ndata: {}\n\n"
				  "id: 5-1\nevent: run\ndata: {}\n\n"
				  "id: 6-0\nevent: run\ndata: {}\n\n");
	free(text);
	feed_free(f);
}

static void filters_by_flow_and_run(void **state)
{
	struct feed *f = feed_new(8);
	struct feed_filter by_flow = {.flow = "a"}, by_run = {.run = "r-2"};
	struct feed_reader p1, p2;
	struct feed_id last;
	int n;
	char *text;

	feed_start(f, NULL, &p1, &last);
	feed_start(f, NULL, &p2, &last);
	add(f, 1, "a", "r-1");
	add(f, 2, "b", "r-2");
	add(f, 3, "b", NULL);
	feed_publish(f);
	text = read_all(f, &p1, &by_flow, &n);
	assert_int_equal(n, 1);
	assert_non_null(strstr(text, "id: 1-0"));
	free(text);
	/* feed_pending skips what does not pass and stops at what does */
	assert_true(feed_pending(f, &p2, &by_run));
	text = read_all(f, &p2, &by_run, &n);
	assert_int_equal(n, 1);
	assert_non_null(strstr(text, "id: 2-0"));
	free(text);
	assert_false(feed_pending(f, &p2, &by_run));
	feed_free(f);
}

static void resuming_within_the_window_and_past_it(void **state)
{
	struct feed *f = feed_new(4);
	struct feed_id last, after = {2, 0};
	struct feed_reader pos;
	int n;
	char *text;

	for (uint64_t i = 1; i <= 4; i++)
		add(f, i, "a", NULL);
	feed_publish(f);
	assert_int_equal(feed_start(f, &after, &pos, &last), FEED_OK);
	text = read_all(f, &pos, NULL, &n);
	assert_int_equal(n, 2); /* 3-0 and 4-0 */
	assert_non_null(strstr(text, "id: 3-0"));
	free(text);
	/* 1-0 leaves the ring: resuming after it is still whole... */
	add(f, 5, "a", NULL);
	feed_publish(f);
	after = (struct feed_id){1, 0};
	assert_int_equal(feed_start(f, &after, &pos, &last), FEED_OK);
	/* ...but not from before it: start over, from the newest */
	after = (struct feed_id){0, 0};
	assert_int_equal(feed_start(f, &after, &pos, &last), FEED_RESET);
	assert_int_equal(last.index, 5);
	text = read_all(f, &pos, NULL, &n);
	assert_int_equal(n, 0);
	free(text);
	/* ?index=N: after every event of entry N */
	after = (struct feed_id){3, UINT32_MAX};
	assert_int_equal(feed_start(f, &after, &pos, &last), FEED_OK);
	text = read_all(f, &pos, NULL, &n);
	assert_int_equal(n, 2);
	free(text);
	/* a restore at 9: nothing before it can be resumed */
	feed_lost(f, 9);
	after = (struct feed_id){5, 0};
	assert_int_equal(feed_start(f, &after, &pos, &last), FEED_RESET);
	feed_free(f);
}

static void a_reader_that_falls_behind_is_told(void **state)
{
	struct feed *f = feed_new(2);
	struct feed_reader pos;
	struct feed_id last;
	struct feed_stats st;
	int n;
	char *text;

	feed_start(f, NULL, &pos, &last);
	for (uint64_t i = 1; i <= 5; i++)
		add(f, i, "a", NULL);
	feed_publish(f);
	assert_true(feed_pending(f, &pos, NULL));
	text = read_all(f, &pos, NULL, &n);
	assert_int_equal(n, FEED_READ_RESET);
	assert_int_equal(last_seen.index, 5); /* where to go on from */
	free(text);
	text = read_all(f, &pos, NULL, &n);
	assert_int_equal(n, 0); /* at the end now */
	free(text);
	feed_stats(f, &st);
	assert_int_equal(st.events, 2);
	assert_int_equal(st.added, 5);
	assert_int_equal(st.floor.index, 3);
	feed_free(f);
}

static void a_restore_resets_connected_readers_from_the_floor(void **state)
{
	struct feed *f = feed_new(8);
	struct feed_reader r;
	struct feed_id last;
	char id[32];
	int n;
	char *text;

	feed_start(f, NULL, &r, &last);
	add(f, 1, "a", NULL);
	feed_publish(f);
	feed_lost(f, 40); /* a snapshot at 40: state changed without events */
	assert_true(feed_pending(f, &r, NULL));
	text = read_all(f, &r, NULL, &n);
	assert_int_equal(n, FEED_READ_RESET);
	free(text);
	/* go on from the floor, not from 1-0 (below it: reset again) */
	feed_id_format(last_seen, id, sizeof id);
	assert_string_equal(id, "40-4294967295");
	assert_int_equal(feed_start(f, &last_seen, &r, &last), FEED_OK);
	add(f, 41, "a", NULL);
	feed_publish(f);
	text = read_all(f, &r, NULL, &n);
	assert_int_equal(n, 1);
	assert_non_null(strstr(text, "id: 41-0"));
	free(text);
	feed_free(f);
}

static void resuming_on_a_node_behind_skips_what_the_client_saw(void **state)
{
	struct feed *f = feed_new(8);
	struct feed_reader r;
	struct feed_id last, seen = {7, 1};
	int n;
	char *text;

	add(f, 5, "a", NULL);
	feed_publish(f);
	/* the client saw 7-1 elsewhere; this node is at 5 */
	assert_int_equal(feed_start(f, &seen, &r, &last), FEED_OK);
	add(f, 6, "a", NULL);
	add(f, 7, "a", NULL);
	add(f, 7, "a", NULL);
	add(f, 7, "a", NULL);
	add(f, 8, "a", NULL);
	feed_publish(f);
	text = read_all(f, &r, NULL, &n);
	assert_int_equal(n, 2); /* 7-2 and 8-0 */
	assert_null(strstr(text, "id: 7-1\n"));
	assert_non_null(strstr(text, "id: 7-2\n"));
	assert_non_null(strstr(text, "id: 8-0\n"));
	free(text);
	feed_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ids_parse_and_order),
		cmocka_unit_test(events_are_seen_after_publish_with_ranked_ids),
		cmocka_unit_test(filters_by_flow_and_run),
		cmocka_unit_test(resuming_within_the_window_and_past_it),
		cmocka_unit_test(a_reader_that_falls_behind_is_told),
		cmocka_unit_test(a_restore_resets_connected_readers_from_the_floor),
		cmocka_unit_test(resuming_on_a_node_behind_skips_what_the_client_saw),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
