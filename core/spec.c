/* spec.c - parse, validate and normalize flow specs; resolve run parameters. */

/*
 * DESIGN
 *
 * spec_parse() walks the user's document once, in a fixed order, and stops at
 * the first problem so that a client always sees the same error for the same
 * input:
 *
 *   1. the top level is an object, and its compact JSON fits max_spec_bytes;
 *   2. in every object, unknown keys first (in the object's own key order),
 *      then the known keys in the order they are listed in the spec format;
 *   3. top level: description, parameters (sorted by name), steps (in order);
 *   4. graph checks once every step is known: each dependency names a step
 *      (depends_on may point forward), then Kahn's algorithm for cycles.
 *
 * While it validates it fills both the C structs and spec->doc, the
 * normalized document with every default written out, so that json_equal()
 * of two docs tells whether two deploys mean the same spec.
 *
 * Nothing here does I/O or reads a clock; every failure is a flowd_error with
 * FLOWD_E_INVALID (FLOWD_E_TOO_LARGE for an oversize spec, FLOWD_E_INTERNAL
 * for out of memory) and the JSON path of the offending field.
 */
#include "core/spec.h"

#include "core/log.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_BYTES 128
#define ENV_RESERVED_PREFIX "FLOWD_"
#define DEFAULT_BACKOFF_S 1
#define DEFAULT_MAX_BACKOFF_S 300
#define PATH_LEN sizeof(((struct flowd_error *)NULL)->field)

/* What one spec_parse() or spec_params_resolve() call carries around. */
struct ctx {
	const struct flowd_limits *lim;
	struct flowd_error *err;
	unsigned flags;             /* SPEC_PARSE_* */
};

static const char *const type_names[] = {
	[SPEC_PARAM_STRING] = "string",
	[SPEC_PARAM_INT] = "int",
	[SPEC_PARAM_FLOAT] = "float",
	[SPEC_PARAM_BOOL] = "bool",
	[SPEC_PARAM_JSON] = "json",
};

static const char *const top_keys[] = {
	"description", "parameters", "steps", "triggers", "max_active_runs",
	"tags", NULL
};
static const char *const param_keys[] = {
	"type", "default", "required", "description", NULL
};
static const char *const step_keys[] = {
	"name", "command", "shell", "env", "depends_on", "retries",
	"timeout_s", "workdir", NULL
};
static const char *const retries_keys[] = {
	"max", "backoff_s", "max_backoff_s", NULL
};

/* ---------------------------------------------------------------- helpers */

static int fail(struct ctx *c, enum flowd_errc errc, const char *code,
		const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(struct ctx *c, enum flowd_errc errc, const char *code,
		const char *field, const char *fmt, ...)
{
	char msg[sizeof c->err->message];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return flowd_error_set(c->err, errc, code, field, "%s", msg);
}

static int oom(struct flowd_error *err)
{
	return flowd_error_set(err, FLOWD_E_INTERNAL, "internal", "",
			       "out of memory");
}

/* Format a field path into a PATH_LEN buffer; a path that does not fit is
 * cut short, which only shortens an error report. */
static void path_fmt(char *dst, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void path_fmt(char *dst, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dst, PATH_LEN, fmt, ap);
	va_end(ap);
}

static void path_key(char *dst, const char *prefix, const char *key)
{
	if (prefix[0] == '\0')
		path_fmt(dst, "%s", key);
	else
		path_fmt(dst, "%s.%s", prefix, key);
}

/* json_object_set_new() that also fails on a NULL value (a failed
 * constructor), so callers can chain constructors without checking each. */
static int set_new(json_t *obj, const char *key, json_t *value)
{
	if (value == NULL)
		return -1;
	return json_object_set_new(obj, key, value);
}

static int append_new(json_t *arr, json_t *value)
{
	if (value == NULL)
		return -1;
	return json_array_append_new(arr, value);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The keys of `obj` sorted by strcmp; the array is malloc'd (caller frees),
 * the strings are borrowed from `obj`. NULL on OOM. */
static const char **sorted_keys(const json_t *obj, size_t *n)
{
	const char **keys;
	const char *key;
	json_t *value;
	size_t i = 0;

	keys = malloc((json_object_size(obj) + 1) * sizeof *keys);
	if (keys == NULL)
		return NULL;
	json_object_foreach((json_t *)obj, key, value)
		keys[i++] = key;
	qsort(keys, i, sizeof *keys, cmp_str);
	*n = i;
	return keys;
}

static size_t compact_size(const json_t *v)
{
	return json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
}

static bool name_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
	       (ch >= '0' && ch <= '9') || ch == '_';
}

/* [A-Za-z_][A-Za-z0-9_]* and at most `max` bytes (0: unbounded). */
static bool env_name_valid(const char *s, size_t max)
{
	size_t i;

	if (s == NULL || s[0] == '\0' || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		if (!name_char(s[i]))
			return false;
		if (max != 0 && i + 1 > max)
			return false;
	}
	return true;
}

bool spec_flow_name_valid_committed(const char *name)
{
	size_t i;

	if (name == NULL || name[0] == '\0')
		return false;
	for (i = 0; name[i] != '\0'; i++) {
		if (i >= NAME_MAX_BYTES)
			return false;
		if (!name_char(name[i]) && name[i] != '.' && name[i] != '-')
			return false;
	}
	return true;
}

bool spec_flow_name_valid(const char *name)
{
	/* "." and ".." are path segments to every proxy that normalizes a
	 * URL (RFC 3986 section 5.2.4), so /v1/flows/.. would not reach us
	 * as written. */
	return spec_flow_name_valid_committed(name) && strcmp(name, ".") != 0 &&
	       strcmp(name, "..") != 0;
}

/* ---- Projects and branches (docs/lifecycle.md) ---- */

static bool word_valid(const char *s, size_t n)
{
	if (n == 0 || n > SPEC_PROJECT_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!name_char(s[i]) && s[i] != '-')
			return false;
	return true;
}

bool spec_project_name_valid(const char *s)
{
	return s != NULL && word_valid(s, strlen(s));
}

bool spec_branch_name_valid(const char *s)
{
	if (s == NULL)
		return false;
	if (strcmp(s, "main") == 0 || strcmp(s, "prod") == 0)
		return true;
	if (strncmp(s, "test.", 5) == 0)
		return word_valid(s + 5, strlen(s + 5));
	if (strncmp(s, "user.", 5) == 0)
		return word_valid(s + 5, strlen(s + 5));
	return false;
}

bool spec_branch_is_prod(const char *branch)
{
	return branch != NULL && strcmp(branch, "prod") == 0;
}

int spec_flow_key(const char *project, const char *branch, const char *flow,
		  char *out, size_t n)
{
	int len;

	if (project == NULL || strcmp(project, "default") == 0) {
		if (branch == NULL || strcmp(branch, "main") == 0)
			len = snprintf(out, n, "%s", flow);
		else
			len = snprintf(out, n, "default/%s/%s", branch, flow);
	} else {
		len = snprintf(out, n, "%s/%s/%s", project,
			       branch ? branch : "main", flow);
	}
	return len < 0 || (size_t)len >= n ? -1 : 0;
}

void spec_flow_key_split(const char *key, struct spec_flow_key *out)
{
	const char *a = strchr(key, '/'), *b = a ? strchr(a + 1, '/') : NULL;

	if (a == NULL || b == NULL) {
		snprintf(out->project, sizeof out->project, "default");
		snprintf(out->branch, sizeof out->branch, "main");
		out->flow = key;
		return;
	}
	snprintf(out->project, sizeof out->project, "%.*s", (int)(a - key), key);
	snprintf(out->branch, sizeof out->branch, "%.*s", (int)(b - a - 1),
		 a + 1);
	out->flow = b + 1;
}

bool spec_flow_key_valid(const char *key)
{
	struct spec_flow_key k;
	char again[SPEC_FLOW_KEY_MAX];

	if (key == NULL || strlen(key) >= SPEC_FLOW_KEY_MAX)
		return false;
	spec_flow_key_split(key, &k);
	/* one spelling per flow: default/main is the bare name */
	return spec_flow_name_valid_committed(k.flow) &&
	       spec_project_name_valid(k.project) &&
	       spec_branch_name_valid(k.branch) &&
	       spec_flow_key(k.project, k.branch, k.flow, again,
			     sizeof again) == 0 &&
	       strcmp(again, key) == 0;
}

/* The rule for a name inside a spec: committed specs (SPEC_PARSE_APPLY) keep
 * the rule they were accepted under, or a snapshot would not load. */
static bool spec_name_ok(const struct ctx *c, const char *name)
{
	return (c->flags & SPEC_PARSE_APPLY)
		   ? spec_flow_name_valid_committed(name)
		   : spec_flow_name_valid(name);
}

/* Fails with "unknown_field" at the first key of `obj` not in `known`. */
static int check_keys(struct ctx *c, const json_t *obj,
		      const char *const known[], const char *prefix)
{
	char field[PATH_LEN];
	const char *key;
	json_t *value;
	size_t i;

	json_object_foreach((json_t *)obj, key, value) {
		for (i = 0; known[i] != NULL; i++)
			if (strcmp(key, known[i]) == 0)
				break;
		if (known[i] == NULL) {
			path_key(field, prefix, key);
			return fail(c, FLOWD_E_INVALID, "unknown_field", field,
				    "unknown field \"%.*s\"",
				    flowd_error_quote_len(key, 64), key);
		}
	}
	return 0;
}

static int get_string(struct ctx *c, const json_t *v, const char *field,
		      const char **out)
{
	size_t len;

	if (!json_is_string(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", field,
			    "must be a string");
	len = json_string_length(v);
	if (len > c->lim->max_string_bytes)
		return fail(c, FLOWD_E_INVALID, "too_long", field,
			    "string of %zu bytes is over the limit of %zu", len,
			    c->lim->max_string_bytes);
	if (strlen(json_string_value(v)) != len)
		return fail(c, FLOWD_E_INVALID, "invalid_value", field,
			    "must not contain a NUL character");
	*out = json_string_value(v);
	return 0;
}

static int get_uint(struct ctx *c, const json_t *v, const char *field,
		    unsigned lo, unsigned hi, unsigned *out)
{
	json_int_t n;

	if (!json_is_integer(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", field,
			    "must be an integer");
	n = json_integer_value(v);
	if (n < (json_int_t)lo || n > (json_int_t)hi)
		return fail(c, FLOWD_E_INVALID, "invalid_value", field,
			    "must be between %u and %u", lo, hi);
	*out = (unsigned)n;
	return 0;
}

/* Every string (and object key) inside `v` fits max_string_bytes. */
static int check_nested_strings(struct ctx *c, const json_t *v,
				const char *field)
{
	const char *key;
	json_t *item;
	size_t i;

	switch (json_typeof(v)) {
	case JSON_STRING:
		if (json_string_length(v) > c->lim->max_string_bytes)
			return fail(c, FLOWD_E_INVALID, "too_long", field,
				    "a string is over the limit of %zu bytes",
				    c->lim->max_string_bytes);
		return 0;
	case JSON_ARRAY:
		json_array_foreach(v, i, item)
			if (check_nested_strings(c, item, field) < 0)
				return -1;
		return 0;
	case JSON_OBJECT:
		json_object_foreach((json_t *)v, key, item) {
			if (strlen(key) > c->lim->max_string_bytes)
				return fail(c, FLOWD_E_INVALID, "too_long",
					    field,
					    "a key is over the limit of "
					    "%zu bytes",
					    c->lim->max_string_bytes);
			if (check_nested_strings(c, item, field) < 0)
				return -1;
		}
		return 0;
	default:
		return 0;
	}
}

static bool value_has_type(enum spec_param_type type, const json_t *v)
{
	switch (type) {
	case SPEC_PARAM_STRING:
		return json_is_string(v);
	case SPEC_PARAM_INT:
		return json_is_integer(v);
	case SPEC_PARAM_FLOAT:
		return json_is_number(v);
	case SPEC_PARAM_BOOL:
		return json_is_boolean(v);
	case SPEC_PARAM_JSON:
		return true;
	}
	return false;
}

/* A new reference to `v` in its normal form: an integer given for a float
 * becomes a real; everything else is deep-copied. NULL on OOM. */
static json_t *normalize_value(enum spec_param_type type, const json_t *v)
{
	if (type == SPEC_PARAM_FLOAT && json_is_integer(v))
		return json_real((double)json_integer_value(v));
	return json_deep_copy(v);
}

/* -------------------------------------------------------------- freeing */

static void free_strv(char **v)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

static void step_release(struct spec_step *s)
{
	free(s->name);
	free_strv(s->argv);
	free(s->shell);
	free_strv(s->env);
	free(s->deps);
	free(s->workdir);
}

static void triggers_free(struct flow_spec *spec);
static int parse_tags(struct ctx *c, const json_t *doc, struct flow_spec *spec);

void spec_free(struct flow_spec *spec)
{
	size_t i;

	if (spec == NULL)
		return;
	/* refs counts the holders beyond the first: 0 means we are the last */
	if (__atomic_fetch_sub(&spec->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	free(spec->description);
	json_decref(spec->tags);
	for (i = 0; i < spec->n_params; i++) {
		free(spec->params[i].name);
		json_decref(spec->params[i].default_value);
		free(spec->params[i].description);
	}
	free(spec->params);
	for (i = 0; i < spec->n_steps; i++)
		step_release(&spec->steps[i]);
	free(spec->steps);
	triggers_free(spec);
	json_decref(spec->doc);
	free(spec->doc_text);
	free(spec);
}

struct flow_spec *spec_ref(struct flow_spec *spec)
{
	__atomic_fetch_add(&spec->refs, 1, __ATOMIC_RELAXED);
	return spec;
}

void spec_drop_doc(struct flow_spec *spec)
{
	json_decref(spec->doc);
	spec->doc = NULL;
}

json_t *spec_doc(const struct flow_spec *spec)
{
	if (spec->doc != NULL)
		return json_incref(spec->doc);
	return json_loads(spec->doc_text, 0, NULL);
}

/* ----------------------------------------------------------- parameters */

static int parse_param(struct ctx *c, const char *name, const json_t *v,
		       struct spec_param *p, json_t *jparams)
{
	char prefix[PATH_LEN], field[PATH_LEN];
	const char *tname, *desc = "";
	const json_t *jt, *jdef, *jreq, *jdesc;
	json_t *jp;
	size_t t;

	path_fmt(prefix, "parameters.%s", name);
	if (strlen(name) > c->lim->max_string_bytes)
		return fail(c, FLOWD_E_INVALID, "too_long", prefix,
			    "parameter name is over the limit of %zu bytes",
			    c->lim->max_string_bytes);
	if (!env_name_valid(name, NAME_MAX_BYTES))
		return fail(c, FLOWD_E_INVALID, "invalid_value", prefix,
			    "parameter name must match "
			    "[A-Za-z_][A-Za-z0-9_]{0,127}");
	if (!json_is_object(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", prefix,
			    "must be an object");
	if (check_keys(c, v, param_keys, prefix) < 0)
		return -1;

	path_key(field, prefix, "type");
	jt = json_object_get(v, "type");
	if (jt == NULL)
		return fail(c, FLOWD_E_INVALID, "missing_field", field,
			    "a parameter needs a type");
	if (get_string(c, jt, field, &tname) < 0)
		return -1;
	for (t = 0; t < sizeof type_names / sizeof type_names[0]; t++)
		if (strcmp(tname, type_names[t]) == 0)
			break;
	if (t == sizeof type_names / sizeof type_names[0])
		return fail(c, FLOWD_E_INVALID, "invalid_value", field,
			    "must be one of string, int, float, bool, json");
	p->type = (enum spec_param_type)t;

	jreq = json_object_get(v, "required");
	if (jreq != NULL) {
		path_key(field, prefix, "required");
		if (!json_is_boolean(jreq))
			return fail(c, FLOWD_E_INVALID, "invalid_type", field,
				    "must be true or false");
		p->required = json_is_true(jreq);
	}

	jdef = json_object_get(v, "default");
	if (jdef != NULL) {
		path_key(field, prefix, "default");
		if (p->required)
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "a required parameter cannot have a "
				    "default");
		if (!value_has_type(p->type, jdef))
			return fail(c, FLOWD_E_INVALID, "invalid_type", field,
				    "default must be of type %s", tname);
		if (check_nested_strings(c, jdef, field) < 0)
			return -1;
		if (compact_size(jdef) > c->lim->max_param_bytes)
			return fail(c, FLOWD_E_INVALID, "too_long", field,
				    "default is over the limit of %zu bytes",
				    c->lim->max_param_bytes);
	}

	jdesc = json_object_get(v, "description");
	if (jdesc != NULL) {
		path_key(field, prefix, "description");
		if (get_string(c, jdesc, field, &desc) < 0)
			return -1;
	}

	p->name = strdup(name);
	p->description = strdup(desc);
	if (p->name == NULL || p->description == NULL)
		return oom(c->err);
	if (jdef != NULL) {
		p->default_value = normalize_value(p->type, jdef);
		if (p->default_value == NULL)
			return oom(c->err);
	}

	jp = json_object();
	if (set_new(jparams, name, jp) < 0 ||
	    set_new(jp, "type", json_string(type_names[p->type])) < 0 ||
	    set_new(jp, "required", json_boolean(p->required)) < 0 ||
	    (p->default_value != NULL &&
	     json_object_set(jp, "default", p->default_value) < 0) ||
	    set_new(jp, "description", json_string(p->description)) < 0)
		return oom(c->err);
	return 0;
}

static int parse_params(struct ctx *c, const json_t *v, struct flow_spec *spec,
			json_t *jparams)
{
	const char **keys;
	size_t n, i;
	int rc = -1;

	if (v == NULL)
		return 0;
	if (!json_is_object(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", "parameters",
			    "must be an object");
	if (json_object_size(v) > c->lim->max_params_per_flow)
		return fail(c, FLOWD_E_INVALID, "invalid_value", "parameters",
			    "at most %u parameters",
			    c->lim->max_params_per_flow);
	keys = sorted_keys(v, &n);
	if (keys == NULL)
		return oom(c->err);
	spec->params = calloc(n + 1, sizeof *spec->params);
	if (spec->params == NULL) {
		oom(c->err);
		goto out_keys;
	}
	for (i = 0; i < n; i++) {
		/* counted first, so spec_free() frees a half-built one */
		spec->n_params = i + 1;
		if (parse_param(c, keys[i], json_object_get(v, keys[i]),
				&spec->params[i], jparams) < 0)
			goto out_keys;
	}
	rc = 0;
out_keys:
	free(keys);
	return rc;
}

/* ---------------------------------------------------------------- steps */

static int parse_command(struct ctx *c, const json_t *v, const char *prefix,
			 struct spec_step *s, json_t *jstep)
{
	char field[PATH_LEN];
	const char *arg;
	json_t *jcmd, *item;
	size_t i, n;

	path_key(field, prefix, "command");
	if (!json_is_array(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", field,
			    "must be an array of strings");
	n = json_array_size(v);
	if (n == 0)
		return fail(c, FLOWD_E_INVALID, "invalid_value", field,
			    "must not be empty");
	if (n > c->lim->max_argv)
		return fail(c, FLOWD_E_INVALID, "invalid_value", field,
			    "at most %u elements", c->lim->max_argv);
	s->argv = calloc(n + 1, sizeof *s->argv);
	jcmd = json_array();
	if (s->argv == NULL || set_new(jstep, "command", jcmd) < 0)
		return oom(c->err);
	json_array_foreach(v, i, item) {
		path_fmt(field, "%s.command[%zu]", prefix, i);
		if (get_string(c, item, field, &arg) < 0)
			return -1;
		if (i == 0 && arg[0] == '\0')
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "the program must not be empty");
		s->argv[i] = strdup(arg);
		if (s->argv[i] == NULL ||
		    append_new(jcmd, json_string(arg)) < 0)
			return oom(c->err);
		s->argc = i + 1;
	}
	return 0;
}

static int cmp_env(const void *a, const void *b)
{
	const char *x = *(const char *const *)a, *y = *(const char *const *)b;
	size_t nx = strcspn(x, "="), ny = strcspn(y, "=");
	int r = strncmp(x, y, nx < ny ? nx : ny);

	if (r != 0)
		return r;
	return (nx > ny) - (nx < ny);
}

static int parse_env(struct ctx *c, const json_t *v, const char *prefix,
		     struct spec_step *s, json_t *jstep)
{
	char field[PATH_LEN];
	const char *key, *val;
	json_t *jenv, *item;
	size_t n, i = 0, klen;

	jenv = json_object();
	if (set_new(jstep, "env", jenv) < 0)
		return oom(c->err);
	if (v == NULL) {
		s->env = calloc(1, sizeof *s->env);
		return s->env == NULL ? oom(c->err) : 0;
	}
	path_key(field, prefix, "env");
	if (!json_is_object(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", field,
			    "must be an object of strings");
	n = json_object_size(v);
	if (n > c->lim->max_env_per_step)
		return fail(c, FLOWD_E_INVALID, "invalid_value", field,
			    "at most %u variables", c->lim->max_env_per_step);
	s->env = calloc(n + 1, sizeof *s->env);
	if (s->env == NULL)
		return oom(c->err);
	json_object_foreach((json_t *)v, key, item) {
		path_fmt(field, "%s.env.%s", prefix, key);
		klen = strlen(key);
		if (klen > c->lim->max_string_bytes)
			return fail(c, FLOWD_E_INVALID, "too_long", field,
				    "name is over the limit of %zu bytes",
				    c->lim->max_string_bytes);
		if (!env_name_valid(key, 0))
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "name must match [A-Za-z_][A-Za-z0-9_]*");
		if (strncmp(key, ENV_RESERVED_PREFIX,
			    strlen(ENV_RESERVED_PREFIX)) == 0)
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "names starting with " ENV_RESERVED_PREFIX
				    " are reserved");
		if (get_string(c, item, field, &val) < 0)
			return -1;
		if (asprintf(&s->env[i], "%s=%s", key, val) < 0) {
			s->env[i] = NULL;
			return oom(c->err);
		}
		s->n_env = ++i;
		if (set_new(jenv, key, json_string(val)) < 0)
			return oom(c->err);
	}
	qsort(s->env, s->n_env, sizeof *s->env, cmp_env);
	return 0;
}

static int parse_depends(struct ctx *c, const json_t *v, const char *prefix,
			 struct spec_step *s, json_t *jstep)
{
	char field[PATH_LEN];
	const char *dep;
	json_t *jdeps, *item;
	size_t n, i, j;

	jdeps = json_array();
	if (set_new(jstep, "depends_on", jdeps) < 0)
		return oom(c->err);
	n = 0;
	if (v != NULL) {
		path_key(field, prefix, "depends_on");
		if (!json_is_array(v))
			return fail(c, FLOWD_E_INVALID, "invalid_type", field,
				    "must be an array of step names");
		n = json_array_size(v);
		if (n > c->lim->max_deps_per_step)
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "at most %u dependencies",
				    c->lim->max_deps_per_step);
	}
	/* indices are filled in by resolve_deps() once every step is known */
	s->deps = calloc(n + 1, sizeof *s->deps);
	if (s->deps == NULL)
		return oom(c->err);
	s->n_deps = n;
	for (i = 0; i < n; i++) {
		item = json_array_get(v, i);
		path_fmt(field, "%s.depends_on[%zu]", prefix, i);
		if (get_string(c, item, field, &dep) < 0)
			return -1;
		for (j = 0; j < i; j++)
			if (strcmp(dep, json_string_value(
					     json_array_get(v, j))) == 0)
				return fail(c, FLOWD_E_INVALID, "duplicate",
					    field, "\"%.*s\" is listed twice",
					    flowd_error_quote_len(dep, 64),
					    dep);
		if (append_new(jdeps, json_string(dep)) < 0)
			return oom(c->err);
	}
	return 0;
}

static int parse_retries(struct ctx *c, const json_t *v, const char *prefix,
			 struct spec_step *s, json_t *jstep)
{
	char rprefix[PATH_LEN], field[PATH_LEN];
	const json_t *jmax, *jb, *jmb;
	unsigned lim_b = c->lim->max_backoff_s;
	json_t *jr;

	s->retries_max = 0;
	s->backoff_s = DEFAULT_BACKOFF_S < lim_b ? DEFAULT_BACKOFF_S : lim_b;
	s->max_backoff_s = DEFAULT_MAX_BACKOFF_S < lim_b ?
				   DEFAULT_MAX_BACKOFF_S : lim_b;
	if (v != NULL) {
		path_key(rprefix, prefix, "retries");
		if (!json_is_object(v))
			return fail(c, FLOWD_E_INVALID, "invalid_type", rprefix,
				    "must be an object");
		if (check_keys(c, v, retries_keys, rprefix) < 0)
			return -1;
		jmax = json_object_get(v, "max");
		jb = json_object_get(v, "backoff_s");
		jmb = json_object_get(v, "max_backoff_s");
		path_key(field, rprefix, "max");
		if (jmax != NULL && get_uint(c, jmax, field, 0,
					     c->lim->max_retries,
					     &s->retries_max) < 0)
			return -1;
		path_key(field, rprefix, "backoff_s");
		if (jb != NULL &&
		    get_uint(c, jb, field, 0, lim_b, &s->backoff_s) < 0)
			return -1;
		path_key(field, rprefix, "max_backoff_s");
		if (jmb != NULL &&
		    get_uint(c, jmb, field, 0, lim_b, &s->max_backoff_s) < 0)
			return -1;
		if (s->max_backoff_s < s->backoff_s) {
			path_key(field, rprefix,
				 jmb != NULL ? "max_backoff_s" : "backoff_s");
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "max_backoff_s (%u) must not be below "
				    "backoff_s (%u)",
				    s->max_backoff_s, s->backoff_s);
		}
	}
	jr = json_object();
	if (set_new(jstep, "retries", jr) < 0 ||
	    set_new(jr, "max", json_integer(s->retries_max)) < 0 ||
	    set_new(jr, "backoff_s", json_integer(s->backoff_s)) < 0 ||
	    set_new(jr, "max_backoff_s", json_integer(s->max_backoff_s)) < 0)
		return oom(c->err);
	return 0;
}

static int parse_step(struct ctx *c, const json_t *v, size_t idx,
		      struct flow_spec *spec, json_t *jsteps)
{
	struct spec_step *s = &spec->steps[idx];
	char prefix[PATH_LEN], field[PATH_LEN];
	const json_t *jname, *jcmd, *jsh, *jt, *jwd;
	const char *name, *str;
	json_t *jstep;
	size_t j;

	path_fmt(prefix, "steps[%zu]", idx);
	if (!json_is_object(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", prefix,
			    "a step must be an object");
	if (check_keys(c, v, step_keys, prefix) < 0)
		return -1;
	jstep = json_object();
	if (append_new(jsteps, jstep) < 0)
		return oom(c->err);

	path_key(field, prefix, "name");
	jname = json_object_get(v, "name");
	if (jname == NULL)
		return fail(c, FLOWD_E_INVALID, "missing_field", field,
			    "a step needs a name");
	if (get_string(c, jname, field, &name) < 0)
		return -1;
	if (!spec_name_ok(c, name))
		return fail(c, FLOWD_E_INVALID, "invalid_value", field,
			    "step name must match [A-Za-z0-9_.-]{1,128}, "
			    "and not be . or ..");
	for (j = 0; j < idx; j++)
		if (strcmp(spec->steps[j].name, name) == 0)
			return fail(c, FLOWD_E_INVALID, "duplicate", field,
				    "step name \"%s\" is already used by "
				    "steps[%zu]",
				    name, j);
	s->name = strdup(name);
	if (s->name == NULL || set_new(jstep, "name", json_string(name)) < 0)
		return oom(c->err);

	jcmd = json_object_get(v, "command");
	jsh = json_object_get(v, "shell");
	if (jcmd != NULL && jsh != NULL) {
		path_key(field, prefix, "shell");
		return fail(c, FLOWD_E_INVALID, "invalid_value", field,
			    "a step has either command or shell, not both");
	}
	if (jcmd == NULL && jsh == NULL) {
		path_key(field, prefix, "command");
		return fail(c, FLOWD_E_INVALID, "missing_field", field,
			    "a step needs command or shell");
	}
	if (jcmd != NULL) {
		if (parse_command(c, jcmd, prefix, s, jstep) < 0)
			return -1;
	} else {
		path_key(field, prefix, "shell");
		if (get_string(c, jsh, field, &str) < 0)
			return -1;
		if (str[0] == '\0')
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "must not be empty");
		s->shell = strdup(str);
		if (s->shell == NULL ||
		    set_new(jstep, "shell", json_string(str)) < 0)
			return oom(c->err);
	}

	if (parse_env(c, json_object_get(v, "env"), prefix, s, jstep) < 0 ||
	    parse_depends(c, json_object_get(v, "depends_on"), prefix, s,
			  jstep) < 0 ||
	    parse_retries(c, json_object_get(v, "retries"), prefix, s,
			  jstep) < 0)
		return -1;

	s->timeout_s = c->lim->default_timeout_s;
	jt = json_object_get(v, "timeout_s");
	path_key(field, prefix, "timeout_s");
	if (jt != NULL && get_uint(c, jt, field, 1, c->lim->max_timeout_s,
				   &s->timeout_s) < 0)
		return -1;
	if (set_new(jstep, "timeout_s", json_integer(s->timeout_s)) < 0)
		return oom(c->err);

	jwd = json_object_get(v, "workdir");
	if (jwd != NULL) {
		path_key(field, prefix, "workdir");
		if (get_string(c, jwd, field, &str) < 0)
			return -1;
		if (str[0] != '/')
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "must be an absolute path");
		s->workdir = strdup(str);
		if (s->workdir == NULL ||
		    set_new(jstep, "workdir", json_string(str)) < 0)
			return oom(c->err);
	}
	return 0;
}

static int parse_steps(struct ctx *c, const json_t *v, struct flow_spec *spec,
		       json_t *jsteps)
{
	size_t n, i;

	if (v == NULL)
		return fail(c, FLOWD_E_INVALID, "missing_field", "steps",
			    "a flow needs steps");
	if (!json_is_array(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", "steps",
			    "must be an array of steps");
	n = json_array_size(v);
	if (n == 0)
		return fail(c, FLOWD_E_INVALID, "invalid_value", "steps",
			    "a flow needs at least one step");
	if (n > c->lim->max_steps_per_flow)
		return fail(c, FLOWD_E_INVALID, "invalid_value", "steps",
			    "at most %u steps", c->lim->max_steps_per_flow);
	spec->steps = calloc(n, sizeof *spec->steps);
	if (spec->steps == NULL)
		return oom(c->err);
	for (i = 0; i < n; i++) {
		/* counted first, so spec_free() frees a half-built one */
		spec->n_steps = i + 1;
		if (parse_step(c, json_array_get(v, i), i, spec, jsteps) < 0)
			return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------- graph */

static int cmp_step_ptr(const void *a, const void *b)
{
	const struct spec_step *x = *(const struct spec_step *const *)a;
	const struct spec_step *y = *(const struct spec_step *const *)b;

	return strcmp(x->name, y->name);
}

/* Turn every depends_on name into an index, in document order. */
static int resolve_deps(struct ctx *c, const json_t *jsteps,
			struct flow_spec *spec)
{
	struct spec_step **by_name, key, *keyp = &key, **hit;
	char field[PATH_LEN];
	const json_t *jdeps;
	size_t i, j;
	int rc = -1;

	by_name = malloc(spec->n_steps * sizeof *by_name);
	if (by_name == NULL)
		return oom(c->err);
	for (i = 0; i < spec->n_steps; i++)
		by_name[i] = &spec->steps[i];
	qsort(by_name, spec->n_steps, sizeof *by_name, cmp_step_ptr);
	for (i = 0; i < spec->n_steps; i++) {
		jdeps = json_object_get(json_array_get(jsteps, i),
					"depends_on");
		for (j = 0; j < spec->steps[i].n_deps; j++) {
			key.name = (char *)json_string_value(
				json_array_get(jdeps, j));
			hit = bsearch(&keyp, by_name, spec->n_steps,
				      sizeof *by_name, cmp_step_ptr);
			if (hit == NULL) {
				path_fmt(field, "steps[%zu].depends_on[%zu]",
					 i, j);
				fail(c, FLOWD_E_INVALID, "unknown_dependency",
				     field, "no step is named \"%.*s\"",
				     flowd_error_quote_len(key.name, 64),
				     key.name);
				goto out;
			}
			spec->steps[i].deps[j] = (size_t)(*hit - spec->steps);
		}
	}
	rc = 0;
out:
	free(by_name);
	return rc;
}

/* Called when Kahn's algorithm left steps with unmet dependencies (those
 * with indeg[i] > 0). Every such step has at least one such dependency, so
 * following them from any of them must come back to a step already seen:
 * that loop is a cycle. Reports it starting at its lowest index. */
static int report_cycle(struct ctx *c, const struct flow_spec *spec,
			const size_t *indeg)
{
	char field[PATH_LEN], msg[sizeof c->err->message];
	size_t n = spec->n_steps, *pos, *path, u, k = 0, j, first, low, len;
	size_t off;

	pos = malloc(n * sizeof *pos);
	path = malloc(n * sizeof *path);
	if (pos == NULL || path == NULL) {
		oom(c->err);
		goto out;
	}
	for (u = 0; u < n; u++)
		pos[u] = SIZE_MAX;
	for (u = 0; indeg[u] == 0; u++)
		;
	while (pos[u] == SIZE_MAX) {
		pos[u] = k;
		path[k++] = u;
		for (j = 0; indeg[spec->steps[u].deps[j]] == 0; j++)
			;
		u = spec->steps[u].deps[j];
	}
	first = pos[u];
	len = k - first;
	low = first;
	for (j = first; j < k; j++)
		if (path[j] < path[low])
			low = j;

	off = (size_t)snprintf(msg, sizeof msg, "dependency cycle:");
	for (j = 0; j <= len && off < sizeof msg; j++) {
		u = path[first + (low - first + j) % len];
		off += (size_t)snprintf(msg + off, sizeof msg - off, "%s%s",
					j == 0 ? " " : " -> ",
					spec->steps[u].name);
	}
	path_fmt(field, "steps[%zu].depends_on", path[low]);
	fail(c, FLOWD_E_INVALID, "cycle", field, "%s", msg);
out:
	free(pos);
	free(path);
	return -1;
}

/* Kahn's algorithm: repeatedly take a step whose dependencies are all done;
 * whatever is never taken sits on, or downstream of, a cycle. */
static int check_acyclic(struct ctx *c, const struct flow_spec *spec)
{
	size_t n = spec->n_steps, *indeg, *start, *fill, *adj = NULL, *queue;
	size_t i, j, d, u, head = 0, tail = 0;
	int rc = -1;

	indeg = calloc(n, sizeof *indeg);
	start = calloc(n + 1, sizeof *start);
	fill = calloc(n, sizeof *fill);
	queue = malloc(n * sizeof *queue);
	if (indeg == NULL || start == NULL || fill == NULL || queue == NULL)
		goto out_oom;
	/* adj[start[d] .. start[d + 1]) lists the steps that depend on d */
	for (i = 0; i < n; i++)
		for (j = 0; j < spec->steps[i].n_deps; j++)
			start[spec->steps[i].deps[j] + 1]++;
	for (i = 0; i < n; i++)
		start[i + 1] += start[i];
	adj = malloc((start[n] + 1) * sizeof *adj);
	if (adj == NULL)
		goto out_oom;
	for (i = 0; i < n; i++) {
		indeg[i] = spec->steps[i].n_deps;
		if (indeg[i] == 0)
			queue[tail++] = i;
		for (j = 0; j < spec->steps[i].n_deps; j++) {
			d = spec->steps[i].deps[j];
			adj[start[d] + fill[d]++] = i;
		}
	}
	while (head < tail) {
		u = queue[head++];
		for (j = start[u]; j < start[u + 1]; j++)
			if (--indeg[adj[j]] == 0)
				queue[tail++] = adj[j];
	}
	if (tail < n)
		report_cycle(c, spec, indeg);
	else
		rc = 0;
	goto out;
out_oom:
	oom(c->err);
out:
	free(indeg);
	free(start);
	free(fill);
	free(queue);
	free(adj);
	return rc;
}

/* ------------------------------------------------------------- triggers */

static const char *const trigger_keys[] = {
	"schedules", "events", "on_finish", NULL
};
static const char *const schedule_keys[] = {
	"cron", "timezone", "dst_missing", "dst_repeated", "jitter_s",
	"catchup", "catchup_window_s", "overlap", "parameters", NULL
};
static const char *const event_keys[] = {
	"event", "filter", "all", "window_s", "reset", "reset_timezone",
	"parameters", "overlap", NULL
};
static const char *const event_match_keys[] = { "event", "filter", NULL };
static const char *const finish_keys[] = { "flow", "branch", "status",
					   "overlap", NULL };

static const char *const overlap_names[] = {
	"allow_all", "skip", "buffer_one", "buffer_all", "cancel_other",
	"terminate_other", NULL
};
static const char *const catchup_names[] = { "none", "latest", "all", NULL };
static const char *const missing_names[] = { "shift", "skip", NULL };
static const char *const repeated_names[] = { "once", "twice", NULL };
static const char *const finish_names[] = { "succeeded", "failed", "any", NULL };

#define DEFAULT_CATCHUP_WINDOW_S 3600

const char *spec_overlap_str(enum spec_overlap o)
{
	return overlap_names[o];
}

bool spec_event_name_valid(const char *name)
{
	size_t n = 0;

	for (; name[n] != '\0'; n++)
		if (!name_char(name[n]) || name[n] == '.')
			return false;
	return n >= 1 && n <= NAME_MAX_BYTES;
}

json_t *spec_path_get(json_t *root, const char *path)
{
	char part[NAME_MAX_BYTES + 1];
	const char *p = path;
	json_t *v = root;
	bool first = true;

	while (*p != '\0') {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);

		if (n == 0 || n > NAME_MAX_BYTES || !json_is_object(v))
			return NULL;
		memcpy(part, p, n);
		part[n] = '\0';
		v = json_object_get(v, part);
		if (v == NULL)
			return NULL;
		first = false;
		p += n + (dot != NULL);
		if (dot != NULL && *p == '\0')
			return NULL;
	}
	return first ? NULL : v;
}

/* A string that is one of names[] (NULL-terminated); `def` when absent. */
static int get_enum(struct ctx *c, const json_t *obj, const char *key,
		    const char *prefix, const char *const names[], int def,
		    int *out, json_t *jout)
{
	char field[PATH_LEN], list[160] = "";
	const json_t *v = json_object_get(obj, key);
	const char *str;
	int i;

	*out = def;
	if (v != NULL) {
		path_key(field, prefix, key);
		if (get_string(c, v, field, &str) < 0)
			return -1;
		for (i = 0; names[i] != NULL; i++)
			if (strcmp(str, names[i]) == 0)
				break;
		if (names[i] == NULL) {
			for (i = 0; names[i] != NULL; i++) {
				strcat(list, i ? ", " : "");
				strcat(list, names[i]);
			}
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "must be one of %s", list);
		}
		*out = i;
	}
	if (set_new(jout, key, json_string(names[*out])) < 0)
		return oom(c->err);
	return 0;
}

static int get_uint_default(struct ctx *c, const json_t *obj, const char *key,
			    const char *prefix, unsigned lo, unsigned hi,
			    unsigned def, unsigned *out, json_t *jout)
{
	char field[PATH_LEN];
	const json_t *v = json_object_get(obj, key);

	*out = def;
	path_key(field, prefix, key);
	if (v != NULL && get_uint(c, v, field, lo, hi, out) < 0)
		return -1;
	if (set_new(jout, key, json_integer(*out)) < 0)
		return oom(c->err);
	return 0;
}

static int get_cron(struct ctx *c, const json_t *v, const char *field,
		    struct cron *cron, const char **text)
{
	char why[200];

	if (v == NULL)
		return fail(c, FLOWD_E_INVALID, "missing_field", field,
			    "a cron expression is required");
	if (get_string(c, v, field, text) < 0)
		return -1;
	if (cron_parse(*text, cron, why, sizeof why) != 0)
		return fail(c, FLOWD_E_INVALID, "invalid_value", field, "%s",
			    why);
	return 0;
}

static int get_zone(struct ctx *c, const json_t *obj, const char *key,
		    const char *prefix, const struct tz **zone,
		    const char **name, json_t *jout)
{
	char field[PATH_LEN];
	const json_t *v = json_object_get(obj, key);

	*name = "UTC";
	path_key(field, prefix, key);
	if (v != NULL && get_string(c, v, field, name) < 0)
		return -1;
	*zone = tz_get(*name);
	if (*zone == NULL && (c->flags & SPEC_PARSE_APPLY) &&
	    tz_name_valid(*name)) {
		log_warn("spec: time zone %.64s is not in this node's tzdata; "
			 "its schedules use UTC here", *name);
	} else if (*zone == NULL)
		return fail(c, FLOWD_E_INVALID, "invalid_value", field,
			    "unknown time zone \"%.*s\" (an IANA name such "
			    "as Europe/Berlin, from the system tzdata)",
			    flowd_error_quote_len(*name, 64), *name);
	if (set_new(jout, key, json_string(*name)) < 0)
		return oom(c->err);
	return 0;
}

/* parameters of a schedule: constant values, checked against the spec. */
static int parse_schedule_params(struct ctx *c, const json_t *v,
				 const char *prefix, struct flow_spec *spec,
				 struct spec_schedule *sc, json_t *jout)
{
	char field[PATH_LEN];
	json_t *resolved = NULL;

	if (v == NULL)
		return 0;
	path_key(field, prefix, "parameters");
	if (!json_is_object(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", field,
			    "must be an object");
	if (spec_params_resolve(spec, v, c->lim, &resolved, c->err) != 0) {
		char outer[PATH_LEN];

		/* set again: the longer path is cut where UTF-8 allows */
		path_fmt(outer, "%s.%s", prefix, c->err->field);
		return flowd_error_set(c->err, c->err->errc, c->err->code,
				       outer, "%s", c->err->message);
	}
	json_decref(resolved);
	sc->parameters = json_deep_copy(v);
	if (sc->parameters == NULL ||
	    json_object_set(jout, "parameters", sc->parameters) < 0)
		return oom(c->err);
	return 0;
}

static int parse_schedule(struct ctx *c, const json_t *v, size_t i,
			  struct flow_spec *spec, json_t *jarr)
{
	struct spec_schedule *sc = &spec->schedules[i];
	char prefix[PATH_LEN], field[PATH_LEN];
	const char *expr, *zone;
	json_t *js = json_object();
	int e;

	if (js == NULL || append_new(jarr, js) < 0)
		return oom(c->err);
	path_fmt(prefix, "triggers.schedules[%zu]", i);
	if (!json_is_object(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", prefix,
			    "must be an object");
	if (check_keys(c, v, schedule_keys, prefix) < 0)
		return -1;
	path_key(field, prefix, "cron");
	if (get_cron(c, json_object_get(v, "cron"), field, &sc->cron,
		     &expr) < 0)
		return -1;
	if ((sc->expr = strdup(expr)) == NULL ||
	    set_new(js, "cron", json_string(expr)) < 0)
		return oom(c->err);
	if (get_zone(c, v, "timezone", prefix, &sc->tz, &zone, js) < 0)
		return -1;
	if ((sc->timezone = strdup(zone)) == NULL)
		return oom(c->err);
	if (get_enum(c, v, "dst_missing", prefix, missing_names, 0, &e, js) < 0)
		return -1;
	sc->dst_missing = (enum cron_dst_missing)e;
	if (get_enum(c, v, "dst_repeated", prefix, repeated_names, 0, &e, js) < 0)
		return -1;
	sc->dst_repeated = (enum cron_dst_repeated)e;
	if (get_uint_default(c, v, "jitter_s", prefix, 0, c->lim->max_jitter_s,
			     0, &sc->jitter_s, js) < 0)
		return -1;
	if (sc->jitter_s > 0 && !(c->flags & SPEC_PARSE_APPLY)) {
		/* A fire delayed past the next tick would make that tick look
		 * late. The shortest gap among 64 ticks from a fixed instant
		 * (2001-01-01) stands for the schedule's period. */
		int64_t t = 978307200, next, gap = INT64_MAX;

		for (int k = 0; k < 64 && cron_next(&sc->cron, sc->tz,
						     sc->dst_missing,
						     sc->dst_repeated, t, &next);
		     k++) {
			if (k > 0 && next - t < gap)
				gap = next - t;
			t = next;
		}
		if ((int64_t)sc->jitter_s >= gap) {
			path_key(field, prefix, "jitter_s");
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "must be shorter than the time between two "
				    "ticks (%lld s)",
				    (long long)gap);
		}
	}
	if (get_enum(c, v, "catchup", prefix, catchup_names,
		     SPEC_CATCHUP_LATEST, &e, js) < 0)
		return -1;
	sc->catchup = (enum spec_catchup)e;
	if (get_uint_default(c, v, "catchup_window_s", prefix, 0,
			     c->lim->max_catchup_window_s,
			     DEFAULT_CATCHUP_WINDOW_S < c->lim->max_catchup_window_s
				     ? DEFAULT_CATCHUP_WINDOW_S
				     : c->lim->max_catchup_window_s,
			     &sc->catchup_window_s, js) < 0)
		return -1;
	if (get_enum(c, v, "overlap", prefix, overlap_names, 0, &e, js) < 0)
		return -1;
	sc->overlap = (enum spec_overlap)e;
	if (parse_schedule_params(c, json_object_get(v, "parameters"), prefix,
				  spec, sc, js) < 0)
		return -1;
	if (asprintf(&sc->key, "%s\x1f%s\x1f%d\x1f%d", sc->expr, sc->timezone,
		     (int)sc->dst_missing, (int)sc->dst_repeated) < 0) {
		sc->key = NULL;
		return oom(c->err);
	}
	return 0;
}

static int parse_event_match(struct ctx *c, const json_t *obj,
			     const char *prefix, struct spec_event_match *m,
			     json_t *jout)
{
	char field[PATH_LEN];
	const json_t *jname = json_object_get(obj, "event");
	const json_t *jfilter = json_object_get(obj, "filter");
	const char *name, *key;
	json_t *val;

	path_key(field, prefix, "event");
	if (jname == NULL)
		return fail(c, FLOWD_E_INVALID, "missing_field", field,
			    "an event trigger names its event");
	if (get_string(c, jname, field, &name) < 0)
		return -1;
	if (!spec_event_name_valid(name))
		return fail(c, FLOWD_E_INVALID, "invalid_value", field,
			    "an event name must match [A-Za-z0-9_-]{1,128}");
	m->name = strdup(name);
	if (m->name == NULL || set_new(jout, "event", json_string(name)) < 0)
		return oom(c->err);
	path_key(field, prefix, "filter");
	if (jfilter != NULL && !json_is_object(jfilter))
		return fail(c, FLOWD_E_INVALID, "invalid_type", field,
			    "must be an object of payload path -> value");
	if (jfilter != NULL && check_nested_strings(c, jfilter, field) < 0)
		return -1;
	m->filter = jfilter ? json_deep_copy(jfilter) : json_object();
	if (m->filter == NULL ||
	    json_object_set(jout, "filter", m->filter) < 0)
		return oom(c->err);
	json_object_foreach(m->filter, key, val) {
		const char *p = key;

		while (*p != '\0' && (name_char(*p) || *p == '.'))
			p++;
		if (*key == '\0' || *p != '\0' || key[strlen(key) - 1] == '.' ||
		    strstr(key, "..") != NULL || key[0] == '.') {
			path_key(field, prefix, "filter");
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "\"%.*s\" is not a payload path like "
				    "table or source.region",
				    flowd_error_quote_len(key, 64), key);
		}
	}
	return 0;
}

/* A parameter mapping path: "payload[.k...]", or for all-of triggers
 * "<event>.payload[.k...]" with <event> one of its events. */
static bool mapping_path_valid(const char *path,
			       const struct spec_event_trigger *t)
{
	const char *p = path;
	size_t i;

	if (t->n_events > 1) {
		for (i = 0; i < t->n_events; i++) {
			size_t n = strlen(t->events[i].name);
			if (strncmp(path, t->events[i].name, n) == 0 &&
			    path[n] == '.') {
				p = path + n + 1;
				break;
			}
		}
		if (i == t->n_events)
			return false;
	}
	if (strncmp(p, "payload", 7) != 0 || (p[7] != '\0' && p[7] != '.'))
		return false;
	for (p += 7; *p != '\0'; p++)
		if (!(name_char(*p) || *p == '.') ||
		    (*p == '.' && (p[1] == '.' || p[1] == '\0')))
			return false;
	return true;
}

static int parse_event_trigger(struct ctx *c, const json_t *v, size_t i,
			       struct flow_spec *spec, json_t *jarr)
{
	struct spec_event_trigger *t = &spec->events[i];
	char prefix[PATH_LEN], field[PATH_LEN], mprefix[PATH_LEN];
	const json_t *jall, *jmap, *jreset;
	json_t *je = json_object(), *jlist, *val;
	const char *key, *str;
	size_t k, n;
	int e;

	if (je == NULL || append_new(jarr, je) < 0)
		return oom(c->err);
	path_fmt(prefix, "triggers.events[%zu]", i);
	if (!json_is_object(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", prefix,
			    "must be an object");
	if (check_keys(c, v, event_keys, prefix) < 0)
		return -1;
	jall = json_object_get(v, "all");
	if (jall == NULL) {
		const char *const only[] = {"window_s", "reset",
					    "reset_timezone", NULL};
		for (k = 0; only[k] != NULL; k++) {
			if (json_object_get(v, only[k]) != NULL) {
				path_key(field, prefix, only[k]);
				return fail(c, FLOWD_E_INVALID, "invalid_value",
					    field,
					    "only an \"all\" trigger (several "
					    "events) has %s",
					    only[k]);
			}
		}
		t->events = calloc(1, sizeof *t->events);
		if (t->events == NULL)
			return oom(c->err);
		t->n_events = 1;
		if (parse_event_match(c, v, prefix, &t->events[0], je) < 0)
			return -1;
	} else {
		path_key(field, prefix, "all");
		if (json_object_get(v, "event") != NULL ||
		    json_object_get(v, "filter") != NULL)
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "use either event (one) or all (several), "
				    "not both");
		if (!json_is_array(jall))
			return fail(c, FLOWD_E_INVALID, "invalid_type", field,
				    "must be an array of {event, filter}");
		n = json_array_size(jall);
		if (n < 2 || n > 16)
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "an all-of trigger has 2 to 16 events");
		t->events = calloc(n, sizeof *t->events);
		jlist = json_array();
		if (t->events == NULL || jlist == NULL ||
		    set_new(je, "all", jlist) < 0)
			return oom(c->err);
		for (k = 0; k < n; k++) {
			const json_t *jm = json_array_get(jall, k);
			json_t *jo = json_object();

			path_fmt(mprefix, "%s.all[%zu]", prefix, k);
			if (jo == NULL || append_new(jlist, jo) < 0)
				return oom(c->err);
			if (!json_is_object(jm))
				return fail(c, FLOWD_E_INVALID, "invalid_type",
					    mprefix, "must be an object");
			/* counted first, so spec_free() frees what a failed
			 * match already holds (its name, its filter) */
			t->n_events = k + 1;
			if (check_keys(c, jm, event_match_keys, mprefix) < 0 ||
			    parse_event_match(c, jm, mprefix, &t->events[k],
					      jo) < 0)
				return -1;
			for (size_t j = 0; j < k; j++)
				if (strcmp(t->events[j].name,
					   t->events[k].name) == 0) {
					path_key(field, mprefix, "event");
					return fail(c, FLOWD_E_INVALID,
						    "duplicate", field,
						    "\"%.*s\" is listed twice",
						    flowd_error_quote_len(
							t->events[k].name, 64),
						    t->events[k].name);
				}
		}
		jreset = json_object_get(v, "reset");
		if (json_object_get(v, "window_s") == NULL && jreset == NULL) {
			path_key(field, prefix, "window_s");
			return fail(c, FLOWD_E_INVALID, "missing_field", field,
				    "an all-of trigger needs window_s or "
				    "reset (what closes its collection)");
		}
		if (get_uint_default(c, v, "window_s", prefix, 1,
				     c->lim->max_event_window_s,
				     c->lim->max_event_window_s, &t->window_s,
				     je) < 0)
			return -1;
		if (jreset != NULL) {
			const struct tz *z;

			path_key(field, prefix, "reset");
			if (get_cron(c, jreset, field, &t->reset_cron, &str) < 0)
				return -1;
			if ((t->reset = strdup(str)) == NULL ||
			    set_new(je, "reset", json_string(str)) < 0)
				return oom(c->err);
			if (get_zone(c, v, "reset_timezone", prefix, &z, &str,
				     je) < 0)
				return -1;
			t->reset_tz = z;
		}
	}
	jmap = json_object_get(v, "parameters");
	if (jmap != NULL) {
		char mfield[PATH_LEN];

		path_key(field, prefix, "parameters");
		if (!json_is_object(jmap))
			return fail(c, FLOWD_E_INVALID, "invalid_type", field,
				    "must be an object of parameter -> "
				    "payload path");
		json_object_foreach((json_t *)jmap, key, val) {
			size_t p;

			path_fmt(mfield, "%s.%s", field, key);
			for (p = 0; p < spec->n_params; p++)
				if (strcmp(spec->params[p].name, key) == 0)
					break;
			if (p == spec->n_params)
				return fail(
				    c, FLOWD_E_INVALID, "unknown_field", mfield,
				    "the flow has no parameter "
				    "\"%.*s\"",
				    flowd_error_quote_len(key, 64), key);
			if (get_string(c, val, mfield, &str) < 0)
				return -1;
			if (!mapping_path_valid(str, t))
				return fail(
				    c, FLOWD_E_INVALID, "invalid_value", mfield,
				    t->n_events > 1 ? "must be a path like "
						      "<event>.payload.key"
						    : "must be a path like "
						      "payload.key");
		}
		t->parameters = json_deep_copy(jmap);
		if (t->parameters == NULL ||
		    json_object_set(je, "parameters", t->parameters) < 0)
			return oom(c->err);
	}
	if (get_enum(c, v, "overlap", prefix, overlap_names, 0, &e, je) < 0)
		return -1;
	t->overlap = (enum spec_overlap)e;
	t->key = json_dumps(je, JSON_COMPACT | JSON_SORT_KEYS);
	if (t->key == NULL)
		return oom(c->err);
	return 0;
}

static int parse_on_finish(struct ctx *c, const json_t *v, size_t i,
			   struct flow_spec *spec, json_t *jarr)
{
	struct spec_on_finish *t = &spec->on_finish[i];
	char prefix[PATH_LEN], field[PATH_LEN];
	const json_t *jflow;
	const char *name;
	json_t *jo = json_object();
	int e;

	if (jo == NULL || append_new(jarr, jo) < 0)
		return oom(c->err);
	path_fmt(prefix, "triggers.on_finish[%zu]", i);
	if (!json_is_object(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", prefix,
			    "must be an object");
	if (check_keys(c, v, finish_keys, prefix) < 0)
		return -1;
	path_key(field, prefix, "flow");
	jflow = json_object_get(v, "flow");
	if (jflow == NULL)
		return fail(c, FLOWD_E_INVALID, "missing_field", field,
			    "names the upstream flow");
	if (get_string(c, jflow, field, &name) < 0)
		return -1;
	if (!spec_name_ok(c, name))
		return fail(c, FLOWD_E_INVALID, "invalid_value", field,
			    "a flow name must match [A-Za-z0-9_.-]{1,128}, "
			    "and not be . or ..");
	if ((t->flow = strdup(name)) == NULL ||
	    set_new(jo, "flow", json_string(name)) < 0)
		return oom(c->err);
	/* "branch": the upstream flow's branch in this flow's project, when
	 * not its own (docs/lifecycle.md) */
	if (json_object_get(v, "branch") != NULL) {
		path_key(field, prefix, "branch");
		if (get_string(c, json_object_get(v, "branch"), field, &name) < 0)
			return -1;
		if (!spec_branch_name_valid(name))
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "a branch is main, prod, test.<name> or "
				    "user.<name>");
		if ((t->branch = strdup(name)) == NULL ||
		    set_new(jo, "branch", json_string(name)) < 0)
			return oom(c->err);
	}
	if (get_enum(c, v, "status", prefix, finish_names, 0, &e, jo) < 0)
		return -1;
	t->status = (enum spec_finish_status)e;
	if (get_enum(c, v, "overlap", prefix, overlap_names, 0, &e, jo) < 0)
		return -1;
	t->overlap = (enum spec_overlap)e;
	return 0;
}

/* One of the trigger lists: an array of at most `room` objects. */
static int parse_trigger_list(struct ctx *c, const json_t *triggers,
			      const char *key, struct flow_spec *spec,
			      json_t *jtrig, unsigned *room, size_t elem,
			      void **arr, size_t *n,
			      int (*one)(struct ctx *, const json_t *, size_t,
					 struct flow_spec *, json_t *))
{
	char field[PATH_LEN];
	const json_t *v = json_object_get(triggers, key);
	json_t *jarr = json_array();
	size_t i, count;

	if (jarr == NULL || set_new(jtrig, key, jarr) < 0)
		return oom(c->err);
	if (v == NULL)
		return 0;
	path_fmt(field, "triggers.%s", key);
	if (!json_is_array(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", field,
			    "must be an array");
	count = json_array_size(v);
	if (count > *room)
		return fail(c, FLOWD_E_INVALID, "invalid_value", field,
			    "at most %u triggers per flow",
			    c->lim->max_triggers_per_flow);
	*room -= (unsigned)count;
	*arr = calloc(count + 1, elem);
	if (*arr == NULL)
		return oom(c->err);
	for (i = 0; i < count; i++) {
		*n = i + 1;
		if (one(c, json_array_get(v, i), i, spec, jarr) < 0)
			return -1;
	}
	return 0;
}

static int parse_triggers(struct ctx *c, const json_t *doc,
			  struct flow_spec *spec)
{
	const json_t *v = json_object_get(doc, "triggers");
	const json_t *jmax = json_object_get(doc, "max_active_runs");
	unsigned room = c->lim->max_triggers_per_flow;
	json_t *jtrig;

	if (jmax != NULL) {
		if (get_uint(c, jmax, "max_active_runs", 0,
			     c->lim->max_active_runs,
			     &spec->max_active_runs) < 0)
			return -1;
		if (set_new(spec->doc, "max_active_runs",
			    json_integer(spec->max_active_runs)) < 0)
			return oom(c->err);
	}
	if (v == NULL)
		return 0;
	if (!json_is_object(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", "triggers",
			    "must be an object");
	if (check_keys(c, v, trigger_keys, "triggers") < 0)
		return -1;
	jtrig = json_object();
	if (jtrig == NULL || set_new(spec->doc, "triggers", jtrig) < 0)
		return oom(c->err);
	if (parse_trigger_list(c, v, "schedules", spec, jtrig, &room,
			       sizeof *spec->schedules,
			       (void **)&spec->schedules, &spec->n_schedules,
			       parse_schedule) < 0 ||
	    parse_trigger_list(c, v, "events", spec, jtrig, &room,
			       sizeof *spec->events, (void **)&spec->events,
			       &spec->n_events, parse_event_trigger) < 0 ||
	    parse_trigger_list(c, v, "on_finish", spec, jtrig, &room,
			       sizeof *spec->on_finish,
			       (void **)&spec->on_finish, &spec->n_on_finish,
			       parse_on_finish) < 0)
		return -1;
	return 0;
}

static void triggers_free(struct flow_spec *spec)
{
	size_t i, k;

	for (i = 0; i < spec->n_schedules; i++) {
		free(spec->schedules[i].expr);
		free(spec->schedules[i].timezone);
		free(spec->schedules[i].key);
		json_decref(spec->schedules[i].parameters);
	}
	free(spec->schedules);
	for (i = 0; i < spec->n_events; i++) {
		struct spec_event_trigger *t = &spec->events[i];
		for (k = 0; k < t->n_events; k++) {
			free(t->events[k].name);
			json_decref(t->events[k].filter);
		}
		free(t->events);
		free(t->reset);
		free(t->key);
		json_decref(t->parameters);
	}
	free(spec->events);
	for (i = 0; i < spec->n_on_finish; i++) {
		free(spec->on_finish[i].flow);
		free(spec->on_finish[i].branch);
	}
	free(spec->on_finish);
}

/* ---------------------------------------------------------------- parse */

int spec_parse(const json_t *doc, const struct flowd_limits *lim,
	       struct flow_spec **out, struct flowd_error *err)
{
	return spec_parse_ex(doc, lim, 0, out, err);
}

int spec_parse_ex(const json_t *doc, const struct flowd_limits *lim,
		  unsigned flags, struct flow_spec **out,
		  struct flowd_error *err)
{
	struct ctx c = { .lim = lim, .err = err, .flags = flags };
	struct flow_spec *spec;
	const json_t *jdesc;
	const char *desc = "";
	json_t *jparams, *jsteps;
	size_t size;

	if (!json_is_object(doc))
		return fail(&c, FLOWD_E_INVALID, "invalid_type", "",
			    "a flow spec must be a JSON object");
	size = compact_size(doc);
	if (size > lim->max_spec_bytes)
		return fail(&c, FLOWD_E_TOO_LARGE, "too_large", "",
			    "spec of %zu bytes is over the limit of %zu", size,
			    lim->max_spec_bytes);
	if (check_keys(&c, doc, top_keys, "") < 0)
		return -1;

	spec = calloc(1, sizeof *spec);
	if (spec == NULL)
		return oom(err);
	spec->doc = json_object();
	jparams = json_object();
	jsteps = json_array();
	if (set_new(spec->doc, "description", json_string("")) < 0 ||
	    set_new(spec->doc, "parameters", jparams) < 0 ||
	    set_new(spec->doc, "steps", jsteps) < 0) {
		oom(err);
		goto fail_spec;
	}

	jdesc = json_object_get(doc, "description");
	if (jdesc != NULL && get_string(&c, jdesc, "description", &desc) < 0)
		goto fail_spec;
	spec->description = strdup(desc);
	if (spec->description == NULL ||
	    set_new(spec->doc, "description", json_string(desc)) < 0) {
		oom(err);
		goto fail_spec;
	}

	if (parse_params(&c, json_object_get(doc, "parameters"), spec,
			 jparams) < 0 ||
	    parse_steps(&c, json_object_get(doc, "steps"), spec, jsteps) < 0 ||
	    resolve_deps(&c, json_object_get(doc, "steps"), spec) < 0 ||
	    check_acyclic(&c, spec) < 0 || parse_triggers(&c, doc, spec) < 0 ||
	    parse_tags(&c, doc, spec) < 0)
		goto fail_spec;
	spec->doc_text = json_dumps(spec->doc, JSON_COMPACT | JSON_SORT_KEYS);
	if (spec->doc_text == NULL) {
		oom(err);
		goto fail_spec;
	}

	*out = spec;
	return 0;
fail_spec:
	spec_free(spec);
	return -1;
}

/* ----------------------------------------------------------------- tags */

static const char *const system_prefixes[] = {
	"project:", "branch:", "flow:", "version:", "trigger:", "origin:", NULL};

bool spec_tag_system(const char *tag)
{
	for (size_t i = 0; system_prefixes[i] != NULL; i++)
		if (strncmp(tag, system_prefixes[i], strlen(system_prefixes[i])) == 0)
			return true;
	return false;
}

/* Well-formed UTF-8 (RFC 3629: no overlong form, surrogate or code point
 * past U+10FFFF). */
static bool utf8_valid(const unsigned char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		unsigned char b = p[i];
		size_t len;
		uint32_t cp;

		if (b < 0x80) {
			i++;
			continue;
		}
		if (b >= 0xc2 && b <= 0xdf) {
			len = 2;
			cp = b & 0x1f;
		} else if (b >= 0xe0 && b <= 0xef) {
			len = 3;
			cp = b & 0x0f;
		} else if (b >= 0xf0 && b <= 0xf4) {
			len = 4;
			cp = b & 0x07;
		} else {
			return false;
		}
		if (n - i < len)
			return false;
		for (size_t k = 1; k < len; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
		    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += len;
	}
	return true;
}

const char *spec_tag_check(const char *tag, size_t max_bytes)
{
	size_t n = strlen(tag);

	if (n == 0 || n > max_bytes)
		return "must be 1 to limits.max_tag_bytes bytes";
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)tag[i];
		if (ch < 0x20 || ch == 0x7f)
			return "must not hold control characters";
	}
	if (tag[0] == ' ' || tag[n - 1] == ' ')
		return "must not start or end with a space";
	if (!utf8_valid((const unsigned char *)tag, n))
		return "must be UTF-8";
	if (spec_tag_system(tag))
		return "project:, branch:, flow:, version:, trigger: and "
		       "origin: are system tags";
	return NULL;
}

static int tag_cmp(const void *a, const void *b)
{
	return strcmp(json_string_value(*(json_t *const *)a),
		      json_string_value(*(json_t *const *)b));
}

json_t *spec_tags_normalize(const json_t *tags)
{
	size_t n = json_array_size(tags);
	json_t **v, *out;

	out = json_array();
	if (out == NULL || n == 0)
		return out;
	v = malloc(n * sizeof *v);
	if (v == NULL) {
		json_decref(out);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		v[i] = json_array_get(tags, i);
	qsort(v, n, sizeof *v, tag_cmp);
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && tag_cmp(&v[i - 1], &v[i]) == 0)
			continue;
		json_array_append(out, v[i]);
	}
	free(v);
	return out;
}

/* "tags": the default user tags of the flow's runs (docs/lifecycle.md). */
static int parse_tags(struct ctx *c, const json_t *doc, struct flow_spec *spec)
{
	const json_t *v = json_object_get(doc, "tags"), *t;
	char field[PATH_LEN];
	const char *why;
	size_t i;

	if (v == NULL)
		return 0;
	if (!json_is_array(v))
		return fail(c, FLOWD_E_INVALID, "invalid_type", "tags",
			    "must be an array of strings");
	if (json_array_size(v) > c->lim->max_tags_per_run)
		return fail(c, FLOWD_E_INVALID, "too_many", "tags",
			    "at most %u tags (limits.max_tags_per_run)",
			    c->lim->max_tags_per_run);
	json_array_foreach(v, i, t) {
		snprintf(field, sizeof field, "tags[%zu]", i);
		if (!json_is_string(t))
			return fail(c, FLOWD_E_INVALID, "invalid_type", field,
				    "must be a string");
		why = spec_tag_check(json_string_value(t),
				     c->lim->max_tag_bytes);
		if (why != NULL)
			return fail(c, FLOWD_E_INVALID, "invalid_value", field,
				    "%s", why);
	}
	spec->tags = spec_tags_normalize(v);
	if (spec->tags == NULL || set_new(spec->doc, "tags",
					  json_incref(spec->tags)) < 0)
		return oom(c->err);
	return 0;
}

/* ----------------------------------------------------------- run params */

static int cmp_param_name(const void *key, const void *elem)
{
	return strcmp((const char *)key,
		      ((const struct spec_param *)elem)->name);
}

int spec_params_resolve(const struct flow_spec *spec, const json_t *given,
			const struct flowd_limits *lim, json_t **out,
			struct flowd_error *err)
{
	struct ctx c = { .lim = lim, .err = err };
	const struct spec_param *p;
	char field[PATH_LEN];
	const char **keys = NULL;
	const json_t *v;
	json_t *res, *nv;
	size_t n = 0, i;

	if (given != NULL && !json_is_object(given))
		return fail(&c, FLOWD_E_INVALID, "invalid_type", "parameters",
			    "must be an object");
	res = json_object();
	if (res == NULL)
		return oom(err);
	if (given != NULL) {
		keys = sorted_keys(given, &n);
		if (keys == NULL) {
			oom(err);
			goto fail_res;
		}
	}
	for (i = 0; i < n; i++) {
		if (spec->n_params == 0 ||
		    bsearch(keys[i], spec->params, spec->n_params,
			    sizeof *spec->params, cmp_param_name) == NULL) {
			path_fmt(field, "parameters.%s", keys[i]);
			fail(&c, FLOWD_E_INVALID, "unknown_field", field,
			     "the flow has no parameter \"%.*s\"",
			     flowd_error_quote_len(keys[i], 64), keys[i]);
			goto fail_res;
		}
	}
	for (i = 0; i < spec->n_params; i++) {
		p = &spec->params[i];
		path_fmt(field, "parameters.%s", p->name);
		v = given != NULL ? json_object_get(given, p->name) : NULL;
		if (v != NULL) {
			if (!value_has_type(p->type, v)) {
				fail(&c, FLOWD_E_INVALID, "invalid_type", field,
				     "must be of type %s", type_names[p->type]);
				goto fail_res;
			}
			if (compact_size(v) > lim->max_param_bytes) {
				fail(&c, FLOWD_E_INVALID, "too_long", field,
				     "value is over the limit of %zu bytes",
				     lim->max_param_bytes);
				goto fail_res;
			}
			nv = normalize_value(p->type, v);
		} else if (p->default_value != NULL) {
			nv = json_deep_copy(p->default_value);
		} else if (p->required) {
			fail(&c, FLOWD_E_INVALID, "missing_field", field,
			     "parameter \"%s\" is required", p->name);
			goto fail_res;
		} else {
			continue;
		}
		if (set_new(res, p->name, nv) < 0) {
			oom(err);
			goto fail_res;
		}
	}
	free(keys);
	*out = res;
	return 0;
fail_res:
	free(keys);
	json_decref(res);
	return -1;
}

char *spec_param_env_value(const json_t *value)
{
	char buf[64];

	if (value == NULL)
		return NULL;
	switch (json_typeof(value)) {
	case JSON_STRING:
		return strdup(json_string_value(value));
	case JSON_INTEGER:
		snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT,
			 json_integer_value(value));
		return strdup(buf);
	case JSON_REAL:
		snprintf(buf, sizeof buf, "%.17g", json_real_value(value));
		return strdup(buf);
	case JSON_TRUE:
		return strdup("true");
	case JSON_FALSE:
		return strdup("false");
	default:
		/* jansson allocates with malloc() unless an application
		 * installs other allocators, which flowd does not */
		return json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
	}
}
