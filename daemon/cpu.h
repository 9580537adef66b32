/* cpu.h - step processes in a cgroup v2 of their own with a low cpu.weight,
 * when this process's cgroup is delegated (cpu.c). */
#ifndef FLOWD_DAEMON_CPU_H
#define FLOWD_DAEMON_CPU_H

#include <stddef.h>

/* Move this process into <its cgroup>/daemon, make <its cgroup>/steps with
 * cpu.weight `steps_weight` (1..10000) and enable the cpu controller for
 * both. Returns an fd open for writing on steps/cgroup.procs (the caller
 * owns it; write a step's pid to it to move the step) and says where in
 * `why`; or -1 with the reason in `why`, nothing changed that matters. */
int cpu_cgroup_setup(unsigned steps_weight, char *why, size_t whylen);

#endif
