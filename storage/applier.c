/* applier.c - the writer thread that projects committed Raft entries into
 * PostgreSQL, exactly once, in batches.
 *
 * DESIGN
 *
 * Threads. The loop thread calls storage_applier_push() for every applied
 * entry; it only appends to a FIFO under `mu` and signals `wake`, it never
 * waits on PostgreSQL. One writer thread owns the PGconn and is the only one
 * that removes entries from the FIFO. Backlog is read under `mu`; the
 * durable index is an atomic.
 *
 * Happy path. The writer takes up to batch_max entries (and at most
 * BATCH_BYTES of text) from the head, builds
 *   [{"index":N,"records":<records>}, ...]
 * and runs `SELECT flowd_apply($1::jsonb)` in autocommit: one statement, one
 * transaction. flowd_apply (migrations.c) skips entries at or below
 * raft_meta.applied_index, upserts the rest and moves applied_index, all
 * under the raft_meta row lock, so replays and several nodes sharing one
 * database are harmless. Only when the statement has returned do the entries
 * leave the FIFO; then the durable index is stored and progress_cb called.
 *
 * Failure modes.
 * - PostgreSQL down or the link lost: one warning per outage, progress_cb
 *   with connected=0, the entries stay queued, the writer sleeps retry_ms
 *   (doubling up to RETRY_MAX_MS; a shutdown wakes it), reconnects, reads
 *   applied_index, drops queued entries at or below it, and carries on.
 * - Any other error (a bug, a constraint, a malformed record): logged as an
 *   error with SQLSTATE and index range on every try, retried with the same
 *   backoff one entry at a time (to name the culprit), never dropped. The
 *   projection stalls loudly rather than losing a row.
 * - JSON text cannot carry NUL into jsonb: `\u0000` escapes are stripped
 *   while the batch is built.
 *
 * Standby. Every node of a cluster has the same entries to write and one
 * database to write them to; when all three write, PostgreSQL does the work
 * three times (a third of the machine under load, measured). So only the
 * leader's applier writes (storage_applier_set_standby(a, 0)); the others
 * keep their entries queued and, every STANDBY_POLL_MS, read
 * raft_meta.applied_index and drop what PostgreSQL already holds (their
 * durable index is then PostgreSQL's). An entry queued longer than
 * STANDBY_WRITE_MS (no leader writing: an election, a leader cut off from
 * PostgreSQL) is written by the standby itself, as any applier would: the
 * index guard makes the writes of two nodes harmless.
 *
 * Shutdown. storage_applier_free() sets `stop` and a drain deadline. The
 * writer keeps flushing until the FIFO is empty or the deadline passed; a
 * statement still running at the deadline is cancelled (PQcancel). Entries
 * left behind are logged: Raft replays them at the next start.
 */
#include "storage/storage.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/thread.h"
#include "storage/migrations.h"

#define BATCH_MAX_DEFAULT 512
#define RETRY_MS_DEFAULT 200
#define RETRY_MAX_MS 5000
#define BATCH_BYTES (16u << 20)
#define STANDBY_POLL_MS 100
#define STANDBY_WRITE_MS 2000

struct entry {
	struct entry *next;
	uint64_t index;
	struct timespec at;       /* when it was queued (CLOCK_MONOTONIC) */
	char *records; /* JSON array text, owned */
	size_t len;
};

struct storage_applier {
	char *conninfo;
	unsigned batch_max;
	unsigned retry_ms;
	int thread_nice;
	storage_progress_cb cb;
	void *cb_arg;

	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t wake; /* writer waits: work, stop */
	pthread_cond_t done; /* free() waits: writer exited */

	/* Under mu. */
	struct entry *head, *tail;
	uint64_t count;
	int stop;
	int exited;
	struct timespec deadline; /* drain deadline, CLOCK_MONOTONIC */
	PGcancel *cancel;         /* of the current connection, or NULL */

	_Atomic uint64_t durable;
	/* The last write failed for a reason other than the connection:
	 * the first entry of the failed batch and PostgreSQL's words, until
	 * a write succeeds (storage_applier_failing). Under mu. */
	uint64_t failing_index;
	char failing_error[256];
	_Atomic uint64_t write_errors;
	_Atomic int connected_pub;  /* `connected`, readable from any thread */
	_Atomic int standby;        /* another node writes: only follow it */

	/* Writer thread only. */
	PGconn *conn;
	int connected;
	int outage_logged;
	unsigned backoff_ms;
	char *buf;
	size_t cap;
};

static void ts_now(struct timespec *ts)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
}

static void ts_add_ms(struct timespec *ts, unsigned ms)
{
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static int ts_before(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec ||
	       (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Called with mu held: the writer should exit now. */
static int must_exit(struct storage_applier *a)
{
	struct timespec now;

	if (!a->stop)
		return 0;
	if (a->head == NULL)
		return 1;
	ts_now(&now);
	return !ts_before(&now, &a->deadline);
}

static void free_entry(struct entry *e)
{
	free(e->records);
	free(e);
}

/* Drop entries at or below `index` from the head. Called with mu held. */
static void drop_through(struct storage_applier *a, uint64_t index)
{
	while (a->head != NULL && a->head->index <= index) {
		struct entry *e = a->head;

		a->head = e->next;
		if (a->head == NULL)
			a->tail = NULL;
		a->count--;
		free_entry(e);
	}
}

static void store_durable(struct storage_applier *a, uint64_t index)
{
	uint64_t cur = atomic_load(&a->durable);

	while (index > cur &&
	       !atomic_compare_exchange_weak(&a->durable, &cur, index))
		;
}

static void set_connected(struct storage_applier *a, int connected)
{
	if (a->connected == connected)
		return;
	a->connected = connected;
	atomic_store(&a->connected_pub, connected);
	if (a->cb != NULL)
		a->cb(a->cb_arg, atomic_load(&a->durable), connected);
}

static void disconnect(struct storage_applier *a)
{
	pthread_mutex_lock(&a->mu);
	if (a->cancel != NULL) {
		PQfreeCancel(a->cancel);
		a->cancel = NULL;
	}
	pthread_mutex_unlock(&a->mu);
	if (a->conn != NULL) {
		PQfinish(a->conn);
		a->conn = NULL;
	}
	set_connected(a, 0);
}

/* Sleep for the current backoff (a shutdown or the drain deadline cuts it
 * short), then double it. */
static void backoff(struct storage_applier *a)
{
	struct timespec until;

	ts_now(&until);
	ts_add_ms(&until, a->backoff_ms);
	pthread_mutex_lock(&a->mu);
	while (!must_exit(a)) {
		const struct timespec *t = &until;

		if (a->stop && ts_before(&a->deadline, &until))
			t = &a->deadline;
		/* A push wakes us too: keep sleeping. */
		if (pthread_cond_timedwait(&a->wake, &a->mu, t) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&a->mu);
	a->backoff_ms = a->backoff_ms >= RETRY_MAX_MS / 2 ? RETRY_MAX_MS
							  : a->backoff_ms * 2;
}

static void outage(struct storage_applier *a, const char *why)
{
	char line[512];
	uint64_t backlog;

	if (!a->outage_logged) {
		pthread_mutex_lock(&a->mu);
		backlog = a->count;
		pthread_mutex_unlock(&a->mu);
		log_warn("storage: applier: postgresql unavailable error=\"%s\" "
			 "backlog=%" PRIu64 " durable_index=%" PRIu64,
			 storage__oneline(why, line, sizeof line), backlog,
			 atomic_load(&a->durable));
		a->outage_logged = 1;
	}
	disconnect(a);
}

/* Connect and learn applied_index. 0 on success, -1 (already reported) when
 * the caller should back off. */
static int connect_db(struct storage_applier *a)
{
	PGresult *res = NULL;
	PGcancel *cancel;
	uint64_t applied;
	char line[512];

	a->conn = storage__connect(a->conninfo, "flowd-applier");
	if (a->conn == NULL || PQstatus(a->conn) != CONNECTION_OK) {
		outage(a, a->conn ? PQerrorMessage(a->conn) : "out of memory");
		return -1;
	}
	/* A database that was down when flowd started is migrated now. */
	if (storage_migrate(a->conninfo, line, sizeof line) != 0)
		log_warn("storage: applier: migrate: %s", line);
	res = PQexec(a->conn,
		     "SELECT applied_index FROM raft_meta WHERE id = 1");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		if (storage__conn_lost(a->conn, res)) {
			outage(a, res ? PQresultErrorMessage(res)
				      : PQerrorMessage(a->conn));
		} else {
			const char *state =
				PQresultErrorField(res, PG_DIAG_SQLSTATE);

			log_error("storage: applier: cannot read raft_meta "
				  "(migrated?) sqlstate=%s error=\"%s\"",
				  state ? state : "none",
				  storage__oneline(PQresultErrorMessage(res),
						   line, sizeof line));
			disconnect(a);
		}
		PQclear(res);
		return -1;
	}
	applied = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);

	if (applied < atomic_load(&a->durable))
		log_error("storage: applier: applied_index went backwards "
			  "db_applied_index=%" PRIu64 " durable_index=%" PRIu64
			  " (database restored from an older backup?)",
			  applied, atomic_load(&a->durable));
	cancel = PQgetCancel(a->conn);
	pthread_mutex_lock(&a->mu);
	a->cancel = cancel;
	drop_through(a, applied);
	pthread_mutex_unlock(&a->mu);
	store_durable(a, applied);

	if (a->outage_logged)
		log_info("storage: applier: postgresql reachable again "
			 "db_applied_index=%" PRIu64,
			 applied);
	else
		log_debug("storage: applier: connected db_applied_index=%" PRIu64,
			  applied);
	a->outage_logged = 0;
	set_connected(a, 1);
	return 0;
}

static int reserve(struct storage_applier *a, size_t need)
{
	size_t cap = a->cap ? a->cap : 4096;
	char *p;

	if (need <= a->cap)
		return 0;
	while (cap < need)
		cap *= 2;
	p = realloc(a->buf, cap);
	if (p == NULL)
		return -1;
	a->buf = p;
	a->cap = cap;
	return 0;
}

/* Append `s` to buf at *len, dropping `\u0000` escapes: jsonb has no NUL.
 * In valid JSON every backslash starts an escape inside a string, so a
 * scan for backslashes is enough. */
static void append_records(char *buf, size_t *len, const char *s, size_t n)
{
	size_t i = 0, o = *len;

	while (i < n) {
		if (s[i] != '\\') {
			buf[o++] = s[i++];
			continue;
		}
		if (i + 5 < n && memcmp(s + i + 1, "u0000", 5) == 0) {
			i += 6;
			continue;
		}
		buf[o++] = s[i++];
		if (i < n)
			buf[o++] = s[i++];
	}
	*len = o;
}

/* Build the batch text from the first entries (at most `max`). Returns the
 * number of entries taken (0 if none or out of memory) and their index
 * range. Only the writer removes entries and only the tail's `next` ever
 * changes, so the nodes walked under mu stay valid after it is released. */
static unsigned build_batch(struct storage_applier *a, unsigned max,
			    uint64_t *first, uint64_t *last)
{
	struct entry *e, *p;
	size_t len = 0, need = 2;
	unsigned n = 0;

	/* Size first: ,{"index":<20 digits>,"records":<text>} */
	pthread_mutex_lock(&a->mu);
	e = a->head;
	for (p = e; p != NULL && n < max; p = p->next, n++) {
		size_t one = 32 + 20 + (p->records ? p->len : 2);

		if (n > 0 && need + one > BATCH_BYTES)
			break;
		need += one;
	}
	pthread_mutex_unlock(&a->mu);
	if (n == 0)
		return 0;
	if (reserve(a, need + 1) != 0) {
		log_error("storage: applier: out of memory bytes=%zu", need);
		return 0;
	}

	*first = e->index;
	a->buf[len++] = '[';
	for (unsigned i = 0; i < n; i++) {
		if (i > 0)
			e = e->next;
		len += (size_t)snprintf(a->buf + len, a->cap - len,
					"%s{\"index\":%" PRIu64 ",\"records\":",
					i ? "," : "", e->index);
		if (e->records != NULL)
			append_records(a->buf, &len, e->records, e->len);
		else
			append_records(a->buf, &len, "[]", 2);
		a->buf[len++] = '}';
		*last = e->index;
	}
	a->buf[len++] = ']';
	a->buf[len] = '\0';
	return n;
}

/* One batch: 0 written, -1 failed (reported; the caller backs off). After
 * an error that is not an outage, *suspect is the batch's last index. */
static int write_batch(struct storage_applier *a, unsigned max,
		       uint64_t *suspect)
{
	PGresult *res;
	const char *params[1];
	uint64_t first = 0, last = 0, applied;
	char line[512];
	unsigned n;

	/* Several nodes write the same log into one database: skip what
	 * another node has already stored, rather than send it for the guard
	 * in flowd_apply to discard (which still parses it). */
	res = PQexec(a->conn, "SELECT applied_index FROM raft_meta WHERE id = 1");
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
		applied = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
		pthread_mutex_lock(&a->mu);
		drop_through(a, applied);
		pthread_mutex_unlock(&a->mu);
		if (applied > atomic_load(&a->durable)) {
			store_durable(a, applied);
			if (a->cb != NULL)
				a->cb(a->cb_arg, applied, 1);
		}
	}
	PQclear(res);
	n = build_batch(a, max, &first, &last);
	if (n == 0)
		return 0;
	params[0] = a->buf;
	res = PQexecParams(a->conn, "SELECT flowd_apply($1::jsonb)", 1, NULL,
			   params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		if (storage__conn_lost(a->conn, res)) {
			outage(a, res ? PQresultErrorMessage(res)
				      : PQerrorMessage(a->conn));
		} else {
			const char *state =
				PQresultErrorField(res, PG_DIAG_SQLSTATE);

			if (a->stop && state != NULL &&
			    strcmp(state, "57014") == 0) {
				log_warn("storage: applier: write cancelled at "
					 "the drain deadline first_index=%" PRIu64,
					 first);
				PQclear(res);
				return -1;
			}
			*suspect = last;
			log_error("storage: applier: write failed, retrying "
				  "first_index=%" PRIu64 " last_index=%" PRIu64
				  " sqlstate=%s error=\"%s\"",
				  first, last, state ? state : "none",
				  storage__oneline(PQresultErrorMessage(res),
						   line, sizeof line));
			atomic_fetch_add(&a->write_errors, 1);
			pthread_mutex_lock(&a->mu);
			a->failing_index = first;
			snprintf(a->failing_error, sizeof a->failing_error,
				 "sqlstate %.8s: %.200s", state ? state : "none",
				 line);
			pthread_mutex_unlock(&a->mu);
		}
		PQclear(res);
		return -1;
	}
	applied = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);

	pthread_mutex_lock(&a->mu);
	drop_through(a, last > applied ? last : applied);
	a->failing_index = 0;
	a->failing_error[0] = '\0';
	pthread_mutex_unlock(&a->mu);
	store_durable(a, applied > last ? applied : last);
	log_debug("storage: applier: batch written entries=%u first_index=%" PRIu64
		  " last_index=%" PRIu64 " db_applied_index=%" PRIu64,
		  n, first, last, applied);
	if (a->cb != NULL)
		a->cb(a->cb_arg, atomic_load(&a->durable), 1);
	return 0;
}

/* Standby: wait up to STANDBY_POLL_MS (a stop ends the wait), then drop
 * what PostgreSQL holds already. Returns 0 when the leader's applier is
 * keeping up, or -1 when the oldest entry has waited STANDBY_WRITE_MS or
 * more (or we are stopping): then this applier writes. */
static int standby_follow(struct storage_applier *a)
{
	struct timespec until, now, oldest;
	PGresult *res;
	uint64_t applied;

	ts_now(&until);
	ts_add_ms(&until, STANDBY_POLL_MS);
	pthread_mutex_lock(&a->mu);
	while (!a->stop && atomic_load(&a->standby) &&
	       pthread_cond_timedwait(&a->wake, &a->mu, &until) != ETIMEDOUT)
		; /* pushes wake us too: keep waiting */
	if (a->stop || !atomic_load(&a->standby) || a->head == NULL) {
		pthread_mutex_unlock(&a->mu);
		return a->head == NULL ? 0 : -1;
	}
	pthread_mutex_unlock(&a->mu);
	res = PQexec(a->conn, "SELECT applied_index FROM raft_meta WHERE id = 1");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		if (storage__conn_lost(a->conn, res)) {
			outage(a, res ? PQresultErrorMessage(res)
				      : PQerrorMessage(a->conn));
			disconnect(a);
		}
		PQclear(res);
		return 0; /* the next round reconnects */
	}
	applied = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	pthread_mutex_lock(&a->mu);
	drop_through(a, applied);
	oldest = a->head != NULL ? a->head->at : (struct timespec){0};
	pthread_mutex_unlock(&a->mu);
	if (applied > atomic_load(&a->durable)) {
		store_durable(a, applied);
		if (a->cb != NULL)
			a->cb(a->cb_arg, applied, 1);
	}
	if (oldest.tv_sec == 0 && oldest.tv_nsec == 0)
		return 0;
	ts_now(&now);
	ts_add_ms(&oldest, STANDBY_WRITE_MS);
	return ts_before(&now, &oldest) ? 0 : -1;
}

static void *writer_main(void *arg)
{
	struct storage_applier *a = arg;
	uint64_t suspect = 0, head;

	/* Linux: nice is per thread (0 = this one): the loop comes first. */
	if (flowd_thread_nicer(a->thread_nice) != 0)
		log_warn("storage: applier: setpriority: %s", strerror(errno));

	for (;;) {
		pthread_mutex_lock(&a->mu);
		while (a->head == NULL && !a->stop)
			pthread_cond_wait(&a->wake, &a->mu);
		if (must_exit(a)) {
			pthread_mutex_unlock(&a->mu);
			break;
		}
		head = a->head->index;
		pthread_mutex_unlock(&a->mu);

		if (a->conn == NULL && connect_db(a) != 0) {
			backoff(a);
			continue;
		}
		if (atomic_load(&a->standby) && standby_follow(a) == 0)
			continue;
		/* Past an error that is not an outage, go one entry at a time
		 * through the failed batch so that the log names the culprit
		 * and the good entries before it get written. */
		if (write_batch(a, head <= suspect ? 1 : a->batch_max,
				&suspect) != 0) {
			backoff(a);
			continue;
		}
		a->backoff_ms = a->retry_ms;
	}

	disconnect(a);
	pthread_mutex_lock(&a->mu);
	if (a->count > 0)
		log_warn("storage: applier: stopped with entries not written "
			 "backlog=%" PRIu64 " first_index=%" PRIu64
			 " (raft replays them at the next start)",
			 a->count, a->head->index);
	a->exited = 1;
	pthread_cond_broadcast(&a->done);
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

int storage_applier_new(const struct storage_applier_config *cfg,
			storage_progress_cb cb, void *arg,
			struct storage_applier **out, char *errmsg,
			size_t errlen)
{
	struct storage_applier *a;
	pthread_condattr_t ca;
	int rc;

	if (cfg == NULL) {
		snprintf(errmsg, errlen, "storage: applier: no config");
		return -1;
	}
	if (storage__conninfo_check(cfg->conninfo, errmsg, errlen) != 0)
		return -1;
	a = calloc(1, sizeof *a);
	if (a == NULL)
		goto err_oom;
	a->conninfo = strdup(cfg->conninfo);
	if (a->conninfo == NULL)
		goto err_free;
	a->batch_max = cfg->batch_max ? cfg->batch_max : BATCH_MAX_DEFAULT;
	a->retry_ms = cfg->retry_ms ? cfg->retry_ms : RETRY_MS_DEFAULT;
	a->thread_nice = cfg->thread_nice;
	if (a->retry_ms > RETRY_MAX_MS)
		a->retry_ms = RETRY_MAX_MS;
	a->backoff_ms = a->retry_ms;
	a->cb = cb;
	a->cb_arg = arg;
	atomic_init(&a->durable, 0);

	/* Both condvars time out against CLOCK_MONOTONIC deadlines. */
	if (pthread_mutex_init(&a->mu, NULL) != 0)
		goto err_conninfo;
	if (pthread_condattr_init(&ca) != 0)
		goto err_mutex;
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	rc = pthread_cond_init(&a->wake, &ca);
	if (rc != 0)
		goto err_attr;
	rc = pthread_cond_init(&a->done, &ca);
	if (rc != 0)
		goto err_wake;
	rc = pthread_create(&a->thread, NULL, writer_main, a);
	if (rc != 0)
		goto err_done;
	pthread_condattr_destroy(&ca);
	*out = a;
	return 0;

err_done:
	pthread_cond_destroy(&a->done);
err_wake:
	pthread_cond_destroy(&a->wake);
err_attr:
	pthread_condattr_destroy(&ca);
err_mutex:
	pthread_mutex_destroy(&a->mu);
err_conninfo:
	free(a->conninfo);
err_free:
	free(a);
err_oom:
	snprintf(errmsg, errlen, "storage: applier: out of resources");
	return -1;
}

void storage_applier_set_standby(struct storage_applier *a, int standby)
{
	atomic_store(&a->standby, standby != 0);
	pthread_mutex_lock(&a->mu);
	pthread_cond_signal(&a->wake); /* a new leader writes at once */
	pthread_mutex_unlock(&a->mu);
}

void storage_applier_push(struct storage_applier *a, uint64_t index,
			  char *records_json)
{
	struct entry *e;

	if (index <= atomic_load(&a->durable)) {
		free(records_json); /* PostgreSQL already holds it */
		return;
	}
	e = malloc(sizeof *e);
	if (e == NULL) {
		/* Dropping it would leave a hole in the projection. */
		log_error("storage: applier: out of memory queueing index=%" PRIu64,
			  index);
		abort();
	}
	e->next = NULL;
	e->index = index;
	ts_now(&e->at);
	e->records = records_json;
	e->len = records_json ? strlen(records_json) : 0;

	pthread_mutex_lock(&a->mu);
	if (a->tail != NULL)
		a->tail->next = e;
	else
		a->head = e;
	a->tail = e;
	a->count++;
	pthread_cond_signal(&a->wake);
	pthread_mutex_unlock(&a->mu);
}

uint64_t storage_applier_backlog(struct storage_applier *a)
{
	uint64_t n;

	pthread_mutex_lock(&a->mu);
	n = a->count;
	pthread_mutex_unlock(&a->mu);
	return n;
}

int storage_applier_connected(struct storage_applier *a)
{
	return atomic_load(&a->connected_pub);
}

uint64_t storage_applier_durable(struct storage_applier *a)
{
	return atomic_load(&a->durable);
}

void storage_applier_free(struct storage_applier *a, unsigned drain_ms)
{
	struct timespec deadline;
	struct entry *e;
	char errbuf[256];

	if (a == NULL)
		return;
	pthread_mutex_lock(&a->mu);
	ts_now(&a->deadline);
	ts_add_ms(&a->deadline, drain_ms);
	deadline = a->deadline;
	a->stop = 1;
	pthread_cond_broadcast(&a->wake);
	while (!a->exited) {
		if (pthread_cond_timedwait(&a->done, &a->mu, &deadline) !=
		    ETIMEDOUT)
			continue;
		/* A statement outlived the deadline: cancel it, then join. */
		if (!a->exited && a->cancel != NULL &&
		    !PQcancel(a->cancel, errbuf, sizeof errbuf))
			log_warn("storage: applier: cancel failed error=\"%s\"",
				 errbuf);
		break;
	}
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->thread, NULL);

	while ((e = a->head) != NULL) {
		a->head = e->next;
		free_entry(e);
	}
	pthread_cond_destroy(&a->done);
	pthread_cond_destroy(&a->wake);
	pthread_mutex_destroy(&a->mu);
	free(a->buf);
	free(a->conninfo);
	free(a);
}

uint64_t storage_applier_failing(struct storage_applier *a, char *err,
				 size_t errlen, uint64_t *errors)
{
	uint64_t index;

	pthread_mutex_lock(&a->mu);
	index = a->failing_index;
	if (err != NULL && errlen > 0)
		snprintf(err, errlen, "%s", a->failing_error);
	pthread_mutex_unlock(&a->mu);
	if (errors != NULL)
		*errors = atomic_load(&a->write_errors);
	return index;
}
