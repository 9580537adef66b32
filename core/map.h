/* map.h - a string-keyed hash map (separate chaining), used by the state
 * machine for flows, runs and idempotency keys. Keys are copied; values are
 * borrowed pointers the caller owns. Iteration order is unspecified, so the
 * state machine never lets it decide anything. */
#ifndef FLOWD_CORE_MAP_H
#define FLOWD_CORE_MAP_H

#include <stddef.h>
#include <stdint.h>

struct map_entry {
	char *key;
	void *value;
	struct map_entry *next;
};

struct map {
	struct map_entry **buckets;
	size_t n_buckets;
	size_t size;
};

/* FNV-1a of the string s, continuing from h (start with MAP_FNV_SEED). */
#define MAP_FNV_SEED 1469598103934665603ULL
uint64_t map_fnv1a(const char *s, uint64_t h);

void map_init(struct map *m);
/* Free the entries (not the values). */
void map_close(struct map *m);
void *map_get(const struct map *m, const char *key);
/* Insert or replace. Returns 0, or -1 on out-of-memory. */
int map_put(struct map *m, const char *key, void *value);
/* Remove; returns the old value or NULL. */
void *map_del(struct map *m, const char *key);

#endif
