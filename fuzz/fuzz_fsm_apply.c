/* fuzz_fsm_apply.c - the state machine: command decoding and apply
 * (core/fsm*.c, core/trigger_*.c), then snapshot -> restore -> snapshot.
 *
 * Input: one command per line, each applied as a committed entry
 * (fsm_apply: the JSON text of fsm.h's commands, batches too), and checked
 * as a command node 1 proposes through another (fsm_cmd_check_node, POST
 * /internal/v1/commands): what that strict check takes, apply's check
 * takes too. A line
 * starting with '#' asks for what the daemon does between entries:
 *   #restore  snapshot, and restore it over the live state (a follower
 *             installing a snapshot): it must restore, to the same bytes
 *   #release  fsm_release_specs up to the applied index (PostgreSQL has
 *             every row)
 *   #view     publish the read view and read every answer it gives
 *
 * At the end: the rows are taken, the state is snapshotted and restored
 * into a fresh state machine, which snapshots to the same bytes; both then
 * apply the same `wake` and must still snapshot alike (a restored node
 * continues as the others do); and the restored one's read view is read.
 *
 * With FLOWD_FUZZ_SNAPSHOT_DIR set, the final snapshot of each input is
 * written there (fuzz/README.md: how fuzz_fsm_restore's seeds are made). */
#include "fuzz/fuzz_fsm.h"

#define MAX_LINES 256

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_setup();
	return 0;
}

static void same_bytes(struct fsm *a, struct fsm *b, const char *what)
{
	char *s1, *s2;
	size_t l1, l2;

	FUZZ_CHECK(fsm_snapshot(a, &s1, &l1) == 0, "fsm_snapshot");
	FUZZ_CHECK(fsm_snapshot(b, &s2, &l2) == 0, "fsm_snapshot");
	FUZZ_CHECK(l1 == l2 && memcmp(s1, s2, l1) == 0, "%s:\n%.*s\n%.*s",
		   what, (int)l1, s1, (int)l2, s2);
	free(s1);
	free(s2);
}

/* #restore: the live state replaced by its own snapshot. */
static void restore_in_place(struct fsm *f)
{
	char *snap, *again;
	size_t len, again_len;

	fz_take_records(f);
	FUZZ_CHECK(fsm_snapshot(f, &snap, &len) == 0, "fsm_snapshot");
	FUZZ_CHECK(fsm_restore(f, snap, len) == 0,
		   "a snapshot does not restore: %.*s", (int)len, snap);
	FUZZ_CHECK(fsm_snapshot(f, &again, &again_len) == 0, "fsm_snapshot");
	FUZZ_CHECK(again_len == len && memcmp(again, snap, len) == 0,
		   "restore changed the snapshot:\n%.*s\n%.*s", (int)len, snap,
		   (int)again_len, again);
	fsm_mark_all_dirty(f);
	fz_take_records(f);
	free(snap);
	free(again);
}

/* The strict check of a node's command implies apply's. */
static void check_node_command(const char *line, size_t len)
{
	struct fsm_check why;
	json_t *cmd;

	if (fsm_cmd_check_node(line, len, 1, &why) != 0)
		return;
	cmd = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
	FUZZ_CHECK(cmd != NULL, "a node's command is not JSON");
	FUZZ_CHECK(fsm_cmd_check(cmd, &why) == 0,
		   "apply refuses a node's command: %s %s: %.*s", why.field,
		   why.why, (int)len, line);
	json_decref(cmd);
}

static void save_snapshot(const char *snap, size_t len)
{
	const char *dir = getenv("FLOWD_FUZZ_SNAPSHOT_DIR");
	char path[512];
	uint64_t h = 1469598103934665603ULL;
	FILE *fp;

	if (dir == NULL)
		return;
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)snap[i]) * 1099511628211ULL;
	snprintf(path, sizeof path, "%s/snap-%016" PRIx64, dir, h);
	fp = fopen(path, "w");
	if (fp != NULL) {
		fwrite(snap, 1, len, fp);
		fclose(fp);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fsm f, *g;
	const char *line;
	size_t at = 0, len, n = 0;
	uint64_t index = 0;
	char *snap, *wake;
	size_t snap_len, wake_len;

	fsm_init(&f, &fz_hooks);
	while (n++ < MAX_LINES && fuzz_line(data, size, &at, &line, &len)) {
		if (len >= 8 && memcmp(line, "#restore", 8) == 0) {
			restore_in_place(&f);
		} else if (len >= 8 && memcmp(line, "#release", 8) == 0) {
			fz_take_records(&f);
			fsm_release_specs(&f, index);
		} else if (len >= 5 && memcmp(line, "#view", 5) == 0) {
			fz_read_everything(&f, 1800000000);
		} else {
			check_node_command(line, len);
			fsm_apply(&f, ++index, line, len);
			fz_take_records(&f);
		}
	}
	fz_take_records(&f);
	g = fz_round_trip(&f, &snap, &snap_len);
	save_snapshot(snap, snap_len);
	free(snap);

	/* both go on alike */
	FUZZ_CHECK(fsm_cmd_wake(4102444800000, &wake, &wake_len) == 0, "wake");
	fsm_apply(&f, index + 1, wake, wake_len);
	fsm_apply(g, index + 1, wake, wake_len);
	free(wake);
	same_bytes(&f, g, "a restored state went on differently");
	fz_take_records(&f);
	fsm_mark_all_dirty(g);
	fz_take_records(g);
	fz_read_everything(g, 1800000000);

	fsm_close(g);
	free(g);
	fsm_close(&f);
	return 0;
}
