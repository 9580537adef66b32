/* clock.h - the wall clock, handed to the modules that stamp commands
 * (`ts`, milliseconds since the epoch) or measure in wall-clock time (a
 * schedule's ticks). main.c provides the real one (CLOCK_REALTIME); a unit
 * test provides a virtual one. libuv's uv_now() stays where timers are. */
#ifndef FLOWD_DAEMON_CLOCK_H
#define FLOWD_DAEMON_CLOCK_H

#include <stdint.h>

struct flowd_clock {
	int64_t (*now_ms)(void *arg); /* wall clock, ms since the epoch */
	void *arg;
};

static inline int64_t flowd_clock_now(const struct flowd_clock *c)
{
	return c->now_ms(c->arg);
}

#endif
