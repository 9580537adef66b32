/* spec.h - flow specs: parse, validate and normalize the JSON a user deploys,
 * and resolve a run's parameters against it. Pure: no I/O, no clock. */
#ifndef FLOWD_CORE_SPEC_H
#define FLOWD_CORE_SPEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "cron.h"
#include "error.h"
#include "limits.h"

enum spec_param_type {
	SPEC_PARAM_STRING,
	SPEC_PARAM_INT,
	SPEC_PARAM_FLOAT,
	SPEC_PARAM_BOOL,
	SPEC_PARAM_JSON,
};

struct spec_param {
	char *name;                 /* owned */
	enum spec_param_type type;
	bool required;
	json_t *default_value;      /* owned reference, NULL when none */
	char *description;          /* owned, "" when none */
};

struct spec_step {
	char *name;          /* owned */
	char **argv;         /* owned, NULL-terminated; NULL when `shell` is set */
	size_t argc;
	char *shell;         /* owned; NULL when `command` is set */
	char **env;          /* owned, NULL-terminated "KEY=VALUE" strings, sorted by key */
	size_t n_env;
	size_t *deps;        /* owned: indices into flow_spec.steps */
	size_t n_deps;
	unsigned retries_max;
	unsigned backoff_s;
	unsigned max_backoff_s;
	unsigned timeout_s;  /* always > 0 after parsing (default filled in) */
	char *workdir;       /* owned, NULL when none */
};

/* What a trigger does while the flow has max_active_runs active runs
 * (docs/triggers.md). */
enum spec_overlap {
	SPEC_OVERLAP_ALLOW_ALL,
	SPEC_OVERLAP_SKIP,
	SPEC_OVERLAP_BUFFER_ONE,
	SPEC_OVERLAP_BUFFER_ALL,
	SPEC_OVERLAP_CANCEL_OTHER,
	SPEC_OVERLAP_TERMINATE_OTHER,
};

enum spec_catchup { SPEC_CATCHUP_NONE, SPEC_CATCHUP_LATEST, SPEC_CATCHUP_ALL };

struct spec_schedule {
	char *expr;                 /* owned: as given */
	struct cron cron;
	char *timezone;             /* owned */
	const struct tz *tz;        /* borrowed from the process-wide cache;
	                             * NULL (UTC) only if this node lacks the
	                             * zone (SPEC_PARSE_APPLY) */
	enum cron_dst_missing dst_missing;
	enum cron_dst_repeated dst_repeated;
	unsigned jitter_s;
	enum spec_catchup catchup;
	unsigned catchup_window_s;
	enum spec_overlap overlap;
	json_t *parameters;         /* owned: passed to every run it starts */
	char *key;                  /* owned: identity across redeploys */
};

struct spec_event_match {
	char *name;                 /* owned */
	json_t *filter;             /* owned object: dotted payload path ->
	                             * value that must be equal; never NULL */
};

struct spec_event_trigger {
	struct spec_event_match *events; /* owned; n_events > 1: all of them */
	size_t n_events;
	unsigned window_s;          /* all: collect within this long */
	char *reset;                /* owned, may be NULL: all: a cron
	                             * expression whose ticks empty the
	                             * collection (in reset_tz) */
	struct cron reset_cron;
	const struct tz *reset_tz;
	json_t *parameters;         /* owned object: parameter -> path, or
	                             * NULL: payload keys fill same-named
	                             * parameters */
	enum spec_overlap overlap;
	char *key;                  /* owned: its normalized JSON, its identity
	                             * across redeploys */
};

enum spec_finish_status { SPEC_FINISH_SUCCEEDED, SPEC_FINISH_FAILED, SPEC_FINISH_ANY };

struct spec_on_finish {
	char *flow;                 /* owned: the upstream flow */
	char *branch;               /* owned: its branch in this flow's
	                             * project, NULL: this flow's own */
	enum spec_finish_status status;
	enum spec_overlap overlap;
};

struct flow_spec {
	char *description;          /* owned, "" when none */
	struct spec_param *params;  /* owned array, sorted by name */
	size_t n_params;
	struct spec_step *steps;    /* owned array, in the order given */
	size_t n_steps;
	struct spec_schedule *schedules; /* owned arrays: the triggers */
	size_t n_schedules;
	struct spec_event_trigger *events;
	size_t n_events;
	struct spec_on_finish *on_finish;
	size_t n_on_finish;
	unsigned max_active_runs;   /* 0 = no limit */
	json_t *tags;               /* owned: the runs' default user tags,
	                             * sorted, no duplicates; NULL when none */
	json_t *doc;                /* owned: the normalized document (defaults
	                             * filled in); NULL after spec_drop_doc */
	char *doc_text;             /* owned: doc as compact JSON with sorted
	                             * keys, so two deploys are the same spec iff
	                             * their texts are equal */
	unsigned refs;              /* references beyond the first (spec_ref);
	                             * atomic */
};

/* A flow name is [A-Za-z0-9_.-]{1,128}, and not "." or ".." (which a proxy
 * normalizing /v1/flows/.. would rewrite). A step name uses the same rule; a
 * parameter name must fit an environment variable name
 * ([A-Za-z_][A-Za-z0-9_]*). */
bool spec_flow_name_valid(const char *name);

/* The rule before "." and ".." were refused, for names inside what is
 * already committed: the state machine must not refuse a command or a
 * snapshot an older version accepted, or replicas would diverge.
 * spec_parse_ex(SPEC_PARSE_APPLY) checks step and on_finish names with it. */
bool spec_flow_name_valid_committed(const char *name);

/* Parse and validate `doc` (borrowed). On success returns 0 and a new spec in
 * *out (caller frees with spec_free). On failure returns -1, *out untouched,
 * and fills `err` with FLOWD_E_INVALID (FLOWD_E_TOO_LARGE for a spec over
 * max_spec_bytes), a code and the JSON path of the first offending field, e.g.
 * "steps[2].depends_on[0]". */
int spec_parse(const json_t *doc, const struct flowd_limits *lim,
	       struct flow_spec **out, struct flowd_error *err);

/* spec_parse for the state machine (SPEC_PARSE_APPLY): what depends on this
 * node's files cannot refuse a committed spec, or nodes would diverge. A
 * time zone this node does not have (checked at the API when deployed) is
 * kept by name, with tz NULL (UTC here), and logged. */
#define SPEC_PARSE_APPLY 0x1
int spec_parse_ex(const json_t *doc, const struct flowd_limits *lim,
		  unsigned flags, struct flow_spec **out,
		  struct flowd_error *err);

/* Drop a reference: the last one frees the spec. A spec is immutable once
 * parsed (spec_drop_doc aside), so holders on several threads may read it;
 * the read view (core/view.c) holds references to the specs it shows. */
void spec_free(struct flow_spec *spec);
/* Take another reference (returns `spec`). */
struct flow_spec *spec_ref(struct flow_spec *spec);

/* Free the document tree of a spec that is kept long (the state machine
 * keeps every version): doc_text stays. A jansson tree costs about eight
 * times its text (a flow with ten schedules: 15.6 KB against 1.8 KB). */
void spec_drop_doc(struct flow_spec *spec);

/* The normalized document (new reference): the tree if kept, else parsed
 * from doc_text. NULL only when out of memory. */
json_t *spec_doc(const struct flow_spec *spec);

const char *spec_overlap_str(enum spec_overlap o);

/* An event name is [A-Za-z0-9_-]{1,128} (no dots: a parameter path of an
 * all-of trigger starts with the event's name, then a dot). */
bool spec_event_name_valid(const char *name);

/* The value at a dotted `path` ("payload.a.b") inside `root` (borrowed
 * result), or NULL. The first component names root's key. */
json_t *spec_path_get(json_t *root, const char *path);

/* Resolve the parameters a run was started with. `given` (borrowed) is a JSON
 * object or NULL. Unknown names, wrong types and missing required parameters
 * fail with FLOWD_E_INVALID and field "parameters.<name>". On success *out is a
 * new object holding every declared parameter that has a value (given or
 * default), with ints as integers, floats as reals (an integer given for a
 * float is converted), bools, strings, and any JSON for type json. */
int spec_params_resolve(const struct flow_spec *spec, const json_t *given,
			const struct flowd_limits *lim, json_t **out,
			struct flowd_error *err);

/* The environment-variable text of a resolved parameter value: strings as
 * is, ints in decimal, floats with %.17g, bools as true/false, anything else
 * as compact JSON. Returns a malloc'd string (caller frees) or NULL on OOM. */
char *spec_param_env_value(const json_t *value);

/* Projects and branches (docs/lifecycle.md). A project is
 * [A-Za-z0-9_-]{1,64}; a branch is main, prod, test.<word> or user.<word>
 * (a word as a project). Every flow lives in one project and branch; the
 * state machine keys it by its flow key: the bare name in project default,
 * branch main (so flows from before branches keep their key), else
 * "project/branch/name". */
#define SPEC_PROJECT_MAX 64
#define SPEC_FLOW_KEY_MAX 288
bool spec_project_name_valid(const char *s);
bool spec_branch_name_valid(const char *s);
bool spec_branch_is_prod(const char *branch);
/* The key of flow in project/branch (NULL: default, main) into out;
 * 0, or -1 when it does not fit. */
int spec_flow_key(const char *project, const char *branch, const char *flow,
		  char *out, size_t n);
struct spec_flow_key {
	char project[SPEC_PROJECT_MAX + 1];
	char branch[SPEC_PROJECT_MAX + 8];
	const char *flow;           /* into the key split */
};
/* A key's parts (a bare name: default, main). */
void spec_flow_key_split(const char *key, struct spec_flow_key *out);
/* A key in its one spelling, of valid parts. */
bool spec_flow_key_valid(const char *key);

/* Run tags (docs/lifecycle.md). A user tag is 1..max_bytes bytes of UTF-8
 * without control characters or an outer space, and does not start with a
 * system prefix (project:, branch:, flow:, version:, trigger:, origin:).
 * Returns NULL when `tag` is one, else why not (static). */
const char *spec_tag_check(const char *tag, size_t max_bytes);
/* Whether `tag` starts with a system prefix. */
bool spec_tag_system(const char *tag);
/* A new array of the strings of `tags` sorted by bytes, without
 * duplicates (NULL on out of memory). */
json_t *spec_tags_normalize(const json_t *tags);

#endif
