/* sandbox.h - what a step may see and do: the identity steps run as
 * (executor.run_as, executor.allow_root), the clean environment they start
 * with (executor.pass_env), the descriptors they inherit (0-2 only), and the
 * start-up check of the files that hold the node's secrets (the config, the
 * Raft data directory). docs/security.md, "Steps". */
#ifndef FLOWD_DAEMON_SANDBOX_H
#define FLOWD_DAEMON_SANDBOX_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "daemon/config.h"

/* More supplementary groups than this: sandbox_resolve refuses the user. */
#define SANDBOX_MAX_GROUPS 256

/* Safe PATH for steps unless executor.pass_env lists PATH. */
#define SANDBOX_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

/* Who steps run as. Plain data (no pointers): copy it freely. */
struct sandbox_identity {
	bool switch_user;         /* the child does setgroups, setgid, setuid
	                           * (flowd is root, executor.run_as is set) */
	uid_t uid;                /* the steps' uid (flowd's euid unless
	                           * switch_user) */
	gid_t gid;                /* their primary gid */
	gid_t groups[SANDBOX_MAX_GROUPS]; /* supplementary (switch_user only) */
	int n_groups;
	char user[256];           /* the user's name; "" if it has none */
	char home[PATH_MAX];      /* HOME for steps; also their working
	                           * directory under switch_user when the step
	                           * names none ("/" if it cannot be entered) */
};

/* At start, after config_load: resolves cfg->run_as ("user" or
 * "user:group"; names, or numbers that have a passwd/group entry) to a
 * uid, gid, supplementary groups (the user's, as initgroups gives them)
 * and home, or flowd's own identity when it is NULL. Fails with -1 and a
 * message naming the key in err when:
 *   - the user or group does not exist ("executor.run_as: ...");
 *   - flowd is not root and run_as is another uid or gid (it cannot
 *     setuid);
 *   - steps would run as uid 0 or gid 0 and cfg->allow_root is false
 *     ("executor.allow_root: ..."; flowd started as root with no run_as
 *     is the usual case).
 * `cfg` is borrowed; `out` is filled (plain data). Logs the result. */
int sandbox_resolve(const struct flowd_config *cfg,
		    struct sandbox_identity *out, char *err, size_t errlen);

/* At start: the files that hold the node's secrets, with flowd's euid.
 *   data_dir (borrowed): created 0700 if missing (parents as mkdir -p); an
 *     existing one must be a directory owned by flowd's euid and is
 *     chmod'ed to 0700 if it was more open (a warning); owned by another
 *     user: refused.
 *   config_path (borrowed; NULL or not a regular file: not checked):
 *     writable by other users: refused; readable by other users: chmod'ed
 *     to 0600 with a warning when flowd owns it, refused when it does not;
 *     readable or writable by its group (unless that group is root's or
 *     flowd's own egid): a warning.
 * Returns 0, or -1 with the reason in err. */
int sandbox_check_files(const char *config_path, const char *data_dir,
			char *err, size_t errlen);

/* The environment every step starts from, NULL-terminated "K=V", new
 * (free each string and the array): PATH (SANDBOX_DEFAULT_PATH), HOME
 * (id->home), USER and LOGNAME (id->user, when it has a name), LANG
 * (flowd's, else C.UTF-8), TZ (when flowd has it); then each name of
 * `pass_env` (borrowed, NULL-terminated, may be NULL) that flowd's
 * environment (`environ`) holds, replacing a default of the same name.
 * NULL on out-of-memory. */
char **sandbox_env_base(const struct sandbox_identity *id,
			char *const *pass_env);

/* ---- in the child, between fork and exec: async-signal-safe ---- */

/* Close every descriptor >= lowfd: close_range(2), else the entries of
 * /proc/self/fd, else every number below RLIMIT_NOFILE. Returns 0 or -1
 * (errno set). */
int sandbox_close_from(int lowfd);

/* setgroups, setgid, setuid (raw system calls: they change this process
 * only, which is what a vfork child needs; glibc's wrappers would try to
 * signal the parent's threads), each checked. Returns 0 or -1 (errno). */
int sandbox_switch_user(const struct sandbox_identity *id);

/* sandbox_close_from without close_range (tests of the fallback). */
int sandbox__close_from_proc(int lowfd);

#endif
