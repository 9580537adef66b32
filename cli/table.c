/* table.c - flowctl's tables (table.h). */
#include "cli/table.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_COLS 10
#define MAX_CELL 256

/* A table being built: rows of cells (the first row is the header), each
 * cell with an optional colour. */
struct cell {
	char text[MAX_CELL];
	const char *colour; /* an ANSI SGR sequence, or NULL */
};

struct table {
	size_t ncols, nrows, cap;
	struct cell (*rows)[MAX_COLS];
};

static const char *status_colour(const char *s)
{
	if (s == NULL)
		return NULL;
	if (strcmp(s, "succeeded") == 0 || strcmp(s, "fired") == 0 ||
	    strcmp(s, "leader") == 0)
		return "\033[32m"; /* green */
	if (strcmp(s, "failed") == 0 || strcmp(s, "lost") == 0 ||
	    strcmp(s, "missed") == 0 || strcmp(s, "dropped") == 0)
		return "\033[31m"; /* red */
	if (strcmp(s, "running") == 0 || strcmp(s, "retry_wait") == 0 ||
	    strcmp(s, "candidate") == 0)
		return "\033[33m"; /* yellow */
	if (strcmp(s, "cancelled") == 0 || strcmp(s, "skipped") == 0 ||
	    strcmp(s, "queued") == 0 || strcmp(s, "pending") == 0 ||
	    strcmp(s, "ready") == 0)
		return "\033[2m"; /* dim */
	return NULL;
}

static void table_init(struct table *t, size_t ncols)
{
	memset(t, 0, sizeof *t);
	t->ncols = ncols < MAX_COLS ? ncols : MAX_COLS;
}

static void table_free(struct table *t)
{
	free(t->rows);
	memset(t, 0, sizeof *t);
}

/* A new row (zeroed); NULL when out of memory (the row is dropped). */
static struct cell *row(struct table *t)
{
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		void *p = realloc(t->rows, cap * sizeof *t->rows);
		if (p == NULL)
			return NULL;
		t->rows = p;
		t->cap = cap;
	}
	memset(t->rows[t->nrows], 0, sizeof t->rows[0]);
	return t->rows[t->nrows++];
}

/* Set a cell: control characters become spaces (a name or a reason must not
 * move the cursor), long text is cut with "..." (between characters). */
static void set(struct cell *c, const char *text)
{
	size_t n = 0, max = 60;
	size_t chars = 0;

	if (text == NULL)
		text = "-";
	for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
		if ((*p & 0xc0) != 0x80) {
			if (chars == max) {
				memcpy(c->text + n, "...", 4);
				return;
			}
			chars++;
		}
		if (n + 5 >= MAX_CELL)
			break;
		c->text[n++] = *p < 0x20 || *p == 0x7f ? ' ' : (char)*p;
	}
	c->text[n] = '\0';
}

static void setf(struct cell *c, const char *fmt, long long v)
{
	snprintf(c->text, MAX_CELL, fmt, v);
}

/* Display width: UTF-8 characters, not bytes. */
static size_t width(const char *s)
{
	size_t w = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		w += (*p & 0xc0) != 0x80;
	return w;
}

static void table_print(FILE *f, const struct table_style *st,
			const struct table *t)
{
	size_t w[MAX_COLS] = {0};

	for (size_t r = 0; r < t->nrows; r++)
		for (size_t c = 0; c < t->ncols; c++) {
			size_t cw = width(t->rows[r][c].text);
			if (cw > w[c])
				w[c] = cw;
		}
	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t c = 0; c < t->ncols; c++) {
			const struct cell *cell = &t->rows[r][c];
			bool last = c + 1 == t->ncols;
			bool colour = st->colour && (cell->colour || r == 0);

			if (colour)
				fputs(r == 0 ? "\033[1m" : cell->colour, f);
			fputs(cell->text, f);
			if (colour)
				fputs("\033[0m", f);
			if (!last)
				fprintf(f, "%*s", (int)(w[c] - width(cell->text) + 2),
					"");
		}
		fputc('\n', f);
	}
}

static void header(struct table *t, const char *const *names)
{
	struct cell *h = row(t);

	for (size_t c = 0; h != NULL && c < t->ncols; c++)
		set(&h[c], names[c]);
}

/* ---- times ---- */

static bool parse_time(const char *s, time_t *out, long *ms)
{
	struct tm tm;
	const char *rest;

	if (s == NULL)
		return false;
	memset(&tm, 0, sizeof tm);
	rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (rest == NULL)
		return false;
	*ms = 0;
	if (*rest == '.') {
		long frac = 0, scale = 1000;
		for (rest++; *rest >= '0' && *rest <= '9'; rest++) {
			if (scale > 1) {
				scale /= 10;
				frac += (*rest - '0') * scale;
			}
		}
		*ms = frac;
	}
	*out = timegm(&tm); /* the API's times are UTC ("Z") */
	return true;
}

static void span(long long ms, char *buf, size_t len)
{
	long long s = ms / 1000;

	if (ms < 1000)
		snprintf(buf, len, "%lldms", ms);
	else if (s < 60)
		snprintf(buf, len, "%llds", s);
	else if (s < 3600)
		snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%lldh%02lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, len, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

const char *table_ago(const struct table_style *st, const char *rfc3339,
		      char *buf, size_t len)
{
	time_t t;
	long ms;
	long long d;

	if (!parse_time(rfc3339, &t, &ms)) {
		snprintf(buf, len, "-");
		return buf;
	}
	d = (long long)st->now - (long long)t;
	if (d < 0) {
		char s[32];
		span(-d * 1000, s, sizeof s);
		snprintf(buf, len, "in %s", s);
	} else if (d < 60) {
		snprintf(buf, len, "%llds ago", d);
	} else if (d < 3600) {
		snprintf(buf, len, "%lldm ago", d / 60);
	} else if (d < 86400) {
		snprintf(buf, len, "%lldh ago", d / 3600);
	} else {
		snprintf(buf, len, "%lldd ago", d / 86400);
	}
	return buf;
}

const char *table_duration(const struct table_style *st, const char *from,
			   const char *to, char *buf, size_t len)
{
	time_t a, b;
	long ams, bms;

	if (!parse_time(from, &a, &ams)) {
		snprintf(buf, len, "-");
		return buf;
	}
	if (!parse_time(to, &b, &bms)) {
		b = st->now;
		bms = ams; /* whole seconds so far */
	}
	long long ms = ((long long)b - (long long)a) * 1000 + (bms - ams);
	span(ms > 0 ? ms : 0, buf, len);
	return buf;
}

static const char *str(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static const char *trigger_text(const json_t *trigger, char *buf, size_t len)
{
	const char *type = str(trigger, "type");

	if (type == NULL)
		return "-";
	if (strcmp(type, "schedule") == 0 || strcmp(type, "backfill") == 0) {
		snprintf(buf, len, "%s#%lld", type,
			 (long long)json_integer_value(
				 json_object_get(trigger, "schedule")));
		return buf;
	}
	if (strcmp(type, "on_finish") == 0) {
		snprintf(buf, len, "after %s",
			 str(trigger, "upstream_flow") ? str(trigger, "upstream_flow")
						       : "?");
		return buf;
	}
	if (strcmp(type, "event") == 0) {
		const json_t *names = json_object_get(trigger, "events");
		snprintf(buf, len, "event %s",
			 json_string_value(json_array_get(names, 0))
				 ? json_string_value(json_array_get(names, 0))
				 : "");
		return buf;
	}
	return type;
}

/* ---- views ---- */

void table_flows(FILE *f, const struct table_style *st, const json_t *answer)
{
	static const char *const cols[] = {"NAME", "VERSION", "DEPLOYED",
					   "UPDATED", "DESCRIPTION"};
	struct table t;
	size_t i;
	const json_t *fl;
	char buf[64];

	table_init(&t, 5);
	header(&t, cols);
	json_array_foreach(json_object_get(answer, "flows"), i, fl)
	{
		struct cell *c = row(&t);
		if (c == NULL)
			break;
		set(&c[0], str(fl, "name"));
		setf(&c[1], "%lld",
		     (long long)json_integer_value(json_object_get(fl, "version")));
		set(&c[2], json_is_true(json_object_get(fl, "deployed")) ? "yes"
									 : "no");
		set(&c[3], table_ago(st, str(fl, "updated_at"), buf, sizeof buf));
		set(&c[4], str(fl, "description") && *str(fl, "description")
				   ? str(fl, "description")
				   : "-");
	}
	table_print(f, st, &t);
	table_free(&t);
}

void table_versions(FILE *f, const struct table_style *st,
		    const json_t *answer)
{
	static const char *const cols[] = {"VERSION", "CREATED", "STEPS"};
	struct table t;
	size_t i;
	const json_t *v;
	char buf[64];

	table_init(&t, 3);
	header(&t, cols);
	json_array_foreach(json_object_get(answer, "versions"), i, v)
	{
		struct cell *c = row(&t);
		const json_t *spec = json_object_get(v, "spec");
		if (c == NULL)
			break;
		setf(&c[0], "%lld",
		     (long long)json_integer_value(json_object_get(v, "version")));
		set(&c[1], table_ago(st, str(v, "created_at"), buf, sizeof buf));
		if (json_is_object(spec))
			setf(&c[2], "%lld",
			     (long long)json_array_size(
				     json_object_get(spec, "steps")));
		else
			set(&c[2], "(in PostgreSQL)");
	}
	table_print(f, st, &t);
	table_free(&t);
}

void table_runs(FILE *f, const struct table_style *st, const json_t *answer)
{
	static const char *const cols[] = {"ID",      "FLOW",     "STATUS",
					   "TRIGGER", "CREATED",  "DURATION",
					   "REASON"};
	struct table t;
	size_t i;
	const json_t *r;
	char buf[64];

	table_init(&t, 7);
	header(&t, cols);
	json_array_foreach(json_object_get(answer, "runs"), i, r)
	{
		struct cell *c = row(&t);
		if (c == NULL)
			break;
		set(&c[0], str(r, "id"));
		set(&c[1], str(r, "flow"));
		set(&c[2], str(r, "status"));
		c[2].colour = status_colour(str(r, "status"));
		set(&c[3], trigger_text(json_object_get(r, "trigger"), buf,
					sizeof buf));
		set(&c[4], table_ago(st, str(r, "created_at"), buf, sizeof buf));
		set(&c[5], table_duration(st, str(r, "started_at"),
					  str(r, "finished_at"), buf,
					  sizeof buf));
		set(&c[6], str(r, "reason"));
	}
	table_print(f, st, &t);
	table_free(&t);
	if (str(answer, "next_cursor") != NULL)
		fprintf(f, "(more: --cursor %s)\n", str(answer, "next_cursor"));
}

void table_run(FILE *f, const struct table_style *st, const json_t *run)
{
	static const char *const cols[] = {"STEP",  "STATUS",   "ATTEMPT",
					   "NODE",  "STARTED",  "DURATION",
					   "RESULT"};
	struct table t;
	size_t i;
	const json_t *s;
	char buf[64], buf2[64];
	const char *status = str(run, "status");

	fprintf(f, "run %s  flow %s v%lld  ", str(run, "id") ? str(run, "id") : "?",
		str(run, "flow") ? str(run, "flow") : "?",
		(long long)json_integer_value(json_object_get(run, "version")));
	if (st->colour && status_colour(status))
		fprintf(f, "%s%s\033[0m", status_colour(status), status);
	else
		fputs(status ? status : "?", f);
	fprintf(f, "  %s  created %s  took %s\n",
		trigger_text(json_object_get(run, "trigger"), buf2, sizeof buf2),
		table_ago(st, str(run, "created_at"), buf, sizeof buf),
		table_duration(st, str(run, "started_at"), str(run, "finished_at"),
			       buf2, sizeof buf2));
	if (str(run, "reason") != NULL)
		fprintf(f, "reason: %s\n", str(run, "reason"));

	table_init(&t, 7);
	header(&t, cols);
	json_array_foreach(json_object_get(run, "steps"), i, s)
	{
		const json_t *atts = json_object_get(s, "attempts");
		const json_t *a = json_array_get(atts, json_array_size(atts) - 1);
		struct cell *c = row(&t);
		if (c == NULL)
			break;
		set(&c[0], str(s, "name"));
		set(&c[1], str(s, "status"));
		c[1].colour = status_colour(str(s, "status"));
		if (a != NULL) {
			setf(&c[2], "%lld",
			     (long long)json_integer_value(
				     json_object_get(a, "attempt")));
			setf(&c[3], "%lld",
			     (long long)json_integer_value(json_object_get(a, "node")));
		} else {
			set(&c[2], "-");
			set(&c[3], "-");
		}
		set(&c[4], table_ago(st, str(s, "started_at"), buf, sizeof buf));
		set(&c[5], table_duration(st, str(s, "started_at"),
					  str(s, "finished_at"), buf,
					  sizeof buf));
		if (a == NULL || json_is_null(json_object_get(a, "reason"))) {
			set(&c[6], "-");
		} else if (json_is_integer(json_object_get(a, "exit_code"))) {
			snprintf(buf, sizeof buf, "%s %lld", str(a, "reason"),
				 (long long)json_integer_value(
					 json_object_get(a, "exit_code")));
			set(&c[6], buf);
		} else {
			set(&c[6], str(a, "reason"));
		}
	}
	table_print(f, st, &t);
	table_free(&t);
}

void table_schedule(FILE *f, const struct table_style *st,
		    const json_t *answer)
{
	static const char *const cols[] = {"#",     "CRON",     "TIMEZONE",
					   "FIRED", "SKIPPED",  "MISSED",
					   "BUFFERED", "DROPPED", "NEXT"};
	static const char *const counters[] = {"fired", "skipped", "missed",
					       "buffered", "dropped"};
	struct table t;
	size_t i;
	const json_t *s;
	char buf[64];

	fprintf(f, "flow %s%s\n", str(answer, "flow") ? str(answer, "flow") : "?",
		json_is_true(json_object_get(answer, "paused")) ? "  (paused)"
								: "");
	table_init(&t, 9);
	header(&t, cols);
	json_array_foreach(json_object_get(answer, "schedules"), i, s)
	{
		struct cell *c = row(&t);
		const json_t *cnt = json_object_get(s, "counters");
		if (c == NULL)
			break;
		setf(&c[0], "%lld",
		     (long long)json_integer_value(json_object_get(s, "schedule")));
		set(&c[1], str(s, "cron"));
		set(&c[2], str(s, "timezone"));
		for (int k = 0; k < 5; k++)
			setf(&c[3 + k], "%lld",
			     (long long)json_integer_value(
				     json_object_get(cnt, counters[k])));
		set(&c[8],
		    table_ago(st,
			      json_string_value(json_array_get(
				      json_object_get(s, "next_fire_times"), 0)),
			      buf, sizeof buf));
	}
	table_print(f, st, &t);
	table_free(&t);
}

void table_cluster(FILE *f, const struct table_style *st,
		   const json_t *answer)
{
	static const char *const cols[] = {"ID", "ROLE", "LEADER",
					   "LIVE", "RAFT", "API"};
	struct table t;
	size_t i;
	const json_t *m;
	const char *role = str(answer, "role");

	fprintf(f, "node %lld  ",
		(long long)json_integer_value(json_object_get(answer, "node_id")));
	if (st->colour && status_colour(role))
		fprintf(f, "%s%s\033[0m", status_colour(role), role);
	else
		fputs(role ? role : "?", f);
	fprintf(f,
		"  term %lld  commit %lld  applied %lld  postgres %lld "
		"(backlog %lld, %.1fs)%s\n",
		(long long)json_integer_value(json_object_get(answer, "term")),
		(long long)json_integer_value(
			json_object_get(answer, "commit_index")),
		(long long)json_integer_value(
			json_object_get(answer, "applied_index")),
		(long long)json_integer_value(
			json_object_get(answer, "db_applied_index")),
		(long long)json_integer_value(json_object_get(answer, "db_backlog")),
		(double)json_integer_value(json_object_get(answer, "db_backlog_ms")) /
			1000.0,
		json_is_false(json_object_get(answer, "db_connected"))
			? "  postgres not connected"
			: "");
	table_init(&t, 6);
	header(&t, cols);
	json_array_foreach(json_object_get(answer, "members"), i, m)
	{
		struct cell *c = row(&t);
		const json_t *live = json_object_get(m, "live");
		if (c == NULL)
			break;
		setf(&c[0], "%lld",
		     (long long)json_integer_value(json_object_get(m, "id")));
		set(&c[1], str(m, "role"));
		set(&c[2], json_is_true(json_object_get(m, "leader")) ? "*" : "");
		set(&c[3], json_is_null(live) || live == NULL ? "?"
			   : json_is_true(live)		 ? "yes"
							 : "no");
		if (json_is_false(live))
			c[3].colour = "\033[31m";
		set(&c[4], str(m, "raft_address"));
		set(&c[5], str(m, "api_address"));
	}
	table_print(f, st, &t);
	table_free(&t);
}

void table_preview(FILE *f, const struct table_style *st,
		   const json_t *answer)
{
	static const char *const cols[] = {"UTC", "LOCAL"};
	struct table t;
	size_t i;
	const json_t *u;

	fprintf(f, "%s  (%s)\n", str(answer, "expr") ? str(answer, "expr") : "?",
		str(answer, "timezone") ? str(answer, "timezone") : "?");
	table_init(&t, 2);
	header(&t, cols);
	json_array_foreach(json_object_get(answer, "times"), i, u)
	{
		struct cell *c = row(&t);
		if (c == NULL)
			break;
		set(&c[0], json_string_value(u));
		set(&c[1], json_string_value(json_array_get(
				   json_object_get(answer, "local_times"), i)));
	}
	table_print(f, st, &t);
	table_free(&t);
}
