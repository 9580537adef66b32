/* node.c - the raft node's lifecycle: start, role tracking, accessors and
 * the shutdown sequence that avoids raft 0.15's close crash.
 *
 * DESIGN
 * Happy path (consensus_new): the transport (raft_uv_tcp_init, or with
 * tls_cert_file set consensus_tls_transport_init: mutually authenticated
 * TLS, transport_tls.c) -> raft_uv_init(data_dir) ->
 * raft_init(id, address) -> raft_bootstrap(peers as voters; RAFT_CANTBOOTSTRAP
 * on every later start is expected) -> setters -> raft_start, then a timer
 * polls raft_state/raft_leader/current_term every max(heartbeat/2, 10) ms and
 * calls role_cb on a change (0.15 has no state callback, dependencies.md
 * §1.2). consensus_close (§0.3, §5.7): refuse new proposals; poll every 5 ms
 * until no raft_apply/raft_barrier is in flight and, on a leader, every
 * appended entry is on disk; if leader, raft_transfer(0) and wait for its
 * callback; raft_close; in its callback raft_uv_close and the transport's
 * close (raft_uv_tcp_close or consensus_tls_transport_close; both only free
 * memory: the io and transport handles were closed by raft_close); close
 * our timers; once they and every request struct are
 * gone, call done(arg) and free. The loop then has no handle of ours and
 * uv_loop_close returns 0.
 *
 * Failure modes:
 * - bad config (non-IPv4 address, a peer's address differing from our own
 *   for our id, heartbeat >= election): NULL before anything is opened. A
 *   node whose id is not among the peers (n_peers may be 0) is a joining
 *   node: it skips raft_bootstrap and waits to be added (membership.c).
 * - the transport's init (for TLS: unreadable files, a certificate that does
 *   not verify against the CA)/raft_uv_init/raft_init fail: NULL; we undo
 *   what succeeded with raft_uv_close and the transport's close, which only
 *   free memory.
 *   raft_close must NOT be called after a failed raft_init: raft_init has
 *   already released what it allocated and raft_close would close an io whose
 *   init failed. raft_uv's init fails before it opens a uv handle (directory
 *   check, probe, metadata, then transport init), so nothing is left on the
 *   loop. (Verified in v0.15.0 src/raft.c, src/uv.c, src/uv_tcp.c.)
 * - anything after raft_init fails (bootstrap, timer init, raft_start, e.g.
 *   port in use): NULL, and the half-built node closes itself through the
 *   normal raft_close path; it frees itself when the caller next runs the
 *   loop (which the caller must do before uv_loop_close anyway).
 * - close cannot drain within 10 s (a leader that cannot commit and has not
 *   stepped down yet): log an error and close anyway; raft then fails the
 *   pending requests with RAFT_SHUTDOWN (or 0.15 crashes; nothing better
 *   exists without patching raft).
 * Thread: the loop thread, for everything. */
#include "consensus/internal.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consensus/transport_tls.h"
#include "core/log.h"

/* ---------------------------------------------------------------- errors */

static void vformat(char *buf, size_t len, const char *fmt, va_list ap)
{
	if (buf == NULL || len == 0)
		return;
	vsnprintf(buf, len, fmt, ap);
}

void consensus__errorf(struct consensus *c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vformat(c->errmsg, sizeof c->errmsg, fmt, ap);
	va_end(ap);
}

/* raft_errmsg is sometimes empty (e.g. raft_start on a bad address, §0.5). */
static const char *raft_reason(const char *msg, int rv)
{
	return msg != NULL && msg[0] != '\0' ? msg : raft_strerror(rv);
}

void consensus__raft_error(struct consensus *c, const char *what, int rv)
{
	consensus__errorf(c, "%s: %s", what,
			  raft_reason(raft_errmsg(&c->raft), rv));
}

static void set_err(char *errmsg, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *errmsg, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vformat(errmsg, errlen, fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------- config */

/* raft_uv 0.15 parses addresses with uv_ip4_addr only (§0.5): "localhost" or
 * IPv6 pass raft_init and fail raft_start with an empty message. */
static int check_address(const char *address, char *errmsg, size_t errlen)
{
	char host[64];
	const char *colon;
	struct sockaddr_in sa;
	char *end;
	long port;

	if (address == NULL)
		goto bad;
	colon = strrchr(address, ':');
	if (colon == NULL || (size_t)(colon - address) >= sizeof host)
		goto bad;
	memcpy(host, address, (size_t)(colon - address));
	host[colon - address] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || end == colon + 1 || port < 1 || port > 65535)
		goto bad;
	if (uv_ip4_addr(host, (int)port, &sa) != 0)
		goto bad;
	return 0;
bad:
	set_err(errmsg, errlen,
		"consensus: address \"%s\" is not IPv4 \"a.b.c.d:port\"",
		address != NULL ? address : "(null)");
	return -1;
}

static int check_config(const struct consensus_config *cfg,
			const struct consensus_fsm *fsm, char *errmsg,
			size_t errlen)
{
	int self = 0;

	if (cfg->id == 0) {
		set_err(errmsg, errlen, "consensus: id must be > 0");
		return -1;
	}
	if (cfg->data_dir == NULL) {
		set_err(errmsg, errlen, "consensus: no data_dir");
		return -1;
	}
	if (fsm == NULL || fsm->apply == NULL || fsm->snapshot == NULL ||
	    fsm->restore == NULL) {
		set_err(errmsg, errlen, "consensus: incomplete fsm callbacks");
		return -1;
	}
	if (check_address(cfg->address, errmsg, errlen) != 0)
		return -1;
	if ((cfg->tls_ca_file == NULL) != (cfg->tls_cert_file == NULL) ||
	    (cfg->tls_cert_file == NULL) != (cfg->tls_key_file == NULL)) {
		set_err(errmsg, errlen,
			"consensus: tls needs ca_file, cert_file and key_file "
			"together");
		return -1;
	}
	if (cfg->n_peers > 0 && cfg->peers == NULL) {
		set_err(errmsg, errlen, "consensus: no peers");
		return -1;
	}
	for (unsigned i = 0; i < cfg->n_peers; i++) {
		if (cfg->peers[i].id == 0) {
			set_err(errmsg, errlen, "consensus: peer id 0");
			return -1;
		}
		if (check_address(cfg->peers[i].address, errmsg, errlen) != 0)
			return -1;
		if (cfg->peers[i].id == cfg->id) {
			self = 1;
			if (strcmp(cfg->peers[i].address, cfg->address) != 0) {
				set_err(errmsg, errlen,
					"consensus: peer %llu address %s != "
					"own address %s",
					(unsigned long long)cfg->id,
					cfg->peers[i].address, cfg->address);
				return -1;
			}
		}
	}
	/* Not among peers (or none): a joining node, which does not
	 * bootstrap and waits to be added (consensus_member_add). */
	if (!self)
		log_info("consensus: id %llu not among peers: joining, no "
			 "bootstrap", (unsigned long long)cfg->id);
	if (cfg->heartbeat_ms != 0 && cfg->election_ms != 0 &&
	    cfg->heartbeat_ms >= cfg->election_ms) {
		set_err(errmsg, errlen,
			"consensus: heartbeat_ms %u must be below election_ms %u",
			cfg->heartbeat_ms, cfg->election_ms);
		return -1;
	}
	if (cfg->snapshot_threshold != 0 && cfg->snapshot_trailing != 0 &&
	    cfg->snapshot_trailing < cfg->snapshot_threshold)
		log_warn("consensus: snapshot_trailing=%u below threshold=%u "
			 "(dqlite requires trailing >= threshold)",
			 cfg->snapshot_trailing, cfg->snapshot_threshold);
	return 0;
}

/* raft_bootstrap with every peer as a voter. Returns 0 or a raft code. */
static int bootstrap(struct consensus *c, const struct consensus_config *cfg)
{
	struct raft_configuration conf;
	int self = 0;
	int rv = 0;

	for (unsigned i = 0; i < cfg->n_peers; i++)
		self |= cfg->peers[i].id == cfg->id;
	if (!self)
		return 0; /* joining: see check_config */
	raft_configuration_init(&conf);
	for (unsigned i = 0; i < cfg->n_peers; i++) {
		rv = raft_configuration_add(&conf, cfg->peers[i].id,
					    cfg->peers[i].address, RAFT_VOTER);
		if (rv != 0) {
			consensus__errorf(c, "configuration add %llu: %s",
					  (unsigned long long)cfg->peers[i].id,
					  raft_strerror(rv));
			goto out;
		}
	}
	rv = raft_bootstrap(&c->raft, &conf);
	if (rv == RAFT_CANTBOOTSTRAP) {
		/* Not pristine: an earlier start bootstrapped (§1.2). */
		log_debug("consensus: data dir already bootstrapped");
		rv = 0;
	} else if (rv != 0) {
		consensus__raft_error(c, "bootstrap", rv);
	} else {
		log_info("consensus: bootstrapped voters=%u", cfg->n_peers);
	}
out:
	raft_configuration_close(&conf);
	return rv;
}

/* Setters are void in raft 0.15 (they cannot fail); values of 0 keep raft's
 * defaults (§1.7). */
static void apply_settings(struct consensus *c,
			   const struct consensus_config *cfg)
{
	if (cfg->heartbeat_ms != 0)
		raft_set_heartbeat_timeout(&c->raft, cfg->heartbeat_ms);
	if (cfg->election_ms != 0)
		raft_set_election_timeout(&c->raft, cfg->election_ms);
	if (cfg->snapshot_threshold != 0)
		raft_set_snapshot_threshold(&c->raft, cfg->snapshot_threshold);
	if (cfg->snapshot_trailing != 0)
		raft_set_snapshot_trailing(&c->raft, cfg->snapshot_trailing);
	raft_set_pre_vote(&c->raft, cfg->pre_vote != 0);
	c->proposed = cfg->proposed;
	c->proposed_arg = cfg->proposed_arg;
}

/* ---------------------------------------------------------------- roles */

static enum consensus_role map_role(int state)
{
	switch (state) {
	case RAFT_FOLLOWER:
		return CONSENSUS_FOLLOWER;
	case RAFT_CANDIDATE:
		return CONSENSUS_CANDIDATE;
	case RAFT_LEADER:
		return CONSENSUS_LEADER;
	default:
		return CONSENSUS_UNAVAILABLE;
	}
}

static void role_poll_cb(uv_timer_t *timer)
{
	struct consensus *c = timer->data;
	enum consensus_role role;
	uint64_t leader, term;

	if (c->phase != CONSENSUS__RUNNING)
		return;
	role = consensus_role(c);
	leader = consensus_leader(c);
	term = consensus_term(c);
	if (role == c->last_role && leader == c->last_leader &&
	    term == c->last_term)
		return;
	log_info("consensus: role=%d leader=%llu term=%llu", (int)role,
		 (unsigned long long)leader, (unsigned long long)term);
	c->last_role = role;
	c->last_leader = leader;
	c->last_term = term;
	if (c->role_cb != NULL)
		c->role_cb(c->role_arg, role, leader);
}

/* ---------------------------------------------------------------- close */

/* raft_uv_tcp_close or its TLS twin: both only free memory (the handles
 * were closed by raft_close, or never opened). */
static void transport_free(struct consensus *c)
{
	if (consensus_tls_transport_is(&c->transport))
		consensus_tls_transport_close(&c->transport);
	else
		raft_uv_tcp_close(&c->transport);
}

static void maybe_finish(struct consensus *c)
{
	void (*done)(void *arg);
	void *arg;

	if (c->phase != CONSENSUS__HANDLES_CLOSING || !c->raft_closed ||
	    c->handles_open > 0 || c->live_requests > 0)
		return;
	done = c->done;
	arg = c->done_arg;
	log_debug("consensus: closed");
	free(c);
	if (done != NULL)
		done(arg);
}

void consensus__request_freed(struct consensus *c)
{
	c->live_requests--;
	maybe_finish(c);
}

static void timer_close_cb(uv_handle_t *handle)
{
	struct consensus *c = handle->data;

	c->handles_open--;
	maybe_finish(c);
}

static void raft_closed_cb(struct raft *r)
{
	struct consensus *c =
		(struct consensus *)((char *)r - offsetof(struct consensus, raft));

	/* raft_close closed the io and transport handles; these two only free
	 * the memory raft_uv_init/raft_uv_tcp_init allocated. */
	raft_uv_close(&c->io);
	transport_free(c);
	c->raft_closed = 1;
	c->phase = CONSENSUS__HANDLES_CLOSING;
	uv_close((uv_handle_t *)&c->role_timer, timer_close_cb);
	uv_close((uv_handle_t *)&c->close_timer, timer_close_cb);
}

static void close_raft(struct consensus *c)
{
	uv_timer_stop(&c->close_timer);
	c->phase = CONSENSUS__RAFT_CLOSING;
	log_debug("consensus: raft_close inflight=%u", c->inflight);
	/* May call raft_closed_cb synchronously; that only starts uv_close, so
	 * c stays valid until a later loop iteration. */
	raft_close(&c->raft, raft_closed_cb);
}

static void transfer_cb(struct raft_transfer *req)
{
	struct consensus *c = req->data;
	raft_id id = 0;
	const char *address = NULL;

	if (c->phase != CONSENSUS__TRANSFERRING)
		return; /* the deadline closed raft already */
	uv_timer_stop(&c->close_timer);
	raft_leader(&c->raft, &id, &address);
	log_info("consensus: leadership transfer finished leader=%llu",
		 (unsigned long long)id);
	close_raft(c);
}

/* Disk work that 0.15 cannot be closed under safely: a leader's entries
 * still being written (§0.3), or a snapshot being stored (its callback
 * closes the snapshot's configuration; seen once as a SEGV in
 * raft_configuration_close when raft_close ran under load). last_stored and
 * snapshot.put are public fields of struct raft. */
static int leader_writing(struct consensus *c)
{
	if (c->raft.snapshot.put.data != NULL)
		return 1;
	return raft_state(&c->raft) == RAFT_LEADER &&
	       c->raft.last_stored < raft_last_index(&c->raft);
}

static void transfer_deadline_cb(uv_timer_t *timer)
{
	struct consensus *c = timer->data;

	if (c->phase != CONSENSUS__TRANSFERRING)
		return;
	log_warn("consensus: leadership transfer not done after %d ms; "
		 "closing anyway", CONSENSUS__TRANSFER_MAX_MS);
	close_raft(c);
}

static void drain_poll_cb(uv_timer_t *timer)
{
	struct consensus *c = timer->data;
	int rv;

	if (c->phase != CONSENSUS__DRAINING)
		return;
	if (c->inflight > 0 || leader_writing(c)) {
		if (uv_now(c->loop) - c->close_started < CONSENSUS__DRAIN_MAX_MS)
			return;
		log_error("consensus: close: %u requests still in flight after "
			  "%d ms, closing anyway (raft 0.15 may crash)",
			  c->inflight, CONSENSUS__DRAIN_MAX_MS);
	}
	if (raft_state(&c->raft) == RAFT_LEADER) {
		/* Phase first: should the callback ever run inside
		 * raft_transfer, it must find the phase it moves on from. */
		c->transfer.data = c;
		c->phase = CONSENSUS__TRANSFERRING;
		uv_timer_stop(&c->close_timer);
		rv = raft_transfer(&c->raft, &c->transfer, 0, transfer_cb);
		if (rv == 0) {
			log_info("consensus: transferring leadership before "
				 "close");
			uv_timer_start(&c->close_timer, transfer_deadline_cb,
				       CONSENSUS__TRANSFER_MAX_MS, 0);
			return;
		}
		c->phase = CONSENSUS__DRAINING;
		/* RAFT_NOTFOUND: no other voter to hand over to. */
		log_debug("consensus: no leadership transfer rv=%d (%s)", rv,
			  raft_strerror(rv));
	}
	close_raft(c);
}

/* Start closing; used by consensus_close and by a failed consensus_new. */
static void begin_close(struct consensus *c, void (*done)(void *arg),
			void *arg)
{
	c->done = done;
	c->done_arg = arg;
	c->phase = CONSENSUS__DRAINING;
	c->close_started = uv_now(c->loop);
	uv_timer_stop(&c->role_timer);
	uv_timer_start(&c->close_timer, drain_poll_cb, 0,
		       CONSENSUS__DRAIN_POLL_MS);
}

void consensus_close(struct consensus *c, void (*done)(void *arg), void *arg)
{
	if (c->phase != CONSENSUS__RUNNING) {
		log_error("consensus: close called twice");
		return;
	}
	log_info("consensus: closing inflight=%u", c->inflight);
	begin_close(c, done, arg);
}

/* ---------------------------------------------------------------- new */

struct consensus *consensus_new(uv_loop_t *loop,
				const struct consensus_config *cfg,
				const struct consensus_fsm *fsm,
				consensus_role_cb role_cb, void *role_arg,
				char *errmsg, size_t errlen)
{
	struct consensus *c;
	unsigned hb;
	int rv;

	if (check_config(cfg, fsm, errmsg, errlen) != 0)
		return NULL;
	c = calloc(1, sizeof *c);
	if (c == NULL) {
		set_err(errmsg, errlen, "consensus: out of memory");
		return NULL;
	}
	c->loop = loop;
	c->fsm = *fsm;
	c->role_cb = role_cb;
	c->role_arg = role_arg;
	hb = cfg->heartbeat_ms != 0 ? cfg->heartbeat_ms : 100;
	c->role_poll_ms = hb / 2 > 10 ? hb / 2 : 10;

	if (cfg->tls_cert_file != NULL) {
		char tlserr[256];

		rv = consensus_tls_transport_init(
			&c->transport, loop, cfg->tls_ca_file,
			cfg->tls_cert_file, cfg->tls_key_file, tlserr,
			sizeof tlserr);
		if (rv != 0) {
			set_err(errmsg, errlen, "consensus: transport: %s",
				tlserr);
			goto err_free;
		}
	} else {
		rv = raft_uv_tcp_init(&c->transport, loop);
		if (rv != 0) {
			set_err(errmsg, errlen, "consensus: transport: %s",
				raft_reason(c->transport.errmsg, rv));
			goto err_free;
		}
	}
	rv = raft_uv_init(&c->io, loop, cfg->data_dir, &c->transport);
	if (rv != 0) {
		set_err(errmsg, errlen, "consensus: io %s: %s", cfg->data_dir,
			raft_reason(c->io.errmsg, rv));
		goto err_transport;
	}
	consensus__fsm_init(c);
	if (c->raft_fsm.version == 3)
		c->io.version = 2; /* it has async_work: fsm.c, DESIGN */
	rv = raft_init(&c->raft, &c->io, &c->raft_fsm, cfg->id, cfg->address);
	if (rv != 0) {
		/* No raft_close here: see DESIGN above. */
		set_err(errmsg, errlen, "consensus: init %s: %s", cfg->data_dir,
			raft_reason(raft_errmsg(&c->raft), rv));
		goto err_io;
	}
	c->raft.data = c;

	/* From here on failures go through raft_close (asynchronous). Both
	 * timers are initialised first so that the close path can close
	 * them; uv_timer_init cannot fail on a valid loop. */
	uv_timer_init(loop, &c->role_timer);
	c->role_timer.data = c;
	uv_timer_init(loop, &c->close_timer);
	c->close_timer.data = c;
	c->handles_open = 2;

	rv = bootstrap(c, cfg);
	if (rv != 0) {
		set_err(errmsg, errlen, "consensus: %s", c->errmsg);
		goto err_raft;
	}
	apply_settings(c, cfg);
	rv = raft_start(&c->raft);
	if (rv != 0) {
		set_err(errmsg, errlen, "consensus: start %s: %s",
			cfg->address, raft_reason(raft_errmsg(&c->raft), rv));
		goto err_raft;
	}
	uv_timer_start(&c->role_timer, role_poll_cb, c->role_poll_ms,
		       c->role_poll_ms);
	log_info("consensus: started id=%llu address=%s dir=%s transport=%s",
		 (unsigned long long)cfg->id, cfg->address, cfg->data_dir,
		 cfg->tls_cert_file != NULL ? "tls" : "tcp");
	return c;

err_raft:
	/* Frees itself once the caller runs the loop. */
	log_error("%s", errmsg != NULL && errlen > 0 ? errmsg
						    : "consensus: start failed");
	begin_close(c, NULL, NULL);
	return NULL;
err_io:
	raft_uv_close(&c->io);
err_transport:
	transport_free(c);
err_free:
	free(c);
	return NULL;
}

/* ---------------------------------------------------------------- accessors */

enum consensus_role consensus_role(struct consensus *c)
{
	if (c->raft_closed)
		return CONSENSUS_UNAVAILABLE;
	return map_role(raft_state(&c->raft));
}

uint64_t consensus_leader(struct consensus *c)
{
	raft_id id = 0;
	const char *address = NULL;

	if (c->raft_closed)
		return 0;
	raft_leader(&c->raft, &id, &address);
	return id;
}

uint64_t consensus_term(struct consensus *c)
{
	return c->raft_closed ? 0 : c->raft.current_term;
}

uint64_t consensus_commit_index(struct consensus *c)
{
	return c->raft_closed ? 0 : c->raft.commit_index;
}

uint64_t consensus_applied_index(struct consensus *c)
{
	return c->raft_closed ? 0 : raft_last_applied(&c->raft);
}

uint64_t consensus_last_index(struct consensus *c)
{
	return c->raft_closed ? 0 : raft_last_index(&c->raft);
}

unsigned consensus_inflight(struct consensus *c)
{
	return c->inflight;
}

const char *consensus_errmsg(struct consensus *c)
{
	if (c->errmsg[0] != '\0')
		return c->errmsg;
	return c->raft_closed ? "" : raft_errmsg(&c->raft);
}

int consensus_tls_reload(struct consensus *c, char *errmsg, size_t errlen)
{
	if (c->raft_closed || !consensus_tls_transport_is(&c->transport)) {
		set_err(errmsg, errlen, "consensus: raft does not use tls");
		return CONSENSUS_ERROR;
	}
	return consensus_tls_transport_reload(&c->transport, errmsg, errlen);
}
