/* tz.h - IANA time zones from TZif data (RFC 8536): UTC offsets at any
 * instant, and the instants where they change. Pure: the bytes of a zone
 * file come from a loader the daemon installs (tz_set_loader); core never
 * opens a file itself. Leap-second records are ignored (POSIX time).
 *
 * Past the last transition in the table the zone's footer rule (a POSIX TZ
 * string such as "CET-1CEST,M3.5.0,M10.5.0/3") gives the offsets, so any
 * year works, also with "slim" TZif files that stop early. */
#ifndef FLOWD_CORE_TZ_H
#define FLOWD_CORE_TZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tz;

/* Reads the TZif bytes of zone `name` into a malloc'd buffer (*buf, *len;
 * the caller frees). Returns 0, or -1 if there is no such zone. */
typedef int (*tz_loader)(const char *name, void **buf, size_t *len);

/* Installs the loader (once, before any tz_get; the daemon and the tests
 * use one reading /usr/share/zoneinfo). Without one only "UTC" exists. */
void tz_set_loader(tz_loader load);

/* Is `name` shaped like a zone name (letters, digits, "_+-/", no ".."
 * component, no leading "/", at most 64 bytes)? Says nothing of existence. */
bool tz_name_valid(const char *name);

/* The zone called `name`, loaded once and kept for the life of the process
 * (thread safe; the pointer is borrowed and stays valid until exit); NULL if
 * the name is invalid, unknown, or its data does not parse. "UTC" always
 * exists. Only zones that exist are cached, at most TZ_CACHE_MAX (4096, far
 * above the ~1,300 names of a full tzdata): an unknown name asks the loader
 * again each time, and costs no memory. */
const struct tz *tz_get(const char *name);

/* How many zones the cache holds ("UTC" not counted); for tests. */
size_t tz_cache_size(void);

/* Parse TZif bytes into a new zone (tz_free frees it); NULL if malformed. */
struct tz *tz_parse(const char *name, const void *buf, size_t len);
void tz_free(struct tz *z);

const char *tz_name(const struct tz *z);

/* Seconds east of UTC in effect at instant t (seconds since the epoch). */
int32_t tz_offset(const struct tz *z, int64_t t);

/* The first instant > t at which the offset changes; false if none in the
 * next 100 years. */
bool tz_next_change(const struct tz *z, int64_t t, int64_t *when);
/* The last instant <= t at which the offset changed; false if none in the
 * previous 100 years. */
bool tz_prev_change(const struct tz *z, int64_t t, int64_t *when);

/* Calendar helpers (proleptic Gregorian, UTC). */
int64_t tz_days_from_civil(int64_t y, unsigned m, unsigned d);
void tz_civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d);
unsigned tz_days_in_month(int64_t y, unsigned m);

#endif
