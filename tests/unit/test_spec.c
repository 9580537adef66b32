/* test_spec.c - unit tests of core/spec.c: parsing, rejections, the DAG
 * check, normalization and run parameters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/error.h"
#include "core/limits.h"
#include "core/spec.h"
#include "core/tz.h"
#include "daemon/tzdata.h"

#define EXAMPLE                                                              \
	"{\"description\": \"nightly model refresh\", \"parameters\": "      \
	"{\"alpha\": {\"type\": \"float\", \"default\": 0.1}, \"region\": "  \
	"{\"type\": \"string\", \"required\": true}}, \"steps\": "           \
	"[{\"name\": \"extract\", \"command\": [\"python3\", "               \
	"\"extract.py\"], \"timeout_s\": 600, \"retries\": {\"max\": 3, "    \
	"\"backoff_s\": 5, \"max_backoff_s\": 60}}, {\"name\": \"train\", "  \
	"\"command\": [\"python3\", \"train.py\"], \"depends_on\": "         \
	"[\"extract\"]}, {\"name\": \"score\", \"command\": [\"python3\", "  \
	"\"score.py\"], \"depends_on\": [\"extract\"]}, {\"name\": "         \
	"\"publish\", \"shell\": \"psql -f publish.sql\", \"depends_on\": "  \
	"[\"train\", \"score\"]}]}"

/* ------------------------------------------------------------- helpers */

static json_t *load(const char *text)
{
	json_error_t jerr;
	json_t *doc = json_loads(text, 0, &jerr);

	if (doc == NULL)
		fail_msg("bad test JSON at %d: %s", jerr.position, jerr.text);
	return doc;
}

static struct flow_spec *parse_ok_lim(const char *text,
				      const struct flowd_limits *lim)
{
	struct flowd_error err;
	struct flow_spec *spec = NULL;
	json_t *doc = load(text);
	int rc;

	flowd_error_clear(&err);
	rc = spec_parse(doc, lim, &spec, &err);
	json_decref(doc);
	if (rc != 0)
		fail_msg("parse failed: %d %s %s: %s", (int)err.errc, err.code,
			 err.field, err.message);
	assert_non_null(spec);
	return spec;
}

static struct flow_spec *parse_ok(const char *text)
{
	struct flowd_limits lim;

	flowd_limits_defaults(&lim);
	return parse_ok_lim(text, &lim);
}

/* Parse `text`, which must fail, and check errc, code and field. Returns
 * the error so a test can look at the message. */
static struct flowd_error parse_fail_lim(const char *text,
					 const struct flowd_limits *lim,
					 enum flowd_errc errc, const char *code,
					 const char *field)
{
	struct flowd_error err;
	struct flow_spec *spec = NULL;
	json_t *doc = load(text);
	int rc;

	flowd_error_clear(&err);
	rc = spec_parse(doc, lim, &spec, &err);
	json_decref(doc);
	if (rc == 0)
		spec_free(spec);
	assert_int_equal(rc, -1);
	assert_null(spec);
	assert_int_equal(err.errc, errc);
	assert_string_equal(err.code, code);
	assert_string_equal(err.field, field);
	assert_true(err.message[0] != '\0');
	return err;
}

static struct flowd_error parse_fail(const char *text, const char *code,
				     const char *field)
{
	struct flowd_limits lim;

	flowd_limits_defaults(&lim);
	return parse_fail_lim(text, &lim, FLOWD_E_INVALID, code, field);
}

/* One-step spec with `extra` spliced into the step object. */
static void default_tags_are_sorted_once_and_checked(void **state)
{
	struct flow_spec *s = parse_ok(
		"{\"tags\":[\"b\",\"a\",\"b\"],\"steps\":[{\"name\":\"x\",\"shell\":\"true\"}]}");
	char *t = json_dumps(s->tags, JSON_COMPACT);

	assert_string_equal(t, "[\"a\",\"b\"]");
	free(t);
	assert_non_null(strstr(s->doc_text, "\"tags\":[\"a\",\"b\"]"));
	spec_free(s);
	/* without tags the document is as it was (a redeploy is no change) */
	s = parse_ok("{\"steps\":[{\"name\":\"x\",\"shell\":\"true\"}]}");
	assert_null(s->tags);
	assert_null(strstr(s->doc_text, "tags"));
	spec_free(s);
	parse_fail("{\"tags\":\"a\",\"steps\":[{\"name\":\"x\",\"shell\":\"true\"}]}",
		   "invalid_type", "tags");
	parse_fail("{\"tags\":[\"ok\",\"flow:x\"],\"steps\":[{\"name\":\"x\",\"shell\":\"true\"}]}",
		   "invalid_value", "tags[1]");
	parse_fail("{\"tags\":[1],\"steps\":[{\"name\":\"x\",\"shell\":\"true\"}]}",
		   "invalid_type", "tags[0]");
}

static void tags_are_utf8_without_system_prefixes(void **state)
{
	assert_null(spec_tag_check("nightly", 128));
	assert_null(spec_tag_check("owner:alice", 128));
	assert_null(spec_tag_check("caf\xc3\xa9", 128));
	assert_non_null(spec_tag_check("", 128));
	assert_non_null(spec_tag_check("abcd", 3));
	assert_non_null(spec_tag_check(" lead", 128));
	assert_non_null(spec_tag_check("tab\there", 128));
	assert_non_null(spec_tag_check("\xc3\x28", 128));     /* bad sequence */
	assert_non_null(spec_tag_check("\xed\xa0\x80", 128)); /* surrogate */
	assert_non_null(spec_tag_check("\xc0\xaf", 128));     /* overlong */
	for (const char *const *p = (const char *const[]){
		     "project:x", "branch:x", "flow:x", "version:1",
		     "trigger:manual", "origin:r-1", NULL};
	     *p != NULL; p++) {
		assert_true(spec_tag_system(*p));
		assert_non_null(spec_tag_check(*p, 128));
	}
	assert_false(spec_tag_system("flows:x"));
}

static void flow_keys_name_project_branch_and_flow(void **state)
{
	struct spec_flow_key k;
	char key[SPEC_FLOW_KEY_MAX];

	assert_true(spec_branch_name_valid("main"));
	assert_true(spec_branch_name_valid("prod"));
	assert_true(spec_branch_name_valid("test.ab_c-1"));
	assert_true(spec_branch_name_valid("user.alice"));
	assert_false(spec_branch_name_valid("staging"));
	assert_false(spec_branch_name_valid("test."));
	assert_false(spec_branch_name_valid("user.a.b"));
	assert_false(spec_project_name_valid("a.b"));
	assert_false(spec_project_name_valid(""));

	assert_int_equal(spec_flow_key(NULL, NULL, "etl", key, sizeof key), 0);
	assert_string_equal(key, "etl");
	assert_int_equal(spec_flow_key("default", "main", "etl", key, sizeof key), 0);
	assert_string_equal(key, "etl");
	assert_int_equal(spec_flow_key("default", "prod", "etl", key, sizeof key), 0);
	assert_string_equal(key, "default/prod/etl");
	assert_int_equal(spec_flow_key("shop", NULL, "etl", key, sizeof key), 0);
	assert_string_equal(key, "shop/main/etl");
	assert_int_equal(spec_flow_key("shop", "test.x", "etl", key, sizeof key), 0);
	assert_string_equal(key, "shop/test.x/etl");
	spec_flow_key_split(key, &k);
	assert_string_equal(k.project, "shop");
	assert_string_equal(k.branch, "test.x");
	assert_string_equal(k.flow, "etl");
	spec_flow_key_split("etl", &k);
	assert_string_equal(k.project, "default");
	assert_string_equal(k.branch, "main");
	assert_string_equal(k.flow, "etl");

	assert_true(spec_flow_key_valid("etl"));
	assert_true(spec_flow_key_valid("shop/prod/etl"));
	assert_false(spec_flow_key_valid("default/main/etl")); /* spelled "etl" */
	assert_false(spec_flow_key_valid("shop/staging/etl"));
	assert_false(spec_flow_key_valid("shop/prod/"));
	assert_false(spec_flow_key_valid("shop/prod"));
	assert_false(spec_flow_key_valid("a/b/c/d"));
}

static void on_finish_may_name_another_branch(void **state)
{
	struct flow_spec *s = parse_ok(
		"{\"steps\":[{\"name\":\"x\",\"shell\":\"true\"}],"
		"\"triggers\":{\"on_finish\":[{\"flow\":\"up\",\"branch\":\"prod\"},"
		"{\"flow\":\"up\"}]}}");

	assert_string_equal(s->on_finish[0].branch, "prod");
	assert_null(s->on_finish[1].branch);
	spec_free(s);
	parse_fail("{\"steps\":[{\"name\":\"x\",\"shell\":\"true\"}],"
		   "\"triggers\":{\"on_finish\":[{\"flow\":\"up\",\"branch\":\"qa\"}]}}",
		   "invalid_value", "triggers.on_finish[0].branch");
}

static void step_spec(char *buf, size_t n, const char *extra)
{
	snprintf(buf, n,
		 "{\"steps\": [{\"name\": \"a\", \"command\": [\"true\"]%s}]}",
		 extra);
}

/* --------------------------------------------------------------- valid */

static void example_parses_with_defaults(void **state)
{
	struct flow_spec *spec = parse_ok(EXAMPLE);
	const struct spec_step *s;

	assert_string_equal(spec->description, "nightly model refresh");

	assert_int_equal(spec->n_params, 2);
	assert_string_equal(spec->params[0].name, "alpha");
	assert_int_equal(spec->params[0].type, SPEC_PARAM_FLOAT);
	assert_false(spec->params[0].required);
	assert_true(json_is_real(spec->params[0].default_value));
	assert_true(json_real_value(spec->params[0].default_value) == 0.1);
	assert_string_equal(spec->params[0].description, "");
	assert_string_equal(spec->params[1].name, "region");
	assert_int_equal(spec->params[1].type, SPEC_PARAM_STRING);
	assert_true(spec->params[1].required);
	assert_null(spec->params[1].default_value);

	assert_int_equal(spec->n_steps, 4);
	s = &spec->steps[0];
	assert_string_equal(s->name, "extract");
	assert_int_equal(s->argc, 2);
	assert_string_equal(s->argv[0], "python3");
	assert_string_equal(s->argv[1], "extract.py");
	assert_null(s->argv[2]);
	assert_null(s->shell);
	assert_int_equal(s->n_deps, 0);
	assert_int_equal(s->n_env, 0);
	assert_non_null(s->env);
	assert_null(s->env[0]);
	assert_int_equal(s->timeout_s, 600);
	assert_int_equal(s->retries_max, 3);
	assert_int_equal(s->backoff_s, 5);
	assert_int_equal(s->max_backoff_s, 60);
	assert_null(s->workdir);

	s = &spec->steps[1];
	assert_string_equal(s->name, "train");
	assert_int_equal(s->n_deps, 1);
	assert_int_equal(s->deps[0], 0);
	assert_int_equal(s->timeout_s, 3600);
	assert_int_equal(s->retries_max, 0);
	assert_int_equal(s->backoff_s, 1);
	assert_int_equal(s->max_backoff_s, 300);

	s = &spec->steps[2];
	assert_string_equal(s->name, "score");
	assert_int_equal(s->n_deps, 1);
	assert_int_equal(s->deps[0], 0);

	s = &spec->steps[3];
	assert_string_equal(s->name, "publish");
	assert_null(s->argv);
	assert_int_equal(s->argc, 0);
	assert_string_equal(s->shell, "psql -f publish.sql");
	assert_int_equal(s->n_deps, 2);
	assert_int_equal(s->deps[0], 1);
	assert_int_equal(s->deps[1], 2);

	spec_free(spec);
}

static void normalized_doc_has_defaults(void **state)
{
	struct flow_spec *spec = parse_ok(EXAMPLE);
	json_t *want = load(
		"{\"description\": \"nightly model refresh\", \"parameters\": {"
		"\"alpha\": {\"type\": \"float\", \"required\": false, "
		"\"default\": 0.1, \"description\": \"\"}, "
		"\"region\": {\"type\": \"string\", \"required\": true, "
		"\"description\": \"\"}}, \"steps\": ["
		"{\"name\": \"extract\", \"command\": [\"python3\", "
		"\"extract.py\"], \"env\": {}, \"depends_on\": [], "
		"\"retries\": {\"max\": 3, \"backoff_s\": 5, "
		"\"max_backoff_s\": 60}, \"timeout_s\": 600}, "
		"{\"name\": \"train\", \"command\": [\"python3\", "
		"\"train.py\"], "
		"\"env\": {}, \"depends_on\": [\"extract\"], \"retries\": "
		"{\"max\": 0, \"backoff_s\": 1, \"max_backoff_s\": 300}, "
		"\"timeout_s\": 3600}, "
		"{\"name\": \"score\", \"command\": [\"python3\", "
		"\"score.py\"], "
		"\"env\": {}, \"depends_on\": [\"extract\"], \"retries\": "
		"{\"max\": 0, \"backoff_s\": 1, \"max_backoff_s\": 300}, "
		"\"timeout_s\": 3600}, "
		"{\"name\": \"publish\", \"shell\": \"psql -f publish.sql\", "
		"\"env\": {}, \"depends_on\": [\"train\", \"score\"], "
		"\"retries\": {\"max\": 0, \"backoff_s\": 1, "
		"\"max_backoff_s\": 300}, \"timeout_s\": 3600}]}");

	assert_true(json_equal(spec->doc, want));
	json_decref(want);
	spec_free(spec);
}

static void equivalent_specs_have_equal_docs(void **state)
{
	struct flow_spec *a, *b, *c;

	a = parse_ok("{\"parameters\": {\"x\": {\"type\": \"float\", "
		     "\"default\": 1}}, \"steps\": [{\"name\": \"a\", "
		     "\"shell\": \"echo\"}]}");
	b = parse_ok("{\"steps\": [{\"timeout_s\": 3600, \"name\": \"a\", "
		     "\"shell\": \"echo\", \"env\": {}, \"depends_on\": [], "
		     "\"retries\": {\"max\": 0, \"backoff_s\": 1, "
		     "\"max_backoff_s\": 300}}], \"description\": \"\", "
		     "\"parameters\": {\"x\": {\"type\": \"float\", "
		     "\"required\": false, \"default\": 1.0, "
		     "\"description\": \"\"}}}");
	c = parse_ok("{\"parameters\": {\"x\": {\"type\": \"float\", "
		     "\"default\": 1}}, \"steps\": [{\"name\": \"a\", "
		     "\"shell\": \"echo\", \"timeout_s\": 3599}]}");
	assert_true(json_equal(a->doc, b->doc));
	assert_false(json_equal(a->doc, c->doc));
	spec_free(a);
	spec_free(b);
	spec_free(c);
}

static void several_roots_and_joins_are_valid(void **state)
{
	struct flow_spec *spec = parse_ok(
		"{\"steps\": ["
		"{\"name\": \"e\", \"shell\": \"x\", "
		"\"depends_on\": [\"a\", \"d\"]},"
		"{\"name\": \"a\", \"shell\": \"x\"},"
		"{\"name\": \"b\", \"shell\": \"x\"},"
		"{\"name\": \"c\", \"shell\": \"x\", "
		"\"depends_on\": [\"a\", \"b\"]},"
		"{\"name\": \"d\", \"shell\": \"x\", "
		"\"depends_on\": [\"c\"]}]}");

	assert_int_equal(spec->n_steps, 5);
	assert_int_equal(spec->steps[0].n_deps, 2);
	assert_int_equal(spec->steps[0].deps[0], 1);
	assert_int_equal(spec->steps[0].deps[1], 4);
	assert_int_equal(spec->steps[3].deps[0], 1);
	assert_int_equal(spec->steps[3].deps[1], 2);
	assert_int_equal(spec->steps[4].deps[0], 3);
	spec_free(spec);
}

static void env_is_sorted_key_value(void **state)
{
	char buf[512];
	struct flow_spec *spec;

	step_spec(buf, sizeof buf,
		  ", \"env\": {\"B\": \"2\", \"AB\": \"x=y\", \"A\": \"\"}, "
		  "\"workdir\": \"/srv/flow\"");
	spec = parse_ok(buf);
	assert_int_equal(spec->steps[0].n_env, 3);
	assert_string_equal(spec->steps[0].env[0], "A=");
	assert_string_equal(spec->steps[0].env[1], "AB=x=y");
	assert_string_equal(spec->steps[0].env[2], "B=2");
	assert_null(spec->steps[0].env[3]);
	assert_string_equal(spec->steps[0].workdir, "/srv/flow");
	spec_free(spec);
}

static void flow_name_rule(void **state)
{
	char name[130];

	assert_true(spec_flow_name_valid("nightly-refresh_v2.1"));
	assert_false(spec_flow_name_valid(""));
	assert_false(spec_flow_name_valid(NULL));
	assert_false(spec_flow_name_valid("a b"));
	assert_false(spec_flow_name_valid("a/b"));
	memset(name, 'x', 128);
	name[128] = '\0';
	assert_true(spec_flow_name_valid(name));
	name[128] = 'x';
	name[129] = '\0';
	assert_false(spec_flow_name_valid(name));
}

/* "." and ".." are path segments to a proxy that normalizes URLs: refused as
 * flow names, step names and on_finish flows; names with dots that are not
 * whole segments stay valid. */
static void dot_names_are_refused(void **state)
{
	struct flowd_limits lim;
	struct flowd_error err;
	struct flow_spec *spec = NULL;
	json_t *doc;

	assert_false(spec_flow_name_valid("."));
	assert_false(spec_flow_name_valid(".."));
	assert_true(spec_flow_name_valid("..."));
	assert_true(spec_flow_name_valid(".a"));
	assert_true(spec_flow_name_valid("a..b"));
	assert_true(spec_flow_name_valid("a."));
	parse_fail("{\"steps\": [{\"name\": \".\", \"shell\": \"x\"}]}",
		   "invalid_value", "steps[0].name");
	parse_fail("{\"steps\": [{\"name\": \"..\", \"shell\": \"x\"}]}",
		   "invalid_value", "steps[0].name");
	parse_fail("{\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}], "
		   "\"triggers\": {\"on_finish\": [{\"flow\": \"..\"}]}}",
		   "invalid_value", "triggers.on_finish[0].flow");

	/* what an older version committed still applies (a snapshot, a log
	 * entry): the state machine cannot refuse it */
	assert_true(spec_flow_name_valid_committed("."));
	assert_true(spec_flow_name_valid_committed(".."));
	assert_false(spec_flow_name_valid_committed(""));
	flowd_limits_defaults(&lim);
	doc = load("{\"steps\": [{\"name\": \".\", \"shell\": \"x\"}], "
		   "\"triggers\": {\"on_finish\": [{\"flow\": \"..\"}]}}");
	assert_int_equal(
	    spec_parse_ex(doc, &lim, SPEC_PARSE_APPLY, &spec, &err), 0);
	assert_string_equal(spec->steps[0].name, ".");
	spec_free(spec);
	json_decref(doc);
}

/* ---------------------------------------------------------- rejections */

static void top_level_not_object(void **state)
{
	parse_fail("[1, 2]", "invalid_type", "");
}

static void unknown_fields_everywhere(void **state)
{
	char buf[512];

	parse_fail("{\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}], "
		   "\"name\": \"f\"}", "unknown_field", "name");
	parse_fail("{\"parameters\": {\"alpha\": {\"type\": \"int\", "
		   "\"min\": 1}}, \"steps\": [{\"name\": \"a\", "
		   "\"shell\": \"x\"}]}", "unknown_field",
		   "parameters.alpha.min");
	step_spec(buf, sizeof buf, ", \"cmd\": 1");
	parse_fail(buf, "unknown_field", "steps[0].cmd");
	step_spec(buf, sizeof buf, ", \"retries\": {\"tries\": 1}");
	parse_fail(buf, "unknown_field", "steps[0].retries.tries");
}

static void missing_fields(void **state)
{
	parse_fail("{\"description\": \"x\"}", "missing_field", "steps");
	parse_fail("{\"steps\": [{\"shell\": \"x\"}]}", "missing_field",
		   "steps[0].name");
	parse_fail("{\"steps\": [{\"name\": \"a\"}]}", "missing_field",
		   "steps[0].command");
	parse_fail("{\"parameters\": {\"p\": {}}, \"steps\": [{\"name\": "
		   "\"a\", \"shell\": \"x\"}]}", "missing_field",
		   "parameters.p.type");
}

static void wrong_types(void **state)
{
	char buf[512];

	parse_fail("{\"description\": 5, \"steps\": []}", "invalid_type",
		   "description");
	parse_fail("{\"parameters\": [], \"steps\": []}", "invalid_type",
		   "parameters");
	parse_fail("{\"steps\": {}}", "invalid_type", "steps");
	parse_fail("{\"steps\": [\"a\"]}", "invalid_type", "steps[0]");
	parse_fail("{\"parameters\": {\"alpha\": {\"type\": \"float\", "
		   "\"default\": \"0.1\"}}, \"steps\": [{\"name\": \"a\", "
		   "\"shell\": \"x\"}]}", "invalid_type",
		   "parameters.alpha.default");
	parse_fail("{\"parameters\": {\"n\": {\"type\": \"int\", "
		   "\"default\": 1.5}}, \"steps\": [{\"name\": \"a\", "
		   "\"shell\": \"x\"}]}", "invalid_type",
		   "parameters.n.default");
	parse_fail("{\"parameters\": {\"n\": {\"type\": \"int\", "
		   "\"required\": 1}}, \"steps\": [{\"name\": \"a\", "
		   "\"shell\": \"x\"}]}", "invalid_type",
		   "parameters.n.required");
	parse_fail("{\"steps\": [{\"name\": \"a\", \"command\": "
		   "[\"echo\", 3]}]}", "invalid_type", "steps[0].command[1]");
	parse_fail("{\"steps\": [{\"name\": \"a\", \"command\": \"echo\"}]}",
		   "invalid_type", "steps[0].command");
	step_spec(buf, sizeof buf, ", \"timeout_s\": \"60\"");
	parse_fail(buf, "invalid_type", "steps[0].timeout_s");
	step_spec(buf, sizeof buf, ", \"retries\": {\"max\": 2.0}");
	parse_fail(buf, "invalid_type", "steps[0].retries.max");
	step_spec(buf, sizeof buf, ", \"env\": {\"K\": 1}");
	parse_fail(buf, "invalid_type", "steps[0].env.K");
	step_spec(buf, sizeof buf, ", \"depends_on\": \"b\"");
	parse_fail(buf, "invalid_type", "steps[0].depends_on");
}

static void invalid_values(void **state)
{
	char buf[512];

	parse_fail("{\"steps\": []}", "invalid_value", "steps");
	parse_fail("{\"steps\": [{\"name\": \"a b\", \"shell\": \"x\"}]}",
		   "invalid_value", "steps[0].name");
	parse_fail("{\"steps\": [{\"name\": \"a\", \"shell\": \"\"}]}",
		   "invalid_value", "steps[0].shell");
	parse_fail("{\"steps\": [{\"name\": \"a\", \"shell\": \"x\", "
		   "\"command\": [\"y\"]}]}", "invalid_value",
		   "steps[0].shell");
	parse_fail("{\"steps\": [{\"name\": \"a\", \"command\": []}]}",
		   "invalid_value", "steps[0].command");
	parse_fail("{\"steps\": [{\"name\": \"a\", \"command\": "
		   "[\"\", \"x\"]}]}", "invalid_value", "steps[0].command[0]");
	parse_fail("{\"parameters\": {\"1x\": {\"type\": \"int\"}}, "
		   "\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}]}",
		   "invalid_value", "parameters.1x");
	parse_fail("{\"parameters\": {\"x\": {\"type\": \"double\"}}, "
		   "\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}]}",
		   "invalid_value", "parameters.x.type");
	parse_fail("{\"parameters\": {\"x\": {\"type\": \"int\", "
		   "\"required\": true, \"default\": 3}}, "
		   "\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}]}",
		   "invalid_value", "parameters.x.default");
	step_spec(buf, sizeof buf, ", \"timeout_s\": 0");
	parse_fail(buf, "invalid_value", "steps[0].timeout_s");
	step_spec(buf, sizeof buf, ", \"timeout_s\": 604801");
	parse_fail(buf, "invalid_value", "steps[0].timeout_s");
	step_spec(buf, sizeof buf, ", \"retries\": {\"max\": 101}");
	parse_fail(buf, "invalid_value", "steps[0].retries.max");
	step_spec(buf, sizeof buf, ", \"retries\": {\"backoff_s\": -1}");
	parse_fail(buf, "invalid_value", "steps[0].retries.backoff_s");
	step_spec(buf, sizeof buf,
		  ", \"retries\": {\"backoff_s\": 10, \"max_backoff_s\": 5}");
	parse_fail(buf, "invalid_value", "steps[0].retries.max_backoff_s");
	step_spec(buf, sizeof buf, ", \"workdir\": \"srv\"");
	parse_fail(buf, "invalid_value", "steps[0].workdir");
	step_spec(buf, sizeof buf, ", \"workdir\": \"\"");
	parse_fail(buf, "invalid_value", "steps[0].workdir");
	step_spec(buf, sizeof buf, ", \"env\": {\"FLOWD_RUN\": \"x\"}");
	parse_fail(buf, "invalid_value", "steps[0].env.FLOWD_RUN");
	step_spec(buf, sizeof buf, ", \"env\": {\"A-B\": \"x\"}");
	parse_fail(buf, "invalid_value", "steps[0].env.A-B");
}

static void duplicate_step_name(void **state)
{
	parse_fail("{\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}, "
		   "{\"name\": \"b\", \"shell\": \"x\"}, "
		   "{\"name\": \"a\", \"shell\": \"x\"}]}",
		   "duplicate", "steps[2].name");
	parse_fail("{\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}, "
		   "{\"name\": \"b\", \"shell\": \"x\", "
		   "\"depends_on\": [\"a\", \"a\"]}]}",
		   "duplicate", "steps[1].depends_on[1]");
}

static void unknown_dependency(void **state)
{
	parse_fail("{\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}, "
		   "{\"name\": \"b\", \"shell\": \"x\", "
		   "\"depends_on\": [\"a\", \"c\"]}]}",
		   "unknown_dependency", "steps[1].depends_on[1]");
}

static void two_step_cycle(void **state)
{
	struct flowd_error err;

	err = parse_fail("{\"steps\": [{\"name\": \"a\", \"shell\": \"x\", "
			 "\"depends_on\": [\"b\"]}, {\"name\": \"b\", "
			 "\"shell\": \"x\", \"depends_on\": [\"a\"]}]}",
			 "cycle", "steps[0].depends_on");
	assert_non_null(strstr(err.message, "a -> b -> a"));
}

static void self_dependency_is_a_cycle(void **state)
{
	struct flowd_error err;

	err = parse_fail("{\"steps\": [{\"name\": \"r\", \"shell\": \"x\"}, "
			 "{\"name\": \"a\", \"shell\": \"x\", "
			 "\"depends_on\": [\"r\", \"a\"]}]}",
			 "cycle", "steps[1].depends_on");
	assert_non_null(strstr(err.message, "a -> a"));
}

/* A step downstream of a cycle is not reported; the cycle is, from its
 * lowest-indexed step. */
static void cycle_reported_not_its_downstream(void **state)
{
	struct flowd_error err;

	err = parse_fail("{\"steps\": ["
			 "{\"name\": \"down\", \"shell\": \"x\", "
			 "\"depends_on\": [\"z\"]},"
			 "{\"name\": \"root\", \"shell\": \"x\"},"
			 "{\"name\": \"x\", \"shell\": \"x\", "
			 "\"depends_on\": [\"root\", \"y\"]},"
			 "{\"name\": \"y\", \"shell\": \"x\", "
			 "\"depends_on\": [\"z\"]},"
			 "{\"name\": \"z\", \"shell\": \"x\", "
			 "\"depends_on\": [\"x\"]}]}",
			 "cycle", "steps[2].depends_on");
	assert_non_null(strstr(err.message, "x -> y -> z -> x"));
	assert_null(strstr(err.message, "down"));
}

/* 256 steps (the default limit) in one chain parse; closing the chain into
 * a ring is a cycle whose long message is cut short, not overflowed. */
static void long_chain_and_long_ring(void **state)
{
	struct flowd_limits lim;
	struct flow_spec *spec;
	struct flowd_error err;
	size_t n = 256, i, off = 0, cap = 64 * 1024;
	char *text = malloc(cap);

	assert_non_null(text);
	off += (size_t)snprintf(text + off, cap - off, "{\"steps\": [");
	for (i = 0; i < n; i++)
		off += (size_t)snprintf(text + off, cap - off,
					"%s{\"name\": \"step_%zu\", "
					"\"shell\": \"x\", "
					"\"depends_on\": [\"step_%zu\"]}",
					i ? ", " : "", i, i ? i - 1 : n - 1);
	snprintf(text + off, cap - off, "]}");
	flowd_limits_defaults(&lim);
	err = parse_fail_lim(text, &lim, FLOWD_E_INVALID, "cycle", "steps[0].depends_on");
	assert_non_null(strstr(err.message, "step_0 -> step_255"));

	/* break the ring: step_0 depends on nothing */
	memcpy(strstr(text, "[\"step_255\"]"), "[          ]", 12);
	spec = parse_ok_lim(text, &lim);
	assert_int_equal(spec->n_steps, n);
	assert_int_equal(spec->steps[0].n_deps, 0);
	assert_int_equal(spec->steps[255].deps[0], 254);
	spec_free(spec);
	free(text);
}

static void strings_over_limit_are_too_long(void **state)
{
	struct flowd_limits lim;
	char buf[512];

	flowd_limits_defaults(&lim);
	lim.max_string_bytes = 8;
	parse_fail_lim("{\"description\": \"123456789\", \"steps\": []}", &lim,
		       FLOWD_E_INVALID, "too_long", "description");
	parse_fail_lim("{\"parameters\": {\"p\": {\"type\": \"json\", "
		       "\"default\": {\"k\": [\"123456789\"]}}}, "
		       "\"steps\": []}",
		       &lim, FLOWD_E_INVALID, "too_long", "parameters.p.default");
	step_spec(buf, sizeof buf, ", \"env\": {\"K\": \"123456789\"}");
	parse_fail_lim(buf, &lim, FLOWD_E_INVALID, "too_long", "steps[0].env.K");
	parse_fail_lim("{\"steps\": [{\"name\": \"a\", \"command\": "
		       "[\"echo\", \"123456789\"]}]}", &lim, FLOWD_E_INVALID, "too_long",
		       "steps[0].command[1]");
}

static void too_many_steps(void **state)
{
	struct flowd_limits lim;
	struct flow_spec *spec;
	const char *two = "{\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}, "
			  "{\"name\": \"b\", \"shell\": \"x\"}]}";

	flowd_limits_defaults(&lim);
	lim.max_steps_per_flow = 2;
	spec = parse_ok_lim(two, &lim);
	spec_free(spec);
	lim.max_steps_per_flow = 1;
	parse_fail_lim(two, &lim, FLOWD_E_INVALID, "invalid_value", "steps");
}

static void other_count_limits(void **state)
{
	struct flowd_limits lim;
	char buf[512];

	flowd_limits_defaults(&lim);
	lim.max_params_per_flow = 1;
	lim.max_argv = 2;
	lim.max_env_per_step = 1;
	lim.max_deps_per_step = 1;
	parse_fail_lim("{\"parameters\": {\"a\": {\"type\": \"int\"}, "
		       "\"b\": {\"type\": \"int\"}}, \"steps\": []}", &lim,
		       FLOWD_E_INVALID, "invalid_value", "parameters");
	step_spec(buf, sizeof buf, ", \"env\": {\"A\": \"1\", \"B\": \"2\"}");
	parse_fail_lim(buf, &lim, FLOWD_E_INVALID, "invalid_value", "steps[0].env");
	parse_fail_lim("{\"steps\": [{\"name\": \"a\", \"command\": "
		       "[\"a\", \"b\", \"c\"]}]}", &lim, FLOWD_E_INVALID, "invalid_value",
		       "steps[0].command");
	parse_fail_lim("{\"steps\": [{\"name\": \"a\", \"shell\": \"x\", "
		       "\"depends_on\": [\"b\", \"c\"]}]}", &lim, FLOWD_E_INVALID,
		       "invalid_value", "steps[0].depends_on");
}

static void oversize_spec_is_413(void **state)
{
	struct flowd_limits lim;
	const char *text = "{\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}]}";
	json_t *doc = load(text);
	size_t size = json_dumpb(doc, NULL, 0, JSON_COMPACT);
	struct flow_spec *spec;

	json_decref(doc);
	flowd_limits_defaults(&lim);
	lim.max_spec_bytes = size;
	spec = parse_ok_lim(text, &lim);
	spec_free(spec);
	lim.max_spec_bytes = size - 1;
	parse_fail_lim(text, &lim, FLOWD_E_TOO_LARGE, "too_large", "");
}

static void first_error_in_document_order_wins(void **state)
{
	/* description before steps, steps[0] before steps[1], field checks
	 * before graph checks */
	parse_fail("{\"steps\": [{\"name\": \"a\", \"timeout_s\": 0}], "
		   "\"description\": 1}", "invalid_type", "description");
	parse_fail("{\"steps\": [{\"name\": \"a\", \"shell\": \"x\", "
		   "\"depends_on\": [\"nope\"]}, {\"name\": \"b\", "
		   "\"shell\": \"x\", \"timeout_s\": 0}]}",
		   "invalid_value", "steps[1].timeout_s");
	parse_fail("{\"parameters\": {\"zeta\": {\"type\": 1}, "
		   "\"beta\": {\"type\": 2}}, \"steps\": []}",
		   "invalid_type", "parameters.beta.type");
}

/* ----------------------------------------------------------- run params */

static struct flow_spec *params_spec(void)
{
	return parse_ok("{\"parameters\": {"
			"\"alpha\": {\"type\": \"float\", \"default\": 0.1},"
			"\"n\": {\"type\": \"int\", \"default\": 3},"
			"\"dry\": {\"type\": \"bool\"},"
			"\"cfg\": {\"type\": \"json\"},"
			"\"region\": {\"type\": \"string\", "
			"\"required\": true}},"
			"\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}]}");
}

static json_t *resolve_ok(const struct flow_spec *spec, const char *given)
{
	struct flowd_limits lim;
	struct flowd_error err;
	json_t *g = given != NULL ? load(given) : NULL, *out = NULL;
	int rc;

	flowd_limits_defaults(&lim);
	flowd_error_clear(&err);
	rc = spec_params_resolve(spec, g, &lim, &out, &err);
	json_decref(g);
	if (rc != 0)
		fail_msg("resolve failed: %s %s", err.code, err.field);
	return out;
}

static void resolve_fail_lim(const struct flow_spec *spec, const char *given,
			     const struct flowd_limits *lim, const char *code,
			     const char *field)
{
	struct flowd_error err;
	json_t *g = given != NULL ? load(given) : NULL, *out = NULL;
	int rc;

	flowd_error_clear(&err);
	rc = spec_params_resolve(spec, g, lim, &out, &err);
	json_decref(g);
	json_decref(out);
	assert_int_equal(rc, -1);
	assert_null(out);
	assert_int_equal(err.errc, FLOWD_E_INVALID);
	assert_string_equal(err.code, code);
	assert_string_equal(err.field, field);
}

static void resolve_fail(const struct flow_spec *spec, const char *given,
			 const char *code, const char *field)
{
	struct flowd_limits lim;

	flowd_limits_defaults(&lim);
	resolve_fail_lim(spec, given, &lim, code, field);
}

static void params_resolve_fills_defaults(void **state)
{
	struct flow_spec *spec = params_spec();
	json_t *out = resolve_ok(spec, "{\"region\": \"eu\"}");
	json_t *want = load("{\"alpha\": 0.1, \"n\": 3, \"region\": \"eu\"}");

	assert_true(json_equal(out, want));
	json_decref(out);
	json_decref(want);
	spec_free(spec);
}

static void params_resolve_converts_int_to_float(void **state)
{
	struct flow_spec *spec = params_spec();
	json_t *out = resolve_ok(spec, "{\"region\": \"eu\", \"alpha\": 2, "
				 "\"n\": -7, \"dry\": false, "
				 "\"cfg\": [1, {\"a\": null}]}");
	json_t *alpha = json_object_get(out, "alpha");
	json_t *want = load("{\"alpha\": 2.0, \"n\": -7, \"dry\": false, "
			    "\"cfg\": [1, {\"a\": null}], \"region\": \"eu\"}");

	assert_true(json_is_real(alpha));
	assert_true(json_real_value(alpha) == 2.0);
	assert_true(json_equal(out, want));
	json_decref(out);
	json_decref(want);
	spec_free(spec);
}

static void params_resolve_rejections(void **state)
{
	struct flow_spec *spec = params_spec();
	struct flowd_limits lim;

	resolve_fail(spec, NULL, "missing_field", "parameters.region");
	resolve_fail(spec, "{}", "missing_field", "parameters.region");
	resolve_fail(spec, "{\"region\": \"eu\", \"beta\": 1}",
		     "unknown_field", "parameters.beta");
	resolve_fail(spec, "[]", "invalid_type", "parameters");
	resolve_fail(spec, "{\"region\": 1}", "invalid_type",
		     "parameters.region");
	resolve_fail(spec, "{\"region\": \"eu\", \"n\": 1.0}",
		     "invalid_type", "parameters.n");
	resolve_fail(spec, "{\"region\": \"eu\", \"alpha\": \"1\"}",
		     "invalid_type", "parameters.alpha");
	resolve_fail(spec, "{\"region\": \"eu\", \"dry\": 0}",
		     "invalid_type", "parameters.dry");
	flowd_limits_defaults(&lim);
	lim.max_param_bytes = 6;
	resolve_fail_lim(spec, "{\"region\": \"abcde\"}", &lim, "too_long",
			 "parameters.region");
	spec_free(spec);
}

static void params_resolve_without_params(void **state)
{
	struct flow_spec *spec = parse_ok(
		"{\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}]}");
	json_t *out = resolve_ok(spec, NULL);

	assert_true(json_is_object(out));
	assert_int_equal(json_object_size(out), 0);
	json_decref(out);
	resolve_fail(spec, "{\"x\": 1}", "unknown_field", "parameters.x");
	spec_free(spec);
}

static void check_env_value(json_t *v, const char *want)
{
	char *got = spec_param_env_value(v);

	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
	json_decref(v);
}

static void env_value_formatting(void **state)
{
	check_env_value(json_string("eu west"), "eu west");
	check_env_value(json_integer(-42), "-42");
	check_env_value(json_real(0.5), "0.5");
	check_env_value(json_real(0.1), "0.10000000000000001");
	check_env_value(json_true(), "true");
	check_env_value(json_false(), "false");
	check_env_value(json_null(), "null");
	check_env_value(load("{\"a\": [1, \"b\"]}"), "{\"a\":[1,\"b\"]}");
}

/* ------------------------------------------------------------- triggers */

#define TRIG(t) "{\"parameters\":{\"region\":{\"type\":\"string\"," \
	"\"default\":\"eu\"}},\"steps\":[{\"name\":\"a\",\"command\":[\"true\"]}]," \
	"\"triggers\":" t "}"

static void triggers_parse_with_defaults(void **state)
{
	struct flow_spec *spec = parse_ok(TRIG(
		"{\"schedules\":[{\"cron\":\"30 2 * * *\",\"timezone\":"
		"\"Europe/Berlin\",\"parameters\":{\"region\":\"us\"}},"
		"{\"cron\":\"@every 90s\",\"catchup\":\"all\",\"overlap\":\"skip\"}],"
		"\"events\":[{\"event\":\"data_ready\",\"filter\":{\"table\":\"x\"},"
		"\"parameters\":{\"region\":\"payload.where.region\"}},"
		"{\"all\":[{\"event\":\"a\"},{\"event\":\"b\"}],\"reset\":\"0 0 * * *\"}],"
		"\"on_finish\":[{\"flow\":\"up\",\"status\":\"any\"}]}"));
	json_t *s0 = json_array_get(json_object_get(json_object_get(spec->doc,
				    "triggers"), "schedules"), 0);

	assert_int_equal(spec->n_schedules, 2);
	assert_int_equal(spec->n_events, 2);
	assert_int_equal(spec->n_on_finish, 1);
	assert_string_equal(spec->schedules[0].timezone, "Europe/Berlin");
	assert_int_equal(spec->schedules[0].catchup, SPEC_CATCHUP_LATEST);
	assert_int_equal(spec->schedules[0].catchup_window_s, 3600);
	assert_int_equal(spec->schedules[1].cron.every, 90);
	assert_int_equal(spec->schedules[1].overlap, SPEC_OVERLAP_SKIP);
	assert_int_equal(spec->events[1].n_events, 2);
	assert_non_null(spec->events[1].reset);
	assert_int_equal(spec->on_finish[0].status, SPEC_FINISH_ANY);
	/* Defaults are written out in the normalized document. */
	assert_string_equal(json_string_value(json_object_get(s0, "dst_missing")), "shift");
	assert_string_equal(json_string_value(json_object_get(s0, "dst_repeated")), "once");
	assert_string_equal(json_string_value(json_object_get(s0, "overlap")), "allow_all");
	assert_int_equal(json_integer_value(json_object_get(s0, "jitter_s")), 0);
	/* Two schedules of one spec have different identities. */
	assert_string_not_equal(spec->schedules[0].key, spec->schedules[1].key);
	spec_free(spec);
}

static void trigger_rejections_name_the_field(void **state)
{
	struct flowd_limits lim;

	parse_fail(TRIG("[]"), "invalid_type", "triggers");
	parse_fail(TRIG("{\"schedules\":{}}"), "invalid_type", "triggers.schedules");
	parse_fail(TRIG("{\"schedules\":[{}]}"), "missing_field",
		   "triggers.schedules[0].cron");
	parse_fail(TRIG("{\"schedules\":[{\"cron\":\"0 0 30 2 *\"}]}"),
		   "invalid_value", "triggers.schedules[0].cron");
	parse_fail(TRIG("{\"schedules\":[{\"cron\":\"* * * * *\","
			"\"timezone\":\"../etc\"}]}"),
		   "invalid_value", "triggers.schedules[0].timezone");
	parse_fail(TRIG("{\"schedules\":[{\"cron\":\"* * * * *\","
			"\"catchup_window_s\":-1}]}"),
		   "invalid_value", "triggers.schedules[0].catchup_window_s");
	parse_fail(TRIG("{\"schedules\":[{\"cron\":\"* * * * *\","
			"\"parameters\":{\"region\":1}}]}"),
		   "invalid_type", "triggers.schedules[0].parameters.region");
	parse_fail(TRIG("{\"events\":[{\"event\":\"x\",\"filter\":[]}]}"),
		   "invalid_type", "triggers.events[0].filter");
	parse_fail(TRIG("{\"events\":[{\"event\":\"x\",\"filter\":{\"a..b\":1}}]}"),
		   "invalid_value", "triggers.events[0].filter");
	parse_fail(TRIG("{\"events\":[{\"all\":[{\"event\":\"a\"}],\"window_s\":5}]}"),
		   "invalid_value", "triggers.events[0].all");
	parse_fail(TRIG("{\"events\":[{\"all\":[{\"event\":\"a\"},{\"event\":\"a\"}],"
			"\"window_s\":5}]}"),
		   "duplicate", "triggers.events[0].all[1].event");
	parse_fail(TRIG("{\"events\":[{\"all\":[{\"event\":\"a\"},{\"event\":\"b\"}],"
			"\"window_s\":5,\"parameters\":{\"region\":\"c.payload.x\"}}]}"),
		   "invalid_value", "triggers.events[0].parameters.region");
	parse_fail(TRIG("{\"on_finish\":[{\"flow\":\"a b\"}]}"), "invalid_value",
		   "triggers.on_finish[0].flow");
	parse_fail("{\"steps\":[{\"name\":\"a\",\"command\":[\"true\"]}],"
		   "\"max_active_runs\":-2}",
		   "invalid_value", "max_active_runs");
	flowd_limits_defaults(&lim);
	lim.max_triggers_per_flow = 2;
	parse_fail_lim(TRIG("{\"schedules\":[{\"cron\":\"@daily\"}],"
			    "\"on_finish\":[{\"flow\":\"a\"},{\"flow\":\"b\"}]}"),
		       &lim, FLOWD_E_INVALID, "invalid_value", "triggers.on_finish");
}

static void jitter_must_be_shorter_than_the_period(void **state)
{
	struct flowd_error err = parse_fail(
		TRIG("{\"schedules\":[{\"cron\":\"* * * * *\",\"jitter_s\":60}]}"),
		"invalid_value", "triggers.schedules[0].jitter_s");

	assert_non_null(strstr(err.message, "60 s"));
	spec_free(parse_ok(TRIG("{\"schedules\":[{\"cron\":\"* * * * *\","
				"\"jitter_s\":59}]}")));
	parse_fail(TRIG("{\"schedules\":[{\"cron\":\"@every 30s\",\"jitter_s\":30}]}"),
		   "invalid_value", "triggers.schedules[0].jitter_s");
}

/* Found by fuzzing: an all-of element whose filter is invalid had its name
 * and filter allocated before it was counted, so spec_free() missed them
 * (LeakSanitizer: make asan, or the build-asan line in the report). */
static void all_of_with_a_bad_filter_frees_what_it_parsed(void **state)
{
	parse_fail("{\"steps\":[{\"name\":\"a\",\"shell\":\"true\"}],"
		   "\"triggers\":{\"events\":[{\"all\":[{\"event\":\"e1\","
		   "\"filter\":{\"~\":\"v\"}},{\"event\":\"e2\"}],"
		   "\"window_s\":60}]}}",
		   "invalid_value", "triggers.events[0].all[0].filter");
	parse_fail("{\"steps\":[{\"name\":\"a\",\"shell\":\"true\"}],"
		   "\"triggers\":{\"events\":[{\"all\":[{\"event\":\"e1\"},"
		   "{\"event\":\"e2\",\"filter\":[]}],\"window_s\":60}]}}",
		   "invalid_type", "triggers.events[0].all[1].filter");
}

static bool utf8_ok(const char *s)
{
	json_t *j = json_string(s);

	json_decref(j);
	return j != NULL;
}

/* A message that quotes input must stay valid UTF-8, or the API cannot
 * encode it and answers 500: an unknown key of 63 'k' and an e-acute was
 * cut by "%.64s" inside the e-acute. */
static void messages_quoting_input_are_valid_utf8(void **state)
{
	char key[200], text[1024], field[300];
	struct flowd_error err;

	memset(key, 'k', 63);
	strcpy(key + 63, "\xC3\xA9");
	snprintf(text, sizeof text,
		 "{\"steps\": [{\"name\": \"a\", \"shell\": \"x\"}], "
		 "\"%s\": 1}",
		 key);
	err = parse_fail(text, "unknown_field", key);
	assert_true(utf8_ok(err.message));
	assert_non_null(strstr(err.message, "kkkkkkkk"));

	/* a dependency, a parameter, a filter key: the same cut */
	snprintf(text, sizeof text,
		 "{\"steps\": [{\"name\": \"a\", \"shell\": \"x\", "
		 "\"depends_on\": [\"%s\"]}]}",
		 key);
	err = parse_fail(text, "unknown_dependency", "steps[0].depends_on[0]");
	assert_true(utf8_ok(err.message));
	snprintf(text, sizeof text,
		 TRIG("{\"events\":[{\"event\":\"x\",\"filter\":{\"%s\":1}}]}"),
		 key);
	err = parse_fail(text, "invalid_value", "triggers.events[0].filter");
	assert_true(utf8_ok(err.message));

	/* a schedule's parameter path is re-prefixed after the fact: the
	 * longer path is cut to 191 bytes, here inside the e-acute */
	memset(key, 'p', 157);
	strcpy(key + 157, "\xC3\xA9");
	snprintf(text, sizeof text,
		 TRIG("{\"schedules\":[{\"cron\":\"@daily\","
		      "\"parameters\":{\"%s\":1}}]}"),
		 key);
	snprintf(field, sizeof field, "triggers.schedules[0].parameters.%.157s",
		 key);
	err = parse_fail(text, "unknown_field", field);
	assert_true(utf8_ok(err.field));
	assert_true(utf8_ok(err.message));
}

/* In the state machine a zone this node lacks cannot refuse a committed
 * spec: it is kept by name, UTC here. */
static void apply_mode_keeps_unknown_zones(void **state)
{
	struct flowd_limits lim;
	struct flowd_error err;
	struct flow_spec *spec = NULL;
	json_t *doc = json_loads(TRIG("{\"schedules\":[{\"cron\":\"@daily\","
				      "\"timezone\":\"Mars/Olympus\"}]}"), 0, NULL);

	flowd_limits_defaults(&lim);
	assert_int_equal(spec_parse(doc, &lim, &spec, &err), -1);
	assert_int_equal(spec_parse_ex(doc, &lim, SPEC_PARSE_APPLY, &spec, &err), 0);
	assert_null(spec->schedules[0].tz);
	assert_string_equal(spec->schedules[0].timezone, "Mars/Olympus");
	spec_free(spec);
	json_decref(doc);
}

static void payload_paths(void **state)
{
	json_t *root = json_loads("{\"payload\":{\"a\":{\"b\":[1]},\"c\":null}}", 0, NULL);

	assert_true(json_is_array(spec_path_get(root, "payload.a.b")));
	assert_true(json_is_null(spec_path_get(root, "payload.c")));
	assert_null(spec_path_get(root, "payload.x"));
	assert_null(spec_path_get(root, "payload.a.b.c"));
	assert_null(spec_path_get(root, "payload."));
	assert_null(spec_path_get(root, ""));
	json_decref(root);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(example_parses_with_defaults),
		cmocka_unit_test(normalized_doc_has_defaults),
		cmocka_unit_test(equivalent_specs_have_equal_docs),
		cmocka_unit_test(several_roots_and_joins_are_valid),
		cmocka_unit_test(env_is_sorted_key_value),
		cmocka_unit_test(flow_name_rule),
		cmocka_unit_test(dot_names_are_refused),
		cmocka_unit_test(top_level_not_object),
		cmocka_unit_test(unknown_fields_everywhere),
		cmocka_unit_test(missing_fields),
		cmocka_unit_test(wrong_types),
		cmocka_unit_test(invalid_values),
		cmocka_unit_test(duplicate_step_name),
		cmocka_unit_test(unknown_dependency),
		cmocka_unit_test(two_step_cycle),
		cmocka_unit_test(self_dependency_is_a_cycle),
		cmocka_unit_test(cycle_reported_not_its_downstream),
		cmocka_unit_test(long_chain_and_long_ring),
		cmocka_unit_test(strings_over_limit_are_too_long),
		cmocka_unit_test(too_many_steps),
		cmocka_unit_test(other_count_limits),
		cmocka_unit_test(oversize_spec_is_413),
		cmocka_unit_test(first_error_in_document_order_wins),
		cmocka_unit_test(params_resolve_fills_defaults),
		cmocka_unit_test(params_resolve_converts_int_to_float),
		cmocka_unit_test(params_resolve_rejections),
		cmocka_unit_test(params_resolve_without_params),
		cmocka_unit_test(env_value_formatting),
		cmocka_unit_test(triggers_parse_with_defaults),
		cmocka_unit_test(trigger_rejections_name_the_field),
		cmocka_unit_test(payload_paths),
		cmocka_unit_test(jitter_must_be_shorter_than_the_period),
		cmocka_unit_test(apply_mode_keeps_unknown_zones),
		cmocka_unit_test(all_of_with_a_bad_filter_frees_what_it_parsed),
		cmocka_unit_test(messages_quoting_input_are_valid_utf8),
		cmocka_unit_test(default_tags_are_sorted_once_and_checked),
		cmocka_unit_test(tags_are_utf8_without_system_prefixes),
		cmocka_unit_test(flow_keys_name_project_branch_and_flow),
		cmocka_unit_test(on_finish_may_name_another_branch),
	};

	tz_set_loader(tzdata_load);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
