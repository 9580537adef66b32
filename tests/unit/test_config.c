/* test_config.c - config_load() on files under /tmp and on overrides. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "daemon/config.h"

#define TOKEN_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define TOKEN_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define TOKEN_C "cccccccccccccccccccccccccccccccc"

struct fixture {
	char path[64];
	struct flowd_config cfg;
	char err[512];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);

	if (!f)
		return -1;
	/* CI runs with FLOWD_TRACE=1; only the test about it sets it. */
	unsetenv("FLOWD_TRACE");
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	config_free(&f->cfg);
	if (f->path[0])
		unlink(f->path);
	free(f);
	return 0;
}

static const char *write_conf(struct fixture *f, const char *text)
{
	int fd;
	size_t n = strlen(text);

	strcpy(f->path, "/tmp/flowd-test-config-XXXXXX");
	fd = mkstemp(f->path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, n), (ssize_t)n);
	close(fd);
	return f->path;
}

/* Load `text` (NULL: no file) plus argv; return config_load()'s result. */
static int load(struct fixture *f, const char *text, int argc, char **argv)
{
	const char *path = text ? write_conf(f, text) : NULL;

	f->err[0] = '\0';
	return config_load(&f->cfg, path, argc, argv, f->err, sizeof f->err);
}

/* Expect failure with a message containing `want`. */
static void load_fails(struct fixture *f, const char *text, int argc,
		       char **argv, const char *want)
{
	int rc = load(f, text, argc, argv);

	if (rc == 0 || !strstr(f->err, want))
		fail_msg("want error containing '%s', got rc=%d '%s'", want, rc,
			 f->err);
	assert_int_equal(strncmp(f->err, "config: ", 8), 0);
	if (f->path[0]) {
		unlink(f->path);
		f->path[0] = '\0';
	}
}

/* A one-key file: "[section]\nkey = value\n". */
static void key_fails(struct fixture *f, const char *section, const char *kv,
		      const char *want)
{
	char text[1024];

	snprintf(text, sizeof text, "[%s]\n%s\n", section, kv);
	load_fails(f, text, 0, NULL, want);
}

static void defaults_without_file_or_arguments(void **state)
{
	struct fixture *f = *state;
	struct flowd_config *c = &f->cfg;
	struct flowd_limits l;

	assert_int_equal(load(f, NULL, 0, NULL), 0);
	assert_int_equal(c->node_id, 1);
	assert_string_equal(c->raft_address, "127.0.0.1:7001");
	assert_string_equal(c->api_address, "127.0.0.1:8001");
	assert_string_equal(c->data_dir, "/var/lib/flowd");
	assert_int_equal(c->n_peers, 1);
	assert_int_equal(c->peers[0].id, 1);
	assert_string_equal(c->peers[0].raft_address, "127.0.0.1:7001");
	assert_string_equal(c->peers[0].api_address, "127.0.0.1:8001");
	assert_string_equal(c->conninfo,
			    "host=127.0.0.1 port=5432 dbname=flowd user=flowd");
	assert_int_equal(c->db_batch_max, 512);
	assert_int_equal(c->db_reader_pool, 4);
	assert_int_equal(c->db_max_backlog, 1000000);
	assert_non_null(c->admin_tokens);
	assert_null(c->admin_tokens[0]);
	assert_non_null(c->reader_tokens);
	assert_null(c->reader_tokens[0]);
	assert_int_equal(c->heartbeat_ms, 50);
	assert_int_equal(c->election_ms, 200);
	assert_int_equal(c->snapshot_threshold, 16384);
	assert_int_equal(c->snapshot_trailing, 16384);
	assert_int_equal(c->pre_vote, 1);
	assert_int_equal(c->apply_timeout_ms, 5000);
	assert_int_equal(c->api_threads, 2);
	assert_int_equal(c->api_connection_limit, 4096);
	assert_int_equal(c->api_max_streams, 3072);
	assert_int_equal(c->api_watch_window, 16384);
	assert_int_equal(c->api_stream_heartbeat_ms, 15000);
	assert_int_equal(c->api_connection_timeout_s, 60);
	assert_int_equal(c->kill_grace_ms, 5000);
	assert_int_equal(c->log_level, FLOWD_LOG_INFO);
	memset(&l, 0, sizeof l); /* padding too, for the byte compare */
	flowd_limits_defaults(&l);
	assert_memory_equal(&c->limits, &l, sizeof l);
}

static const char full_file[] =
	"; a three-node cluster, seen from node 2\n"
	"[node]\n"
	"id = 2\n"
	"raft_address = 10.0.0.2:7001\n"
	"api_address = 10.0.0.2:8001\n"
	"data_dir = /srv/flowd\n"
	"\n"
	"[peers]\n"
	"1 = 10.0.0.1:7001 10.0.0.1:8001\n"
	"2 = 10.0.0.2:7001 10.0.0.2:8001\n"
	"3 = 10.0.0.3:7001\n"
	"    10.0.0.3:8001\n"
	"\n"
	"[database]\n"
	"conninfo = \"host=db.internal dbname=flowd user=flowd\"\n"
	"batch_max = 1000\n"
	"reader_pool = 8\n"
	"max_backlog = 5000000\n"
	"\n"
	"[auth]\n"
	"# two admin tokens, the second on a continuation line\n"
	"admin_tokens = " TOKEN_A ",\n"
	"    " TOKEN_B "\n"
	"reader_tokens = " TOKEN_C " ; inline comment\n"
	"\n"
	"[cluster]\n"
	"secret = cluster-secret-0123456789\n"
	"\n"
	"[tls]\n"
	"cert_file = /etc/flowd/node.pem\n"
	"key_file = /etc/flowd/node.key\n"
	"ca_file = /etc/flowd/ca.pem\n"
	"\n"
	"[raft]\n"
	"heartbeat_ms = 50\n"
	"election_ms = 500\n"
	"snapshot_threshold = 4096\n"
	"snapshot_trailing = 8192\n"
	"pre_vote = off\n"
	"apply_timeout_ms = 10000\n"
	"\n"
	"[api]\n"
	"threads = 4\n"
	"connection_limit = 2048\n"
	"connection_timeout_s = 30\n"
	"\n"
	"[executor]\n"
	"kill_grace_ms = 0\n"
	"\n"
	"[log]\n"
	"level = warn\n"
	"\n"
	"[limits]\n"
	"max_body_bytes = 4M\n"
	"max_spec_bytes = 512k\n"
	"max_steps_per_flow = 100\n"
	"max_params_per_flow = 10\n"
	"max_deps_per_step = 8\n"
	"max_argv = 32\n"
	"max_env_per_step = 16\n"
	"max_string_bytes = 8K\n"
	"max_param_bytes = 32768\n"
	"max_retries = 5\n"
	"max_backoff_s = 600\n"
	"max_timeout_s = 7200\n"
	"default_timeout_s = 60\n"
	"max_log_bytes_per_task = 1g\n"
	"max_parallel_tasks = 4\n"
	"max_idempotency_key_bytes = 128\n"
	"max_runs_page = 200\n";

static void full_file_is_parsed(void **state)
{
	struct fixture *f = *state;
	struct flowd_config *c = &f->cfg;

	if (load(f, full_file, 0, NULL) != 0)
		fail_msg("%s", f->err);
	assert_int_equal(c->node_id, 2);
	assert_string_equal(c->raft_address, "10.0.0.2:7001");
	assert_string_equal(c->api_address, "10.0.0.2:8001");
	assert_string_equal(c->data_dir, "/srv/flowd");
	assert_int_equal(c->n_peers, 3);
	assert_int_equal(c->peers[0].id, 1);
	assert_string_equal(c->peers[0].raft_address, "10.0.0.1:7001");
	assert_string_equal(c->peers[0].api_address, "10.0.0.1:8001");
	assert_int_equal(c->peers[2].id, 3);
	assert_string_equal(c->peers[2].raft_address, "10.0.0.3:7001");
	assert_string_equal(c->peers[2].api_address, "10.0.0.3:8001");
	assert_string_equal(c->conninfo,
			    "host=db.internal dbname=flowd user=flowd");
	assert_int_equal(c->db_batch_max, 1000);
	assert_int_equal(c->db_reader_pool, 8);
	assert_int_equal(c->db_max_backlog, 5000000);
	assert_string_equal(c->admin_tokens[0], TOKEN_A);
	assert_string_equal(c->admin_tokens[1], TOKEN_B);
	assert_null(c->admin_tokens[2]);
	assert_string_equal(c->reader_tokens[0], TOKEN_C);
	assert_null(c->reader_tokens[1]);
	assert_int_equal(c->heartbeat_ms, 50);
	assert_int_equal(c->election_ms, 500);
	assert_int_equal(c->snapshot_threshold, 4096);
	assert_int_equal(c->snapshot_trailing, 8192);
	assert_int_equal(c->pre_vote, 0);
	assert_int_equal(c->apply_timeout_ms, 10000);
	assert_int_equal(c->api_threads, 4);
	assert_int_equal(c->api_connection_limit, 2048);
	assert_int_equal(c->api_connection_timeout_s, 30);
	assert_int_equal(c->kill_grace_ms, 0);
	assert_int_equal(c->log_level, FLOWD_LOG_WARN);
	assert_int_equal(c->limits.max_body_bytes, 4 << 20);
	assert_int_equal(c->limits.max_spec_bytes, 512 << 10);
	assert_int_equal(c->limits.max_steps_per_flow, 100);
	assert_int_equal(c->limits.max_params_per_flow, 10);
	assert_int_equal(c->limits.max_deps_per_step, 8);
	assert_int_equal(c->limits.max_argv, 32);
	assert_int_equal(c->limits.max_env_per_step, 16);
	assert_int_equal(c->limits.max_string_bytes, 8 << 10);
	assert_int_equal(c->limits.max_param_bytes, 32768);
	assert_int_equal(c->limits.max_retries, 5);
	assert_int_equal(c->limits.max_backoff_s, 600);
	assert_int_equal(c->limits.max_timeout_s, 7200);
	assert_int_equal(c->limits.default_timeout_s, 60);
	assert_int_equal(c->limits.max_log_bytes_per_task, 1 << 30);
	assert_int_equal(c->limits.max_parallel_tasks, 4);
	assert_int_equal(c->limits.max_idempotency_key_bytes, 128);
	assert_int_equal(c->limits.max_runs_page, 200);
}

static void overrides_win_over_the_file(void **state)
{
	struct fixture *f = *state;
	struct flowd_config *c = &f->cfg;
	char *argv[] = {
		"--node.id=3",
		"--node.raft_address=10.0.0.3:7001",
		"--node.api_address=10.0.0.3:8001",
		"--peers.3=10.0.0.3:7001 10.0.0.3:8001",
		"--peers.4=10.0.0.4:7001 10.0.0.4:8001",
		"--limits.max_body_bytes=8M",
		"--raft.pre_vote=yes",
		"--auth.reader_tokens=",
		"--log.level=ERROR",
		"--database.conninfo=dbname=other",
	};

	assert_int_equal(load(f, full_file, 10, argv), 0);
	assert_int_equal(c->node_id, 3);
	assert_int_equal(c->n_peers, 4);
	assert_int_equal(c->peers[3].id, 4);
	assert_string_equal(c->peers[3].api_address, "10.0.0.4:8001");
	assert_int_equal(c->limits.max_body_bytes, 8 << 20);
	assert_int_equal(c->pre_vote, 1);
	assert_null(c->reader_tokens[0]);
	assert_string_equal(c->admin_tokens[0], TOKEN_A);
	assert_int_equal(c->log_level, FLOWD_LOG_ERROR);
	assert_string_equal(c->conninfo, "dbname=other");
	/* untouched keys keep the file's value */
	assert_int_equal(c->heartbeat_ms, 50);
}

static void overrides_alone_replace_a_peer(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {
		"--peers.1=127.0.0.1:7001 127.0.0.1:8001",
		"--peers.2=127.0.0.1:7002 127.0.0.1:8002",
		"--peers.2=127.0.0.1:7003 127.0.0.1:8003",
		"--node.id=2",
		"--cluster.secret=cluster-secret-0123456789",
		"--auth.admin_tokens=" TOKEN_A,
	};

	assert_int_equal(load(f, NULL, 6, argv), 0);
	assert_int_equal(f->cfg.n_peers, 2);
	/* addresses not given are this node's [peers] entry */
	assert_string_equal(f->cfg.raft_address, "127.0.0.1:7003");
	assert_string_equal(f->cfg.api_address, "127.0.0.1:8003");
}

static void later_key_wins_in_the_file(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(load(f, "[api]\nthreads = 3\nthreads = 5\n", 0, NULL),
			 0);
	assert_int_equal(f->cfg.api_threads, 5);
}

static void unknown_key_or_section_is_named(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"--raft.heartbeat=100"};
	char want[128];

	load_fails(f, "[raft]\nheartbeat_ms = 100\n\nfoo = 1\n", 0, NULL,
		   "unknown key raft.foo (");
	/* the file name and line are in the message */
	assert_int_equal(load(f, "[raft]\n\n\nbar = 1\n", 0, NULL), -1);
	snprintf(want, sizeof want, "config: unknown key raft.bar (%s line 4)",
		 f->path);
	assert_string_equal(f->err, want);
	unlink(f->path);
	f->path[0] = '\0';
	load_fails(f, "[foo]\nbar = 1\n", 0, NULL, "unknown key foo.bar");
	load_fails(f, "id = 1\n", 0, NULL, "outside any [section]");
	load_fails(f, NULL, 1, argv,
		   "unknown key raft.heartbeat (command line)");
}

static void unexpected_argument_is_refused(void **state)
{
	struct fixture *f = *state;
	char *a1[] = {"stray"};
	char *a2[] = {"--node.id"};
	char *a3[] = {"--nodeid=1"};
	char *a4[] = {"-node.id=1"};

	load_fails(f, NULL, 1, a1, "config: unexpected argument stray");
	load_fails(f, NULL, 1, a2, "unexpected argument --node.id");
	load_fails(f, NULL, 1, a3, "unexpected argument --nodeid=1");
	load_fails(f, NULL, 1, a4, "unexpected argument -node.id=1");
}

static void malformed_integers_are_refused(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"--api.threads=0"};

	key_fails(f, "raft", "heartbeat_ms = abc",
		  "raft.heartbeat_ms: \"abc\" is not a non-negative integer");
	key_fails(f, "raft", "heartbeat_ms = -100", "is not a non-negative");
	key_fails(f, "raft", "heartbeat_ms = 100ms", "is not a non-negative");
	key_fails(f, "raft", "heartbeat_ms = +100", "is not a non-negative");
	key_fails(f, "raft", "heartbeat_ms = 0x64", "is not a non-negative");
	key_fails(f, "raft", "heartbeat_ms =", "is not a non-negative");
	key_fails(f, "raft", "heartbeat_ms = 5",
		  "config: raft.heartbeat_ms: 5 is out of range 10..10000");
	key_fails(f, "raft", "heartbeat_ms = 99999999999999999999999",
		  "out of range 10..10000");
	key_fails(f, "database", "max_backlog = 999",
		  "database.max_backlog: 999 is out of range (at least 1000)");
	key_fails(f, "node", "id = 0", "node.id: 0 is out of range");
	key_fails(f, "node", "id = 9223372036854775808",
		  "node.id: 9223372036854775808 is out of range");
	key_fails(f, "limits", "max_argv = 0", "limits.max_argv: 0 is out of");
	key_fails(f, "limits", "max_argv = 4k", "limits.max_argv: \"4k\" is not");
	/* tag bounds stay within what a command may carry (fsm_check.c) */
	key_fails(f, "limits", "max_tags_per_run = 100001",
		  "limits.max_tags_per_run: 100001 is out of");
	key_fails(f, "limits", "max_tag_bytes = 65537",
		  "limits.max_tag_bytes: 65537 is out of");
	load_fails(f, NULL, 1, argv, "api.threads: 0 is out of range 1..64");
}

static void sizes_take_suffixes_and_refuse_junk(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"--limits.max_body_bytes=2M",
			"--limits.max_spec_bytes=1k"};

	assert_int_equal(load(f, NULL, 2, argv), 0);
	assert_int_equal(f->cfg.limits.max_body_bytes, 2 * 1024 * 1024);
	assert_int_equal(f->cfg.limits.max_spec_bytes, 1024);
	config_free(&f->cfg);

	key_fails(f, "limits", "max_body_bytes = 2X",
		  "limits.max_body_bytes: \"2X\" is not a size");
	key_fails(f, "limits", "max_body_bytes = 2MB", "is not a size");
	key_fails(f, "limits", "max_body_bytes = M", "is not a size");
	key_fails(f, "limits", "max_body_bytes = 2 M", "is not a size");
	key_fails(f, "limits", "max_body_bytes = -2M", "is not a size");
	key_fails(f, "limits", "max_body_bytes = 0k",
		  "limits.max_body_bytes: 0k is out of range");
	key_fails(f, "limits", "max_body_bytes = 99999999999999G",
		  "is out of range");
	key_fails(f, "limits", "max_body_bytes = 99999999999999999999999999",
		  "is out of range");
}

static void booleans(void **state)
{
	struct fixture *f = *state;
	const char *yes[] = {"true", "YES", "on", "1"};
	const char *no[] = {"false", "No", "OFF", "0"};
	char arg[64];
	char *argv[] = {arg};

	for (int i = 0; i < 4; i++) {
		snprintf(arg, sizeof arg, "--raft.pre_vote=%s", yes[i]);
		assert_int_equal(load(f, NULL, 1, argv), 0);
		assert_int_equal(f->cfg.pre_vote, 1);
		config_free(&f->cfg);
		snprintf(arg, sizeof arg, "--raft.pre_vote=%s", no[i]);
		assert_int_equal(load(f, NULL, 1, argv), 0);
		assert_int_equal(f->cfg.pre_vote, 0);
		config_free(&f->cfg);
	}
	key_fails(f, "raft", "pre_vote = maybe",
		  "raft.pre_vote: \"maybe\" is not a boolean");
	key_fails(f, "raft", "pre_vote = 2", "is not a boolean");
}

static void addresses_must_be_ipv4_with_port(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"--node.raft_address=localhost:7001"};

	load_fails(f, NULL, 1, argv,
		   "config: node.raft_address: \"localhost:7001\" is not an IPv4 address:port");
	key_fails(f, "node", "api_address = 127.0.0.1", "is not an IPv4");
	key_fails(f, "node", "api_address = :8001", "is not an IPv4");
	key_fails(f, "node", "api_address = 127.0.0.1:", "is not an IPv4");
	key_fails(f, "node", "api_address = 127.0.0.1:0", "is not an IPv4");
	key_fails(f, "node", "api_address = 127.0.0.1:65536", "is not an IPv4");
	key_fails(f, "node", "api_address = 127.0.0.1:080", "is not an IPv4");
	key_fails(f, "node", "api_address = 127.0.0.1:80x", "is not an IPv4");
	key_fails(f, "node", "api_address = 127.1:8001", "is not an IPv4");
	key_fails(f, "node", "api_address = 256.0.0.1:8001", "is not an IPv4");
	key_fails(f, "node", "api_address = [::1]:8001", "is not an IPv4");
	key_fails(f, "peers", "1 = 127.0.0.1:7001 example.com:8001",
		  "peers.1: \"example.com:8001\" is not an IPv4");
	key_fails(f, "peers", "1 = 127.0.0.1:7001",
		  "peers.1: \"127.0.0.1:7001\" is not \"<raft_address> <api_address> [<internal_address>]\"");
	key_fails(f, "peers", "1 = 127.0.0.1:7001 127.0.0.1:8001 x",
		  "\"x\" is not an IPv4 address:port");
	key_fails(f, "peers",
		  "1 = 127.0.0.1:7001 127.0.0.1:8001 127.0.0.1:8002 x",
		  "is not \"<raft_address> <api_address> [<internal_address>]\"");
	key_fails(f, "peers", "one = 127.0.0.1:7001 127.0.0.1:8001",
		  "peers.one: \"one\" is not a node id");
	key_fails(f, "peers", "0 = 127.0.0.1:7001 127.0.0.1:8001",
		  "is not a node id");
}

static void node_must_be_among_peers(void **state)
{
	struct fixture *f = *state;
	const char *peers = "[peers]\n"
			    "1 = 127.0.0.1:7001 127.0.0.1:8001\n"
			    "2 = 127.0.0.1:7002 127.0.0.1:8002\n";
	char text[512];

	snprintf(text, sizeof text, "[node]\nid = 3\n%s", peers);
	load_fails(f, text, 0, NULL, "node.id: 3 is not among [peers]");
	load_fails(f, peers, 0, NULL, "node.id is required");
	snprintf(text, sizeof text,
		 "[node]\nid = 2\nraft_address = 127.0.0.1:7009\n%s", peers);
	load_fails(f, text, 0, NULL,
		   "node.raft_address: 127.0.0.1:7009 differs from peers.2 (127.0.0.1:7002)");
	snprintf(text, sizeof text,
		 "[node]\nid = 1\napi_address = 127.0.0.1:8002\n%s", peers);
	load_fails(f, text, 0, NULL, "node.api_address: 127.0.0.1:8002 differs");
	load_fails(f,
		   "[peers]\n1 = 127.0.0.1:7001 127.0.0.1:8001\n"
		   "2 = 127.0.0.1:7001 127.0.0.1:8002\n[node]\nid = 1\n",
		   0, NULL, "peers.1 and peers.2 share an address");

	/* one peer implies the node id */
	assert_int_equal(load(f,
			      "[peers]\n7 = 127.0.0.1:7007 127.0.0.1:8007\n",
			      0, NULL),
			 0);
	assert_int_equal(f->cfg.node_id, 7);
	assert_string_equal(f->cfg.raft_address, "127.0.0.1:7007");
}

static void duplicate_peer_ids_are_refused(void **state)
{
	struct fixture *f = *state;

	load_fails(f,
		   "[peers]\n1 = 127.0.0.1:7001 127.0.0.1:8001\n"
		   "1 = 127.0.0.1:7002 127.0.0.1:8002\n",
		   0, NULL, "peers.1: duplicate node id 1");
	load_fails(f,
		   "[peers]\n2 = 127.0.0.1:7001 127.0.0.1:8001\n"
		   "02 = 127.0.0.1:7002 127.0.0.1:8002\n",
		   0, NULL, "peers.02: duplicate node id 2");
}

static void named_tokens_and_operators(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {
		"--tokens.ci-bot=operator sha256:"
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"--tokens.alice=admin alice-secret-token-0001",
		"--tokens.alice=reader alice-secret-token-0002",
		"--auth.operator_tokens=" TOKEN_A,
	};

	assert_int_equal(load(f, NULL, 4, argv), 0);
	assert_int_equal(f->cfg.n_tokens, 2);
	assert_string_equal(f->cfg.tokens[0].name, "ci-bot");
	assert_string_equal(f->cfg.tokens[0].role, "operator");
	assert_string_equal(f->cfg.tokens[1].name, "alice");
	assert_string_equal(f->cfg.tokens[1].role, "reader"); /* replaced */
	assert_string_equal(f->cfg.tokens[1].value, "alice-secret-token-0002");
	assert_string_equal(f->cfg.operator_tokens[0], TOKEN_A);
	config_free(&f->cfg);
	unlink(f->path);
	key_fails(f, "tokens", "ci = root some-secret-token-0001",
		  "tokens.ci: role \"root\" is not reader, operator, admin or production");
	key_fails(f, "tokens", "ci = admin short", "is too short");
	key_fails(f, "tokens", "ci = admin", "not \"<role> <token>\"");
	key_fails(f, "tokens", "c/i = admin some-secret-token-0001",
		  "a token name is 1..63");
}

static void a_joining_node_is_not_among_its_peers(void **state)
{
	struct fixture *f = *state;
	const char *peers = "[peers]\n"
			    "1 = 127.0.0.1:7001 127.0.0.1:8001\n"
			    "2 = 127.0.0.1:7002 127.0.0.1:8002\n";
	char text[512];

	snprintf(text, sizeof text,
		 "[node]\nid = 3\njoin = true\nraft_address = 127.0.0.1:7003\n"
		 "api_address = 127.0.0.1:8003\n[cluster]\n"
		 "secret = cluster-secret-0123456789\n[auth]\n"
		 "admin_tokens = " TOKEN_A "\n%s", peers);
	assert_int_equal(load(f, text, 0, NULL), 0);
	assert_true(f->cfg.join);
	assert_int_equal(f->cfg.n_peers, 2);
	assert_string_equal(f->cfg.api_address, "127.0.0.1:8003");
	config_free(&f->cfg);
	unlink(f->path);
	snprintf(text, sizeof text, "[node]\nid = 3\njoin = true\n%s", peers);
	load_fails(f, text, 0, NULL,
		   "node.join: node.raft_address and node.api_address must be set");
	snprintf(text, sizeof text, "[node]\nid = 2\njoin = true\n%s", peers);
	load_fails(f, text, 0, NULL, "node.join: node 2 is among [peers]");
}

static void too_many_peers_are_refused(void **state)
{
	struct fixture *f = *state;
	char text[4096];
	size_t n = 0;

	n += (size_t)snprintf(text + n, sizeof text - n, "[node]\nid = 1\n[peers]\n");
	for (int i = 1; i <= CONFIG_MAX_PEERS + 1; i++)
		n += (size_t)snprintf(text + n, sizeof text - n,
				      "%d = 127.0.0.1:%d 127.0.0.1:%d\n", i,
				      7000 + i, 8000 + i);
	load_fails(f, text, 0, NULL, "more than 16 peers");
}

static void tokens(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"--auth.admin_tokens= " TOKEN_A " ,," TOKEN_B "\t" TOKEN_C};
	char too_long[300];
	char text[400];

	assert_int_equal(load(f, NULL, 1, argv), 0);
	assert_string_equal(f->cfg.admin_tokens[0], TOKEN_A);
	assert_string_equal(f->cfg.admin_tokens[1], TOKEN_B);
	assert_string_equal(f->cfg.admin_tokens[2], TOKEN_C);
	assert_null(f->cfg.admin_tokens[3]);
	config_free(&f->cfg);

	key_fails(f, "auth", "admin_tokens = " TOKEN_A " short",
		  "auth.admin_tokens: token 2 is too short");
	key_fails(f, "auth", "reader_tokens = 123456789012345",
		  "auth.reader_tokens: token 1 is too short");
	/* a secret is never echoed */
	assert_null(strstr(f->err, "123456789012345"));
	memset(too_long, 'x', 257);
	too_long[257] = '\0';
	snprintf(text, sizeof text, "--auth.admin_tokens=%s", too_long);
	argv[0] = text;
	load_fails(f, NULL, 1, argv, "token 1 is too long");
	argv[0] = "--auth.admin_tokens=" TOKEN_A "\x01";
	load_fails(f, NULL, 1, argv, "not printable ASCII");
}

static void no_tokens_only_on_loopback(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"--node.api_address=10.0.0.1:8001",
			"--auth.reader_tokens=" TOKEN_A};

	load_fails(f, NULL, 1, argv, "allowed only on a loopback");
	assert_int_equal(load(f, NULL, 2, argv), 0);
}

static void settings_that_depend_on_each_other(void **state)
{
	struct fixture *f = *state;

	load_fails(f, "[raft]\nheartbeat_ms = 100\nelection_ms = 299\n", 0,
		   NULL, "raft.election_ms: 299 must be at least 3 * raft.heartbeat_ms (300)");
	assert_int_equal(
		load(f, "[raft]\nheartbeat_ms = 100\nelection_ms = 300\n", 0, NULL),
		0);
	config_free(&f->cfg);
	unlink(f->path);
	load_fails(f, "[raft]\nsnapshot_threshold = 32768\n", 0, NULL,
		   "raft.snapshot_trailing: 16384 must be at least raft.snapshot_threshold (32768)");
	load_fails(f, "[limits]\ndefault_timeout_s = 100\nmax_timeout_s = 99\n",
		   0, NULL, "limits.default_timeout_s: 100 is above");
	load_fails(f, "[limits]\nmax_spec_bytes = 2M\n", 0, NULL,
		   "limits.max_spec_bytes: 2097152 is above limits.max_body_bytes (1048576)");
}

static void other_value_errors(void **state)
{
	struct fixture *f = *state;

	key_fails(f, "log", "level = loud",
		  "log.level: \"loud\" is not one of debug, info, warn, error");
	key_fails(f, "node", "data_dir =", "node.data_dir: must not be empty");
	key_fails(f, "database", "conninfo = \"\"",
		  "database.conninfo: must not be empty");
}

static void file_errors(void **state)
{
	struct fixture *f = *state;
	char want[128];
	char text[600];

	assert_int_equal(config_load(&f->cfg, "/nonexistent/flowd.conf", 0,
				     NULL, f->err, sizeof f->err),
			 -1);
	assert_string_equal(f->err,
			    "config: /nonexistent/flowd.conf: No such file or directory");

	assert_int_equal(load(f, "[raft]\nheartbeat_ms = 100\nnonsense\nfoo = 1\n",
			      0, NULL),
			 -1);
	snprintf(want, sizeof want, "(%s line 3)", f->path);
	assert_non_null(strstr(f->err, want));
	assert_non_null(strstr(f->err, "expected"));
	unlink(f->path);
	f->path[0] = '\0';

	/* an error in a value continued on indented lines names its first line */
	assert_int_equal(load(f, "[raft]\nheartbeat_ms = 100\n  200\n", 0, NULL),
			 -1);
	snprintf(want, sizeof want, "\"100 200\" is not a non-negative integer (%s line 2)",
		 f->path);
	assert_non_null(strstr(f->err, want));
	unlink(f->path);
	f->path[0] = '\0';

	/* longer than inih's line buffer: refused, not split in two */
	snprintf(text, sizeof text, "[database]\nconninfo = %0300d\n", 0);
	load_fails(f, text, 0, NULL, "line is longer than");
	/* under it, with CRLF line ends */
	snprintf(text, sizeof text, "[database]\r\nconninfo = %0170d\r\n", 0);
	assert_int_equal(load(f, text, 0, NULL), 0);
	assert_int_equal(strlen(f->cfg.conninfo), 170);
}

static void flowd_trace_forces_debug(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"--log.level=error"};

	setenv("FLOWD_TRACE", "1", 1);
	assert_int_equal(load(f, "[log]\nlevel = warn\n", 1, argv), 0);
	assert_int_equal(f->cfg.log_level, FLOWD_LOG_DEBUG);
	config_free(&f->cfg);

	setenv("FLOWD_TRACE", "0", 1);
	assert_int_equal(load(f, NULL, 1, argv), 0);
	assert_int_equal(f->cfg.log_level, FLOWD_LOG_ERROR);
	unsetenv("FLOWD_TRACE");
}

static void free_is_safe_twice_and_after_failure(void **state)
{
	struct fixture *f = *state;
	char *argv[] = {"--auth.admin_tokens=" TOKEN_A, "--bogus"};

	assert_int_equal(load(f, NULL, 1, argv), 0);
	config_free(&f->cfg);
	config_free(&f->cfg);
	assert_null(f->cfg.data_dir);
	assert_null(f->cfg.admin_tokens);
	assert_int_equal(load(f, NULL, 2, argv), -1);
	config_free(&f->cfg);
	/* no error buffer at all is allowed */
	assert_int_equal(config_load(&f->cfg, NULL, 2, argv, NULL, 0), -1);
}

/* deploy/flowd.conf.example spells out every default: keep them in step.
 * Needs the repository root as the working directory (as `make unit`). */
static void example_file_spells_the_defaults(void **state)
{
	struct fixture *f = *state;
	const char *example = "deploy/flowd.conf.example";
	struct flowd_config d;
	char err[256];

	if (access(example, R_OK) != 0)
		skip();
	assert_int_equal(config_load(&d, NULL, 0, NULL, err, sizeof err), 0);
	if (config_load(&f->cfg, example, 0, NULL, f->err, sizeof f->err) != 0)
		fail_msg("%s", f->err);
	assert_int_equal(f->cfg.node_id, d.node_id);
	assert_string_equal(f->cfg.data_dir, d.data_dir);
	assert_string_equal(f->cfg.conninfo, d.conninfo);
	assert_int_equal(f->cfg.db_max_backlog, d.db_max_backlog);
	assert_int_equal(f->cfg.election_ms, d.election_ms);
	assert_int_equal(f->cfg.snapshot_trailing, d.snapshot_trailing);
	assert_int_equal(f->cfg.kill_grace_ms, d.kill_grace_ms);
	assert_int_equal(f->cfg.log_level, d.log_level);
	assert_memory_equal(&f->cfg.limits, &d.limits, sizeof d.limits);
	config_free(&d);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(defaults_without_file_or_arguments),
		T(full_file_is_parsed),
		T(overrides_win_over_the_file),
		T(overrides_alone_replace_a_peer),
		T(later_key_wins_in_the_file),
		T(unknown_key_or_section_is_named),
		T(unexpected_argument_is_refused),
		T(malformed_integers_are_refused),
		T(sizes_take_suffixes_and_refuse_junk),
		T(booleans),
		T(addresses_must_be_ipv4_with_port),
		T(node_must_be_among_peers),
		T(duplicate_peer_ids_are_refused),
		T(named_tokens_and_operators),
		T(a_joining_node_is_not_among_its_peers),
		T(too_many_peers_are_refused),
		T(tokens),
		T(no_tokens_only_on_loopback),
		T(settings_that_depend_on_each_other),
		T(other_value_errors),
		T(file_errors),
		T(flowd_trace_forces_debug),
		T(free_is_safe_twice_and_after_failure),
		T(example_file_spells_the_defaults),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
