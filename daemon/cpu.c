/* cpu.c - who comes first on a busy machine: step processes in a cgroup of
 * their own with a low cpu.weight, when cgroup v2 is delegated to flowd.
 *
 * DESIGN
 *
 * The loop thread runs Raft's disk writes, heartbeats and applies; when the
 * steps, the HTTP threads and PostgreSQL saturate the CPUs, a late heartbeat
 * costs a leadership change. Two levers, both measured in
 * docs/benchmarks.md ("Mixed load"):
 *
 * - nice values (Linux: per thread): node.background_nice for the HTTP and
 *   applier threads, executor.step_nice for the steps (the spawner thread
 *   takes it and children inherit it). Always available.
 * - cgroup v2 weights: with executor.step_cpu_weight set and this process's
 *   cgroup delegated to it (writable, the cpu controller available: systemd
 *   `Delegate=yes`), cpu_cgroup_setup() moves flowd into a child `daemon`,
 *   makes a sibling `steps` with that cpu.weight (daemon keeps 100), and
 *   enables +cpu for them; the executor then writes each step's pid into
 *   steps/cgroup.procs right after spawning it. A step runs a few
 *   microseconds in the daemon's group before it moves; a weight matters
 *   over longer spans than that.
 *
 * Hosts that still mount the cpu controller in cgroup v1 (this sandbox,
 * some container hosts) get the same with cpu.shares (weight 100 = 1024)
 * in a child `steps` of flowd's v1 cpu group.
 *
 * Failure modes: anything missing (no cpu controller, no delegation, processes
 * left in our cgroup so the controller cannot be enabled) leaves everything
 * as it was and says why; the node runs on with nice values only.
 *
 * Thread: main, at start.
 */
#include "daemon/cpu.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int why_set(char *why, size_t n, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int why_set(char *why, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, n, fmt, ap);
	va_end(ap);
	return -1;
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t w;
	int saved;

	if (fd < 0)
		return -1;
	w = write(fd, text, strlen(text));
	saved = errno;
	close(fd);
	errno = saved;
	return w == (ssize_t)strlen(text) ? 0 : -1;
}

static int read_file(const char *path, char *buf, size_t n)
{
	FILE *f = fopen(path, "re");
	size_t got;

	if (f == NULL)
		return -1;
	got = fread(buf, 1, n - 1, f);
	buf[got] = '\0';
	fclose(f);
	return 0;
}

/* The mount point of the hierarchy of fstype `type` ("cgroup2"), or, for
 * "cgroup", of the v1 hierarchy whose options include the `controller`. */
static int mount_of(const char *type, const char *controller, char *dir,
		    size_t n)
{
	char line[4096], dev[256], mnt[2048], fstype[64], opts[1024];
	FILE *f = fopen("/proc/self/mounts", "re");
	int rc = -1;

	if (f == NULL)
		return -1;
	while (rc != 0 && fgets(line, sizeof line, f) != NULL) {
		if (sscanf(line, "%255s %2047s %63s %1023s", dev, mnt, fstype,
			   opts) != 4 ||
		    strcmp(fstype, type) != 0)
			continue;
		if (controller != NULL) {
			char *tok, *save = NULL;
			bool has = false;

			for (tok = strtok_r(opts, ",", &save); tok;
			     tok = strtok_r(NULL, ",", &save))
				has = has || strcmp(tok, controller) == 0;
			if (!has)
				continue;
		}
		rc = snprintf(dir, n, "%s", mnt) < (int)n ? 0 : -1;
	}
	fclose(f);
	return rc;
}

/* This process's path in a hierarchy, from /proc/self/cgroup: the v2 line
 * ("0::/x") when controller is NULL, else the v1 line naming it. */
static int own_path(const char *controller, char *path, size_t n)
{
	char line[4096];
	FILE *f = fopen("/proc/self/cgroup", "re");
	int rc = -1;

	if (f == NULL)
		return -1;
	while (rc != 0 && fgets(line, sizeof line, f) != NULL) {
		char *ctl = strchr(line, ':'), *p;
		size_t len = strlen(line);

		while (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (ctl == NULL || (p = strchr(ctl + 1, ':')) == NULL)
			continue;
		*p = '\0';
		if (controller == NULL ? ctl[1] != '\0' : false)
			continue;
		if (controller != NULL) {
			char *tok, *save = NULL;
			bool has = false;

			for (tok = strtok_r(ctl + 1, ",", &save); tok;
			     tok = strtok_r(NULL, ",", &save))
				has = has || strcmp(tok, controller) == 0;
			if (!has)
				continue;
		}
		rc = snprintf(path, n, "%s", strcmp(p + 1, "/") == 0 ? "" : p + 1) <
				     (int)n
			     ? 0
			     : -1;
	}
	fclose(f);
	return rc;
}

/* cgroup v2: flowd into <base>/daemon, steps into <base>/steps. */
static int setup_v2(const char *base, unsigned steps_weight, char *why,
		    size_t whylen)
{
	char path[4300], buf[512];
	int fd;

	snprintf(path, sizeof path, "%s/cgroup.controllers", base);
	if (read_file(path, buf, sizeof buf) != 0)
		return why_set(why, whylen, "%s: %s", path, strerror(errno));
	if (strstr(buf, "cpu") == NULL)
		return why_set(why, whylen,
			       "the cpu controller is not available in %s "
			       "(not delegated?)",
			       base);
	snprintf(path, sizeof path, "%s/cgroup.subtree_control", base);
	if (access(path, W_OK) != 0)
		return why_set(why, whylen, "%s is not writable (not delegated)",
			       base);
	snprintf(path, sizeof path, "%s/daemon", base);
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		return why_set(why, whylen, "mkdir %s: %s", path, strerror(errno));
	snprintf(path, sizeof path, "%s/steps", base);
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		return why_set(why, whylen, "mkdir %s: %s", path, strerror(errno));
	/* The whole process (every thread) moves: cgroup v2 allows processes
	 * only in leaves once a controller is enabled for the children. */
	snprintf(path, sizeof path, "%s/daemon/cgroup.procs", base);
	snprintf(buf, sizeof buf, "%d", (int)getpid());
	if (write_file(path, buf) != 0)
		return why_set(why, whylen, "%s: %s", path, strerror(errno));
	snprintf(path, sizeof path, "%s/cgroup.subtree_control", base);
	if (write_file(path, "+cpu") != 0)
		return why_set(why, whylen,
			       "enabling +cpu in %s: %s (other processes "
			       "in it?)",
			       base, strerror(errno));
	snprintf(path, sizeof path, "%s/steps/cpu.weight", base);
	snprintf(buf, sizeof buf, "%u", steps_weight);
	if (write_file(path, buf) != 0)
		return why_set(why, whylen, "%s: %s", path, strerror(errno));
	snprintf(path, sizeof path, "%s/steps/cgroup.procs", base);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return why_set(why, whylen, "%s: %s", path, strerror(errno));
	snprintf(why, whylen, "%.400s/steps, cpu.weight %u", base, steps_weight);
	return fd;
}

/* cgroup v1 (a host that mounts the cpu controller there): steps into a
 * child <base>/steps with cpu.shares in proportion (weight 100 = 1024);
 * flowd stays where it is (v1 allows processes in inner groups). */
static int setup_v1(const char *base, unsigned steps_weight, char *why,
		    size_t whylen)
{
	char path[4300], buf[64];
	unsigned long shares = (unsigned long)steps_weight * 1024 / 100;
	int fd;

	snprintf(path, sizeof path, "%s/steps", base);
	if (mkdir(path, 0755) != 0 && errno != EEXIST)
		return why_set(why, whylen, "mkdir %s: %s", path, strerror(errno));
	snprintf(path, sizeof path, "%s/steps/cpu.shares", base);
	snprintf(buf, sizeof buf, "%lu", shares < 2 ? 2 : shares);
	if (write_file(path, buf) != 0)
		return why_set(why, whylen, "%s: %s", path, strerror(errno));
	snprintf(path, sizeof path, "%s/steps/cgroup.procs", base);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return why_set(why, whylen, "%s: %s", path, strerror(errno));
	snprintf(why, whylen, "%.400s/steps (cgroup v1), cpu.shares %s", base, buf);
	return fd;
}

int cpu_cgroup_setup(unsigned steps_weight, char *why, size_t whylen)
{
	char mnt[2048], own[2048], base[4200], v2why[512] = "";
	int fd = -1;

	if (mount_of("cgroup2", NULL, mnt, sizeof mnt) == 0 &&
	    own_path(NULL, own, sizeof own) == 0) {
		snprintf(base, sizeof base, "%s%s", mnt, own);
		fd = setup_v2(base, steps_weight, v2why, sizeof v2why);
		if (fd >= 0) {
			snprintf(why, whylen, "%s", v2why);
			return fd;
		}
	}
	if (mount_of("cgroup", "cpu", mnt, sizeof mnt) == 0 &&
	    own_path("cpu", own, sizeof own) == 0) {
		snprintf(base, sizeof base, "%s%s", mnt, own);
		fd = setup_v1(base, steps_weight, why, whylen);
		if (fd >= 0)
			return fd;
	}
	if (v2why[0] != '\0')
		snprintf(why, whylen, "%s", v2why);
	else if (fd < 0 && why[0] == '\0')
		snprintf(why, whylen, "no cgroup hierarchy with the cpu controller");
	return -1;
}
