/* wake.h - another thread wakes the loop: an eventfd the loop polls.
 *
 * Why not uv_async_t: libuv 1.44's uv_async_send() marks the handle busy,
 * writes its wakeup, then marks it pending; the loop, seeing it busy, spins
 * and then sched_yield()s until the sender is done. A sender at a lower
 * priority than the loop (the spawner thread takes executor.step_nice, the
 * HTTP and applier threads node.background_nice) is preempted in between
 * on a busy machine, and the loop, the one thread that must not wait, spins
 * (seen: 4.7% of flowd's CPU in that spin, with sched_yield, under mixed
 * load). A write(2) to an eventfd is one system call with nothing to wait
 * for on the other side.
 *
 * Wakes coalesce: the callback runs once for any number of wake_send()s
 * since it last ran, and must take everything that is waiting.
 *
 * Threads: wake_init/wake_close and the callback on the loop; wake_send
 * from any thread, until wake_close. */
#ifndef FLOWD_DAEMON_WAKE_H
#define FLOWD_DAEMON_WAKE_H

#include <uv.h>

struct wake;
typedef void (*wake_fn)(struct wake *w);

struct wake {
	uv_poll_t poll;             /* poll.data is the caller's */
	int fd;                     /* the eventfd */
	wake_fn cb;
	uv_close_cb close_cb;
	void *data;                 /* the caller's */
};

/* Start polling a new eventfd on `loop`. Returns 0 or a negative errno. */
int wake_init(uv_loop_t *loop, struct wake *w, wake_fn cb);

/* Any thread: make the callback run soon on the loop. */
void wake_send(struct wake *w);

/* Stop and close; `cb` (may be NULL) gets the uv handle once closed, after
 * which the struct may be freed. */
void wake_close(struct wake *w, uv_close_cb cb);

/* The struct wake of a handle wake_close() passed to its callback. */
static inline struct wake *wake_of(uv_handle_t *h)
{
	return (struct wake *)h; /* poll is the first member */
}

#endif
