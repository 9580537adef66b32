/* follow.h - followed logs: GET /v1/runs/{id}/steps/{step}/logs?follow=true
 * streams a step attempt's output as it is produced, from whichever node
 * runs it, and ends with the attempt (follow.c explains where the output
 * comes from). HTTP threads. */
#ifndef FLOWD_DAEMON_FOLLOW_H
#define FLOWD_DAEMON_FOLLOW_H

#include "api/api.h"
#include "core/view.h"
#include "daemon/reads.h"

/* Answer `req` (run_id, step; attempt 0 = the last) with the stream. */
void follow_logs(struct reads *rd, const struct view *v,
		 struct api_request *req, int attempt);

#endif
