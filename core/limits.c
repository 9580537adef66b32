/* limits.c - defaults of struct flowd_limits (docs/configuration.md). */
#include "limits.h"

void flowd_limits_defaults(struct flowd_limits *l)
{
	l->max_body_bytes = 1024 * 1024;
	l->max_spec_bytes = 256 * 1024;
	l->max_steps_per_flow = 256;
	l->max_params_per_flow = 64;
	l->max_deps_per_step = 64;
	l->max_argv = 256;
	l->max_env_per_step = 128;
	l->max_string_bytes = 16 * 1024;
	l->max_param_bytes = 64 * 1024;
	l->max_retries = 100;
	l->max_backoff_s = 86400;
	l->max_timeout_s = 7 * 86400;
	l->default_timeout_s = 3600;
	l->max_log_bytes_per_task = 64 * 1024;
	l->max_parallel_tasks = 16;
	l->max_idempotency_key_bytes = 256;
	l->max_runs_page = 1000;
	l->runs_in_memory = 10000;
	l->idempotency_keys = 1000000;
	l->idempotency_ttl_s = 86400;
	l->max_triggers_per_flow = 64;
	l->max_jitter_s = 3600;
	l->max_catchup_window_s = 7 * 86400;
	l->max_catchup_runs = 100;
	l->max_event_window_s = 7 * 86400;
	l->max_active_runs = 100000;
	l->max_buffered_runs = 1000;
	l->max_backfill_runs = 1000;
	l->event_dedupe_s = 86400;
	l->events_in_memory = 100000;
	l->max_tags_per_run = 50;
	l->max_tag_bytes = 128;
	l->redrive_window_s = 14 * 24 * 3600;
	l->max_event_bytes = 64 * 1024;
}
