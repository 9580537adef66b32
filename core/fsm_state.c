/* fsm_state.c - the state machine's life cycle: fsm_init, fsm_close, and
 * clearing the whole state (close, and restore, which replaces it). */
#include "fsm_state.h"

#include <stdlib.h>
#include <string.h>

#include "fsm_flows.h"
#include "fsm_runs.h"
#include "trigger_event.h"
#include "trigger_launch.h"

static void permissive_limits(struct flowd_limits *l)
{
	flowd_limits_defaults(l);
	l->max_body_bytes = (size_t)1 << 40;
	l->max_spec_bytes = (size_t)1 << 40;
	l->max_steps_per_flow = 1u << 30;
	l->max_params_per_flow = 1u << 30;
	l->max_deps_per_step = 1u << 30;
	l->max_argv = 1u << 30;
	l->max_env_per_step = 1u << 30;
	l->max_string_bytes = (size_t)1 << 40;
	l->max_param_bytes = (size_t)1 << 40;
	l->max_retries = 1u << 30;
	l->max_backoff_s = 1u << 30;
	l->max_timeout_s = 1u << 30;
	/* a spec's default tags: what any command may carry (fsm_check.c) */
	l->max_tags_per_run = 100000;
	l->max_tag_bytes = 65536;
}

void fsm_init(struct fsm *f, const struct fsm_hooks *hooks)
{
	memset(f, 0, sizeof *f);
	map_init(&f->flows);
	map_init(&f->runs);
	idem_init(&f->idem);
	map_init(&f->events);
	f->next_seq = 1;
	f->run_lo = 1;
	f->pending = json_array();
	if (f->pending == NULL)
		abort();
	if (hooks != NULL)
		f->hooks = *hooks;
	permissive_limits(&f->limits);
}

void fsm__state_clear(struct fsm *f)
{
	for (uint64_t seq = f->run_lo; seq <= f->n_runs; seq++)
		fsm__run_free(fsm_run_at(f, seq));
	free(f->run_list);
	f->run_list = NULL;
	f->n_runs = f->cap_runs = 0;
	f->run_lo = 1;
	f->run_empty = 0;
	for (size_t i = 0; i < f->flows.n_buckets; i++)
		for (struct map_entry *e = f->flows.buckets[i]; e; e = e->next)
			fsm__flow_free(e->value);
	idem_close(&f->idem);
	f->settled_head = f->settled_tail = NULL;
	f->n_settled = 0;
	map_close(&f->flows);
	map_close(&f->runs);
	free(f->nodes);
	f->nodes = NULL;
	f->n_nodes = 0;
	f->ready_head = f->ready_tail = NULL;
	f->n_ready = 0;
	f->waiting = NULL;
	f->next_seq = 1;
	fsm__events_clear(f);
	fsm__trig_index_clear(f);
	/* the view copies the whole new state */
	f->n_view_seqs = 0;
	f->n_view_flows = 0;
	f->view_reset = true;
}

void fsm_close(struct fsm *f)
{
	fsm__state_clear(f);
	free(f->dirty);
	f->dirty = NULL;
	f->cap_dirty = 0;
	free(f->view_seqs);
	free(f->view_flows);
	f->view_seqs = NULL;
	f->view_flows = NULL;
	f->cap_view_seqs = f->cap_view_flows = 0;
	json_decref(f->pending);
	f->pending = NULL;
	free(f->rows.p);
	memset(&f->rows, 0, sizeof f->rows);
	json_decref(f->result.body);
	f->result.body = NULL;
}
