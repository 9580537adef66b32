/* fsm_cmd.c - the encoding of commands: every fsm_cmd_* builder (fields
 * documented in fsm.h), and the UTF-8 clean-up task outputs need first. */
#include "fsm.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm_rows.h"

char *flowd_utf8_sanitize(const char *in, size_t len)
{
	/* Worst case: every byte becomes U+FFFD (3 bytes). */
	char *out = malloc(len * 3 + 1);
	const unsigned char *p = (const unsigned char *)in;
	size_t i = 0, o = 0;

	if (out == NULL)
		return NULL;
	while (i < len) {
		unsigned char c = p[i];
		size_t n = 0;
		uint32_t cp = 0;

		if (c == 0) {
			i++;
			continue;
		}
		if (c < 0x80) {
			out[o++] = (char)c;
			i++;
			continue;
		}
		if ((c & 0xE0) == 0xC0) {
			n = 1;
			cp = c & 0x1F;
		} else if ((c & 0xF0) == 0xE0) {
			n = 2;
			cp = c & 0x0F;
		} else if ((c & 0xF8) == 0xF0) {
			n = 3;
			cp = c & 0x07;
		}
		bool ok = n > 0;
		for (size_t k = 1; ok && k <= n; k++) {
			if (i + k >= len || (p[i + k] & 0xC0) != 0x80)
				ok = false;
			else
				cp = (cp << 6) | (p[i + k] & 0x3F);
		}
		/* Reject overlongs, surrogates and out-of-range values. */
		if (ok && ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
			   (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
			   (cp >= 0xD800 && cp <= 0xDFFF)))
			ok = false;
		if (ok) {
			memcpy(out + o, p + i, n + 1);
			o += n + 1;
			i += n + 1;
		} else {
			memcpy(out + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i++;
		}
	}
	out[o] = '\0';
	return out;
}

/* ------------------------------------------------------------------------
 * Command builders
 */

static int dump_cmd(json_t *cmd, char **out, size_t *len)
{
	char *text;

	if (cmd == NULL)
		return -1;
	text = json_dumps(cmd, JSON_COMPACT);
	json_decref(cmd);
	if (text == NULL)
		return -1;
	*out = text;
	*len = strlen(text);
	return 0;
}

static json_t *cmd_new(const char *op, int64_t ts)
{
	return json_pack("{s:i, s:s, s:I}", "v", FSM_CMD_VERSION, "op", op,
			 "ts", (json_int_t)ts);
}

int fsm_cmd_deploy(int64_t ts, const char *flow, const json_t *spec_doc,
		   char **out, size_t *len)
{
	json_t *c = cmd_new("deploy", ts);

	json_object_set_new(c, "flow", json_string(flow));
	json_object_set(c, "spec", (json_t *)spec_doc);
	return dump_cmd(c, out, len);
}

int fsm_cmd_undeploy(int64_t ts, const char *flow, char **out, size_t *len)
{
	json_t *c = cmd_new("undeploy", ts);

	json_object_set_new(c, "flow", json_string(flow));
	return dump_cmd(c, out, len);
}

/* What a command that makes or tags a run carries for the state's
 * retention and the tag bounds. */
static void put_keep(json_t *c, const struct fsm_retention *keep)
{
	if (keep == NULL)
		return;
	if (keep->runs > 0)
		json_object_set_new(c, "retain", json_integer((json_int_t)keep->runs));
	if (keep->keys > 0)
		json_object_set_new(c, "keys", json_integer((json_int_t)keep->keys));
	if (keep->key_ttl_s > 0)
		json_object_set_new(c, "key_ttl_s",
				    json_integer((json_int_t)keep->key_ttl_s));
	if (keep->max_tags > 0)
		json_object_set_new(c, "max_tags",
				    json_integer((json_int_t)keep->max_tags));
	if (keep->max_tag_bytes > 0)
		json_object_set_new(c, "max_tag_bytes",
				    json_integer((json_int_t)keep->max_tag_bytes));
}

int fsm_cmd_run_create(int64_t ts, const char *flow, const json_t *params,
		       const char *idempotency_key, const json_t *tags,
		       const struct fsm_retention *keep, char **out,
		       size_t *len)
{
	json_t *c = cmd_new("run_create", ts);

	put_keep(c, keep);
	json_object_set_new(c, "flow", json_string(flow));
	if (params != NULL)
		json_object_set(c, "parameters", (json_t *)params);
	if (idempotency_key != NULL)
		json_object_set_new(c, "idempotency_key",
				    json_string(idempotency_key));
	if (tags != NULL)
		json_object_set(c, "tags", (json_t *)tags);
	return dump_cmd(c, out, len);
}

int fsm_cmd_run_tags(int64_t ts, const char *run_id, const json_t *add,
		     const json_t *remove, const struct fsm_retention *keep,
		     char **out, size_t *len)
{
	json_t *c = cmd_new("run_tags", ts);

	put_keep(c, keep);
	json_object_set_new(c, "run", json_string(run_id));
	json_object_set_new(c, "add", add ? json_incref((json_t *)add)
					  : json_array());
	json_object_set_new(c, "remove", remove ? json_incref((json_t *)remove)
						: json_array());
	return dump_cmd(c, out, len);
}

int fsm_cmd_run_resume(int64_t ts, const char *run_id, const char *from_step,
		       bool current, const char *idempotency_key,
		       const json_t *tags, const struct fsm_retention *keep,
		       char **out, size_t *len)
{
	json_t *c = cmd_new("run_resume", ts);

	put_keep(c, keep);
	json_object_set_new(c, "run", json_string(run_id));
	if (from_step != NULL)
		json_object_set_new(c, "from_step", json_string(from_step));
	json_object_set_new(c, "version",
			    json_string(current ? "current" : "origin"));
	if (idempotency_key != NULL)
		json_object_set_new(c, "idempotency_key",
				    json_string(idempotency_key));
	if (tags != NULL)
		json_object_set(c, "tags", (json_t *)tags);
	return dump_cmd(c, out, len);
}

int fsm_cmd_run_record(int64_t ts, const char *flow, const char *origin,
		       const json_t *params, const json_t *steps,
		       const char *idempotency_key,
		       const struct fsm_retention *keep, char **out,
		       size_t *len)
{
	json_t *c = cmd_new("run_record", ts);

	put_keep(c, keep);
	json_object_set_new(c, "flow", json_string(flow));
	json_object_set_new(c, "origin", json_string(origin));
	if (params != NULL)
		json_object_set(c, "parameters", (json_t *)params);
	json_object_set_new(c, "steps", steps ? json_incref((json_t *)steps)
					      : json_array());
	if (idempotency_key != NULL)
		json_object_set_new(c, "idempotency_key",
				    json_string(idempotency_key));
	return dump_cmd(c, out, len);
}

int fsm_cmd_run_redrive(int64_t ts, const char *run_id, unsigned window_s,
			const char *idempotency_key, char **out, size_t *len)
{
	json_t *c = cmd_new("run_redrive", ts);

	json_object_set_new(c, "run", json_string(run_id));
	json_object_set_new(c, "window_s", json_integer(window_s));
	if (idempotency_key != NULL)
		json_object_set_new(c, "idempotency_key",
				    json_string(idempotency_key));
	return dump_cmd(c, out, len);
}

int fsm_cmd_run_cancel(int64_t ts, const char *run_id, char **out,
		       size_t *len)
{
	json_t *c = cmd_new("run_cancel", ts);

	json_object_set_new(c, "run", json_string(run_id));
	return dump_cmd(c, out, len);
}

int fsm_cmd_node_up(int64_t ts, uint64_t node, uint64_t boot,
		    unsigned capacity, const char *api_address, char **out,
		    size_t *len)
{
	json_t *c = cmd_new("node_up", ts);

	if (api_address != NULL)
		json_object_set_new(c, "api", json_string(api_address));
	json_object_set_new(c, "node", json_integer((json_int_t)node));
	json_object_set_new(c, "boot", json_integer((json_int_t)boot));
	json_object_set_new(c, "capacity", json_integer(capacity));
	return dump_cmd(c, out, len);
}

static int cmd_node(const char *op, int64_t ts, uint64_t node, uint64_t boot,
		    char **out, size_t *len)
{
	json_t *c = cmd_new(op, ts);

	json_object_set_new(c, "node", json_integer((json_int_t)node));
	json_object_set_new(c, "boot", json_integer((json_int_t)boot));
	return dump_cmd(c, out, len);
}

int fsm_cmd_node_alive(int64_t ts, uint64_t node, uint64_t boot, char **out,
		       size_t *len)
{
	return cmd_node("node_alive", ts, node, boot, out, len);
}

int fsm_cmd_node_down(int64_t ts, uint64_t node, uint64_t boot, char **out,
		      size_t *len)
{
	return cmd_node("node_down", ts, node, boot, out, len);
}

int fsm_cmd_node_remove(int64_t ts, uint64_t node, bool admit, char **out,
			size_t *len)
{
	return cmd_node(admit ? "node_admit" : "node_remove", ts, node, 0, out,
			len);
}

int fsm_cmd_wake(int64_t ts, char **out, size_t *len)
{
	return dump_cmd(cmd_new("wake", ts), out, len);
}

int fsm_cmd_fire(int64_t ts, const json_t *items, unsigned max_buffered,
		 char **out, size_t *len)
{
	json_t *cmd = cmd_new("fire", ts);

	if (cmd == NULL ||
	    json_object_set(cmd, "items", (json_t *)items) != 0 ||
	    json_object_set_new(cmd, "max_buffered",
				json_integer(max_buffered)) != 0) {
		json_decref(cmd);
		return -1;
	}
	return dump_cmd(cmd, out, len);
}

int fsm_cmd_event(int64_t ts, const char *name, const char *id,
		  const json_t *payload, unsigned dedupe_s, unsigned keep,
		  unsigned max_buffered, char **out, size_t *len)
{
	return fsm_cmd_event_in(ts, name, id, payload, NULL, NULL, dedupe_s,
				keep, max_buffered, out, len);
}

int fsm_cmd_event_in(int64_t ts, const char *name, const char *id,
		     const json_t *payload, const char *project,
		     const char *branch, unsigned dedupe_s, unsigned keep,
		     unsigned max_buffered, char **out, size_t *len)
{
	json_t *cmd = cmd_new("event", ts);

	if (cmd == NULL ||
	    (project != NULL &&
	     json_object_set_new(cmd, "project", json_string(project)) != 0) ||
	    (branch != NULL &&
	     json_object_set_new(cmd, "branch", json_string(branch)) != 0) ||
	    json_object_set_new(cmd, "name", json_string(name)) != 0 ||
	    json_object_set_new(cmd, "id", json_string(id)) != 0 ||
	    (payload != NULL &&
	     json_object_set(cmd, "payload", (json_t *)payload) != 0) ||
	    json_object_set_new(cmd, "dedupe_s", json_integer(dedupe_s)) != 0 ||
	    json_object_set_new(cmd, "keep", json_integer(keep)) != 0 ||
	    json_object_set_new(cmd, "max_buffered",
				json_integer(max_buffered)) != 0) {
		json_decref(cmd);
		return -1;
	}
	return dump_cmd(cmd, out, len);
}

int fsm_cmd_pause(int64_t ts, const char *flow, bool paused, char **out,
		  size_t *len)
{
	json_t *cmd = cmd_new("pause", ts);

	if (cmd == NULL ||
	    json_object_set_new(cmd, "flow", json_string(flow)) != 0 ||
	    json_object_set_new(cmd, "paused", json_boolean(paused)) != 0) {
		json_decref(cmd);
		return -1;
	}
	return dump_cmd(cmd, out, len);
}

int fsm_cmd_batch(int64_t ts, const char *const *cmds, const size_t *lens,
		  size_t n, char **out, size_t *len)
{
	struct fsm_text b = {0};
	char head[64];
	int w = snprintf(head, sizeof head,
			 "{\"v\":%d,\"op\":\"batch\",\"ts\":%" PRId64
			 ",\"cmds\":[", FSM_CMD_VERSION, ts);

	if (fsm__text_put(&b, head, (size_t)w) != 0)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		size_t l = lens[i];

		while (l > 0 && cmds[i][l - 1] == '\0')
			l--;
		if ((i > 0 && fsm__text_put(&b, ",", 1) != 0) ||
		    fsm__text_put(&b, cmds[i], l) != 0)
			goto fail;
	}
	if (fsm__text_put(&b, "]}", 2) != 0)
		goto fail;
	*out = b.p;
	*len = b.n;
	return 0;
fail:
	free(b.p);
	return -1;
}

int fsm_cmd_nop(int64_t ts, char **out, size_t *len)
{
	return dump_cmd(cmd_new("nop", ts), out, len);
}

int fsm_cmd_task_finish(int64_t ts, const struct fsm_finish *fin, char **out,
			size_t *len)
{
	json_t *c = cmd_new("task_finish", ts);

	/* A field that cannot be set (text that is not UTF-8, out of memory)
	 * fails the command rather than leaving the field out: apply would
	 * drop an outcome without its reason, and the applier a log without
	 * its text. */
	if (c == NULL ||
	    json_object_set_new(c, "run", json_string(fin->run_id)) != 0 ||
	    json_object_set_new(c, "step", json_string(fin->step)) != 0 ||
	    json_object_set_new(c, "attempt", json_integer(fin->attempt)) != 0 ||
	    json_object_set_new(c, "node",
				json_integer((json_int_t)fin->node)) != 0 ||
	    json_object_set_new(c, "exit_code",
				json_integer(fin->exit_code)) != 0 ||
	    json_object_set_new(c, "signal",
				json_integer(fin->term_signal)) != 0 ||
	    json_object_set_new(c, "reason", json_string(fin->reason)) != 0 ||
	    (fin->detail != NULL && fin->detail[0] != '\0' &&
	     json_object_set_new(c, "detail", json_string(fin->detail)) != 0) ||
	    json_object_set_new(c, "stdout",
				json_string(fin->out ? fin->out : "")) != 0 ||
	    json_object_set_new(c, "stderr",
				json_string(fin->err ? fin->err : "")) != 0 ||
	    json_object_set_new(c, "truncated",
				json_boolean(fin->truncated)) != 0) {
		json_decref(c);
		return -1;
	}
	return dump_cmd(c, out, len);
}
