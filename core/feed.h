/* feed.h - the change feed behind GET /v1/watch: a bounded ring of events
 * (a run's or a step's new state, a schedule's tick decided), each with a
 * cluster-wide id, written by the loop thread and read by any number of
 * HTTP threads.
 *
 * Ids. An event is named by the Raft index of the entry that made it and
 * its rank among that entry's events: "<index>-<k>". Every node applies
 * the same entries in the same order and reports the same events, so an id
 * means the same on every node and a client may resume on another one
 * (Last-Event-ID).
 *
 * Visibility. Events added while a batch is applied are seen by readers
 * once feed_publish() is called, after the read view that holds their
 * state is published: a client that reads after an event sees its change.
 *
 * The window. The ring holds at most `cap` events; older ones leave it.
 * Where events may be missing (they left the ring, or the state was
 * replaced by a snapshot, whose changes no event reports) the feed keeps a
 * floor: a reader asking to resume below it is told to start over
 * (FEED_RESET) instead of silently missing changes.
 *
 * Threads: feed_add, feed_publish and feed_lost on one writer thread (the
 * loop); feed_read and the other readers on any thread. One mutex, held
 * briefly: a reader copies the events it takes. */
#ifndef FLOWD_CORE_FEED_H
#define FLOWD_CORE_FEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct feed;

/* An event's id: the entry's index and its rank in the entry (from 0). */
struct feed_id {
	uint64_t index;
	uint32_t k;
};

/* Parse "<index>-<k>" (decimal, no sign, no spaces). Returns 0 or -1. */
int feed_id_parse(const char *s, struct feed_id *out);
/* Format an id into buf (at least 32 bytes). */
void feed_id_format(struct feed_id id, char *buf, size_t len);
/* <0, 0, >0 as a is before, equal to, after b. */
int feed_id_cmp(struct feed_id a, struct feed_id b);

/* A feed of at most `cap` (>= 1) events. NULL on out of memory. */
struct feed *feed_new(size_t cap);
void feed_free(struct feed *f);

/* ---- The writer ---- */

/* Add an event of entry `index` (the feed ranks it after the others of
 * that entry): `flow` and `run` (may be NULL) are what readers filter on;
 * its text is a Server-Sent Events frame, "id: <id>\nevent: <event>\ndata:
 * <data>\n\n" (`data` one line of len bytes); all copied. The oldest event
 * leaves when the ring is full. Returns the id given, or {0,0} on out of
 * memory (the event is lost and the floor raised past it). */
struct feed_id feed_add(struct feed *f, uint64_t index, const char *flow,
			const char *run, const char *event, const char *data,
			size_t len);

/* Make the events added so far visible. Returns true when some became
 * visible. */
bool feed_publish(struct feed *f);

/* The state changed in a way no event reports (a snapshot was restored at
 * `index`): readers resuming from before it, and every reader already
 * reading, start over. */
void feed_lost(struct feed *f, uint64_t index);

/* ---- Readers ---- */

/* A reader's place in the feed (its own; the feed keeps no list of
 * readers). */
struct feed_reader {
	uint64_t pos;               /* the local sequence number of the next
	                             * event it takes */
	uint64_t epoch;             /* the feed's losses when it started */
	struct feed_id after;       /* events up to this id are skipped: a
	                             * reader resuming on a node that has not
	                             * applied that far yet gets no event twice */
	bool skip;
};

enum feed_start {
	FEED_OK,
	FEED_RESET,     /* the events after the id asked for are not all here
	                 * any more: re-list, then go on */
};

/* Start a reader after `after` (an id a client saw; {index, UINT32_MAX}
 * is after every event of entry `index`), or from now when `after` is
 * NULL. On FEED_RESET the reader starts from now and *last is the id to
 * give the client to go on from (the newest event, or the floor when that
 * is later; {0,0} when neither). */
enum feed_start feed_start(struct feed *f, const struct feed_id *after,
			   struct feed_reader *r, struct feed_id *last);

/* Filter of a reader: events of this flow and/or run (NULL: any). */
struct feed_filter {
	const char *flow;
	const char *run;
};

#define FEED_READ_RESET (-1)  /* start over: events were missed */
#define FEED_READ_NOMEM (-2)

/* Append to `out` (a growing buffer: *out, *len, *cap; realloc'd) the text
 * of the visible events at and after the reader's place that pass `flt`,
 * stopping before the buffer would pass `max` bytes (at least one event is
 * taken), and move the reader past the events looked at. Returns the
 * number of events appended (0: none now); FEED_READ_RESET when the reader
 * missed events (it fell behind the window, or a snapshot replaced the
 * state since it started): it is moved to now and *last is the id to go
 * on from, as feed_start gives; FEED_READ_NOMEM. */
int feed_read(struct feed *f, struct feed_reader *r,
	      const struct feed_filter *flt, size_t max, char **out,
	      size_t *len, size_t *cap, struct feed_id *last);

/* Whether feed_read would give something (an event that passes `flt`, or
 * a reset); the reader is moved past the events that do not pass. */
bool feed_pending(struct feed *f, struct feed_reader *r,
		  const struct feed_filter *flt);

/* Numbers for metrics and tests. */
struct feed_stats {
	size_t events;          /* in the ring */
	size_t cap;
	uint64_t added;         /* ever */
	struct feed_id floor;   /* resuming at or below it starts over */
};
void feed_stats(struct feed *f, struct feed_stats *out);

#endif
