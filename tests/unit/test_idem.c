/* test_idem.c - the idempotency key table (core/idem.c): lookups, the
 * retention by count and by age, the order kept for snapshots, and removal
 * that keeps every other key findable (against a plain reference). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/idem.h"

static void keys_name_their_run_per_flow(void **state)
{
	struct idem t;

	idem_init(&t);
	assert_int_equal(idem_get(&t, "a", "k", NULL), 0);
	idem_put(&t, "a", "k", 1, 1000);
	idem_put(&t, "b", "k", 2, 1000);
	idem_put(&t, "a", "k2", 3, 1000);
	assert_int_equal(idem_get(&t, "a", "k", NULL), 1);
	assert_int_equal(idem_get(&t, "b", "k", NULL), 2);
	assert_int_equal(idem_get(&t, "a", "k2", NULL), 3);
	/* "a\nk2" must not be read as flow "a\nk", key "2" */
	assert_int_equal(idem_get(&t, "a", "k\n2", NULL), 0);
	assert_int_equal(idem_get(&t, "c", "k", NULL), 0);
	assert_int_equal(idem_count(&t), 3);
	idem_close(&t);
}

static void the_oldest_leave_first_by_count_and_by_age(void **state)
{
	struct idem t;
	char key[32];
	uint64_t seq;
	int64_t ts;

	idem_init(&t);
	for (int i = 1; i <= 10; i++) {
		snprintf(key, sizeof key, "k%d", i);
		idem_put(&t, "f", key, (uint64_t)i, i * 1000);
	}
	/* at most 8: k1 and k2 go */
	assert_int_equal(idem_expire(&t, 10000, 0, 8), 2);
	assert_int_equal(idem_get(&t, "f", "k1", NULL), 0);
	assert_int_equal(idem_get(&t, "f", "k2", NULL), 0);
	assert_int_equal(idem_get(&t, "f", "k3", NULL), 3);
	/* older than 5 s at 10 s: made before 5000 ms (k3, k4) go */
	assert_int_equal(idem_expire(&t, 10000, 5000, 0), 2);
	assert_int_equal(idem_get(&t, "f", "k4", NULL), 0);
	assert_int_equal(idem_get(&t, "f", "k5", NULL), 5);
	/* oldest first, as made */
	assert_string_equal(idem_at(&t, 0, &seq, &ts), "f\nk5");
	assert_int_equal(seq, 5);
	assert_int_equal(ts, 5000);
	assert_string_equal(idem_at(&t, 5, &seq, &ts), "f\nk10");
	/* no limit: nothing goes */
	assert_int_equal(idem_expire(&t, 1000000, 0, 0), 0);
	assert_int_equal(idem_count(&t), 6);
	idem_close(&t);
}

/* Many keys in, the oldest out, with colliding probe runs: every key still
 * in must be found and every key out must not, at each step. */
static void removal_keeps_every_other_key_findable(void **state)
{
	enum { N = 20000, KEEP = 3000 };
	struct idem t;
	char key[32];

	idem_init(&t);
	for (int i = 1; i <= N; i++) {
		snprintf(key, sizeof key, "key-%d", i * 7919 % 100003);
		idem_put(&t, i % 3 ? "flow-a" : "flow-b", key, (uint64_t)i, i);
		idem_expire(&t, i, 0, KEEP);
		if (i % 997 != 0)
			continue;
		for (int j = 1; j <= i; j++) {
			snprintf(key, sizeof key, "key-%d", j * 7919 % 100003);
			assert_int_equal(
				idem_get(&t, j % 3 ? "flow-a" : "flow-b", key, NULL),
				j > i - KEEP ? (uint64_t)j : 0);
		}
	}
	assert_int_equal(idem_count(&t), KEEP);
	idem_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(keys_name_their_run_per_flow),
		cmocka_unit_test(the_oldest_leave_first_by_count_and_by_age),
		cmocka_unit_test(removal_keeps_every_other_key_findable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
