/* pending.c - the lifetime every raft request of this module shares
 * (proposals, barriers, membership changes): an optional deadline timer,
 * exactly one report to the caller, and a free that waits for the timer's
 * close and lets a waiting consensus_close finish. Loop thread only. */
#include "consensus/internal.h"

#include <stdlib.h>

#include "core/log.h"

void consensus__pending_init(struct consensus__pending *p,
			     struct consensus *c, consensus_done_cb cb,
			     void *arg, void *owner)
{
	p->c = c;
	p->cb = cb;
	p->arg = arg;
	p->owner = owner;
	p->has_deadline = 0;
	p->reported = 0;
}

static void deadline_cb(uv_timer_t *timer)
{
	struct consensus__pending *p = timer->data;
	int code = p->c->phase != CONSENSUS__RUNNING ? CONSENSUS_SHUTDOWN
						     : CONSENSUS_TIMEOUT;

	if (p->reported)
		return;
	p->reported = 1;
	log_debug("consensus: request deadline passed code=%d", code);
	p->cb(p->arg, code, 0, NULL);
}

void consensus__pending_arm(struct consensus__pending *p, unsigned timeout_ms)
{
	struct consensus *c = p->c;

	c->inflight++;
	c->live_requests++;
	if (timeout_ms == 0)
		return;
	/* Cannot fail for a valid loop; if it did, the request simply has no
	 * deadline, which is the documented behaviour of timeout_ms == 0. */
	if (uv_timer_init(c->loop, &p->deadline) != 0) {
		log_warn("consensus: deadline timer init failed, no deadline");
		return;
	}
	p->deadline.data = p;
	p->has_deadline = 1;
	uv_timer_start(&p->deadline, deadline_cb, timeout_ms, 0);
}

int consensus__pending_report(struct consensus__pending *p, int code,
			      uint64_t index, void *result)
{
	if (p->has_deadline)
		uv_timer_stop(&p->deadline);
	if (p->reported)
		return 0;
	p->reported = 1;
	p->cb(p->arg, code, index, result);
	return 1;
}

static void close_cb(uv_handle_t *handle)
{
	struct consensus__pending *p = handle->data;
	struct consensus *c = p->c;

	free(p->owner);
	consensus__request_freed(c);
}

void consensus__pending_free(struct consensus__pending *p)
{
	struct consensus *c = p->c;

	if (p->has_deadline) {
		uv_close((uv_handle_t *)&p->deadline, close_cb);
		return;
	}
	free(p->owner);
	consensus__request_freed(c);
}
