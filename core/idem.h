/* idem.h - idempotency keys: (flow, key) -> the run the key created, kept
 * for a retention (an age and a count), the oldest leaving first. Part of
 * the replicated state: time is the applying command's ts, never a clock,
 * so every node keeps and drops the same keys at the same entry.
 *
 * Memory: one allocation per key (the key text, its run's seq and when it
 * was made) plus two pointers (hash slot, order ring) - about 100 bytes for
 * a 30-byte key.
 *
 * Thread: the loop thread (the state machine's). */
#ifndef FLOWD_CORE_IDEM_H
#define FLOWD_CORE_IDEM_H

#include <stddef.h>
#include <stdint.h>

struct idem_ent;

struct idem {
	struct idem_ent **slots;    /* open addressing, linear probing */
	size_t cap;                 /* a power of two, or 0 */
	struct idem_ent **order;    /* ring in the order keys were made */
	size_t head, n, ring_cap;
};

void idem_init(struct idem *t);
/* Free every key. */
void idem_close(struct idem *t);

/* The seq of the run `key` of `flow` created, or 0; *ts_ms (may be NULL)
 * when it was made. */
uint64_t idem_get(const struct idem *t, const char *flow, const char *key,
		  int64_t *ts_ms);

/* Remember that `key` of `flow` created run `seq` at `ts_ms` (replacing an
 * older entry of the same key). Keys must be added in the order their runs
 * were made. Aborts on out of memory (apply must not fail half-way). */
void idem_put(struct idem *t, const char *flow, const char *key, uint64_t seq,
	      int64_t ts_ms);

/* Drop the oldest keys while there are more than `max` (0 = no count
 * limit) or the oldest was made before `now_ms - ttl_ms` (ttl_ms 0 = no age
 * limit). Returns how many left. */
size_t idem_expire(struct idem *t, int64_t now_ms, int64_t ttl_ms, size_t max);

size_t idem_count(const struct idem *t);

/* The i-th key, oldest first (0 <= i < idem_count): its "flow\nkey" text
 * (borrowed), run seq and time. */
const char *idem_at(const struct idem *t, size_t i, uint64_t *seq,
		    int64_t *ts_ms);

#endif
