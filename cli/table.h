/* table.h - flowctl's tables for people: aligned columns, relative times,
 * status colours (only when asked: flowctl asks on a terminal), built from
 * the API's JSON answers. Each view renders into a FILE (stdout, or a
 * memory stream when `watch` compares frames). */
#ifndef FLOWCTL_TABLE_H
#define FLOWCTL_TABLE_H

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include <jansson.h>

struct table_style {
	bool colour; /* ANSI colours for statuses */
	time_t now;  /* relative times are against this */
};

/* GET /v1/flows: NAME VERSION DEPLOYED UPDATED DESCRIPTION. */
void table_flows(FILE *f, const struct table_style *st, const json_t *answer);
/* GET /v1/flows/{flow}/versions: VERSION CREATED STEPS. */
void table_versions(FILE *f, const struct table_style *st,
		    const json_t *answer);
/* GET /v1/runs: ID FLOW STATUS TRIGGER CREATED DURATION REASON, then the
 * next page's cursor when there is one. */
void table_runs(FILE *f, const struct table_style *st, const json_t *answer);
/* GET /v1/runs/{id}: the run's header, then STEP STATUS ATTEMPT NODE
 * STARTED DURATION RESULT. */
void table_run(FILE *f, const struct table_style *st, const json_t *run);
/* GET /v1/flows/{flow}/schedule: # CRON TIMEZONE FIRED SKIPPED MISSED
 * BUFFERED DROPPED NEXT. */
void table_schedule(FILE *f, const struct table_style *st,
		    const json_t *answer);
/* GET /v1/cluster: this node's numbers, then ID ROLE LEADER LIVE RAFT API. */
void table_cluster(FILE *f, const struct table_style *st,
		   const json_t *answer);
/* GET /v1/cron/preview: UTC and LOCAL times. */
void table_preview(FILE *f, const struct table_style *st,
		   const json_t *answer);

/* "3s ago", "5m ago", "2h ago", "4d ago", "in 10s" for an RFC 3339 time
 * (NULL or unparsable: "-"), into buf. */
const char *table_ago(const struct table_style *st, const char *rfc3339,
		      char *buf, size_t len);
/* "850ms", "12s", "3m04s", "2h05m" between two RFC 3339 times (`to` NULL:
 * until now; `from` NULL: "-"). */
const char *table_duration(const struct table_style *st, const char *from,
			   const char *to, char *buf, size_t len);

#endif
