/* migrations.h - storage/'s internal header: the numbered schema migrations
 * and the libpq helpers shared by migrate.c, applier.c and reader.c. Nothing
 * outside storage/ includes it. */
#ifndef FLOWD_STORAGE_MIGRATIONS_H
#define FLOWD_STORAGE_MIGRATIONS_H

#include <libpq-fe.h>
#include <stddef.h>

/* One schema step. Versions start at 1 and increase by one; a released
 * migration is never edited, a change is a new migration. `sql` may hold
 * several statements (it runs through the simple query protocol). */
struct storage__migration {
	int version;
	const char *sql;
};

extern const struct storage__migration storage__migrations[];
extern const size_t storage__migrations_count;

/* Connect (blocking) to `conninfo` (a key=value string, a URI or a bare
 * database name), with flowd's defaults: connect_timeout=2, TCP keepalives,
 * client_encoding=UTF8 and fallback_application_name=`app`. Anything the
 * conninfo sets wins over these defaults. Returns a new PGconn (check
 * PQstatus; PQfinish it in every case) or NULL when out of memory. */
PGconn *storage__connect(const char *conninfo, const char *app);

/* Returns 0 if `conninfo` parses, or -1 with the reason in errmsg. A bare
 * database name ("flowd") is accepted as is. */
int storage__conninfo_check(const char *conninfo, char *errmsg,
			    size_t errlen);

/* Copy a libpq message (`msg` may be NULL) into buf on one line: newlines
 * become spaces, trailing blanks are dropped. Returns buf. */
char *storage__oneline(const char *msg, char *buf, size_t len);

/* 1 if a failed statement means the server or the link is gone (the session
 * is unusable or the server is shutting down or starting): the caller should
 * reconnect. `res` may be NULL. */
int storage__conn_lost(PGconn *conn, const PGresult *res);

#endif
