/* thread.h - the calling thread's CPU priority (Linux keeps nice per thread).
 * Used by the api's HTTP threads and the storage applier so that the loop
 * thread, which runs Raft, comes first on a busy machine. */
#ifndef FLOWD_CORE_THREAD_H
#define FLOWD_CORE_THREAD_H

/* Make the calling thread at least `nice` nice (0..19): it is only ever
 * lowered in priority, never raised above what the process started with
 * (systemd's Nice= may start flowd below 0). Returns 0, or -1 with errno. */
int flowd_thread_nice(int nice);

/* Make the calling thread `by` (0..39) nicer than it is now: lower in
 * priority than the thread that made it (the loop) by that much, whatever
 * nice the process started with; 0 changes nothing. Returns 0 or -1. */
int flowd_thread_nicer(int by);

#endif
