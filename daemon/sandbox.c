/* sandbox.c - the identity, environment and descriptors steps get, and the
 * start-up check of the node's secret files. */

/*
 * DESIGN
 *
 * What a step must not reach. A step is code the node's users wrote; flowd
 * holds the API tokens and the cluster secret (config file), the Raft log
 * (data directory), PostgreSQL's password (PGPASSWORD in its environment)
 * and sockets (libcurl's socket pair, the listeners). Before this module a
 * step inherited all of it: flowd's whole environment, every descriptor not
 * marked close-on-exec, flowd's uid (root when flowd ran as root).
 *
 * Happy path (who calls what):
 *   1. main, right after config_load: sandbox_check_files (data directory
 *      0700 and ours, config not readable by other users) and
 *      sandbox_resolve (executor.run_as -> uid, gid, groups, home; the
 *      root refusal).
 *   2. main hands the identity and executor.pass_env to the executor
 *      (executor_set_sandbox), which builds sandbox_env_base once: flowd's
 *      environment does not change while it runs.
 *   3. Per step, executor.c merges the step's variables (FLOWD_*, the
 *      spec's env) over that base on the loop thread, and in the vfork
 *      child calls sandbox_close_from(3) and, when switching,
 *      sandbox_switch_user, both async-signal-safe (raw system calls, no
 *      allocation, no locks).
 *
 * Failure modes.
 *   - run_as names no user or group, or one with more than
 *     SANDBOX_MAX_GROUPS supplementary groups: flowd does not start.
 *   - flowd is not root and run_as is another user: flowd does not start
 *     (it could not setuid; CAP_SETUID without root is not supported).
 *   - steps would run as uid 0 or gid 0 without executor.allow_root:
 *     flowd does not start; the message names the key.
 *   - A config readable by every user that flowd does not own, a config
 *     writable by every user, a data directory owned by someone else:
 *     flowd does not start. What it owns it tightens (chmod) and says so.
 *   - In the child, a failing setgroups/setgid/setuid or close is an error
 *     the executor reports as spawn_failed; the step never runs with more
 *     than it was meant to.
 *   - close_range missing (kernel < 5.9, or a seccomp filter): the entries
 *     of /proc/self/fd are closed one by one (getdents64 into a stack
 *     buffer); without /proc, every number below RLIMIT_NOFILE.
 *
 * Threads. sandbox_resolve, sandbox_check_files and sandbox_env_base run
 * on the main thread at start (getpwnam_r and friends may allocate);
 * sandbox_close_from and sandbox_switch_user in a child between vfork and
 * exec.
 */

#include "daemon/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/log.h"

extern char **environ;

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---------------------------------------------------------------- identity */

/* A decimal id ("65534"), or -1. */
static long long parse_id(const char *s)
{
	long long v = 0;

	if (*s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > (long long)UINT32_MAX - 1)   /* (uid_t)-1 is no id */
			return -1;
	}
	return v;
}

/* getpwnam_r, then getpwuid_r for a number. `*buf` grows as needed (owned
 * by the caller). Returns 0 found, -1 not found or error (errno). */
static int lookup_user(const char *name, struct passwd *pw, char **buf,
		       size_t *size)
{
	long long id = parse_id(name);

	for (int by_id = 0; by_id < 2; by_id++) {
		struct passwd *res = NULL;
		int rc;

		if (by_id && id < 0)
			break;
		for (;;) {
			rc = by_id ? getpwuid_r((uid_t)id, pw, *buf, *size,
						&res)
				   : getpwnam_r(name, pw, *buf, *size, &res);
			if (rc != ERANGE)
				break;
			char *nb = realloc(*buf, *size * 2);
			if (nb == NULL)
				return -1;
			*buf = nb;
			*size *= 2;
		}
		if (res != NULL)
			return 0;
	}
	return -1;
}

static int lookup_group(const char *name, struct group *gr, char **buf,
			size_t *size)
{
	long long id = parse_id(name);

	for (int by_id = 0; by_id < 2; by_id++) {
		struct group *res = NULL;
		int rc;

		if (by_id && id < 0)
			break;
		for (;;) {
			rc = by_id ? getgrgid_r((gid_t)id, gr, *buf, *size,
						&res)
				   : getgrnam_r(name, gr, *buf, *size, &res);
			if (rc != ERANGE)
				break;
			char *nb = realloc(*buf, *size * 2);
			if (nb == NULL)
				return -1;
			*buf = nb;
			*size *= 2;
		}
		if (res != NULL)
			return 0;
	}
	return -1;
}

static void copy_str(char *dst, size_t size, const char *src)
{
	snprintf(dst, size, "%s", src != NULL ? src : "");
}

/* flowd's own identity: euid, egid, name and home (HOME first). */
static void own_identity(struct sandbox_identity *out, char **buf,
			 size_t *size)
{
	const char *home = getenv("HOME");
	struct passwd pw, *res = NULL;

	out->uid = geteuid();
	out->gid = getegid();
	for (;;) {
		int rc = getpwuid_r(out->uid, &pw, *buf, *size, &res);
		char *nb;

		if (rc != ERANGE)
			break;
		nb = realloc(*buf, *size * 2);
		if (nb == NULL)
			break;
		*buf = nb;
		*size *= 2;
	}
	if (res != NULL)
		copy_str(out->user, sizeof out->user, pw.pw_name);
	if (home == NULL || home[0] == '\0')
		home = res != NULL ? pw.pw_dir : "/";
	copy_str(out->home, sizeof out->home, home);
}

/* run_as "user[:group]" into out (uid, gid, groups, name, home). */
static int resolve_run_as(const char *run_as, struct sandbox_identity *out,
			  char **buf, size_t *size, char *err, size_t errlen)
{
	char user[256], *group = NULL;
	const char *colon = strchr(run_as, ':');
	struct passwd pw;
	struct group gr;
	int n;

	if (colon != NULL) {
		if ((size_t)(colon - run_as) >= sizeof user)
			return fail(err, errlen, "executor.run_as: user name "
				    "too long");
		memcpy(user, run_as, (size_t)(colon - run_as));
		user[colon - run_as] = '\0';
		group = (char *)colon + 1;
	} else {
		copy_str(user, sizeof user, run_as);
	}
	if (user[0] == '\0' || (group != NULL && group[0] == '\0'))
		return fail(err, errlen, "executor.run_as: \"%s\" is not "
			    "\"user\" or \"user:group\"", run_as);
	if (lookup_user(user, &pw, buf, size) != 0)
		return fail(err, errlen, "executor.run_as: no user \"%s\" on "
			    "this host", user);
	out->uid = pw.pw_uid;
	out->gid = pw.pw_gid;
	copy_str(out->user, sizeof out->user, pw.pw_name);
	copy_str(out->home, sizeof out->home,
		 pw.pw_dir != NULL && pw.pw_dir[0] != '\0' ? pw.pw_dir : "/");
	if (group != NULL) {
		/* pw's strings live in *buf: copied out above, reused now */
		if (lookup_group(group, &gr, buf, size) != 0)
			return fail(err, errlen, "executor.run_as: no group "
				    "\"%s\" on this host", group);
		out->gid = gr.gr_gid;
	}
	/* The user's supplementary groups, as login (initgroups) gives them,
	 * with the primary gid (getgrouplist includes it). */
	n = SANDBOX_MAX_GROUPS;
	if (getgrouplist(out->user, out->gid, out->groups, &n) < 0)
		return fail(err, errlen, "executor.run_as: user \"%s\" is in "
			    "more than %d groups", out->user,
			    SANDBOX_MAX_GROUPS);
	out->n_groups = n;
	return 0;
}

int sandbox_resolve(const struct flowd_config *cfg,
		    struct sandbox_identity *out, char *err, size_t errlen)
{
	uid_t euid = geteuid();
	gid_t egid = getegid();
	size_t size = 16384;
	char *buf = malloc(size);
	int rc = -1;

	memset(out, 0, sizeof *out);
	if (buf == NULL)
		return fail(err, errlen, "executor.run_as: out of memory");
	if (cfg->run_as == NULL || cfg->run_as[0] == '\0') {
		own_identity(out, &buf, &size);
		if (out->uid == 0 && !cfg->allow_root) {
			fail(err, errlen, "executor.allow_root: flowd runs as "
			     "root and executor.run_as is not set, so steps "
			     "would run as root; set executor.run_as to an "
			     "unprivileged user (\"nobody\", \"flowd-steps\"), "
			     "or executor.allow_root = true");
			goto out;
		}
	} else {
		if (resolve_run_as(cfg->run_as, out, &buf, &size, err,
				   errlen) != 0)
			goto out;
		if (euid == 0) {
			out->switch_user = true;
		} else if (out->uid != euid || out->gid != egid) {
			fail(err, errlen, "executor.run_as: flowd runs as uid "
			     "%u gid %u, not root, and cannot switch steps to "
			     "\"%s\" (uid %u gid %u); start flowd as root or "
			     "leave executor.run_as unset",
			     (unsigned)euid, (unsigned)egid, cfg->run_as,
			     (unsigned)out->uid, (unsigned)out->gid);
			goto out;
		} else {
			/* keeps its own groups: it cannot setgroups */
			out->n_groups = 0;
		}
	}
	if ((out->uid == 0 || out->gid == 0) && !cfg->allow_root) {
		fail(err, errlen, "executor.allow_root: executor.run_as = "
		     "\"%s\" would run steps as %s 0; choose an unprivileged "
		     "user, or set executor.allow_root = true",
		     cfg->run_as != NULL ? cfg->run_as : "",
		     out->uid == 0 ? "uid" : "gid");
		goto out;
	}
	rc = 0;
	log_info("sandbox: steps run as user=%s uid=%u gid=%u groups=%d "
		 "home=%s switch=%s", out->user[0] ? out->user : "-",
		 (unsigned)out->uid, (unsigned)out->gid,
		 out->switch_user ? out->n_groups : 0, out->home,
		 out->switch_user ? "yes" : "no");
	if (out->uid == 0)
		log_warn("sandbox: steps run as root (executor.allow_root = "
			 "true): they can read the config and change the Raft "
			 "data directory");
out:
	free(buf);
	return rc;
}

/* ------------------------------------------------------------------- files */

/* mkdir -p: parents 0755 (less the umask), the last one 0700. */
static int make_dirs(const char *path)
{
	char tmp[PATH_MAX];
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof tmp) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(tmp, path, len + 1);
	for (char *p = tmp + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

static int check_data_dir(const char *dir, char *err, size_t errlen)
{
	uid_t euid = geteuid();
	struct stat st;

	if (stat(dir, &st) != 0) {
		if (errno != ENOENT || make_dirs(dir) != 0 ||
		    stat(dir, &st) != 0)
			return fail(err, errlen, "node.data_dir %s: %s", dir,
				    strerror(errno));
		log_info("sandbox: created data_dir=%s mode=0700", dir);
	}
	if (!S_ISDIR(st.st_mode))
		return fail(err, errlen, "node.data_dir %s: not a directory",
			    dir);
	if (st.st_uid != euid)
		return fail(err, errlen, "node.data_dir %s: owned by uid %u, "
			    "not by flowd's user (uid %u); chown it", dir,
			    (unsigned)st.st_uid, (unsigned)euid);
	if ((st.st_mode & 07777) != 0700) {
		if (chmod(dir, 0700) != 0)
			return fail(err, errlen, "node.data_dir %s: chmod "
				    "0700: %s", dir, strerror(errno));
		log_warn("sandbox: data_dir=%s was mode 0%03o, now 0700 "
			 "(the Raft log is flowd's alone)", dir,
			 (unsigned)(st.st_mode & 07777));
	}
	return 0;
}

static int check_config(const char *path, char *err, size_t errlen)
{
	uid_t euid = geteuid();
	struct stat st;
	unsigned mode;

	if (stat(path, &st) != 0)
		return fail(err, errlen, "config %s: %s", path,
			    strerror(errno));
	if (!S_ISREG(st.st_mode))
		return 0;   /* a pipe, /dev/stdin, ...: nothing to fix */
	mode = (unsigned)(st.st_mode & 07777);
	if (st.st_mode & S_IWOTH)
		return fail(err, errlen, "config %s: writable by every user "
			    "(mode 0%03o): anyone could change the tokens and "
			    "what this node runs; chmod 0600", path, mode);
	if (st.st_mode & S_IROTH) {
		if (st.st_uid != euid)
			return fail(err, errlen, "config %s: readable by "
				    "every user (mode 0%03o), and owned by uid "
				    "%u, so flowd cannot fix it: it holds the "
				    "API tokens and the cluster secret; chmod "
				    "o-r (0600 owned by flowd's user, or 0640 "
				    "with flowd's group)", path, mode,
				    (unsigned)st.st_uid);
		if (chmod(path, st.st_mode & S_IRWXU) != 0)
			return fail(err, errlen, "config %s: readable by every "
				    "user (mode 0%03o) and chmod 0600 failed: "
				    "%s", path, mode, strerror(errno));
		log_warn("sandbox: config=%s was readable by every user "
			 "(mode 0%03o), now 0%03o: it holds the API tokens and "
			 "the cluster secret", path, mode,
			 (unsigned)(st.st_mode & S_IRWXU));
		return 0;
	}
	if (st.st_uid != euid && st.st_uid != 0)
		log_warn("sandbox: config=%s is owned by uid %u, who can "
			 "change what this node runs", path,
			 (unsigned)st.st_uid);
	/* root:flowd 0640 is how a root-owned config is shared with flowd */
	if ((st.st_mode & (S_IRGRP | S_IWGRP)) && st.st_gid != 0 &&
	    st.st_gid != getegid())
		log_warn("sandbox: config=%s is %s by group %u (mode 0%03o): "
			 "every member can read the API tokens and the cluster "
			 "secret; 0600 unless that is meant", path,
			 (st.st_mode & S_IWGRP) ? "writable" : "readable",
			 (unsigned)st.st_gid, mode);
	return 0;
}

int sandbox_check_files(const char *config_path, const char *data_dir,
			char *err, size_t errlen)
{
	if (data_dir != NULL && check_data_dir(data_dir, err, errlen) != 0)
		return -1;
	if (config_path != NULL && check_config(config_path, err, errlen) != 0)
		return -1;
	return 0;
}

/* ------------------------------------------------------------- environment */

static size_t key_len(const char *entry)
{
	const char *eq = strchr(entry, '=');

	return eq != NULL ? (size_t)(eq - entry) : strlen(entry);
}

/* Set name=value in v (n entries, room for at least one more): replace an
 * entry of that name, else append. Returns 0 or -1 (out of memory). */
static int env_put(char **v, size_t *n, const char *name, const char *value)
{
	size_t nlen = strlen(name);
	char *entry;

	if (asprintf(&entry, "%s=%s", name, value) < 0)
		return -1;
	for (size_t i = 0; i < *n; i++) {
		if (key_len(v[i]) == nlen && memcmp(v[i], name, nlen) == 0) {
			free(v[i]);
			v[i] = entry;
			return 0;
		}
	}
	v[(*n)++] = entry;
	return 0;
}

char **sandbox_env_base(const struct sandbox_identity *id,
			char *const *pass_env)
{
	size_t n_pass = 0, n = 0;
	const char *lang = getenv("LANG"), *tz = getenv("TZ");
	char **v;
	int rc = 0;

	while (pass_env != NULL && pass_env[n_pass] != NULL)
		n_pass++;
	v = calloc(6 + n_pass + 1, sizeof *v);
	if (v == NULL)
		return NULL;
	rc |= env_put(v, &n, "PATH", SANDBOX_DEFAULT_PATH);
	if (id->home[0] != '\0')
		rc |= env_put(v, &n, "HOME", id->home);
	if (id->user[0] != '\0') {
		rc |= env_put(v, &n, "USER", id->user);
		rc |= env_put(v, &n, "LOGNAME", id->user);
	}
	if (lang == NULL || lang[0] == '\0')
		lang = "C.UTF-8";
	rc |= env_put(v, &n, "LANG", lang);
	if (tz != NULL)
		rc |= env_put(v, &n, "TZ", tz);
	for (size_t i = 0; i < n_pass; i++) {
		const char *value = getenv(pass_env[i]);

		if (value != NULL)
			rc |= env_put(v, &n, pass_env[i], value);
	}
	if (rc != 0) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return NULL;
	}
	return v;
}

/* ------------------------------------------------------------- in the child */

/* The kernel's struct linux_dirent64. */
struct dirent64_raw {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

/* Close every descriptor >= lowfd listed in /proc/self/fd. Returns 0, or
 * -1 if the directory cannot be read. */
static int close_listed(int lowfd)
{
	char buf[1024] __attribute__((aligned(8)));
	int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	long n;

	if (dfd < 0)
		return -1;
	/* /proc/self/fd's offsets are descriptor numbers: closing entries
	 * already listed does not make the next read skip any. */
	while ((n = syscall(SYS_getdents64, dfd, buf, sizeof buf)) > 0) {
		for (long off = 0; off < n;) {
			struct dirent64_raw *d = (void *)(buf + off);
			int fd = 0;
			const char *p = d->d_name;

			off += d->d_reclen;
			if (*p < '0' || *p > '9')
				continue;   /* "." and ".." */
			for (; *p >= '0' && *p <= '9'; p++)
				fd = fd * 10 + (*p - '0');
			if (fd >= lowfd && fd != dfd)
				close(fd);
		}
	}
	close(dfd);
	return n < 0 ? -1 : 0;
}

int sandbox__close_from_proc(int lowfd)
{
	struct rlimit rl;

	if (close_listed(lowfd) == 0)
		return 0;
	/* No /proc: every possible number. */
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -1;
	for (rlim_t fd = (rlim_t)lowfd; fd < rl.rlim_cur; fd++)
		close((int)fd);
	return 0;
}

int sandbox_close_from(int lowfd)
{
#ifdef SYS_close_range
	if (syscall(SYS_close_range, (unsigned)lowfd, ~0U, 0U) == 0)
		return 0;
	/* ENOSYS (kernel < 5.9) or a seccomp filter's EPERM: the slow way */
#endif
	return sandbox__close_from_proc(lowfd);
}

int sandbox_switch_user(const struct sandbox_identity *id)
{
	/* Raw calls: glibc's setgroups/setgid/setuid broadcast the change to
	 * every thread of the process (SIGSETXID), and in a vfork child that
	 * means the parent's threads. Here the kernel changes this process
	 * alone. On 32-bit ABIs the 32-bit-id calls have their own numbers. */
#if defined(SYS_setgroups32)
	long set_groups = SYS_setgroups32, set_gid = SYS_setresgid32,
	     set_uid = SYS_setresuid32;
#else
	long set_groups = SYS_setgroups, set_gid = SYS_setresgid,
	     set_uid = SYS_setresuid;
#endif

	if (syscall(set_groups, (size_t)id->n_groups, id->groups) != 0)
		return -1;
	if (syscall(set_gid, id->gid, id->gid, id->gid) != 0)
		return -1;
	if (syscall(set_uid, id->uid, id->uid, id->uid) != 0)
		return -1;
	return 0;
}
