/* thread.c - the calling thread's nice value (thread.h). A system call, like
 * log.c's writes, is the one kind of I/O core allows itself here. */
#include "thread.h"

#include <errno.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

int flowd_thread_nice(int nice)
{
	id_t tid = (id_t)syscall(SYS_gettid);
	int now;

	errno = 0;
	now = getpriority(PRIO_PROCESS, tid);
	if (now == -1 && errno != 0)
		return -1;
	if (nice <= now)
		return 0; /* as nice already: never raise a thread's priority */
	return setpriority(PRIO_PROCESS, tid, nice);
}

int flowd_thread_nicer(int by)
{
	id_t tid = (id_t)syscall(SYS_gettid);
	int now;

	if (by <= 0)
		return 0;
	errno = 0;
	now = getpriority(PRIO_PROCESS, tid);
	if (now == -1 && errno != 0)
		return -1;
	return setpriority(PRIO_PROCESS, tid, now + by > 19 ? 19 : now + by);
}
