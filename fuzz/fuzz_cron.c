/* fuzz_cron.c - the cron parser and the next-time search (core/cron.c) in
 * the zones (core/tz.c) with the DST policies, and RFC 3339 time text.
 *
 * Input: 12 bytes of settings, then text lines:
 *   [0]      the zone, an index into zones[] below
 *   [1]      bit 0: dst_missing skip (else shift); bit 1: dst_repeated
 *            twice (else once); bit 2: `after` near now (below)
 *   [2..9]   `after`, int64 little-endian, folded into +-2^53 s (what
 *            the state machine can hand cron_next: a command's ms / 1000),
 *            or with bit 2 into 1970..2242 (2^33 s), where the zones'
 *            transitions are
 *   [10..11] a span in minutes for cron_count
 *   line 1   the expression
 *   line 2   a time text for cron_time_parse
 *
 * Beyond "no crash, no undefined behaviour, bounded time":
 * - next > after, and each next after it is later again;
 * - the local wall-clock time of a next matches the expression (unless it
 *   is the end of a spring-forward gap under `shift`); in UTC, no second
 *   between `after` and next matches (checked up to 600 s);
 * - @every ticks are the multiples of the period, the first within one;
 * - cron_count agrees with counting cron_next;
 * - cron_time_utc and cron_time_local text parses back to the instant. */
#include <stdbool.h>

#include "core/cron.h"
#include "core/tz.h"
#include "fuzz/fuzz.h"

static const char *const zones[] = {
	"UTC",		   "Europe/Berlin",  "America/New_York",
	"Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Chatham",
	"America/Sao_Paulo",   "Europe/Dublin",  "Africa/Casablanca",
	"Antarctica/Troll",    "America/St_Johns", "Pacific/Apia",
	"Asia/Tehran",	   "Etc/GMT-14",     "Etc/GMT+12",
	"Nowhere/Unknown",
};
#define N_ZONES (sizeof zones / sizeof zones[0])
#define LIMIT ((int64_t)1 << 53)
#define YEAR_9999_END 253402300799LL

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_setup();
	return 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
	return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* Does the wall-clock time w (local seconds read as UTC) match c? */
static bool wall_matches(const struct cron *c, int64_t w)
{
	int64_t days = floor_div(w, 86400), sod = w - days * 86400, y;
	unsigned m, d, wd = (unsigned)(((days % 7) + 7 + 4) % 7);
	bool dom_ok, dow_ok;

	tz_civil_from_days(days, &y, &m, &d);
	dom_ok = (c->dom >> d) & 1;
	dow_ok = (c->dow >> wd) & 1;
	if (!((c->sec >> (sod % 60)) & 1) ||
	    !((c->min >> (sod / 60 % 60)) & 1) ||
	    !((c->hour >> (sod / 3600)) & 1) || !((c->mon >> m) & 1))
		return false;
	return c->dom_star || c->dow_star ? dom_ok && dow_ok : dom_ok || dow_ok;
}

static void check_next(const struct cron *c, const struct tz *z,
		       enum cron_dst_missing missing, int64_t after,
		       int64_t next)
{
	int32_t o;

	FUZZ_CHECK(next > after, "next %lld <= after %lld", (long long)next,
		   (long long)after);
	if (c->every > 0) {
		FUZZ_CHECK(next % c->every == 0 && next - after <= c->every,
			   "@every %lld: %lld after %lld", (long long)c->every,
			   (long long)next, (long long)after);
		return;
	}
	/* No bound on next - after: each interval of constant offset is
	 * searched 30 years on, so a match can lie further. 00:44 on April
	 * 2 when a Sunday, in St. John's under `skip`: from 1978 to 2017,
	 * each such day fell in a 00:01 spring-forward gap. */
	o = z ? tz_offset(z, next) : 0;
	if (!wall_matches(c, next + o)) {
		/* the end of a gap, where a missing time is shifted to */
		FUZZ_CHECK(missing == CRON_DST_SHIFT && z != NULL &&
				   tz_offset(z, next - 1) < o,
			   "next %lld (offset %d) does not match",
			   (long long)next, (int)o);
	}
	if (z == NULL || strcmp(tz_name(z), "UTC") == 0)
		for (int64_t t = after + 1; t < next && t <= after + 600; t++)
			FUZZ_CHECK(!wall_matches(c, t),
				   "%lld matches before next %lld after %lld",
				   (long long)t, (long long)next,
				   (long long)after);
}

static void check_time_text(int64_t t, const struct tz *z)
{
	char buf[40];
	int64_t back;

	if (t < 0 || t > YEAR_9999_END - 2 * 86400)
		return; /* cron_time_parse reads years 1970-9999 */
	cron_time_utc(t, buf);
	FUZZ_CHECK(cron_time_parse(buf, &back) == 0 && back == t,
		   "utc text %s of %lld", buf, (long long)t);
	if (t < 2 * 86400)
		return;
	cron_time_local(t, z, buf);
	FUZZ_CHECK(cron_time_parse(buf, &back) == 0 && back == t,
		   "local text %s of %lld", buf, (long long)t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *line;
	size_t at = 12, len;
	const struct tz *z;
	enum cron_dst_missing missing;
	enum cron_dst_repeated repeated;
	uint64_t raw = 0;
	int64_t after, span, t, next, parsed;
	struct cron c;
	char why[200], *expr, *text;
	uint64_t n, counted;

	if (size < 12)
		return 0;
	z = tz_get(zones[data[0] % N_ZONES]); /* NULL: unknown, UTC */
	missing = data[1] & 1 ? CRON_DST_SKIP : CRON_DST_SHIFT;
	repeated = data[1] & 2 ? CRON_DST_TWICE : CRON_DST_ONCE;
	for (int i = 0; i < 8; i++)
		raw |= (uint64_t)data[2 + i] << (8 * i);
	if (data[1] & 4)
		after = (int64_t)(raw % ((uint64_t)1 << 33));
	else
		after = (int64_t)(raw % (2 * (uint64_t)LIMIT + 1)) - LIMIT;
	span = (int64_t)(data[10] | data[11] << 8) * 60;

	if (!fuzz_line(data, size, &at, &line, &len))
		return 0;
	expr = fuzz_strndup(line, len);
	if (fuzz_line(data, size, &at, &line, &len)) {
		text = fuzz_strndup(line, len);
		if (cron_time_parse(text, &parsed) == 0)
			check_time_text(parsed, z);
		free(text);
	}
	why[0] = '\0';
	if (cron_parse(expr, &c, why, sizeof why) != 0) {
		FUZZ_CHECK(why[0] != '\0', "a refusal without a reason");
		free(expr);
		return 0;
	}
	free(expr);

	t = after;
	counted = 0;
	for (int i = 0; i < 4; i++) {
		if (!cron_next(&c, z, missing, repeated, t, &next))
			break;
		check_next(&c, z, missing, t, next);
		check_time_text(next, z);
		if (next <= after + span)
			counted++;
		t = next;
	}
	n = cron_count(&c, z, missing, repeated, after, after + span, 4);
	FUZZ_CHECK(n == (counted < 4 ? counted : 4),
		   "cron_count %llu, cron_next %llu in (%lld, +%lld]",
		   (unsigned long long)n, (unsigned long long)counted,
		   (long long)after, (long long)span);
	return 0;
}
