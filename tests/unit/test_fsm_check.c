/* test_fsm_check.c - core/fsm_check.c: every field of a command in range
 * before apply, and what a node may propose through another. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/fsm.h"

static int check(const char *text, struct fsm_check *out)
{
	json_error_t jerr;
	json_t *cmd = json_loads(text, 0, &jerr);
	int rv;

	assert_non_null(cmd);
	rv = fsm_cmd_check(cmd, out);
	json_decref(cmd);
	return rv;
}

static void fields_out_of_range_are_named(void **state)
{
	struct fsm_check bad;

	assert_int_equal(check("{\"v\":1,\"op\":\"nop\",\"ts\":1}", &bad), 0);
	assert_int_equal(check("{}", &bad), -1);
	assert_string_equal(bad.field, "v");
	assert_int_equal(check("{\"v\":2,\"op\":\"nop\",\"ts\":1}", &bad), -1);
	assert_string_equal(bad.field, "v");
	assert_int_equal(check("{\"v\":1,\"op\":\"rm -rf\",\"ts\":1}", &bad), -1);
	assert_string_equal(bad.field, "op");
	/* a time PostgreSQL's timestamptz cannot hold */
	assert_int_equal(check("{\"v\":1,\"op\":\"deploy\",\"ts\":9000000000000000000,"
			       "\"flow\":\"p\",\"spec\":{}}", &bad),
			 -1);
	assert_string_equal(bad.field, "ts");
	assert_int_equal(check("{\"v\":1,\"op\":\"nop\",\"ts\":-1}", &bad), -1);
	assert_int_equal(check("{\"v\":1,\"op\":\"nop\",\"ts\":\"1\"}", &bad), -1);
	assert_int_equal(check("{\"v\":1,\"op\":\"nop\",\"ts\":253402300799999}", &bad),
			 0);
	assert_int_equal(check("{\"v\":1,\"op\":\"nop\",\"ts\":253402300800000}", &bad),
			 -1);
	/* types and ranges of the op's fields */
	assert_int_equal(check("{\"v\":1,\"op\":\"deploy\",\"ts\":1,\"flow\":\"p\","
			       "\"spec\":[]}", &bad),
			 -1);
	assert_string_equal(bad.field, "spec");
	assert_int_equal(check("{\"v\":1,\"op\":\"run_cancel\",\"ts\":1}", &bad), -1);
	assert_string_equal(bad.field, "run");
	assert_int_equal(check("{\"v\":1,\"op\":\"task_finish\",\"ts\":1,\"run\":\"r\","
			       "\"step\":\"a\",\"attempt\":1,\"node\":1,"
			       "\"exit_code\":4294967296,\"signal\":0,\"reason\":\"x\","
			       "\"stdout\":\"\",\"stderr\":\"\",\"truncated\":false}", &bad),
			 -1);
	assert_string_equal(bad.field, "exit_code");
	assert_int_equal(check("{\"v\":1,\"op\":\"fire\",\"ts\":1,\"items\":[{\"flow\":\"f\","
			       "\"schedule\":0,\"key\":\"k\",\"nominal\":-5}]}", &bad),
			 -1);
	assert_string_equal(bad.field, "nominal");
	assert_int_equal(check("{\"v\":1,\"op\":\"nop\",\"ts\":1,\"audit\":{\"who\":1}}",
			       &bad),
			 -1);
	/* unknown fields are ignored by apply (a newer node may add one) */
	assert_int_equal(check("{\"v\":1,\"op\":\"nop\",\"ts\":1,\"later\":true}", &bad),
			 0);
}

static void apply_refuses_a_poisoned_deploy_without_effect(void **state)
{
	static const char poison[] =
		"{\"v\":1,\"op\":\"deploy\",\"ts\":9000000000000000000,"
		"\"flow\":\"poison\",\"spec\":{\"steps\":[{\"name\":\"a\","
		"\"command\":[\"true\"]}]}}";
	struct fsm f;
	struct fsm_result *r;
	uint64_t index = 0;
	char *rows;

	fsm_init(&f, NULL);
	free(fsm_take_records(&f, &index));
	r = fsm_apply(&f, 1, poison, sizeof poison - 1);
	assert_int_not_equal(r->err.errc, FLOWD_OK);
	assert_string_equal(r->err.code, "invalid_command");
	assert_string_equal(r->err.field, "ts");
	assert_null(fsm_flow_get(&f, "poison"));
	rows = fsm_take_records(&f, &index);
	assert_true(rows == NULL || strstr(rows, "poison") == NULL);
	free(rows);
	fsm_close(&f);
}

static int node_check(const char *text, uint64_t node, struct fsm_check *bad)
{
	return fsm_cmd_check_node(text, strlen(text), node, bad);
}

static void nodes_send_only_their_own_commands(void **state)
{
	struct fsm_check bad;

	assert_int_equal(node_check("{\"v\":1,\"op\":\"node_up\",\"ts\":1,\"node\":2,"
				    "\"boot\":7,\"capacity\":4,\"api\":\"127.0.0.1:1\"}",
				    2, &bad),
			 0);
	assert_int_equal(node_check("{\"v\":1,\"op\":\"node_up\",\"ts\":1,\"node\":3,"
				    "\"boot\":7,\"capacity\":4}",
				    2, &bad),
			 -1);
	assert_string_equal(bad.field, "node");
	assert_int_equal(node_check("{\"v\":1,\"op\":\"node_alive\",\"ts\":1,\"node\":2,"
				    "\"boot\":7,\"x\":1}",
				    2, &bad),
			 -1);
	assert_string_equal(bad.field, "x");
	assert_int_equal(node_check("{\"v\":1,\"op\":\"deploy\",\"ts\":1,\"flow\":\"f\","
				    "\"spec\":{}}",
				    2, &bad),
			 -1);
	assert_string_equal(bad.field, "op");
	assert_int_equal(node_check("{\"v\":1,\"op\":\"fire\",\"ts\":1,\"items\":[]}", 2,
				    &bad),
			 -1);
	assert_int_equal(node_check("{\"v\":1,\"op\":\"nop\",\"ts\":1,\"audit\":{}}", 2,
				    &bad),
			 -1);
	assert_int_equal(node_check("not json", 2, &bad), -1);
	assert_int_equal(node_check("{\"v\":1,\"v\":1,\"op\":\"nop\",\"ts\":1}", 2, &bad),
			 -1);
	/* a batch of its own outcomes only */
	assert_int_equal(
		node_check("{\"v\":1,\"op\":\"batch\",\"ts\":1,\"cmds\":[{\"v\":1,\"op\":"
			   "\"task_finish\",\"ts\":1,\"run\":\"r\",\"step\":\"a\","
			   "\"attempt\":1,\"node\":2,\"exit_code\":0,\"signal\":0,"
			   "\"reason\":\"exit\",\"stdout\":\"\",\"stderr\":\"\","
			   "\"truncated\":false}]}",
			   2, &bad),
		0);
	assert_int_equal(
		node_check("{\"v\":1,\"op\":\"batch\",\"ts\":1,\"cmds\":[{\"v\":1,\"op\":"
			   "\"task_finish\",\"ts\":1,\"run\":\"r\",\"step\":\"a\","
			   "\"attempt\":1,\"node\":3,\"exit_code\":0,\"signal\":0,"
			   "\"reason\":\"exit\",\"stdout\":\"\",\"stderr\":\"\","
			   "\"truncated\":false}]}",
			   2, &bad),
		-1);
	assert_string_equal(bad.field, "node");
	assert_int_equal(node_check("{\"v\":1,\"op\":\"batch\",\"ts\":1,\"cmds\":[{\"v\":1,"
				    "\"op\":\"nop\",\"ts\":1}]}",
				    2, &bad),
			 -1);
	assert_string_equal(bad.field, "cmds");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(fields_out_of_range_are_named),
		cmocka_unit_test(apply_refuses_a_poisoned_deploy_without_effect),
		cmocka_unit_test(nodes_send_only_their_own_commands),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
