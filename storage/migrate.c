/* migrate.c - schema migrations at start, and storage/'s libpq helpers. */
#include "storage/storage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "storage/migrations.h"

/* Key of the transaction-scoped advisory lock that serializes migrations of
 * several nodes starting at once ("flowd" in ASCII). */
#define MIGRATE_LOCK_KEY "439788155748"

/* Server NOTICEs ("relation ... already exists, skipping") go to the debug
 * log instead of libpq's default, a raw line on stderr. */
static void notice_cb(void *arg, const char *message)
{
	char line[512];

	log_debug("storage: postgresql notice=\"%s\"",
		  storage__oneline(message, line, sizeof line));
}

PGconn *storage__connect(const char *conninfo, const char *app)
{
	PGconn *conn;

	/* Processed in order, later keys win: our defaults first, then the
	 * operator's conninfo (expand_dbname=1 expands it in place). */
	const char *keys[] = {
		"connect_timeout", "keepalives", "keepalives_idle",
		"keepalives_interval", "keepalives_count", "client_encoding",
		"fallback_application_name", "dbname", NULL,
	};
	const char *vals[] = {
		"2", "1", "10", "5", "3", "UTF8", app, conninfo, NULL,
	};

	conn = PQconnectdbParams(keys, vals, 1);
	if (conn != NULL)
		PQsetNoticeProcessor(conn, notice_cb, NULL);
	return conn;
}

int storage__conninfo_check(const char *conninfo, char *errmsg,
			    size_t errlen)
{
	PQconninfoOption *opts;
	char *err = NULL;
	char line[256];

	if (conninfo == NULL || conninfo[0] == '\0') {
		snprintf(errmsg, errlen, "storage: empty conninfo");
		return -1;
	}
	/* libpq takes a string without '=' and without a URI scheme as a bare
	 * database name; only the other forms can be malformed. */
	if (strchr(conninfo, '=') == NULL &&
	    strncmp(conninfo, "postgres://", 11) != 0 &&
	    strncmp(conninfo, "postgresql://", 13) != 0)
		return 0;
	opts = PQconninfoParse(conninfo, &err);
	if (opts == NULL) {
		snprintf(errmsg, errlen, "storage: conninfo: %s",
			 storage__oneline(err ? err : "out of memory", line,
					  sizeof line));
		PQfreemem(err);
		return -1;
	}
	PQconninfoFree(opts);
	return 0;
}

char *storage__oneline(const char *msg, char *buf, size_t len)
{
	size_t i, n = 0;

	if (len == 0)
		return buf;
	if (msg == NULL)
		msg = "";
	for (i = 0; msg[i] != '\0' && n + 1 < len; i++) {
		char c = msg[i];

		if (c == '\n' || c == '\r' || c == '\t')
			c = ' ';
		if (c == ' ' && (n == 0 || buf[n - 1] == ' '))
			continue;
		buf[n++] = c;
	}
	while (n > 0 && buf[n - 1] == ' ')
		n--;
	buf[n] = '\0';
	return buf;
}

int storage__conn_lost(PGconn *conn, const PGresult *res)
{
	const char *state;

	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
		return 1;
	if (res == NULL)
		return 1;
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (state == NULL)
		return 0;
	/* 08: connection exception; 57P01-57P03: admin shutdown, crash
	 * shutdown, cannot connect now. */
	return strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0;
}

/* Run `sql` (no result rows wanted); 0, or -1 with errmsg. */
static int exec_command(PGconn *conn, const char *sql, const char *what,
			char *errmsg, size_t errlen)
{
	PGresult *res;
	char line[512];
	int rc = 0;

	res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK &&
	    PQresultStatus(res) != PGRES_TUPLES_OK) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		snprintf(errmsg, errlen, "storage: migrate: %s: %s%s%s", what,
			 storage__oneline(res ? PQresultErrorMessage(res)
					      : PQerrorMessage(conn),
					  line, sizeof line),
			 state ? " sqlstate=" : "", state ? state : "");
		rc = -1;
	}
	PQclear(res);
	return rc;
}

/* The highest migration recorded in schema_migrations (0 if none). */
static int current_version(PGconn *conn, int *out, char *errmsg,
			   size_t errlen)
{
	PGresult *res;
	char line[512];
	int rc = -1;

	res = PQexec(conn,
		     "SELECT coalesce(max(version), 0) FROM schema_migrations");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		snprintf(errmsg, errlen, "storage: migrate: read version: %s",
			 storage__oneline(res ? PQresultErrorMessage(res)
					      : PQerrorMessage(conn),
					  line, sizeof line));
		goto out_clear;
	}
	*out = atoi(PQgetvalue(res, 0, 0));
	rc = 0;
out_clear:
	PQclear(res);
	return rc;
}

static int record_version(PGconn *conn, int version, char *errmsg,
			  size_t errlen)
{
	PGresult *res;
	char num[16], line[512];
	const char *params[1] = {num};
	int rc = 0;

	snprintf(num, sizeof num, "%d", version);
	res = PQexecParams(conn,
			   "INSERT INTO schema_migrations (version, applied_at)"
			   " VALUES ($1::int, now())",
			   1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		snprintf(errmsg, errlen, "storage: migrate: record version %d: %s",
			 version,
			 storage__oneline(res ? PQresultErrorMessage(res)
					      : PQerrorMessage(conn),
					  line, sizeof line));
		rc = -1;
	}
	PQclear(res);
	return rc;
}

int storage_migrate(const char *conninfo, char *errmsg, size_t errlen)
{
	PGconn *conn;
	char line[512], what[32];
	int have = 0, latest = 0, applied = 0;
	size_t i;

	if (storage__conninfo_check(conninfo, errmsg, errlen) != 0)
		return -1;
	conn = storage__connect(conninfo, "flowd-migrate");
	if (conn == NULL) {
		snprintf(errmsg, errlen, "storage: connect: out of memory");
		return -1;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		snprintf(errmsg, errlen, "storage: connect: %s",
			 storage__oneline(PQerrorMessage(conn), line,
					  sizeof line));
		goto err_finish;
	}
	if (exec_command(conn, "BEGIN", "begin", errmsg, errlen) != 0)
		goto err_finish;
	if (exec_command(conn,
			 "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")",
			 "lock", errmsg, errlen) != 0)
		goto err_rollback;
	if (exec_command(conn,
			 "CREATE TABLE IF NOT EXISTS schema_migrations ("
			 " version int PRIMARY KEY,"
			 " applied_at timestamptz NOT NULL DEFAULT now())",
			 "create schema_migrations", errmsg, errlen) != 0)
		goto err_rollback;
	if (current_version(conn, &have, errmsg, errlen) != 0)
		goto err_rollback;

	for (i = 0; i < storage__migrations_count; i++) {
		const struct storage__migration *m = &storage__migrations[i];

		if (m->version > latest)
			latest = m->version;
		if (m->version <= have)
			continue;
		snprintf(what, sizeof what, "migration %d", m->version);
		if (exec_command(conn, m->sql, what, errmsg, errlen) != 0)
			goto err_rollback;
		if (record_version(conn, m->version, errmsg, errlen) != 0)
			goto err_rollback;
		applied++;
	}
	if (exec_command(conn, "COMMIT", "commit", errmsg, errlen) != 0)
		goto err_finish;

	if (have > latest)
		log_warn("storage: schema is newer than this flowd db_version=%d "
			 "known_version=%d",
			 have, latest);
	else if (applied > 0)
		log_info("storage: schema migrated from_version=%d to_version=%d",
			 have, latest);
	else
		log_debug("storage: schema up to date version=%d", have);
	PQfinish(conn);
	return 0;

err_rollback:
	/* Best effort: closing the session rolls back as well. */
	PQclear(PQexec(conn, "ROLLBACK"));
err_finish:
	PQfinish(conn);
	return -1;
}

int storage_applied_index(const char *conninfo, uint64_t *out, char *errmsg,
			  size_t errlen)
{
	PGconn *conn = storage__connect(conninfo, "flowd-start");
	PGresult *res = NULL;
	char line[512];
	int rv = -1;

	if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
		snprintf(errmsg, errlen, "storage: connect: %s",
			 conn ? storage__oneline(PQerrorMessage(conn), line,
						 sizeof line)
			      : "out of memory");
		goto out;
	}
	res = PQexec(conn, "SELECT applied_index FROM raft_meta WHERE id = 1");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
		snprintf(errmsg, errlen, "storage: read raft_meta: %s",
			 storage__oneline(PQresultErrorMessage(res), line,
					  sizeof line));
		goto out;
	}
	*out = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	rv = 0;
out:
	PQclear(res);
	PQfinish(conn);
	return rv;
}
