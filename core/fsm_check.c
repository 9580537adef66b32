/* fsm_check.c - every field of every command, range-checked: before apply
 * (a bad field is the command's result, never a row PostgreSQL refuses)
 * and, stricter, for commands another node proposes (fsm.h). */

/*
 * DESIGN
 *
 * One table row per op lists its fields: type, range, required. Apply
 * calls fsm_cmd_check() with strict = false: the fields it knows must be
 * well-typed and in range, others are ignored (a newer node may add one).
 * Every bound is a constant, not a setting: apply must decide the same on
 * every node whatever their configs say. The bounds are what PostgreSQL
 * and the state machine can hold: times within years 1970..9999 (a
 * timestamptz takes them), ids within a bigint, counters within an int.
 *
 * fsm_cmd_check_node() is for POST /internal/v1/commands: only the ops a
 * node sends about itself (node_up, node_alive, task_finish, a batch of
 * task_finish, wake, nop), strict (an unknown field is refused), and every
 * "node" field must be the signer's id. The leader's own ops (fire,
 * node_down) never travel: a node that was leader a moment ago and
 * forwards one gets a refusal, and its successor decides again.
 *
 * Pure; any thread.
 */
#include "core/fsm.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum kind { STR, INT, BOOL, OBJ, ARR, ANYJ };

struct field {
	const char *name;
	enum kind kind;
	int64_t min, max; /* INT: the range; STR: the length in bytes */
	bool required;
};

#define TS_MAX INT64_C(253402300799999) /* 9999-12-31T23:59:59.999Z */
#define ID_MAX INT64_MAX
#define I32 INT32_MIN, INT32_MAX
#define NAME 1, 4096
#define U32 0, INT64_C(4294967295)
#define TEXT 0, 65536
#define OUTPUT 0, INT64_C(1) << 40

#define END {NULL, 0, 0, 0, false}

static const struct field f_deploy[] = {
	{"flow", STR, NAME, true}, {"spec", OBJ, 0, 0, true}, END};
static const struct field f_undeploy[] = {{"flow", STR, NAME, true}, END};
#define KEEP                                                               \
	{"retain", INT, U32, false}, {"keys", INT, U32, false},            \
	{"key_ttl_s", INT, U32, false}, {"max_tags", INT, 1, 100000, false}, \
	{"max_tag_bytes", INT, 1, 65536, false}
static const struct field f_run_create[] = {
	{"flow", STR, NAME, true},
	{"parameters", OBJ, 0, 0, false},
	{"idempotency_key", STR, 1, (16 << 20), false},
	{"tags", ARR, 0, 100000, false},
	KEEP,
	END};
static const struct field f_run_cancel[] = {{"run", STR, NAME, true}, END};
static const struct field f_run_tags[] = {
	{"run", STR, NAME, true},
	{"add", ARR, 0, 100000, true},
	{"remove", ARR, 0, 100000, true},
	KEEP,
	END};
static const struct field f_run_resume[] = {
	{"run", STR, NAME, true},
	{"from_step", STR, NAME, false},
	{"version", STR, 1, 16, false},
	{"idempotency_key", STR, 1, (16 << 20), false},
	{"tags", ARR, 0, 100000, false},
	KEEP,
	END};
static const struct field f_run_record[] = {
	{"flow", STR, NAME, true},
	{"origin", STR, 1, 31, true},
	{"parameters", OBJ, 0, 0, false},
	{"idempotency_key", STR, 1, (16 << 20), false},
	{"steps", ARR, 0, 100000, true},
	KEEP,
	END};
static const struct field f_run_redrive[] = {
	{"run", STR, NAME, true},
	{"window_s", INT, U32, false},
	{"idempotency_key", STR, 1, (16 << 20), false},
	END};
static const struct field f_node_up[] = {
	{"node", INT, 1, ID_MAX, true},
	{"boot", INT, 0, ID_MAX, true},
	{"capacity", INT, U32, true},
	{"api", STR, 0, 63, false},
	END};
static const struct field f_node[] = {
	{"node", INT, 1, ID_MAX, true}, {"boot", INT, 0, ID_MAX, true}, END};
static const struct field f_none[] = {END};
static const struct field f_fire[] = {
	{"items", ARR, U32, true},
	{"max_buffered", INT, U32, false},
	END};
static const struct field f_fire_item[] = {
	{"flow", STR, NAME, true},
	{"schedule", INT, U32, true},
	{"key", STR, 1, 65536, true},
	{"prev", INT, 0, TS_MAX, false},
	{"nominal", INT, 0, TS_MAX, true},
	{"missed", INT, 0, INT64_MAX, false},
	{"fire", BOOL, 0, 0, false},
	{"backfill", ANYJ, 0, 0, false},
	END};
static const struct field f_event[] = {
	{"name", STR, NAME, true},
	{"project", STR, 1, 64, false},
	{"branch", STR, 1, 72, false},
	{"id", STR, NAME, true},
	{"payload", ANYJ, 0, 0, false},
	{"dedupe_s", INT, U32, false},
	{"keep", INT, U32, false},
	{"max_buffered", INT, U32, false},
	END};
static const struct field f_pause[] = {
	{"flow", STR, NAME, true}, {"paused", BOOL, 0, 0, true}, END};
static const struct field f_task_finish[] = {
	{"run", STR, NAME, true},
	{"step", STR, NAME, true},
	{"attempt", INT, 1, INT32_MAX, true},
	{"node", INT, 1, ID_MAX, true},
	{"exit_code", INT, I32, true},
	{"signal", INT, 0, 255, true},
	{"reason", STR, 0, 256, true},
	{"detail", STR, TEXT, false},
	{"stdout", STR, OUTPUT, true},
	{"stderr", STR, OUTPUT, true},
	/* OUTPUT: limits.max_body_bytes bounds what a node can send, and
	 * the executor's limits.max_log_bytes_per_task what it keeps */
	{"truncated", BOOL, 0, 0, true},
	END};
/* who asked for a client's write (the node that took it adds it) */
static const struct field f_audit[] = {
	{"who", STR, 0, 64, true},
	{"role", STR, 0, 16, true},
	{"address", STR, 0, 48, true},
	{"node", INT, 0, ID_MAX, true},
	{"action", STR, 0, 64, true},
	{"method", STR, 0, 8, true},
	{"path", STR, 0, 65536, true},
	END};
static const struct field f_batch[] = {
	{"cmds", ARR, 1, INT64_C(4294967295), true}, END};

static const struct op {
	const char *name;
	const struct field *fields;
	bool from_node; /* a node may propose it through another one */
} ops[] = {
	{"deploy", f_deploy, false},	     {"undeploy", f_undeploy, false},
	{"run_create", f_run_create, false}, {"run_cancel", f_run_cancel, false},
	{"run_tags", f_run_tags, false},     {"run_resume", f_run_resume, false},
	{"run_redrive", f_run_redrive, false}, {"run_record", f_run_record, false},
	{"node_up", f_node_up, true},	     {"node_alive", f_node, true},
	{"node_down", f_node, false},	     {"node_remove", f_node, false},
	{"node_admit", f_node, false},	     {"wake", f_none, true},
	{"fire", f_fire, false},	     {"event", f_event, false},
	{"pause", f_pause, false},	     {"nop", f_none, true},
	{"task_finish", f_task_finish, true}, {"batch", f_batch, true},
};

static const struct op *op_of(const char *name)
{
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
		if (strcmp(ops[i].name, name) == 0)
			return &ops[i];
	return NULL;
}

static int bad(struct fsm_check *out, const char *field, const char *why)
{
	snprintf(out->field, sizeof out->field, "%s", field);
	out->why = why;
	return -1;
}

static int check_value(const struct field *fd, const json_t *v,
		       struct fsm_check *out)
{
	switch (fd->kind) {
	case STR: {
		size_t n;

		if (!json_is_string(v))
			return bad(out, fd->name, "must be a string");
		n = json_string_length(v);
		if ((int64_t)n < fd->min || (int64_t)n > fd->max)
			return bad(out, fd->name, "length out of range");
		if (memchr(json_string_value(v), '\0', n) != NULL)
			return bad(out, fd->name, "has a NUL byte");
		return 0;
	}
	case INT:
		if (!json_is_integer(v))
			return bad(out, fd->name, "must be an integer");
		if (json_integer_value(v) < fd->min ||
		    json_integer_value(v) > fd->max)
			return bad(out, fd->name, "out of range");
		return 0;
	case BOOL:
		return json_is_boolean(v) ? 0
					  : bad(out, fd->name,
						"must be a boolean");
	case OBJ:
		return json_is_object(v) ? 0
					 : bad(out, fd->name,
					       "must be an object");
	case ARR:
		if (!json_is_array(v))
			return bad(out, fd->name, "must be an array");
		if ((int64_t)json_array_size(v) < fd->min ||
		    (int64_t)json_array_size(v) > fd->max)
			return bad(out, fd->name, "too many or too few items");
		return 0;
	case ANYJ:
		return 0;
	}
	return 0;
}

static bool envelope_key(const char *key)
{
	return strcmp(key, "v") == 0 || strcmp(key, "op") == 0 ||
	       strcmp(key, "ts") == 0;
}

static int check_fields(const struct field *fields, const json_t *obj,
			bool strict, bool envelope, struct fsm_check *out)
{
	const char *key;
	json_t *v;

	for (const struct field *fd = fields; fd->name != NULL; fd++) {
		v = json_object_get(obj, fd->name);
		if (v == NULL) {
			if (fd->required)
				return bad(out, fd->name, "is required");
			continue;
		}
		if (check_value(fd, v, out) != 0)
			return -1;
	}
	if (!strict)
		return 0;
	json_object_foreach((json_t *)obj, key, v) {
		const struct field *fd = fields;

		if (envelope && envelope_key(key))
			continue;
		while (fd->name != NULL && strcmp(fd->name, key) != 0)
			fd++;
		if (fd->name == NULL)
			return bad(out, key, "is not a field of this command");
	}
	return 0;
}

static int check_one(const json_t *cmd, bool strict, bool nested,
		     struct fsm_check *out)
{
	const char *name = json_string_value(json_object_get(cmd, "op"));
	const json_t *ts = json_object_get(cmd, "ts");
	const struct op *op;

	if (!json_is_object(cmd))
		return bad(out, "", "a command is a JSON object");
	if (!json_is_integer(json_object_get(cmd, "v")) ||
	    json_integer_value(json_object_get(cmd, "v")) != FSM_CMD_VERSION)
		return bad(out, "v", "unknown command version");
	if (name == NULL || (op = op_of(name)) == NULL)
		return bad(out, "op", "unknown op");
	if (nested && strcmp(name, "batch") == 0)
		return bad(out, "op", "a batch inside a batch");
	if (!json_is_integer(ts) || json_integer_value(ts) < 0 ||
	    json_integer_value(ts) > TS_MAX)
		return bad(out, "ts", "out of range (years 1970..9999 in ms)");
	if (check_fields(op->fields, cmd, strict, true, out) != 0)
		return -1;
	if (!strict && json_object_get(cmd, "audit") != NULL &&
	    check_fields(f_audit, json_object_get(cmd, "audit"), true, false,
			 out) != 0)
		return -1;
	if (strcmp(name, "fire") == 0) {
		size_t i;
		json_t *it;

		json_array_foreach(json_object_get(cmd, "items"), i, it) {
			if (!json_is_object(it))
				return bad(out, "items", "an item is an object");
			if (check_fields(f_fire_item, it, strict, false, out) !=
			    0)
				return -1;
		}
	}
	return 0;
}

int fsm_cmd_check(const json_t *cmd, struct fsm_check *out)
{
	return check_one(cmd, false, false, out);
}

static int check_node_one(const json_t *cmd, uint64_t node, bool nested,
			  struct fsm_check *out)
{
	const char *name = json_string_value(json_object_get(cmd, "op"));
	const struct op *op = name != NULL ? op_of(name) : NULL;
	const json_t *who;

	if (check_one(cmd, true, nested, out) != 0)
		return -1;
	if (op == NULL || !op->from_node)
		return bad(out, "op", "not an operation nodes send");
	who = json_object_get(cmd, "node");
	if (who != NULL && (uint64_t)json_integer_value(who) != node)
		return bad(out, "node", "a node speaks only for itself");
	return 0;
}

int fsm_cmd_check_node(const void *buf, size_t len, uint64_t node,
		       struct fsm_check *out)
{
	json_error_t jerr;
	json_t *cmd = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	const char *name;
	int rv = -1;

	memset(out, 0, sizeof *out);
	if (cmd == NULL)
		return bad(out, "", "not a JSON command");
	if (check_node_one(cmd, node, false, out) != 0)
		goto done;
	name = json_string_value(json_object_get(cmd, "op"));
	if (strcmp(name, "batch") == 0) {
		size_t i;
		json_t *sub;

		json_array_foreach(json_object_get(cmd, "cmds"), i, sub) {
			const char *sop =
				json_string_value(json_object_get(sub, "op"));

			if (check_node_one(sub, node, true, out) != 0)
				goto done;
			if (strcmp(sop, "task_finish") != 0) {
				bad(out, "cmds", "a node batches task_finish only");
				goto done;
			}
		}
	}
	rv = 0;
done:
	json_decref(cmd);
	return rv;
}
