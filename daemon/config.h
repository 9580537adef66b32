/* config.h - flowd's settings: an INI file (libinih) plus command-line
 * overrides `--section.key=value`. Every key is in docs/configuration.md. */
#ifndef FLOWD_DAEMON_CONFIG_H
#define FLOWD_DAEMON_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "core/limits.h"

#define CONFIG_MAX_PEERS 16
#define CONFIG_MAX_TOKENS 256

/* [tokens] name = <role> <token or sha256:hex> */
struct config_token {
	char name[64];          /* [A-Za-z0-9_.-]{1,63}: audit rows name it */
	char role[16];          /* reader, operator or admin */
	char *value;            /* owned: the token or its "sha256:<hex>" */
};

struct config_peer {
	uint64_t id;
	char raft_address[64];  /* IPv4 literal "a.b.c.d:port" */
	char api_address[64];   /* IPv4 literal "a.b.c.d:port" */
	char internal_address[64]; /* "" or where the node takes node-to-node
	                            * requests (its own listener) */
};

struct flowd_config {
	/* [node] */
	uint64_t node_id;
	char raft_address[64];
	char api_address[64];
	char metrics_address[64];       /* "" or where GET /metrics is served
	                                 * without a token */
	char internal_address[64];      /* "" or the listener for node-to-node
	                                 * requests only (docs/security.md) */
	char *data_dir;                 /* owned */
	int join;                       /* joins an existing cluster: [peers]
	                                 * list it, not this node; no bootstrap */
	/* [peers] */
	struct config_peer peers[CONFIG_MAX_PEERS];
	unsigned n_peers;
	/* [database] */
	char *conninfo;                 /* owned */
	unsigned db_batch_max;          /* applier entries per transaction */
	unsigned db_reader_pool;        /* connections for API reads */
	uint64_t db_max_backlog;        /* entries queued for PostgreSQL before
	                                 * writes are refused with 503 */
	/* [auth] */
	char **admin_tokens;            /* owned, NULL-terminated (maybe empty) */
	char **reader_tokens;           /* owned, NULL-terminated (maybe empty) */
	char **operator_tokens;         /* owned, NULL-terminated (maybe empty) */
	struct config_token tokens[CONFIG_MAX_TOKENS]; /* [tokens] */
	unsigned n_tokens;
	/* [tls]: NULL when unset */
	char *tls_cert_file;            /* the node's certificate (PEM) */
	char *tls_key_file;             /* its private key (PEM) */
	char *tls_ca_file;              /* the cluster CA: peers are verified
	                                 * against it */
	char *tls_client_ca_file;       /* optional client certificates on the
	                                 * API are verified against it */
	/* [cluster] node credential */
	char *cluster_secret;           /* owned; from cluster.secret or
	                                 * cluster.secret_file */
	char *cluster_secret_file;      /* owned, NULL when unset */
	/* [raft] */
	unsigned heartbeat_ms;
	unsigned election_ms;
	unsigned snapshot_threshold;
	unsigned snapshot_trailing;
	int pre_vote;
	int snapshot_fork;              /* serialize snapshots in a child */
	unsigned apply_timeout_ms;      /* a proposal's deadline (504 past it) */
	/* [api] */
	unsigned api_threads;
	unsigned api_connection_limit;
	unsigned api_max_streams;          /* streamed answers open at once */
	unsigned api_max_log_follows;      /* followed logs of other nodes
	                                    * relayed at once (a thread each) */
	unsigned api_watch_window;         /* events GET /v1/watch can resume
	                                    * within */
	unsigned api_stream_heartbeat_ms;  /* a quiet stream's keep-alive */
	unsigned api_connection_timeout_s;
	unsigned api_per_address_limit;    /* connections from one address */
	unsigned api_read_timeout_s;       /* a request's head and body must
	                                    * arrive within this */
	/* [cluster] */
	unsigned node_heartbeat_ms;     /* how often a node says it is alive */
	unsigned node_timeout_ms;       /* silent this long: marked down */
	/* [scheduler] */
	unsigned late_after_ms;         /* a tick this late goes through its
	                                 * schedule's catch-up policy */
	unsigned fire_batch_max;        /* ticks per fire command */
	/* [executor] */
	unsigned kill_grace_ms;
	unsigned step_nice;             /* nice value of step processes */
	char *run_as;                   /* owned, NULL: steps run as flowd's
	                                 * user; "user" or "user:group" */
	int allow_root;                 /* steps may run as root */
	char **pass_env;                /* owned, NULL-terminated: variables of
	                                 * flowd's environment steps also get */
	unsigned background_nice;       /* [node]: nice value of every thread
	                                 * but the loop (HTTP, applier) */
	/* [metrics] */
	unsigned metrics_max_series;    /* label sets per metric family */
	/* [log] */
	int log_level;                  /* enum flowd_log_level */
	/* [limits] */
	struct flowd_limits limits;
};

/* Fill defaults, read `path` (may be NULL: defaults and overrides only), then
 * apply the `--section.key=value` arguments in argv[0..argc). An unknown
 * section or key, a malformed value, or an inconsistent whole (node id not in
 * [peers] when peers are given, a non-IPv4 address, ...) fails with -1 and a
 * message naming the key ("config: limits.max_body_bytes: not a size")
 * in errmsg. When [peers] is empty, a single peer (this node) is implied. */
int config_load(struct flowd_config *cfg, const char *path, int argc,
		char **argv, char *errmsg, size_t errlen);

void config_free(struct flowd_config *cfg);

/* Where node `id` takes node-to-node requests ([peers], third address), or
 * NULL: it has no such listener (its API then). */
const char *config_internal_address(const struct flowd_config *cfg,
				    uint64_t id);

#endif
