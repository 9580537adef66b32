/* config.c - read flowd's INI file and its --section.key=value overrides. */

/*
 * DESIGN
 *
 * Happy path: config_load() fills every default, feeds the file through
 * libinih, then applies each command-line override through the same setter,
 * and finally checks the settings that depend on each other (node id among
 * [peers], election vs heartbeat, snapshot trailing vs threshold, limits).
 * Every scalar key is a row of the `keys` table: section, name, kind, where
 * it lives in struct flowd_config and its range; [peers] is the one section
 * whose key names are data (node ids) and has its own setter.
 *
 * Failure: the first error wins. It is formatted once, "config: <what>", with
 * " (<file> line <n>)" or " (command line)" appended, and config_load()
 * returns -1 having freed whatever it had allocated.
 *
 * libinih is driven through ini_parse_stream() with our own line reader so
 * that we know the line number of every key (INI_HANDLER_LINENO is off in
 * Debian's build), can refuse a line longer than inih's fixed buffer instead
 * of letting inih split it into two lines, and can tell a continuation line
 * (indented, inih's multi-line values) from a repeated key: a continuation is
 * joined to the previous value with one space, a repeated key replaces it. A
 * key is applied only once its continuation lines are all read.
 *
 * Runs once, on the main thread, before any other thread exists.
 */
#include "daemon/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/addr.h"
#include "core/log.h"

#define NODE_ID_MAX ((uint64_t)INT64_MAX) /* fits a PostgreSQL bigint */
#define SIZE_LIMIT_MAX ((uint64_t)1 << 40) /* 1 TiB: no size arithmetic overflows */
#define ADDRESS_LEN sizeof(((struct config_peer *)0)->raft_address)
#define TOKEN_MIN 16
#define TOKEN_MAX 256

#define DEFAULT_RAFT_ADDRESS "127.0.0.1:7001"
#define DEFAULT_API_ADDRESS "127.0.0.1:8001"
#define DEFAULT_DATA_DIR "/var/lib/flowd"
#define DEFAULT_CONNINFO "host=127.0.0.1 port=5432 dbname=flowd user=flowd"

enum kind {
	K_UINT,    /* unsigned */
	K_U64,     /* uint64_t */
	K_SIZE,    /* size_t, accepts k/m/g suffixes */
	K_BOOL,    /* int 0/1 */
	K_STRING,  /* char *, owned, non-empty */
	K_ADDRESS, /* char[64], IPv4 "a.b.c.d:port" */
	K_ADDRESS_OPT, /* the same, or "" (unset) */
	K_LEVEL,   /* int, enum flowd_log_level */
	K_TOKENS,  /* char **, owned, NULL-terminated */
	K_PATH,    /* char *, owned, "" unsets (NULL) */
	K_SECRET,  /* char *, owned, 16..256 printable ASCII */
	K_NAMES,   /* char **, owned, NULL-terminated environment names */
};

/* Keys whose being set explicitly matters to the final checks. */
enum mark {
	MARK_NODE_ID = 1,
	MARK_RAFT_ADDRESS = 2,
	MARK_API_ADDRESS = 4,
};

struct key {
	const char *section;
	const char *name;
	enum kind kind;
	size_t offset;
	uint64_t min;
	uint64_t max;
	unsigned mark;
};

#define CFG(field) offsetof(struct flowd_config, field)
#define LIMIT_U(f) {"limits", #f, K_UINT, CFG(limits.f), 1, UINT_MAX, 0}
#define LIMIT_SZ(f) {"limits", #f, K_SIZE, CFG(limits.f), 1, SIZE_LIMIT_MAX, 0}

static const struct key keys[] = {
	{"node", "id", K_U64, CFG(node_id), 1, NODE_ID_MAX, MARK_NODE_ID},
	{"node", "raft_address", K_ADDRESS, CFG(raft_address), 0, 0,
	 MARK_RAFT_ADDRESS},
	{"node", "api_address", K_ADDRESS, CFG(api_address), 0, 0,
	 MARK_API_ADDRESS},
	{"node", "metrics_address", K_ADDRESS_OPT, CFG(metrics_address), 0, 0,
	 0},
	{"node", "internal_address", K_ADDRESS_OPT, CFG(internal_address), 0, 0,
	 0},
	{"node", "data_dir", K_STRING, CFG(data_dir), 0, 0, 0},
	{"node", "join", K_BOOL, CFG(join), 0, 0, 0},

	{"database", "conninfo", K_STRING, CFG(conninfo), 0, 0, 0},
	{"database", "batch_max", K_UINT, CFG(db_batch_max), 1, 100000, 0},
	{"database", "reader_pool", K_UINT, CFG(db_reader_pool), 1, 64, 0},
	{"database", "max_backlog", K_U64, CFG(db_max_backlog), 1000,
	 UINT64_MAX, 0},

	{"auth", "admin_tokens", K_TOKENS, CFG(admin_tokens), 0, 0, 0},
	{"auth", "reader_tokens", K_TOKENS, CFG(reader_tokens), 0, 0, 0},
	{"auth", "operator_tokens", K_TOKENS, CFG(operator_tokens), 0, 0, 0},

	{"tls", "cert_file", K_PATH, CFG(tls_cert_file), 0, 0, 0},
	{"tls", "key_file", K_PATH, CFG(tls_key_file), 0, 0, 0},
	{"tls", "ca_file", K_PATH, CFG(tls_ca_file), 0, 0, 0},
	{"tls", "client_ca_file", K_PATH, CFG(tls_client_ca_file), 0, 0, 0},

	{"cluster", "secret", K_SECRET, CFG(cluster_secret), 0, 0, 0},
	{"cluster", "secret_file", K_PATH, CFG(cluster_secret_file), 0, 0, 0},

	{"raft", "heartbeat_ms", K_UINT, CFG(heartbeat_ms), 10, 10000, 0},
	{"raft", "election_ms", K_UINT, CFG(election_ms), 30, 60000, 0},
	{"raft", "snapshot_threshold", K_UINT, CFG(snapshot_threshold), 16,
	 10000000, 0},
	{"raft", "snapshot_trailing", K_UINT, CFG(snapshot_trailing), 16,
	 UINT_MAX, 0},
	{"raft", "pre_vote", K_BOOL, CFG(pre_vote), 0, 0, 0},
	{"raft", "snapshot_fork", K_BOOL, CFG(snapshot_fork), 0, 0, 0},
	{"raft", "apply_timeout_ms", K_UINT, CFG(apply_timeout_ms), 100,
	 600000, 0},

	{"api", "threads", K_UINT, CFG(api_threads), 1, 64, 0},
	{"api", "connection_limit", K_UINT, CFG(api_connection_limit), 16,
	 65536, 0},
	{"api", "connection_timeout_s", K_UINT, CFG(api_connection_timeout_s),
	 1, 3600, 0},
	{"api", "per_address_limit", K_UINT, CFG(api_per_address_limit), 1,
	 65536, 0},
	{"api", "read_timeout_s", K_UINT, CFG(api_read_timeout_s), 1, 3600, 0},
	{"api", "max_streams", K_UINT, CFG(api_max_streams), 1, 65536, 0},
	{"api", "max_log_follows", K_UINT, CFG(api_max_log_follows), 1, 4096, 0},
	{"api", "watch_window", K_UINT, CFG(api_watch_window), 16, 1048576, 0},
	{"api", "stream_heartbeat_ms", K_UINT, CFG(api_stream_heartbeat_ms),
	 100, 30000, 0},

	{"executor", "kill_grace_ms", K_UINT, CFG(kill_grace_ms), 0, 600000, 0},
	{"executor", "step_nice", K_UINT, CFG(step_nice), 0, 19, 0},
	{"executor", "run_as", K_PATH, CFG(run_as), 0, 0, 0},
	{"executor", "allow_root", K_BOOL, CFG(allow_root), 0, 0, 0},
	{"executor", "pass_env", K_NAMES, CFG(pass_env), 0, 0, 0},
	{"node", "background_nice", K_UINT, CFG(background_nice), 0, 19, 0},

	{"scheduler", "late_after_ms", K_UINT, CFG(late_after_ms), 0, 3600000, 0},
	{"scheduler", "fire_batch_max", K_UINT, CFG(fire_batch_max), 1, 100000, 0},

	{"cluster", "node_heartbeat_ms", K_UINT, CFG(node_heartbeat_ms), 50,
	 60000, 0},
	{"cluster", "node_timeout_ms", K_UINT, CFG(node_timeout_ms), 200,
	 600000, 0},

	{"log", "level", K_LEVEL, CFG(log_level), 0, 0, 0},

	{"metrics", "max_series", K_UINT, CFG(metrics_max_series), 1, 1000000,
	 0},

	LIMIT_SZ(max_body_bytes),
	LIMIT_SZ(max_spec_bytes),
	LIMIT_U(max_steps_per_flow),
	LIMIT_U(max_params_per_flow),
	LIMIT_U(max_deps_per_step),
	LIMIT_U(max_argv),
	LIMIT_U(max_env_per_step),
	LIMIT_SZ(max_string_bytes),
	LIMIT_SZ(max_param_bytes),
	LIMIT_U(max_retries),
	LIMIT_U(max_backoff_s),
	LIMIT_U(max_timeout_s),
	LIMIT_U(default_timeout_s),
	LIMIT_SZ(max_log_bytes_per_task),
	LIMIT_U(max_parallel_tasks),
	LIMIT_SZ(max_idempotency_key_bytes),
	LIMIT_U(max_runs_page),
	LIMIT_U(runs_in_memory),
	LIMIT_U(idempotency_keys),
	LIMIT_U(idempotency_ttl_s),
	LIMIT_U(max_triggers_per_flow),
	LIMIT_U(max_jitter_s),
	LIMIT_U(max_catchup_window_s),
	LIMIT_U(max_catchup_runs),
	LIMIT_U(max_event_window_s),
	LIMIT_U(max_active_runs),
	LIMIT_U(max_buffered_runs),
	LIMIT_U(max_backfill_runs),
	LIMIT_U(event_dedupe_s),
	LIMIT_U(events_in_memory),
	LIMIT_SZ(max_event_bytes),
	/* within what a command may carry (core/fsm_check.c) */
	{"limits", "max_tags_per_run", K_UINT, CFG(limits.max_tags_per_run), 1,
	 100000, 0},
	{"limits", "max_tag_bytes", K_SIZE, CFG(limits.max_tag_bytes), 1, 65536,
	 0},
	LIMIT_U(redrive_window_s),
};

/* One config_load() call in progress. */
struct load {
	struct flowd_config *cfg;
	char *errmsg;
	size_t errlen;
	int failed;
	unsigned marks;            /* enum mark bits set explicitly */
	/* where the key being applied comes from */
	const char *path;          /* NULL: command line or final checks */
	int on_command_line;
	/* line reader state */
	FILE *file;
	char *buf;
	size_t cap;
	int line;
	int err_line;
	int continuation;          /* the current line is indented */
	/* the last key = value, held until its continuation lines are read */
	int pending_line;
	char *pending_section;
	char *pending_name;
	char *pending_value;
};

static int fail(struct load *ld, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int fail(struct load *ld, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	if (ld->failed)
		return -1;
	ld->failed = 1;
	ld->err_line = ld->line;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (ld->path)
		snprintf(ld->errmsg, ld->errlen, "config: %s (%s line %d)", what,
			 ld->path, ld->line);
	else if (ld->on_command_line)
		snprintf(ld->errmsg, ld->errlen, "config: %s (command line)",
			 what);
	else
		snprintf(ld->errmsg, ld->errlen, "config: %s", what);
	return -1;
}

/* Decimal digits only: no sign, no space, no base prefix. */
static int parse_u64(const char *s, uint64_t *out, int *overflow)
{
	const char *p;
	unsigned long long v;
	char *end;

	*overflow = 0;
	if (*s == '\0')
		return -1;
	for (p = s; *p; p++)
		if (*p < '0' || *p > '9')
			return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno == ERANGE) {
		*overflow = 1;
		return -1;
	}
	if (*end != '\0')
		return -1;
	*out = v;
	return 0;
}

/* Digits and an optional k/K, m/M or g/G suffix (powers of 1024). */
static int parse_size(const char *s, uint64_t *out, int *overflow)
{
	char digits[32];
	size_t n = strlen(s);
	unsigned shift = 0;
	uint64_t v;

	*overflow = 0;
	if (n == 0)
		return -1;
	switch (s[n - 1]) {
	case 'k':
	case 'K':
		shift = 10;
		break;
	case 'm':
	case 'M':
		shift = 20;
		break;
	case 'g':
	case 'G':
		shift = 30;
		break;
	}
	if (shift)
		n--;
	if (n == 0 || n >= sizeof digits) {
		*overflow = n >= sizeof digits;
		return -1;
	}
	memcpy(digits, s, n);
	digits[n] = '\0';
	if (parse_u64(digits, &v, overflow) < 0)
		return -1;
	if (v > (UINT64_MAX >> shift)) {
		*overflow = 1;
		return -1;
	}
	*out = v << shift;
	return 0;
}

static int parse_bool(const char *s, int *out)
{
	static const char *yes[] = {"true", "yes", "on", "1"};
	static const char *no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

/* "a.b.c.d:port", dotted-quad IPv4 and a port 1..65535 without leading zero:
 * the form raft's libuv transport accepts, and one spelling per address so
 * that addresses can be compared as strings. */
static int check_address(const char *s)
{
	if (strlen(s) >= ADDRESS_LEN)
		return -1;
	return flowd_ipv4_address_parse(s, NULL);
}

static int is_loopback(const char *address)
{
	return strncmp(address, "127.", 4) == 0;
}

static void free_tokens(char **tokens)
{
	if (!tokens)
		return;
	for (char **t = tokens; *t; t++)
		free(*t);
	free(tokens);
}

/* One item of a list: 0, or fail() naming the key and why. */
typedef int (*item_check_fn)(struct load *ld, const char *key, size_t n,
			     const char *item, size_t len);

/* Split on commas and blanks into a NULL-terminated list (owned), each
 * item passing `check` (n counts the items from 1). */
static int parse_list(struct load *ld, const char *key, const char *s,
		      item_check_fn check, char ***out)
{
	char **items = calloc(1, sizeof *items), **grown;
	size_t n = 0;
	const char *p = s;

	if (!items)
		return fail(ld, "%s: out of memory", key);
	for (;;) {
		const char *start;
		size_t len;

		while (*p == ',' || *p == ' ' || *p == '\t')
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p && *p != ',' && *p != ' ' && *p != '\t')
			p++;
		len = (size_t)(p - start);
		if (check(ld, key, n + 1, start, len) != 0) {
			free_tokens(items);
			return -1;
		}
		grown = realloc(items, (n + 2) * sizeof *items);
		if (!grown || !(grown[n] = strndup(start, len))) {
			free_tokens(grown ? grown : items);
			return fail(ld, "%s: out of memory", key);
		}
		items = grown;
		items[++n] = NULL;
	}
	*out = items;
	return 0;
}

/* A token: 16..256 printable ASCII characters. Messages count tokens and
 * never quote one: they are secrets. */
static int token_check(struct load *ld, const char *key, size_t n,
		       const char *t, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (t[i] < 0x21 || t[i] > 0x7e)
			return fail(ld, "%s: token %zu has a character that is not printable ASCII",
				    key, n);
	if (len < TOKEN_MIN)
		return fail(ld, "%s: token %zu is too short (%zu characters, at least %d)",
			    key, n, len, TOKEN_MIN);
	if (len > TOKEN_MAX)
		return fail(ld, "%s: token %zu is too long (%zu characters, at most %d)",
			    key, n, len, TOKEN_MAX);
	return 0;
}

static int parse_tokens(struct load *ld, const char *key, const char *s,
			char ***out)
{
	return parse_list(ld, key, s, token_check, out);
}

/* A secret shared by the nodes: 16..256 printable ASCII characters. */
static int secret_check(struct load *ld, const char *key, const char *s,
			size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return fail(ld, "%s: the secret has a character that is not printable ASCII",
				    key);
	if (len < TOKEN_MIN || len > TOKEN_MAX)
		return fail(ld, "%s: the secret has %zu characters (%d..%d)",
			    key, len, TOKEN_MIN, TOKEN_MAX);
	return 0;
}

/* An environment variable name. */
static int name_check(struct load *ld, const char *key, size_t n,
		      const char *name, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!(c == '_' || (c >= 'A' && c <= 'Z') ||
		      (c >= 'a' && c <= 'z') ||
		      (i > 0 && c >= '0' && c <= '9')) || len > 128)
			return fail(ld, "%s: \"%.*s\" is not an environment variable name",
				    key, (int)(len > 64 ? 64 : len), name);
	}
	return 0;
}

static int range_error(struct load *ld, const char *key, const char *value,
		       const struct key *k)
{
	if (k->max == UINT64_MAX)
		return fail(ld, "%s: %s is out of range (at least %llu)", key,
			    value, (unsigned long long)k->min);
	return fail(ld, "%s: %s is out of range %llu..%llu", key, value,
		    (unsigned long long)k->min, (unsigned long long)k->max);
}

static int set_key(struct load *ld, const struct key *k, const char *value)
{
	char *field = (char *)ld->cfg + k->offset;
	char key[96];
	uint64_t v;
	int overflow, b, level;
	char *copy;
	char **tokens = NULL;

	snprintf(key, sizeof key, "%s.%s", k->section, k->name);
	switch (k->kind) {
	case K_UINT:
	case K_U64:
	case K_SIZE:
		if (k->kind == K_SIZE) {
			if (parse_size(value, &v, &overflow) < 0 && !overflow)
				return fail(ld, "%s: \"%s\" is not a size (an integer, optionally with k, m or g)",
					    key, value);
		} else if (parse_u64(value, &v, &overflow) < 0 && !overflow) {
			return fail(ld, "%s: \"%s\" is not a non-negative integer",
				    key, value);
		}
		if (overflow || v < k->min || v > k->max)
			return range_error(ld, key, value, k);
		if (k->kind == K_UINT)
			*(unsigned *)field = (unsigned)v;
		else if (k->kind == K_U64)
			*(uint64_t *)field = v;
		else
			*(size_t *)field = (size_t)v;
		break;
	case K_BOOL:
		if (parse_bool(value, &b) < 0)
			return fail(ld, "%s: \"%s\" is not a boolean (true/false, yes/no, on/off, 1/0)",
				    key, value);
		*(int *)field = b;
		break;
	case K_STRING:
		if (*value == '\0')
			return fail(ld, "%s: must not be empty", key);
		copy = strdup(value);
		if (!copy)
			return fail(ld, "%s: out of memory", key);
		free(*(char **)field);
		*(char **)field = copy;
		break;
	case K_ADDRESS_OPT:
		if (value[0] == '\0') {
			((char *)field)[0] = '\0';
			break;
		}
		/* fall through */
	case K_ADDRESS:
		if (check_address(value) < 0)
			return fail(ld, "%s: \"%s\" is not an IPv4 address:port",
				    key, value);
		strcpy(field, value); /* fits: check_address() measured it */
		break;
	case K_LEVEL:
		level = flowd_log_level_parse(value);
		if (level < 0)
			return fail(ld, "%s: \"%s\" is not one of debug, info, warn, error",
				    key, value);
		*(int *)field = level;
		break;
	case K_TOKENS:
		if (parse_tokens(ld, key, value, &tokens) < 0)
			return -1;
		free_tokens(*(char ***)field);
		*(char ***)field = tokens;
		break;
	case K_NAMES:
		if (parse_list(ld, key, value, name_check, &tokens) < 0)
			return -1;
		free_tokens(*(char ***)field);
		*(char ***)field = tokens;
		break;
	case K_SECRET:
		if (secret_check(ld, key, value, strlen(value)) < 0)
			return -1;
		/* fall through */
	case K_PATH:
		copy = NULL;
		if (*value != '\0' && (copy = strdup(value)) == NULL)
			return fail(ld, "%s: out of memory", key);
		free(*(char **)field);
		*(char **)field = copy;
		break;
	}
	ld->marks |= k->mark;
	return 0;
}

/* peers.<id> = <raft_address> <api_address>. A repeated id is an error in
 * the file; an override replaces the entry. */
static int set_peer(struct load *ld, const char *name, const char *value,
		    int replace)
{
	struct flowd_config *cfg = ld->cfg;
	struct config_peer peer = {0};
	char raft[64], api[64], internal[64], extra[2];
	int overflow, n;
	unsigned i;

	if (parse_u64(name, &peer.id, &overflow) < 0 || peer.id < 1 ||
	    peer.id > NODE_ID_MAX)
		return fail(ld, "peers.%s: \"%s\" is not a node id (1..%llu)",
			    name, name, (unsigned long long)NODE_ID_MAX);
	n = sscanf(value, "%63s %63s %63s %1s", raft, api, internal, extra);
	if (n != 2 && n != 3)
		return fail(ld, "peers.%s: \"%s\" is not \"<raft_address> <api_address> [<internal_address>]\"",
			    name, value);
	if (n == 3 && check_address(internal) < 0)
		return fail(ld, "peers.%s: \"%s\" is not an IPv4 address:port",
			    name, internal);
	if (n == 3)
		strcpy(peer.internal_address, internal);
	if (check_address(raft) < 0)
		return fail(ld, "peers.%s: \"%s\" is not an IPv4 address:port",
			    name, raft);
	if (check_address(api) < 0)
		return fail(ld, "peers.%s: \"%s\" is not an IPv4 address:port",
			    name, api);
	strcpy(peer.raft_address, raft);
	strcpy(peer.api_address, api);
	for (i = 0; i < cfg->n_peers; i++)
		if (cfg->peers[i].id == peer.id)
			break;
	if (i < cfg->n_peers && !replace)
		return fail(ld, "peers.%s: duplicate node id %llu", name,
			    (unsigned long long)peer.id);
	if (i == CONFIG_MAX_PEERS)
		return fail(ld, "peers.%s: more than %d peers", name,
			    CONFIG_MAX_PEERS);
	cfg->peers[i] = peer;
	if (i == cfg->n_peers)
		cfg->n_peers++;
	return 0;
}

/* tokens.<name> = <role> <token or sha256:hex>: a named token, so that the
 * audit table says who. A repeated name replaces the entry. */
static int set_token(struct load *ld, const char *name, const char *value)
{
	struct flowd_config *cfg = ld->cfg;
	struct config_token t = {0};
	char key[96], role[16], secret[TOKEN_MAX + 2], extra[2];
	char **one = NULL;
	size_t n = strlen(name);
	unsigned i;

	snprintf(key, sizeof key, "tokens.%.63s", name);
	if (n == 0 || n >= sizeof t.name || strspn(name,
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		"0123456789_.-") != n)
		return fail(ld, "%s: a token name is 1..63 of A-Z a-z 0-9 _ . -",
			    key);
	if (sscanf(value, "%15s %257s %1s", role, secret, extra) != 2)
		return fail(ld, "%s: not \"<role> <token>\"", key);
	if (strcmp(role, "reader") != 0 && strcmp(role, "operator") != 0 &&
	    strcmp(role, "admin") != 0 && strcmp(role, "production") != 0)
		return fail(ld, "%s: role \"%s\" is not reader, operator, admin "
			    "or production", key, role);
	if (strchr(secret, ',') != NULL) {
		explicit_bzero(secret, sizeof secret);
		return fail(ld, "%s: one token per name (no commas)", key);
	}
	if (parse_tokens(ld, key, secret, &one) < 0) {
		explicit_bzero(secret, sizeof secret);
		return -1;
	}
	explicit_bzero(secret, sizeof secret);
	if (one[0] == NULL) {
		free(one);
		return fail(ld, "%s: not \"<role> <token>\"", key);
	}
	strcpy(t.name, name);
	strcpy(t.role, role);
	t.value = one[0];
	free(one);
	for (i = 0; i < cfg->n_tokens; i++)
		if (strcmp(cfg->tokens[i].name, name) == 0)
			break;
	if (i == CONFIG_MAX_TOKENS) {
		free(t.value);
		return fail(ld, "%s: more than %d named tokens", key,
			    CONFIG_MAX_TOKENS);
	}
	if (i < cfg->n_tokens)
		free(cfg->tokens[i].value);
	else
		cfg->n_tokens++;
	cfg->tokens[i] = t;
	return 0;
}

/* Strip one pair of double quotes around the whole value, in place. */
static void unquote(char *s)
{
	size_t n = strlen(s);

	if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
		memmove(s, s + 1, n - 2);
		s[n - 2] = '\0';
	}
}

static int apply(struct load *ld, const char *section, const char *name,
		 char *value, int replace_peer)
{
	unquote(value);
	if (*section == '\0')
		return fail(ld, "key %s is outside any [section]", name);
	if (strcmp(section, "peers") == 0)
		return set_peer(ld, name, value, replace_peer);
	if (strcmp(section, "tokens") == 0)
		return set_token(ld, name, value);
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
		if (strcmp(keys[i].section, section) == 0 &&
		    strcmp(keys[i].name, name) == 0)
			return set_key(ld, &keys[i], value);
	return fail(ld, "unknown key %s.%s", section, name);
}

/* Apply the key read last, now that no continuation line can extend it. */
static int flush_pending(struct load *ld)
{
	int line = ld->line, rc;

	if (!ld->pending_value)
		return 0;
	ld->line = ld->pending_line;
	rc = apply(ld, ld->pending_section, ld->pending_name,
		   ld->pending_value, 0);
	ld->line = line;
	free(ld->pending_section);
	free(ld->pending_name);
	free(ld->pending_value);
	ld->pending_section = ld->pending_name = ld->pending_value = NULL;
	return rc;
}

/* inih calls this for every "key = value" and every continuation line (then
 * with the previous key's name). A key is held until the next key or the
 * end of the file, so that a value's continuation lines are joined first. */
static int ini_cb(void *user, const char *section, const char *name,
		  const char *value)
{
	struct load *ld = user;
	size_t a, b;
	char *v;

	if (ld->failed)
		return 0;
	if (ld->continuation && ld->pending_value &&
	    strcmp(section, ld->pending_section) == 0 &&
	    strcmp(name, ld->pending_name) == 0) {
		a = strlen(ld->pending_value);
		b = strlen(value);
		v = realloc(ld->pending_value, a + 1 + b + 1);
		if (!v)
			goto nomem;
		v[a] = ' ';
		memcpy(v + a + 1, value, b + 1);
		ld->pending_value = v;
		return 1;
	}
	if (flush_pending(ld) < 0)
		return 0;
	ld->pending_line = ld->line;
	ld->pending_section = strdup(section);
	ld->pending_name = strdup(name);
	ld->pending_value = strdup(value);
	if (!ld->pending_section || !ld->pending_name || !ld->pending_value)
		goto nomem;
	return 1;

nomem:
	fail(ld, "out of memory");
	return 0;
}

/* fgets() for inih, over getline(): counts lines, refuses a line inih's
 * buffer cannot hold whole, and notes whether the line is indented. */
static char *read_line(char *str, int num, void *stream)
{
	struct load *ld = stream;
	const char *s;
	ssize_t n;
	size_t len;

	if (ld->failed)
		return NULL;
	n = getline(&ld->buf, &ld->cap, ld->file);
	if (n < 0)
		return NULL;
	ld->line++;
	if ((size_t)n != strlen(ld->buf)) {
		fail(ld, "line has a NUL byte");
		return NULL;
	}
	/* inih's buffer needs room for "\r\n\0" past the text. */
	len = (size_t)n;
	while (len && (ld->buf[len - 1] == '\n' || ld->buf[len - 1] == '\r'))
		len--;
	if (num < 4 || len > (size_t)num - 3) {
		fail(ld, "line is longer than %d characters (continue a long value on indented lines)",
		     num - 3);
		return NULL;
	}
	s = ld->buf;
	while (*s == ' ' || *s == '\t')
		s++;
	ld->continuation = s != ld->buf && *s && *s != '\n' && *s != '\r' &&
			   *s != ';' && *s != '#';
	/* hand inih the text and "\n" only: it fits in num bytes */
	memcpy(str, ld->buf, len);
	str[len] = '\n';
	str[len + 1] = '\0';
	return str;
}

static int load_file(struct load *ld, const char *path)
{
	int rc;

	ld->file = fopen(path, "r");
	if (!ld->file)
		return fail(ld, "%s: %s", path, strerror(errno));
	ld->path = path;
	rc = ini_parse_stream(read_line, ld, ini_cb, ld);
	if (!ld->failed)
		flush_pending(ld);
	if (!ld->failed && rc == -2)
		fail(ld, "out of memory");
	else if (rc > 0 && (!ld->failed || rc < ld->err_line)) {
		/* inih found a malformed line before any error of ours */
		ld->failed = 0;
		ld->line = rc;
		fail(ld, "expected \"[section]\" or \"key = value\"");
	}
	if (!ld->failed && ferror(ld->file))
		fail(ld, "%s: read error", path);
	ld->path = NULL;
	fclose(ld->file);
	ld->file = NULL;
	return ld->failed ? -1 : 0;
}

/* "--section.key=value" */
static int load_override(struct load *ld, const char *arg)
{
	const char *dot, *eq;
	char *section = NULL, *name = NULL, *value = NULL;
	int rc = -1;

	dot = strchr(arg, '.');
	eq = strchr(arg, '=');
	if (strncmp(arg, "--", 2) != 0 || !dot || !eq || dot > eq ||
	    dot == arg + 2 || eq == dot + 1)
		return fail(ld, "unexpected argument %s", arg);
	section = strndup(arg + 2, (size_t)(dot - arg - 2));
	name = strndup(dot + 1, (size_t)(eq - dot - 1));
	value = strdup(eq + 1);
	if (!section || !name || !value) {
		fail(ld, "out of memory");
		goto out;
	}
	rc = apply(ld, section, name, value, 1);
out:
	free(value);
	free(name);
	free(section);
	return rc;
}

/* cluster.secret_file: the whole file is the secret, less one trailing
 * newline; it must not be readable by other users. */
static int read_secret_file(struct load *ld, const char *path)
{
	struct flowd_config *cfg = ld->cfg;
	char buf[TOKEN_MAX + 3];
	struct stat st;
	size_t n;
	FILE *f = fopen(path, "r");

	if (f == NULL)
		return fail(ld, "cluster.secret_file: %s: %s", path,
			    strerror(errno));
	if (fstat(fileno(f), &st) == 0 && (st.st_mode & 0077) != 0) {
		fclose(f);
		return fail(ld, "cluster.secret_file: %s is readable by other users (mode %03o; chmod 600)",
			    path, (unsigned)(st.st_mode & 0777));
	}
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	if (secret_check(ld, "cluster.secret_file", buf, n) < 0)
		return -1;
	free(cfg->cluster_secret);
	cfg->cluster_secret = strdup(buf);
	explicit_bzero(buf, sizeof buf);
	return cfg->cluster_secret ? 0 : fail(ld, "out of memory");
}

/* [tls] and the node credential. */
static int check_credentials(struct load *ld)
{
	struct flowd_config *cfg = ld->cfg;

	if (cfg->cluster_secret_file != NULL) {
		if (cfg->cluster_secret != NULL)
			return fail(ld, "cluster.secret and cluster.secret_file are both set");
		if (read_secret_file(ld, cfg->cluster_secret_file) < 0)
			return -1;
	}
	if ((cfg->n_peers > 1 || cfg->join) && !cfg->admin_tokens[0] &&
	    !cfg->reader_tokens[0] && !cfg->operator_tokens[0] &&
	    cfg->n_tokens == 0)
		return fail(ld, "auth: no tokens configured, which is allowed only for a single node (another node would act on this one's open API; every node needs the same tokens)");
	if ((cfg->n_peers > 1 || cfg->join) && cfg->cluster_secret == NULL)
		return fail(ld, "cluster.secret_file: required for a cluster of more than one node (the nodes' credential; docs/security.md)");
	if ((cfg->tls_cert_file == NULL) != (cfg->tls_key_file == NULL))
		return fail(ld, "tls.%s: set tls.cert_file and tls.key_file together",
			    cfg->tls_cert_file ? "key_file" : "cert_file");
	if (cfg->tls_cert_file != NULL && cfg->tls_ca_file == NULL)
		return fail(ld, "tls.ca_file: required with tls.cert_file (nodes verify each other against it)");
	if (cfg->tls_client_ca_file != NULL && cfg->tls_cert_file == NULL)
		return fail(ld, "tls.client_ca_file: needs tls.cert_file");
	if (cfg->tls_cert_file == NULL && (cfg->n_peers > 1 || cfg->join)) {
		for (unsigned i = 0; i < cfg->n_peers; i++) {
			const struct config_peer *p = &cfg->peers[i];
			const char *open = !is_loopback(p->raft_address)
						   ? p->raft_address
					   : !is_loopback(p->api_address)
						   ? p->api_address
					   : p->internal_address[0] &&
							   !is_loopback(
								   p->internal_address)
						   ? p->internal_address
						   : NULL;

			if (open != NULL)
				return fail(ld, "tls.cert_file: required when a peer is not on loopback (peers.%llu at %s): Raft and node traffic would travel in clear",
					    (unsigned long long)p->id, open);
		}
	}
	return 0;
}

/* The settings that depend on each other, once everything is read. */
static int check_whole(struct load *ld)
{
	struct flowd_config *cfg = ld->cfg;
	struct config_peer *self = NULL;
	unsigned i, j;

	if (cfg->n_peers == 0) {
		/* A single-node cluster: this node is the only peer. */
		self = &cfg->peers[0];
		self->id = cfg->node_id;
		strcpy(self->raft_address, cfg->raft_address);
		strcpy(self->api_address, cfg->api_address);
		strcpy(self->internal_address, cfg->internal_address);
		cfg->n_peers = 1;
	} else {
		if (!(ld->marks & MARK_NODE_ID)) {
			if (cfg->n_peers > 1)
				return fail(ld, "node.id is required when [peers] lists %u nodes",
					    cfg->n_peers);
			cfg->node_id = cfg->peers[0].id;
		}
		for (i = 0; i < cfg->n_peers; i++)
			if (cfg->peers[i].id == cfg->node_id)
				self = &cfg->peers[i];
		if (!self && !cfg->join)
			return fail(ld, "node.id: %llu is not among [peers] (set node.join = true to join an existing cluster)",
				    (unsigned long long)cfg->node_id);
		if (self && cfg->join)
			return fail(ld, "node.join: node %llu is among [peers], which list the cluster it joins",
				    (unsigned long long)cfg->node_id);
		for (i = 0; i < cfg->n_peers; i++) {
			for (j = i + 1; j < cfg->n_peers; j++) {
				struct config_peer *a = &cfg->peers[i];
				struct config_peer *b = &cfg->peers[j];

				if (strcmp(a->raft_address, b->raft_address) == 0 ||
				    strcmp(a->api_address, b->api_address) == 0)
					return fail(ld, "peers.%llu and peers.%llu share an address",
						    (unsigned long long)a->id,
						    (unsigned long long)b->id);
			}
		}
		/* Unset addresses come from this node's [peers] entry; set ones
		 * must agree with it, or other nodes would dial the wrong one. */
		if (self == NULL) {
			if (!(ld->marks & MARK_RAFT_ADDRESS) ||
			    !(ld->marks & MARK_API_ADDRESS))
				return fail(ld, "node.join: node.raft_address and node.api_address must be set");
		} else if (!(ld->marks & MARK_RAFT_ADDRESS))
			strcpy(cfg->raft_address, self->raft_address);
		else if (strcmp(cfg->raft_address, self->raft_address) != 0)
			return fail(ld, "node.raft_address: %s differs from peers.%llu (%s)",
				    cfg->raft_address,
				    (unsigned long long)self->id,
				    self->raft_address);
		if (self == NULL)
			; /* joining: both addresses were given */
		else if (!(ld->marks & MARK_API_ADDRESS))
			strcpy(cfg->api_address, self->api_address);
		else if (strcmp(cfg->api_address, self->api_address) != 0)
			return fail(ld, "node.api_address: %s differs from peers.%llu (%s)",
				    cfg->api_address,
				    (unsigned long long)self->id,
				    self->api_address);
		if (self == NULL)
			;
		else if (cfg->internal_address[0] == '\0')
			strcpy(cfg->internal_address, self->internal_address);
		else if (strcmp(cfg->internal_address,
				self->internal_address) != 0)
			return fail(ld, "node.internal_address: %s differs from peers.%llu (%s)",
				    cfg->internal_address,
				    (unsigned long long)self->id,
				    self->internal_address[0]
					? self->internal_address
					: "none");
	}
	if (check_credentials(ld) < 0)
		return -1;
	if (cfg->node_timeout_ms < 2 * cfg->node_heartbeat_ms)
		return fail(ld, "cluster.node_timeout_ms: %u must be at least 2 * cluster.node_heartbeat_ms (%u)",
			    cfg->node_timeout_ms, 2 * cfg->node_heartbeat_ms);
	if (cfg->election_ms < 3 * cfg->heartbeat_ms)
		return fail(ld, "raft.election_ms: %u must be at least 3 * raft.heartbeat_ms (%u)",
			    cfg->election_ms, 3 * cfg->heartbeat_ms);
	if (cfg->snapshot_trailing < cfg->snapshot_threshold)
		return fail(ld, "raft.snapshot_trailing: %u must be at least raft.snapshot_threshold (%u)",
			    cfg->snapshot_trailing, cfg->snapshot_threshold);
	if (cfg->limits.default_timeout_s > cfg->limits.max_timeout_s)
		return fail(ld, "limits.default_timeout_s: %u is above limits.max_timeout_s (%u)",
			    cfg->limits.default_timeout_s,
			    cfg->limits.max_timeout_s);
	if (cfg->limits.max_spec_bytes > cfg->limits.max_body_bytes)
		return fail(ld, "limits.max_spec_bytes: %zu is above limits.max_body_bytes (%zu)",
			    cfg->limits.max_spec_bytes,
			    cfg->limits.max_body_bytes);
	if (cfg->metrics_address[0] != '\0' &&
	    (strcmp(cfg->metrics_address, cfg->api_address) == 0 ||
	     strcmp(cfg->metrics_address, cfg->raft_address) == 0))
		return fail(ld, "node.metrics_address: %s is node.api_address or node.raft_address",
			    cfg->metrics_address);
	/* docs/api.md: no token at all is allowed only on a loopback API. */
	if (!cfg->admin_tokens[0] && !cfg->reader_tokens[0] &&
	    !cfg->operator_tokens[0] && cfg->n_tokens == 0 && !is_loopback(cfg->api_address))
		return fail(ld, "auth: no tokens configured, which is allowed only on a loopback node.api_address (not %s)",
			    cfg->api_address);
	return 0;
}

static int set_defaults(struct load *ld)
{
	struct flowd_config *cfg = ld->cfg;

	memset(cfg, 0, sizeof *cfg);
	cfg->node_id = 1;
	strcpy(cfg->raft_address, DEFAULT_RAFT_ADDRESS);
	strcpy(cfg->api_address, DEFAULT_API_ADDRESS);
	cfg->data_dir = strdup(DEFAULT_DATA_DIR);
	cfg->conninfo = strdup(DEFAULT_CONNINFO);
	cfg->db_batch_max = 512;
	cfg->db_reader_pool = 4;
	cfg->db_max_backlog = 1000000;
	cfg->admin_tokens = calloc(1, sizeof(char *));
	cfg->reader_tokens = calloc(1, sizeof(char *));
	cfg->operator_tokens = calloc(1, sizeof(char *));
	cfg->pass_env = calloc(1, sizeof(char *));
	cfg->heartbeat_ms = 50;
	cfg->election_ms = 200;
	cfg->node_heartbeat_ms = 1000;
	cfg->node_timeout_ms = 5000;
	cfg->snapshot_threshold = 16384;
	cfg->snapshot_trailing = 16384;
	cfg->pre_vote = 1;
	cfg->snapshot_fork = 1;
	cfg->apply_timeout_ms = 5000;
	cfg->api_threads = 2;
	cfg->step_nice = 10; /* docs/benchmarks.md, "Mixed load" */
	cfg->background_nice = 10;
	cfg->metrics_max_series = 10000;
	cfg->api_connection_limit = 4096;
	cfg->api_max_streams = 3072; /* a quarter of connection_limit stays
	                              * for requests, node to node too */
	cfg->api_max_log_follows = 64;
	cfg->api_watch_window = 16384;
	cfg->api_stream_heartbeat_ms = 15000;
	cfg->api_connection_timeout_s = 60;
	cfg->api_per_address_limit = 512;
	cfg->api_read_timeout_s = 10;
	cfg->kill_grace_ms = 5000;
	cfg->late_after_ms = 2000;
	cfg->fire_batch_max = 1000;
	cfg->log_level = FLOWD_LOG_INFO;
	flowd_limits_defaults(&cfg->limits);
	if (!cfg->data_dir || !cfg->conninfo || !cfg->admin_tokens ||
	    !cfg->reader_tokens || !cfg->operator_tokens || !cfg->pass_env)
		return fail(ld, "out of memory");
	return 0;
}

int config_load(struct flowd_config *cfg, const char *path, int argc,
		char **argv, char *errmsg, size_t errlen)
{
	char scratch[1];
	int have_buf = errmsg && errlen;
	struct load ld = {
		.cfg = cfg,
		.errmsg = have_buf ? errmsg : scratch,
		.errlen = have_buf ? errlen : sizeof scratch,
	};
	const char *trace;

	ld.errmsg[0] = '\0';
	if (set_defaults(&ld) < 0)
		goto fail_load;
	if (path && load_file(&ld, path) < 0)
		goto fail_load;
	ld.on_command_line = 1;
	for (int i = 0; i < argc; i++)
		if (load_override(&ld, argv[i]) < 0)
			goto fail_load;
	ld.on_command_line = 0;
	if (check_whole(&ld) < 0)
		goto fail_load;
	/* After everything: FLOWD_TRACE=1 beats the file and the overrides. */
	trace = getenv("FLOWD_TRACE");
	if (trace && strcmp(trace, "1") == 0)
		cfg->log_level = FLOWD_LOG_DEBUG;
	free(ld.pending_value);
	free(ld.pending_name);
	free(ld.pending_section);
	free(ld.buf);
	return 0;

fail_load:
	free(ld.pending_value);
	free(ld.pending_name);
	free(ld.pending_section);
	free(ld.buf);
	config_free(cfg);
	return -1;
}

void config_free(struct flowd_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->data_dir);
	cfg->data_dir = NULL;
	free(cfg->conninfo);
	cfg->conninfo = NULL;
	free_tokens(cfg->admin_tokens);
	cfg->admin_tokens = NULL;
	free_tokens(cfg->reader_tokens);
	cfg->reader_tokens = NULL;
	free_tokens(cfg->operator_tokens);
	cfg->operator_tokens = NULL;
	for (unsigned i = 0; i < cfg->n_tokens; i++) {
		free(cfg->tokens[i].value);
		cfg->tokens[i].value = NULL;
	}
	cfg->n_tokens = 0;
	free_tokens(cfg->pass_env);
	cfg->pass_env = NULL;
	free(cfg->tls_cert_file);
	free(cfg->tls_key_file);
	free(cfg->tls_ca_file);
	free(cfg->tls_client_ca_file);
	cfg->tls_cert_file = cfg->tls_key_file = NULL;
	cfg->tls_ca_file = cfg->tls_client_ca_file = NULL;
	if (cfg->cluster_secret != NULL)
		explicit_bzero(cfg->cluster_secret,
			       strlen(cfg->cluster_secret));
	free(cfg->cluster_secret);
	free(cfg->cluster_secret_file);
	cfg->cluster_secret = cfg->cluster_secret_file = NULL;
	free(cfg->run_as);
	cfg->run_as = NULL;
}

const char *config_internal_address(const struct flowd_config *cfg,
				    uint64_t id)
{
	for (unsigned i = 0; i < cfg->n_peers; i++)
		if (cfg->peers[i].id == id &&
		    cfg->peers[i].internal_address[0] != '\0')
			return cfg->peers[i].internal_address;
	return NULL;
}
