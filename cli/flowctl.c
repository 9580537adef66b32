/* flowctl.c - the flowd command-line client: one REST call per command. */
#include "cli/http.h"
#include "cli/local.h"
#include "cli/table.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#define DEFAULT_URL "http://127.0.0.1:8001"
#define WAIT_INTERVAL_MS 200
/* --wait keeps polling through 503s (an election, a restart) for this long. */
#define WAIT_UNAVAILABLE_MS 30000

/* -o table (lists as aligned tables; the default) or -o json (the answer as
 * it came, indented: for scripts). */
static enum { OUT_TABLE, OUT_JSON } output = OUT_TABLE;

typedef void (*table_fn)(FILE *f, const struct table_style *st,
			 const json_t *answer);

/* Colour only on a terminal, and not under NO_COLOR (no-color.org). */
static struct table_style style_now(void)
{
	const char *no = getenv("NO_COLOR");
	struct table_style st = {
		.colour = isatty(STDOUT_FILENO) && (no == NULL || no[0] == '\0'),
		.now = time(NULL),
	};
	return st;
}
/* parse_args: "go on with the command" (every CLI_* code is >= 0). */
#define PARSED (-1)

static void usage(FILE *f)
{
	fputs("usage: flowctl [--url URL] [--token TOKEN] [--ca-file FILE]\n"
	      "               [--cert FILE --key FILE] [-o table|json] COMMAND [ARGS]\n"
	      "\n"
	      "URL defaults to $FLOWD_URL, else " DEFAULT_URL ";\n"
	      "TOKEN to $FLOWD_TOKEN (sent as a Bearer token).\n"
	      "An https URL is verified against --ca-file ($FLOWD_CA_FILE), the\n"
	      "cluster's CA, else the system's; --cert/--key ($FLOWD_CERT_FILE,\n"
	      "$FLOWD_KEY_FILE) present a client certificate.\n"
	      "-o table (the default) prints lists (flows, versions, runs,\n"
	      "get, schedule, cluster, preview) as tables with relative\n"
	      "times, coloured on a terminal (not under NO_COLOR); -o json\n"
	      "prints every answer as the API sent it, for scripts.\n"
	      "\n"
	      "commands:\n"
	      "  deploy FLOW FILE.json  deploy a spec (FILE \"-\" is stdin)\n"
	      "  flows                  list the deployed flows\n"
	      "  flow FLOW              show a flow and its current spec\n"
	      "  versions FLOW          every version of a flow's spec\n"
	      "  undeploy FLOW          refuse new runs of a flow\n"
	      "  run FLOW [-p NAME=VALUE ...] [--params-json JSON]\n"
	      "        [--key IDEMPOTENCY_KEY] [--wait]\n"
	      "                         start a run. A -p VALUE is sent as a\n"
	      "                         JSON number or boolean when it parses\n"
	      "                         as one, else as a string; -p wins\n"
	      "                         over --params-json. --wait polls the\n"
	      "                         run until it ends, prints it, and\n"
	      "                         exits 0 only if it succeeded\n"
	      "  runs [--flow F] [--status S] [--tag T ...] [--limit N]\n"
	      "        [--cursor C]      list runs, newest first (--tag:\n"
	      "                         carrying every tag named)\n"
	      "  get RUN_ID             show a run, its steps and attempts\n"
	      "  logs RUN_ID STEP [--attempt N] [-f|--follow]\n"
	      "                         a step's stdout (to stdout), then its\n"
	      "                         stderr (to stderr), raw\n"
	      "  cancel RUN_ID          cancel a run\n"
	      "  tag RUN_ID [--add T ...] [--remove T ...]\n"
	      "                         change a run's user tags\n"
	      "  resume RUN_ID [--from STEP] [--current] [--key K]\n"
	      "        [--tag T ...] [--wait]\n"
	      "                         a new run reusing the steps that\n"
	      "                         succeeded (--current: of the flow's\n"
	      "                         current version)\n"
	      "  resume RUN_ID --local [--from STEP] [--dir DIR]\n"
	      "        [--record BRANCH]\n"
	      "                         rerun what did not succeed (or from\n"
	      "                         STEP) on this machine, in DIR (default\n"
	      "                         ./flowd-resume-RUN_ID); writes nothing\n"
	      "                         to the cluster (but with --record: the\n"
	      "                         result as a run of that branch of the\n"
	      "                         run's project, not prod); exits 0\n"
	      "                         only if every step it ran succeeded\n"
	      "  redrive RUN_ID [--key K] [--wait]\n"
	      "                         restart a failed run in place\n"
	      "  schedule FLOW          a flow's schedules: cursor, counters,\n"
	      "                         last fires, next fire times\n"
	      "  pause FLOW, unpause FLOW\n"
	      "                         stop or resume a flow's schedules\n"
	      "                         (paused ticks are recorded skipped)\n"
	      "  backfill FLOW FROM TO [--schedule N]\n"
	      "                         one run per tick in [FROM, TO] (RFC 3339)\n"
	      "  event NAME [--id ID] [--payload JSON]\n"
	      "                         post an event; same id = same answer\n"
	      "  preview EXPR [--tz TZ] [--from T] [--count N]\n"
	      "        [--dst-missing shift|skip] [--dst-repeated once|twice]\n"
	      "                         next fire times of a cron expression\n"
	      "  watch RUN_ID [--interval SECONDS]\n"
	      "                         a live table of the run's steps until\n"
	      "                         it ends; exits 0 only if it succeeded\n"
	      "  top [--interval SECONDS] [--count N]\n"
	      "                         the cluster and its running runs,\n"
	      "                         refreshed (N frames; on a terminal\n"
	      "                         until interrupted, else one)\n"
	      "  cluster                this node's view of the cluster\n"
	      "  health                 GET /healthz (no token needed)\n"
	      "  ready                  GET /readyz (no token needed)\n"
	      "\n"
	      "Other answers go to stdout as indented JSON, errors to\n"
	      "stderr.\n"
	      "Exit status: 0 success; 1 an HTTP error, a run that did not\n"
	      "succeed or an unreadable file; 2 no answer from the server;\n"
	      "64 bad usage.\n",
	      f);
}

struct command {
	const char *name;
	int (*run)(struct cli_http *h, const struct command *cmd, int argc,
		   char **argv);
	/* for cmd_simple: the route ('%' is the argument) and its arity */
	const char *method;
	const char *route;
	int nargs;
	table_fn table; /* how -o table shows the answer, or NULL (JSON) */
};

/* ------------------------------------------------------------------------ */
/* Usage and argument parsing                                               */

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("flowctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n\n", stderr);
	usage(stderr);
	return CLI_USAGE;
}

static int oom(void)
{
	fputs("flowctl: out of memory\n", stderr);
	return CLI_FAILED;
}

/* Called for each option of a command; PARSED to go on, else an exit code. */
typedef int (*option_cb)(void *ctx, int opt, const char *arg);

/* Parse argv (argv[0] is the command's name) with getopt_long: options may
 * come before or after the arguments, "--" ends them. Fills pos[0..nargs-1]
 * with the positional arguments (borrowed from argv), which must number
 * exactly nargs. Returns PARSED, or the exit code: CLI_OK after --help,
 * CLI_USAGE after a usage error, or what on_option returned. */
static int parse_args(int argc, char **argv, const char *shortopts,
		      const struct option *longopts, option_cb on_option,
		      void *ctx, const char **pos, int nargs)
{
	char optstring[32];
	int opt, rc, i;

	snprintf(optstring, sizeof(optstring), ":h%s", shortopts);
	optind = 0; /* GNU: start over, forgetting the last command line */
	opterr = 0;
	while ((opt = getopt_long(argc, argv, optstring, longopts, NULL)) !=
	       -1) {
		switch (opt) {
		case 'h':
			usage(stdout);
			return CLI_OK;
		case ':':
			return usage_error("%s: %s needs a value", argv[0],
					   argv[optind - 1]);
		case '?':
			if (optopt > 0 && optopt < 128)
				return usage_error("%s: unknown option -%c",
						   argv[0], optopt);
			return usage_error("%s: unknown option %s", argv[0],
					   argv[optind - 1]);
		default:
			rc = on_option(ctx, opt, optarg);
			if (rc != PARSED)
				return rc;
		}
	}
	if (argc - optind != nargs)
		return usage_error("%s: expected %d argument%s, got %d",
				   argv[0], nargs, nargs == 1 ? "" : "s",
				   argc - optind);
	for (i = 0; i < nargs; i++)
		pos[i] = argv[optind + i];
	return PARSED;
}

static const struct option help_only[] = {
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* ------------------------------------------------------------------------ */
/* Paths                                                                    */

/* Percent-encode everything but RFC 3986's unreserved characters (section
 * 2.3), so a name can be one path segment or one query value. */
static void put_escaped(FILE *f, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;

	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p) != NULL) {
			fputc(*p, f);
		} else {
			fputc('%', f);
			fputc(hex[*p >> 4], f);
			fputc(hex[*p & 15], f);
		}
	}
}

/* `tmpl` with each '%' replaced by the next (const char *) argument,
 * percent-encoded. A new string for the caller to free, or NULL. */
static char *path_of(const char *tmpl, ...)
{
	char *p = NULL;
	size_t n = 0;
	va_list ap;
	FILE *f;

	f = open_memstream(&p, &n);
	if (f == NULL)
		return NULL;
	va_start(ap, tmpl);
	for (; *tmpl != '\0'; tmpl++) {
		if (*tmpl == '%')
			put_escaped(f, va_arg(ap, const char *));
		else
			fputc(*tmpl, f);
	}
	va_end(ap);
	if (fclose(f) != 0) {
		free(p);
		return NULL;
	}
	return p;
}

/* ------------------------------------------------------------------------ */
/* Requests and output                                                      */

/* An HTTP error on stderr: flowd's error shape as
 * "flowctl: 400 invalid_value: steps[0].timeout_s: must be ...", anything
 * else (a /readyz 503, a proxy's page) as the status and the body on one line.
 */
static void print_http_error(const struct cli_reply *r)
{
	json_t *e = json_object_get(r->json, "error");
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));
	const char *field = json_string_value(json_object_get(e, "field"));
	char *text;
	size_t n;

	if (code != NULL || msg != NULL) {
		fprintf(stderr, "flowctl: %ld %s: ", r->status,
			code ? code : "error");
		if (field != NULL && field[0] != '\0')
			fprintf(stderr, "%s: ", field);
		fprintf(stderr, "%s\n", msg ? msg : "(no message)");
		return;
	}
	if (r->json != NULL) {
		text = json_dumps(r->json, JSON_COMPACT | JSON_ENCODE_ANY);
		fprintf(stderr, "flowctl: %ld: %s\n", r->status,
			text ? text : "(out of memory)");
		free(text);
		return;
	}
	n = strcspn(r->body, "\r\n");
	if (n > 200)
		n = 200;
	if (n == 0)
		fprintf(stderr, "flowctl: %ld: (empty body)\n", r->status);
	else
		fprintf(stderr, "flowctl: %ld: %.*s\n", r->status, (int)n,
			r->body);
}

/* Judge what cli_http_request returned (http_rc) and put in `r`: CLI_OK only
 * for a 2xx answer with a JSON body; otherwise the reason is on stderr and
 * the exit code is returned. */
static int check_reply(struct cli_http *h, int http_rc,
		       const struct cli_reply *r)
{
	if (http_rc != CLI_OK) {
		fprintf(stderr, "flowctl: %s\n", cli_http_errmsg(h));
		return CLI_UNREACHABLE;
	}
	if (r->status < 200 || r->status > 299) {
		print_http_error(r);
		return CLI_FAILED;
	}
	if (r->json == NULL) {
		fprintf(stderr, "flowctl: %ld: the answer is not JSON (%s)\n",
			r->status, r->jerr[0] ? r->jerr : "empty body");
		return CLI_FAILED;
	}
	return CLI_OK;
}

/* One request, judged by check_reply. `r` is always to be cleared by the
 * caller. */
static int request(struct cli_http *h, const char *method, const char *path,
		   const char *body, size_t body_len, struct cli_reply *r)
{
	return check_reply(
	    h, cli_http_request(h, method, path, body, body_len, r), r);
}

static int print_json(const json_t *json)
{
	char *text = json_dumps(json, JSON_INDENT(2) | JSON_ENCODE_ANY);

	if (text == NULL)
		return oom();
	puts(text);
	free(text);
	return CLI_OK;
}

/* The answer as a table (`table` non-NULL and -o table) or as JSON. */
static int print_answer(const json_t *json, table_fn table)
{
	struct table_style st;

	if (table == NULL || output == OUT_JSON)
		return print_json(json);
	st = style_now();
	table(stdout, &st, json);
	return CLI_OK;
}

/* The usual command: one request on `path` (owned: freed here; NULL means out
 * of memory), its answer printed (as `table` shows it, when not NULL). */
static int call_as(struct cli_http *h, const char *method, char *path,
		   const char *body, size_t body_len, table_fn table)
{
	struct cli_reply r;
	int rc;

	if (path == NULL)
		return oom();
	rc = request(h, method, path, body, body_len, &r);
	if (rc == CLI_OK)
		rc = print_answer(r.json, table);
	cli_reply_clear(&r);
	free(path);
	return rc;
}

static int call(struct cli_http *h, const char *method, char *path,
		const char *body, size_t body_len)
{
	return call_as(h, method, path, body, body_len, NULL);
}

/* ------------------------------------------------------------------------ */
/* Commands that are one route with no options                              */

static int cmd_simple(struct cli_http *h, const struct command *cmd, int argc,
		      char **argv)
{
	const char *pos[1] = {NULL};
	int rc;

	rc = parse_args(argc, argv, "", help_only, NULL, NULL, pos, cmd->nargs);
	if (rc != PARSED)
		return rc;
	/* a POST with no options (cancel) sends an empty JSON body */
	return call_as(h, cmd->method, path_of(cmd->route, pos[0]),
		       strcmp(cmd->method, "POST") == 0 ? "" : NULL, 0,
		       cmd->table);
}

/* ------------------------------------------------------------------------ */
/* deploy                                                                   */

/* The whole of `name` ("-": stdin) in a new buffer, or NULL with the reason on
 * stderr. */
static char *read_file(const char *name, size_t *len)
{
	FILE *f = strcmp(name, "-") == 0 ? stdin : fopen(name, "rb");
	char *buf = NULL, *p;
	size_t cap = 0, n = 0, got;

	if (f == NULL) {
		fprintf(stderr, "flowctl: %s: %s\n", name, strerror(errno));
		return NULL;
	}
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 16384;
			p = realloc(buf, cap);
			if (p == NULL) {
				oom();
				goto err_close;
			}
			buf = p;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		fprintf(stderr, "flowctl: %s: read error\n", name);
		goto err_close;
	}
	if (f != stdin)
		fclose(f);
	*len = n;
	return buf;

err_close:
	if (f != stdin)
		fclose(f);
	free(buf);
	return NULL;
}

static int cmd_deploy(struct cli_http *h, const struct command *cmd, int argc,
		      char **argv)
{
	const char *pos[2];
	size_t len;
	char *spec;
	int rc = parse_args(argc, argv, "", help_only, NULL, NULL, pos, 2);

	if (rc != PARSED)
		return rc;
	spec = read_file(pos[1], &len);
	if (spec == NULL)
		return CLI_FAILED;
	/* sent as is: flowd validates it and names the faulty field */
	rc = call(h, "PUT", path_of("/v1/flows/%", pos[0]), spec, len);
	free(spec);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* run                                                                      */

struct run_opts {
	json_t *params_json; /* new: merged --params-json objects, or NULL */
	json_t *params;	     /* new: -p NAME=VALUE, or NULL */
	const char *key;     /* borrowed from argv */
	int wait;
};

enum {
	OPT_PARAMS_JSON = 256,
	OPT_KEY,
	OPT_WAIT,
	OPT_FLOW,
	OPT_STATUS,
	OPT_LIMIT,
	OPT_CURSOR,
	OPT_ATTEMPT,
	OPT_TZ,
	OPT_FROM,
	OPT_COUNT,
	OPT_DST_MISSING,
	OPT_DST_REPEATED,
	OPT_TAG,
	OPT_ID,
	OPT_PAYLOAD,
	OPT_SCHEDULE
};

static const struct option run_options[] = {
    {"param", required_argument, NULL, 'p'},
    {"params-json", required_argument, NULL, OPT_PARAMS_JSON},
    {"key", required_argument, NULL, OPT_KEY},
    {"wait", no_argument, NULL, OPT_WAIT},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* A -p value: a JSON number or boolean when the text is one, else the text
 * as a string (new reference; NULL if the text is not UTF-8). */
static json_t *param_value(const char *text)
{
	json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);

	if (v != NULL && (json_is_number(v) || json_is_boolean(v)))
		return v;
	json_decref(v);
	return json_string(text);
}

static int run_option(void *ctx, int opt, const char *arg)
{
	struct run_opts *o = ctx;
	const char *eq;
	json_error_t jerr;
	json_t *v;
	char *name;
	int rc;

	switch (opt) {
	case 'p':
		eq = strchr(arg, '=');
		if (eq == NULL || eq == arg)
			return usage_error("run: -p wants NAME=VALUE, not '%s'",
					   arg);
		if (o->params == NULL && (o->params = json_object()) == NULL)
			return oom();
		v = param_value(eq + 1);
		if (v == NULL)
			return usage_error("run: -p %s: the value is not UTF-8",
					   arg);
		name = strndup(arg, (size_t)(eq - arg));
		if (name == NULL) {
			json_decref(v);
			return oom();
		}
		/* set_new takes v over, even when it fails */
		rc = json_object_set_new(o->params, name, v);
		free(name);
		return rc == 0 ? PARSED
			       : usage_error(
				     "run: -p %s: the name is not UTF-8", arg);
	case OPT_PARAMS_JSON:
		v = json_loads(arg, 0, &jerr);
		if (v == NULL || !json_is_object(v)) {
			json_decref(v);
			return usage_error(
			    "run: --params-json wants a JSON object%s%s",
			    v ? "" : ": ", v ? "" : jerr.text);
		}
		if (o->params_json == NULL) {
			o->params_json = v;
			return PARSED;
		}
		json_object_update(o->params_json, v);
		json_decref(v);
		return PARSED;
	case OPT_KEY:
		o->key = arg;
		return PARSED;
	case OPT_WAIT:
		o->wait = 1;
		return PARSED;
	}
	return usage_error("run: unknown option");
}

/* The POST body: {"parameters": {...}, "idempotency_key": "..."}, each only
 * when given. A new string, or NULL (out of memory, or a key not UTF-8). */
static char *run_body(struct run_opts *o)
{
	json_t *body = json_object();
	char *text = NULL;

	if (body == NULL)
		return NULL;
	if (o->params_json != NULL && o->params != NULL &&
	    json_object_update(o->params_json, o->params) < 0)
		goto out;
	if (o->params_json != NULL || o->params != NULL) {
		if (json_object_set(body, "parameters",
				    o->params_json ? o->params_json
						   : o->params) < 0)
			goto out;
	}
	if (o->key != NULL && json_object_set_new(body, "idempotency_key",
						  json_string(o->key)) < 0)
		goto out;
	text = json_dumps(body, JSON_COMPACT);
out:
	json_decref(body);
	return text;
}

static int is_terminal(const json_t *run)
{
	const char *s = json_string_value(json_object_get(run, "status"));

	return s != NULL &&
	       (strcmp(s, "succeeded") == 0 || strcmp(s, "failed") == 0 ||
		strcmp(s, "cancelled") == 0);
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* GET `path` into r, polling through 503s (no leader for a moment) for up
 * to WAIT_UNAVAILABLE_MS. CLI_OK with a 2xx JSON answer, else the exit code
 * (the reason on stderr). */
static int get_patiently(struct cli_http *h, const char *path,
			 struct cli_reply *r)
{
	long unavailable_ms = 0;

	for (;;) {
		int http_rc = cli_http_request(h, "GET", path, NULL, 0, r);
		if (http_rc == CLI_OK && r->status == 503 &&
		    unavailable_ms < WAIT_UNAVAILABLE_MS) {
			cli_reply_clear(r);
			sleep_ms(WAIT_INTERVAL_MS);
			unavailable_ms += WAIT_INTERVAL_MS;
			continue;
		}
		return check_reply(h, http_rc, r);
	}
}

/* The exit code for a run that ended: CLI_OK if it succeeded, else
 * CLI_FAILED with "flowctl: run ID STATUS: REASON" on stderr. */
static int run_outcome(const json_t *run)
{
	const char *status = json_string_value(json_object_get(run, "status"));
	const char *reason = json_string_value(json_object_get(run, "reason"));

	if (status != NULL && strcmp(status, "succeeded") == 0)
		return CLI_OK;
	fprintf(stderr, "flowctl: run %s %s%s%s\n",
		json_string_value(json_object_get(run, "id")),
		status ? status : "?", reason ? ": " : "", reason ? reason : "");
	return CLI_FAILED;
}

/* Poll GET /v1/runs/{id} until `run` (a new reference, taken over) is
 * terminal; print the final run and return CLI_OK only if it succeeded. */
static int wait_run(struct cli_http *h, json_t *run)
{
	const char *id = json_string_value(json_object_get(run, "id"));
	struct cli_reply r;
	char *path = NULL;
	int rc;

	if (id == NULL) {
		fputs("flowctl: the answer has no run id\n", stderr);
		rc = CLI_FAILED;
		goto out;
	}
	path = path_of("/v1/runs/%", id);
	if (path == NULL) {
		rc = oom();
		goto out;
	}
	if (isatty(STDERR_FILENO))
		fprintf(stderr, "flowctl: waiting for run %s\n", id);
	while (!is_terminal(run)) {
		sleep_ms(WAIT_INTERVAL_MS);
		/* no leader for a moment: get_patiently polls through it */
		rc = get_patiently(h, path, &r);
		if (rc != CLI_OK) {
			cli_reply_clear(&r);
			goto out;
		}
		json_decref(run);
		run = json_incref(r.json);
		cli_reply_clear(&r);
	}
	rc = print_json(run);
	if (rc == CLI_OK)
		rc = run_outcome(run);
out:
	free(path);
	json_decref(run);
	return rc;
}

static int cmd_run(struct cli_http *h, const struct command *cmd, int argc,
		   char **argv)
{
	struct run_opts o = {0};
	struct cli_reply r = {0};
	const char *pos[1];
	char *path = NULL, *body = NULL;
	int rc;

	rc = parse_args(argc, argv, "p:", run_options, run_option, &o, pos, 1);
	if (rc != PARSED)
		goto out;
	body = run_body(&o);
	path = path_of("/v1/flows/%/runs", pos[0]);
	if (body == NULL || path == NULL) {
		rc = oom();
		goto out;
	}
	rc = request(h, "POST", path, body, strlen(body), &r);
	if (rc != CLI_OK)
		goto out;
	if (o.wait)
		rc = wait_run(h, json_incref(r.json));
	else
		rc = print_json(r.json);
out:
	cli_reply_clear(&r);
	free(path);
	free(body);
	json_decref(o.params_json);
	json_decref(o.params);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* runs and logs                                                            */

struct query {
	FILE *f;  /* open_memstream over the path being built */
	char sep; /* '?' before the first parameter, then '&' */
};

static int query_option(void *ctx, int opt, const char *arg)
{
	static const char *const names[] = {
	    [OPT_FLOW - OPT_FLOW] = "flow",
	    [OPT_STATUS - OPT_FLOW] = "status",
	    [OPT_LIMIT - OPT_FLOW] = "limit",
	    [OPT_CURSOR - OPT_FLOW] = "cursor",
	    [OPT_ATTEMPT - OPT_FLOW] = "attempt",
	    [OPT_TZ - OPT_FLOW] = "tz",
	    [OPT_FROM - OPT_FLOW] = "from",
	    [OPT_COUNT - OPT_FLOW] = "count",
	    [OPT_DST_MISSING - OPT_FLOW] = "dst_missing",
	    [OPT_DST_REPEATED - OPT_FLOW] = "dst_repeated",
	    [OPT_TAG - OPT_FLOW] = "tag",
	};
	struct query *q = ctx;

	if (opt == 'f') { /* logs --follow */
		fprintf(q->f, "%cfollow=true", q->sep);
		q->sep = '&';
		return PARSED;
	}
	if (opt < OPT_FLOW || opt > OPT_TAG)
		return usage_error("unknown option");
	fprintf(q->f, "%c%s=", q->sep, names[opt - OPT_FLOW]);
	put_escaped(q->f, arg);
	q->sep = '&';
	return PARSED;
}

static const struct option runs_options[] = {
    {"flow", required_argument, NULL, OPT_FLOW},
    {"tag", required_argument, NULL, OPT_TAG},
    {"status", required_argument, NULL, OPT_STATUS},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"cursor", required_argument, NULL, OPT_CURSOR},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const struct option preview_options[] = {
    {"tz", required_argument, NULL, OPT_TZ},
    {"from", required_argument, NULL, OPT_FROM},
    {"count", required_argument, NULL, OPT_COUNT},
    {"dst-missing", required_argument, NULL, OPT_DST_MISSING},
    {"dst-repeated", required_argument, NULL, OPT_DST_REPEATED},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const struct option logs_options[] = {
    {"attempt", required_argument, NULL, OPT_ATTEMPT},
    {"follow", no_argument, NULL, 'f'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Parse a command whose options are query parameters, and build `path`
 * + the escaped positional arguments + the query. *out is a new string. */
static int query_path(int argc, char **argv, const struct option *options,
		      const char *tmpl, int nargs, char **out)
{
	struct query q = {NULL, strchr(tmpl, '?') ? '&' : '?'};
	const char *pos[2] = {NULL, NULL};
	char *prefix = NULL, *p = NULL;
	size_t n = 0;
	int rc;

	*out = NULL;
	q.f = open_memstream(&p, &n);
	if (q.f == NULL)
		return oom();
	rc = parse_args(argc, argv, options == logs_options ? "f" : "", options,
			query_option, &q, pos, nargs);
	if (fclose(q.f) != 0 && rc == PARSED)
		rc = oom();
	if (rc != PARSED)
		goto out;
	prefix = path_of(tmpl, pos[0], pos[1]);
	if (prefix == NULL || asprintf(out, "%s%s", prefix, p) < 0) {
		*out = NULL;
		rc = oom();
	}
out:
	free(prefix);
	free(p);
	return rc;
}

static int cmd_runs(struct cli_http *h, const struct command *cmd, int argc,
		    char **argv)
{
	char *path;
	int rc = query_path(argc, argv, runs_options, "/v1/runs", 0, &path);

	return rc != PARSED ? rc : call_as(h, "GET", path, NULL, 0, table_runs);
}

static int cmd_preview(struct cli_http *h, const struct command *cmd,
		       int argc, char **argv)
{
	char *path;
	int rc = query_path(argc, argv, preview_options,
			    "/v1/cron/preview?expr=%", 1, &path);

	return rc != PARSED ? rc : call_as(h, "GET", path, NULL, 0, table_preview);
}

/* ------------------------------------------------------------------------ */
/* event and backfill: a JSON body from arguments and options               */

static const struct option event_options[] = {
    {"id", required_argument, NULL, OPT_ID},
    {"payload", required_argument, NULL, OPT_PAYLOAD},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const struct option backfill_options[] = {
    {"schedule", required_argument, NULL, OPT_SCHEDULE},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Options into the body object: --id, --payload JSON, --schedule N. */
static int body_option(void *ctx, int opt, const char *arg)
{
	json_t *body = ctx, *v;
	json_error_t jerr;
	char *end;
	long n;

	switch (opt) {
	case OPT_ID:
		json_object_set_new(body, "id", json_string(arg));
		return PARSED;
	case OPT_PAYLOAD:
		v = json_loads(arg, 0, &jerr);
		if (v == NULL)
			return usage_error("--payload: not JSON: %s", jerr.text);
		json_object_set_new(body, "payload", v);
		return PARSED;
	case OPT_SCHEDULE:
		n = strtol(arg, &end, 10);
		if (*arg == '\0' || *end != '\0' || n < 0)
			return usage_error("--schedule wants an index, not '%s'",
					   arg);
		json_object_set_new(body, "schedule", json_integer(n));
		return PARSED;
	}
	return usage_error("unknown option");
}

static int post_body(struct cli_http *h, char *path, json_t *body)
{
	char *text = json_dumps(body, JSON_COMPACT);
	int rc;

	json_decref(body);
	if (text == NULL) {
		free(path);
		return oom();
	}
	rc = call(h, "POST", path, text, strlen(text));
	free(text);
	return rc;
}

static int cmd_event(struct cli_http *h, const struct command *cmd, int argc,
		     char **argv)
{
	const char *pos[1] = {NULL};
	json_t *body = json_object();
	int rc;

	if (body == NULL)
		return oom();
	rc = parse_args(argc, argv, "", event_options, body_option, body, pos, 1);
	if (rc != PARSED) {
		json_decref(body);
		return rc;
	}
	json_object_set_new(body, "name", json_string(pos[0]));
	return post_body(h, strdup("/v1/events"), body);
}

static int cmd_backfill(struct cli_http *h, const struct command *cmd,
			int argc, char **argv)
{
	const char *pos[3] = {NULL, NULL, NULL};
	json_t *body = json_object();
	int rc;

	if (body == NULL)
		return oom();
	rc = parse_args(argc, argv, "", backfill_options, body_option, body,
			pos, 3);
	if (rc != PARSED) {
		json_decref(body);
		return rc;
	}
	json_object_set_new(body, "from", json_string(pos[1]));
	json_object_set_new(body, "to", json_string(pos[2]));
	return post_body(h, path_of("/v1/flows/%/backfill", pos[0]), body);
}

/* Write a JSON string's bytes (NULs included) to `f`. */
static int put_raw(FILE *f, const json_t *s)
{
	size_t n = json_string_length(s);

	return n == 0 || fwrite(json_string_value(s), 1, n, f) == n ? 0 : -1;
}

/* logs -f: print each output event's text to stdout or stderr as it
 * comes; the end event says how the attempt ended. */
struct follow {
	int rc;
	bool ended;
};

static void on_log_event(void *arg, const char *event, const char *data)
{
	struct follow *f = arg;
	json_t *d = json_loads(data, 0, NULL);

	if (strcmp(event, "output") == 0) {
		const char *stream = json_string_value(json_object_get(d, "stream"));
		FILE *to = stream != NULL && strcmp(stream, "stderr") == 0
				   ? stderr
				   : stdout;
		put_raw(to, json_object_get(d, "text"));
		fflush(to);
	} else if (strcmp(event, "end") == 0) {
		const char *status = json_string_value(json_object_get(d, "status"));
		f->ended = true;
		if (json_is_true(json_object_get(d, "truncated")))
			fputs("flowctl: (logs truncated by flowd)\n", stderr);
		f->rc = status != NULL && (strcmp(status, "succeeded") == 0 ||
					   strcmp(status, "stored") == 0)
				? CLI_OK
				: CLI_FAILED;
		if (f->rc != CLI_OK)
			fprintf(stderr, "flowctl: attempt %lld %s\n",
				(long long)json_integer_value(
					json_object_get(d, "attempt")),
				status ? status : "?");
	} else if (strcmp(event, "error") == 0) {
		fprintf(stderr, "flowctl: %s\n",
			json_string_value(json_object_get(d, "message"))
				? json_string_value(json_object_get(d, "message"))
				: data);
		f->ended = true;
		f->rc = CLI_FAILED;
	}
	json_decref(d);
}

static int follow_logs(struct cli_http *h, const char *path)
{
	long unavailable_ms = 0;

	for (;;) {
		struct follow f = {.rc = CLI_FAILED};
		struct cli_reply r;
		int http_rc = cli_http_stream(h, path, on_log_event, &f, &r);

		/* 503: not stored yet, or an election: poll through */
		if (http_rc == CLI_OK && r.status == 503 &&
		    unavailable_ms < WAIT_UNAVAILABLE_MS) {
			cli_reply_clear(&r);
			sleep_ms(WAIT_INTERVAL_MS);
			unavailable_ms += WAIT_INTERVAL_MS;
			continue;
		}
		if (http_rc != CLI_OK || r.status != 200) {
			int rc = check_reply(h, http_rc, &r);
			cli_reply_clear(&r);
			return rc;
		}
		cli_reply_clear(&r);
		if (!f.ended) {
			fputs("flowctl: the stream ended before the attempt\n",
			      stderr);
			return CLI_FAILED;
		}
		return f.rc;
	}
}

static int cmd_logs(struct cli_http *h, const struct command *cmd, int argc,
		    char **argv)
{
	struct cli_reply r;
	json_t *out, *err;
	char *path;
	int rc = query_path(argc, argv, logs_options, "/v1/runs/%/steps/%/logs",
			    2, &path);

	if (rc != PARSED)
		return rc;
	if (strstr(path, "follow=true") != NULL) {
		rc = follow_logs(h, path);
		free(path);
		return rc;
	}
	/* a log PostgreSQL does not hold yet is a 503 not_stored_yet for a
	 * moment after the attempt ends: polled through, as elections are */
	rc = get_patiently(h, path, &r);
	free(path);
	if (rc != CLI_OK)
		goto out;
	out = json_object_get(r.json, "stdout");
	err = json_object_get(r.json, "stderr");
	if (!json_is_string(out) || !json_is_string(err)) {
		fputs("flowctl: the answer has no stdout and stderr strings\n",
		      stderr);
		rc = CLI_FAILED;
		goto out;
	}
	/* stdout first, flushed: on a terminal the two come in order */
	put_raw(stdout, out);
	fflush(stdout);
	put_raw(stderr, err);
	if (json_is_true(json_object_get(r.json, "truncated")))
		fputs("flowctl: (logs truncated by flowd)\n", stderr);
out:
	cli_reply_clear(&r);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* watch and top: tables that refresh                                       */

enum { OPT_INTERVAL = 400, OPT_FRAMES };

struct refresh_opts {
	long interval_ms;
	long count; /* frames; 0: until interrupted */
	bool count_set;
};

static const struct option watch_options[] = {
    {"interval", required_argument, NULL, OPT_INTERVAL},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static const struct option top_options[] = {
    {"interval", required_argument, NULL, OPT_INTERVAL},
    {"count", required_argument, NULL, OPT_FRAMES},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int refresh_option(void *ctx, int opt, const char *arg)
{
	struct refresh_opts *o = ctx;
	char *end;

	if (opt == OPT_INTERVAL) {
		double s = strtod(arg, &end);
		if (*arg == '\0' || *end != '\0' || !(s >= 0.1 && s <= 3600))
			return usage_error("--interval wants seconds from 0.1 "
					   "to 3600, not '%s'",
					   arg);
		o->interval_ms = (long)(s * 1000);
		return PARSED;
	}
	if (opt == OPT_FRAMES) {
		long n = strtol(arg, &end, 10);
		if (*arg == '\0' || *end != '\0' || n < 0)
			return usage_error("--count wants a number of frames, "
					   "not '%s'",
					   arg);
		o->count = n;
		o->count_set = true;
		return PARSED;
	}
	return usage_error("unknown option");
}

/* On a terminal a frame replaces the last one (cursor home, clear). */
static void clear_screen(void)
{
	fputs("\033[H\033[2J", stdout);
}

static int cmd_watch(struct cli_http *h, const struct command *cmd, int argc,
		     char **argv)
{
	struct refresh_opts o = {.interval_ms = 1000};
	const char *pos[1];
	char *path, *last = NULL;
	bool tty = isatty(STDOUT_FILENO);
	int rc;

	rc = parse_args(argc, argv, "", watch_options, refresh_option, &o, pos,
			1);
	if (rc != PARSED)
		return rc;
	path = path_of("/v1/runs/%", pos[0]);
	if (path == NULL)
		return oom();
	for (;;) {
		struct cli_reply r;
		struct table_style st = style_now();
		char *now;
		bool changed, done;

		rc = get_patiently(h, path, &r);
		if (rc != CLI_OK) {
			cli_reply_clear(&r);
			break;
		}
		now = json_dumps(r.json, JSON_COMPACT | JSON_SORT_KEYS);
		if (now == NULL) {
			cli_reply_clear(&r);
			rc = oom();
			break;
		}
		changed = last == NULL || strcmp(last, now) != 0;
		if (output == OUT_JSON) {
			if (changed)
				puts(now); /* one line per change */
		} else if (tty) {
			clear_screen();
			table_run(stdout, &st, r.json);
		} else if (changed) {
			if (last != NULL)
				fputc('\n', stdout);
			table_run(stdout, &st, r.json);
		}
		fflush(stdout);
		free(last);
		last = now;
		done = is_terminal(r.json);
		if (done)
			rc = run_outcome(r.json);
		cli_reply_clear(&r);
		if (done)
			break;
		sleep_ms(o.interval_ms);
	}
	free(last);
	free(path);
	return rc;
}

static int cmd_top(struct cli_http *h, const struct command *cmd, int argc,
		   char **argv)
{
	struct refresh_opts o = {.interval_ms = 2000};
	bool tty = isatty(STDOUT_FILENO);
	int rc;

	rc = parse_args(argc, argv, "", top_options, refresh_option, &o, NULL,
			0);
	if (rc != PARSED)
		return rc;
	if (!o.count_set)
		o.count = tty ? 0 : 1;
	for (long frame = 0; o.count == 0 || frame < o.count; frame++) {
		struct cli_reply cl, runs;
		struct table_style st = style_now();

		if (frame > 0)
			sleep_ms(o.interval_ms);
		rc = get_patiently(h, "/v1/cluster", &cl);
		if (rc != CLI_OK) {
			cli_reply_clear(&cl);
			break;
		}
		rc = get_patiently(h, "/v1/runs?status=running&limit=20", &runs);
		if (rc != CLI_OK) {
			cli_reply_clear(&cl);
			cli_reply_clear(&runs);
			break;
		}
		if (output == OUT_JSON) {
			json_t *both = json_pack("{s:O, s:O}", "cluster", cl.json,
						 "running",
						 json_object_get(runs.json, "runs"));
			char *text = both ? json_dumps(both, JSON_COMPACT) : NULL;
			if (text != NULL)
				puts(text);
			else
				rc = oom();
			free(text);
			json_decref(both);
		} else {
			if (tty)
				clear_screen();
			else if (frame > 0)
				fputc('\n', stdout);
			table_cluster(stdout, &st, cl.json);
			fprintf(stdout, "\nrunning (the newest %zu):\n",
				json_array_size(json_object_get(runs.json, "runs")));
			table_runs(stdout, &st, runs.json);
		}
		fflush(stdout);
		cli_reply_clear(&cl);
		cli_reply_clear(&runs);
		if (rc != CLI_OK)
			break;
	}
	return rc;
}

/* ------------------------------------------------------------------------ */
/* A run's life cycle (docs/lifecycle.md): tag, resume, redrive             */

enum {
	OPT_ADD = 512,
	OPT_REMOVE,
	OPT_FROM_STEP,
	OPT_CURRENT,
	OPT_LOCAL,
	OPT_DIR,
	OPT_LKEY,
	OPT_LTAG,
	OPT_LWAIT,
	OPT_RECORD,
};

struct life_opts {
	json_t *add, *remove, *tags;  /* arrays, NULL until given */
	const char *from, *dir, *key, *record;
	int current, local, wait;
};

static const struct option life_options[] = {
    {"add", required_argument, NULL, OPT_ADD},
    {"remove", required_argument, NULL, OPT_REMOVE},
    {"from", required_argument, NULL, OPT_FROM_STEP},
    {"current", no_argument, NULL, OPT_CURRENT},
    {"local", no_argument, NULL, OPT_LOCAL},
    {"dir", required_argument, NULL, OPT_DIR},
    {"key", required_argument, NULL, OPT_LKEY},
    {"tag", required_argument, NULL, OPT_LTAG},
    {"wait", no_argument, NULL, OPT_LWAIT},
    {"record", required_argument, NULL, OPT_RECORD},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int push_str(json_t **arr, const char *s)
{
	if (*arr == NULL && (*arr = json_array()) == NULL)
		return oom();
	if (json_array_append_new(*arr, json_string(s)) != 0)
		return usage_error("'%s' is not UTF-8", s);
	return PARSED;
}

static int life_option(void *ctx, int opt, const char *arg)
{
	struct life_opts *o = ctx;

	switch (opt) {
	case OPT_ADD:
		return push_str(&o->add, arg);
	case OPT_REMOVE:
		return push_str(&o->remove, arg);
	case OPT_LTAG:
		return push_str(&o->tags, arg);
	case OPT_FROM_STEP:
		o->from = arg;
		return PARSED;
	case OPT_DIR:
		o->dir = arg;
		return PARSED;
	case OPT_LKEY:
		o->key = arg;
		return PARSED;
	case OPT_CURRENT:
		o->current = 1;
		return PARSED;
	case OPT_LOCAL:
		o->local = 1;
		return PARSED;
	case OPT_LWAIT:
		o->wait = 1;
		return PARSED;
	case OPT_RECORD:
		o->record = arg;
		return PARSED;
	}
	return usage_error("unknown option");
}

static void life_free(struct life_opts *o)
{
	json_decref(o->add);
	json_decref(o->remove);
	json_decref(o->tags);
}

/* Which options a command takes: a usage error for the others. */
static int life_only(const char *cmd, const struct life_opts *o, bool tags,
		     bool resume, bool local)
{
	if (!tags && (o->add || o->remove))
		return usage_error("%s: --add and --remove are for tag", cmd);
	if (!resume && (o->from || o->current || o->local || o->tags))
		return usage_error("%s: --from, --current, --local and --tag "
				   "are for resume", cmd);
	if (local && (o->current || o->key || o->tags || o->wait))
		return usage_error("%s --local: --current, --key, --tag and "
				   "--wait are for a resume in the cluster",
				   cmd);
	if (!local && (o->dir || o->record))
		return usage_error("%s: --dir and --record go with --local", cmd);
	if (o->record != NULL && strcmp(o->record, "prod") == 0)
		return usage_error("%s: --record: a local result is not recorded "
				   "in a prod branch", cmd);
	return PARSED;
}

/* POST path with `body` (taken over); print the answer, or wait for the
 * run it names. */
static int post_run(struct cli_http *h, const char *path, json_t *body,
		    int wait)
{
	struct cli_reply r = {0};
	char *text = body ? json_dumps(body, JSON_COMPACT) : strdup("{}");
	int rc;

	json_decref(body);
	if (text == NULL)
		return oom();
	rc = request(h, "POST", path, text, strlen(text), &r);
	free(text);
	if (rc == CLI_OK)
		rc = wait ? wait_run(h, json_incref(r.json)) : print_json(r.json);
	cli_reply_clear(&r);
	return rc;
}

static int cmd_tag(struct cli_http *h, const struct command *cmd, int argc,
		   char **argv)
{
	struct life_opts o = {0};
	const char *pos[1];
	char *path = NULL;
	int rc = parse_args(argc, argv, "", life_options, life_option, &o, pos, 1);

	if (rc == PARSED)
		rc = life_only("tag", &o, true, false, false);
	if (rc != PARSED)
		goto out;
	if (o.wait) {
		rc = usage_error("tag: --wait is for resume and redrive");
		goto out;
	}
	path = path_of("/v1/runs/%/tags", pos[0]);
	if (path == NULL) {
		rc = oom();
		goto out;
	}
	rc = post_run(h, path,
		      json_pack("{s:o, s:o}", "add",
				o.add ? json_incref(o.add) : json_array(),
				"remove",
				o.remove ? json_incref(o.remove) : json_array()),
		      0);
out:
	free(path);
	life_free(&o);
	return rc;
}

static int cmd_redrive(struct cli_http *h, const struct command *cmd,
		       int argc, char **argv)
{
	struct life_opts o = {0};
	const char *pos[1];
	char *path = NULL;
	json_t *body;
	int rc = parse_args(argc, argv, "", life_options, life_option, &o, pos, 1);

	if (rc == PARSED)
		rc = life_only("redrive", &o, false, false, false);
	if (rc != PARSED)
		goto out;
	path = path_of("/v1/runs/%/redrive", pos[0]);
	body = json_object();
	if (path == NULL || body == NULL) {
		json_decref(body);
		rc = oom();
		goto out;
	}
	if (o.key != NULL)
		json_object_set_new(body, "idempotency_key", json_string(o.key));
	rc = post_run(h, path, body, o.wait);
out:
	free(path);
	life_free(&o);
	return rc;
}

/* --record BRANCH: POST the local result to the flow of that branch of the
 * run's project (.../records); prints the run it made. */
static int record_local(struct cli_http *h, const json_t *run,
			const char *branch, json_t *steps)
{
	const char *project = json_string_value(json_object_get(run, "project"));
	const char *flow = json_string_value(json_object_get(run, "flow"));
	struct cli_reply r = {0};
	char *path = path_of("/v1/projects/%/branches/%/flows/%/records",
			     project ? project : "default", branch, flow);
	json_t *body = json_pack("{s:O, s:O, s:O}", "origin_run_id",
				 json_object_get(run, "id"), "parameters",
				 json_object_get(run, "parameters"), "steps",
				 steps);
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	int rc;

	json_decref(body);
	if (path == NULL || text == NULL) {
		free(path);
		free(text);
		return oom();
	}
	rc = request(h, "POST", path, text, strlen(text), &r);
	if (rc == CLI_OK)
		fprintf(stdout, "flowctl: recorded as run %s in branch %s\n",
			json_string_value(json_object_get(r.json, "id")),
			branch);
	cli_reply_clear(&r);
	free(path);
	free(text);
	return rc;
}

/* resume --local: the run and its version's spec from the cluster (GETs
 * only), then cli/local.c. */
static int resume_local(struct cli_http *h, const char *id,
			const struct life_opts *o)
{
	struct cli_reply r = {0}, v = {0};
	struct local_opts lo = {.from_step = o->from, .dir = o->dir,
				.colour = style_now().colour, .out = stdout};
	char *path = path_of("/v1/runs/%", id), *vpath = NULL, *dir = NULL;
	const json_t *spec = NULL, *ver;
	json_int_t version;
	size_t i;
	int rc;

	if (path == NULL)
		return oom();
	rc = get_patiently(h, path, &r);
	if (rc != CLI_OK)
		goto out;
	if (!is_terminal(r.json)) {
		fprintf(stderr, "flowctl: resume: run %s has not finished\n", id);
		rc = CLI_FAILED;
		goto out;
	}
	/* the run's own flow: in its project's branch */
	{
		const char *p = json_string_value(json_object_get(r.json, "project"));
		const char *b = json_string_value(json_object_get(r.json, "branch"));
		const char *fl = json_string_value(json_object_get(r.json, "flow"));

		if (p == NULL || b == NULL ||
		    (strcmp(p, "default") == 0 && strcmp(b, "main") == 0))
			vpath = path_of("/v1/flows/%/versions", fl);
		else
			vpath = path_of("/v1/projects/%/branches/%/flows/%/versions",
					p, b, fl);
	}
	if (vpath == NULL) {
		rc = oom();
		goto out;
	}
	rc = get_patiently(h, vpath, &v);
	if (rc != CLI_OK)
		goto out;
	version = json_integer_value(json_object_get(r.json, "version"));
	json_array_foreach(json_object_get(v.json, "versions"), i, ver)
		if (json_integer_value(json_object_get(ver, "version")) == version)
			spec = json_object_get(ver, "spec");
	if (!json_is_object(spec)) {
		fprintf(stderr, "flowctl: resume: the spec of version %lld is "
				"not available\n", (long long)version);
		rc = CLI_FAILED;
		goto out;
	}
	if (lo.dir == NULL) {
		if (asprintf(&dir, "flowd-resume-%s", id) < 0) {
			rc = oom();
			goto out;
		}
		lo.dir = dir;
	}
	if (o->record != NULL && (lo.record = json_array()) == NULL) {
		rc = oom();
		goto out;
	}
	rc = local_resume(r.json, spec, &lo);
	if (o->record != NULL && (rc == CLI_OK || rc == CLI_FAILED)) {
		/* the result, as a run of that branch (trigger local_resume) */
		int rec = record_local(h, r.json, o->record, lo.record);
		if (rec != CLI_OK)
			rc = rec;
	}
out:
	json_decref(lo.record);
	cli_reply_clear(&r);
	cli_reply_clear(&v);
	free(path);
	free(vpath);
	free(dir);
	return rc;
}

static int cmd_resume(struct cli_http *h, const struct command *cmd, int argc,
		      char **argv)
{
	struct life_opts o = {0};
	const char *pos[1];
	char *path = NULL;
	json_t *body;
	int rc = parse_args(argc, argv, "", life_options, life_option, &o, pos, 1);

	if (rc == PARSED)
		rc = life_only("resume", &o, false, true, o.local);
	if (rc != PARSED)
		goto out;
	if (o.local) {
		rc = resume_local(h, pos[0], &o);
		goto out;
	}
	path = path_of("/v1/runs/%/resume", pos[0]);
	body = json_object();
	if (path == NULL || body == NULL) {
		json_decref(body);
		rc = oom();
		goto out;
	}
	if (o.from != NULL)
		json_object_set_new(body, "from_step", json_string(o.from));
	if (o.current)
		json_object_set_new(body, "version", json_string("current"));
	if (o.key != NULL)
		json_object_set_new(body, "idempotency_key", json_string(o.key));
	if (o.tags != NULL)
		json_object_set(body, "tags", o.tags);
	rc = post_run(h, path, body, o.wait);
out:
	free(path);
	life_free(&o);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */

static const struct command commands[] = {
    {"deploy", cmd_deploy, NULL, NULL, 0, NULL},
    {"flows", cmd_simple, "GET", "/v1/flows", 0, table_flows},
    {"flow", cmd_simple, "GET", "/v1/flows/%", 1, NULL},
    {"versions", cmd_simple, "GET", "/v1/flows/%/versions", 1, table_versions},
    {"undeploy", cmd_simple, "DELETE", "/v1/flows/%", 1, NULL},
    {"run", cmd_run, NULL, NULL, 0, NULL},
    {"runs", cmd_runs, NULL, NULL, 0, NULL},
    {"get", cmd_simple, "GET", "/v1/runs/%", 1, table_run},
    {"watch", cmd_watch, NULL, NULL, 0, NULL},
    {"top", cmd_top, NULL, NULL, 0, NULL},
    {"logs", cmd_logs, NULL, NULL, 0, NULL},
    {"cancel", cmd_simple, "POST", "/v1/runs/%/cancel", 1, NULL},
    {"tag", cmd_tag, NULL, NULL, 0, NULL},
    {"resume", cmd_resume, NULL, NULL, 0, NULL},
    {"redrive", cmd_redrive, NULL, NULL, 0, NULL},
    {"schedule", cmd_simple, "GET", "/v1/flows/%/schedule", 1, table_schedule},
    {"pause", cmd_simple, "POST", "/v1/flows/%/pause", 1, NULL},
    {"unpause", cmd_simple, "POST", "/v1/flows/%/unpause", 1, NULL},
    {"backfill", cmd_backfill, NULL, NULL, 0, NULL},
    {"event", cmd_event, NULL, NULL, 0, NULL},
    {"preview", cmd_preview, NULL, NULL, 0, NULL},
    {"cluster", cmd_simple, "GET", "/v1/cluster", 0, table_cluster},
    {"health", cmd_simple, "GET", "/healthz", 0, NULL},
    {"ready", cmd_simple, "GET", "/readyz", 0, NULL},
};

static const struct option global_options[] = {
    {"url", required_argument, NULL, 'u'},
    {"token", required_argument, NULL, 't'},
    {"output", required_argument, NULL, 'o'},
    {"ca-file", required_argument, NULL, 'C'},
    {"cert", required_argument, NULL, 'c'},
    {"key", required_argument, NULL, 'k'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

int main(int argc, char **argv)
{
	const char *url = getenv("FLOWD_URL");
	const char *token = getenv("FLOWD_TOKEN");
	struct cli_tls tls = {.ca_file = getenv("FLOWD_CA_FILE"),
			      .cert_file = getenv("FLOWD_CERT_FILE"),
			      .key_file = getenv("FLOWD_KEY_FILE")};
	const struct command *cmd = NULL;
	struct cli_http *h;
	size_t i;
	int opt, rc;

	if (url == NULL || url[0] == '\0')
		url = DEFAULT_URL;
	opterr = 0;
	/* '+': stop at the command, whose own options are parsed by it */
	while ((opt = getopt_long(argc, argv, "+:ho:", global_options, NULL)) !=
	       -1) {
		switch (opt) {
		case 'o':
			if (strcmp(optarg, "json") == 0)
				output = OUT_JSON;
			else if (strcmp(optarg, "table") == 0)
				output = OUT_TABLE;
			else
				return usage_error("-o wants table or json, not "
						   "'%s'",
						   optarg);
			break;
		case 'u':
			url = optarg;
			break;
		case 't':
			token = optarg;
			break;
		case 'C':
			tls.ca_file = optarg;
			break;
		case 'c':
			tls.cert_file = optarg;
			break;
		case 'k':
			tls.key_file = optarg;
			break;
		case 'h':
			usage(stdout);
			return CLI_OK;
		case ':':
			return usage_error("%s needs a value",
					   argv[optind - 1]);
		default:
			if (optopt > 0 && optopt < 128)
				return usage_error("unknown option -%c",
						   optopt);
			return usage_error("unknown option %s",
					   argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return usage_error("no command");
	if (strcmp(argv[optind], "help") == 0) {
		usage(stdout);
		return CLI_OK;
	}
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(argv[optind], commands[i].name) == 0)
			cmd = &commands[i];
	if (cmd == NULL)
		return usage_error("unknown command '%s'", argv[optind]);

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fputs("flowctl: libcurl failed to start\n", stderr);
		return CLI_FAILED;
	}
	h = cli_http_new(url, token);
	if (h == NULL) {
		rc = oom();
	} else {
		if (tls.ca_file != NULL && tls.ca_file[0] == '\0')
			tls.ca_file = NULL;
		if (tls.cert_file != NULL && tls.cert_file[0] == '\0')
			tls.cert_file = NULL;
		if (tls.key_file != NULL && tls.key_file[0] == '\0')
			tls.key_file = NULL;
		cli_http_tls(h, &tls);
		rc = cmd->run(h, cmd, argc - optind, argv + optind);
		cli_http_free(h);
	}
	curl_global_cleanup();
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "flowctl: stdout: %s\n", strerror(errno));
		if (rc == CLI_OK)
			rc = CLI_FAILED;
	}
	return rc;
}
