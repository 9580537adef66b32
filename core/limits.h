/* limits.h - every size and count flowd bounds, in one struct. Each field is
 * a documented setting in [limits] (docs/configuration.md). */
#ifndef FLOWD_CORE_LIMITS_H
#define FLOWD_CORE_LIMITS_H

#include <stddef.h>

struct flowd_limits {
	size_t
	    max_body_bytes; /* HTTP request body (FLOWD_E_TOO_LARGE past it) */
	size_t max_spec_bytes;         /* a flow spec, compact JSON */
	unsigned max_steps_per_flow;
	unsigned max_params_per_flow;
	unsigned max_deps_per_step;
	unsigned max_argv;             /* elements in a step's command */
	unsigned max_env_per_step;
	size_t max_string_bytes;       /* any one string in a spec */
	size_t max_param_bytes;        /* one parameter value, as JSON text */
	unsigned max_retries;          /* retries.max */
	unsigned max_backoff_s;        /* retries.backoff_s and max_backoff_s */
	unsigned max_timeout_s;        /* timeout_s */
	unsigned default_timeout_s;    /* timeout_s when a step does not say */
	size_t max_log_bytes_per_task; /* stdout and stderr each, per attempt */
	unsigned max_parallel_tasks;   /* child processes per node */
	size_t max_idempotency_key_bytes;
	unsigned max_runs_page;        /* GET /v1/runs limit= ceiling */
	unsigned runs_in_memory;       /* finished runs kept in memory; older
	                                * ones are read from PostgreSQL */
	unsigned idempotency_keys;     /* idempotency keys remembered at most */
	unsigned idempotency_ttl_s;    /* ... and for at least this long */
	unsigned max_triggers_per_flow;/* schedules + events + on_finish */
	unsigned max_jitter_s;         /* a schedule's jitter_s */
	unsigned max_catchup_window_s; /* a schedule's catchup_window_s */
	unsigned max_catchup_runs;     /* catchup "all": runs per catch-up */
	unsigned max_event_window_s;   /* an all-of event trigger's window_s */
	unsigned max_active_runs;      /* a flow's max_active_runs */
	unsigned max_buffered_runs;    /* overlap buffer_all, per flow */
	unsigned max_backfill_runs;    /* ticks in one backfill request */
	unsigned event_dedupe_s;       /* how long an event id is remembered */
	unsigned events_in_memory;     /* event ids remembered at most */
	size_t max_event_bytes;        /* an event's payload, compact JSON */
	unsigned max_tags_per_run;     /* user tags on one run */
	size_t max_tag_bytes;          /* one tag */
	unsigned redrive_window_s;     /* how long after it ended a run may
	                                * be redriven */
};

/* Fill every field with its documented default. */
void flowd_limits_defaults(struct flowd_limits *l);

#endif
