/* fuzz_tz.c - TZif data (core/tz.c, RFC 8536 v1-v3 with the POSIX footer
 * rule) and the cron search (core/cron.c) in the zone it makes.
 *
 * Input: 8 bytes of an instant t (int64 little-endian, folded into
 * +-2^35 s, 1970 +-1,000 years), then the TZif bytes. The seeds are zone
 * files of the system tzdata.
 *
 * Beyond "no crash, no undefined behaviour, bounded time", for a zone that
 * parses: offsets within -25 h..+26 h; tz_next_change(t) is later than t
 * and the offset changes there; tz_prev_change(t) is at or before t and
 * the offset changes there; the next fire of a daily and an hourly
 * expression is later than t, under both DST policies. */
#include "core/cron.h"
#include "core/tz.h"
#include "fuzz/fuzz.h"

#define SPAN ((int64_t)1 << 35)

static struct cron daily, hourly;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char why[200];

	fuzz_setup();
	FUZZ_CHECK(cron_parse("30 2 * * *", &daily, why, sizeof why) == 0,
		   "%s", why);
	FUZZ_CHECK(cron_parse("0 * * * *", &hourly, why, sizeof why) == 0,
		   "%s", why);
	return 0;
}

static void check_offset(const struct tz *z, int64_t t)
{
	int32_t o = tz_offset(z, t);

	FUZZ_CHECK(o >= -25 * 3600 && o <= 26 * 3600, "offset %d at %lld",
		   (int)o, (long long)t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t raw = 0;
	int64_t t, when, next;
	struct tz *z;

	if (size < 8)
		return 0;
	for (int i = 0; i < 8; i++)
		raw |= (uint64_t)data[i] << (8 * i);
	t = (int64_t)(raw % (2 * (uint64_t)SPAN + 1)) - SPAN;
	z = tz_parse("Fuzz/Zone", data + 8, size - 8);
	if (z == NULL)
		return 0;
	FUZZ_CHECK(strcmp(tz_name(z), "Fuzz/Zone") == 0, "name");
	check_offset(z, t);
	if (tz_next_change(z, t, &when)) {
		FUZZ_CHECK(when > t, "next change %lld <= %lld",
			   (long long)when, (long long)t);
		FUZZ_CHECK(tz_offset(z, when) != tz_offset(z, when - 1),
			   "no change at the next change %lld",
			   (long long)when);
		check_offset(z, when);
	}
	if (tz_prev_change(z, t, &when)) {
		FUZZ_CHECK(when <= t, "previous change %lld > %lld",
			   (long long)when, (long long)t);
		FUZZ_CHECK(tz_offset(z, when) != tz_offset(z, when - 1),
			   "no change at the previous change %lld",
			   (long long)when);
	}
	for (int m = 0; m < 2; m++)
		for (int r = 0; r < 2; r++) {
			if (cron_next(&daily, z, (enum cron_dst_missing)m,
				      (enum cron_dst_repeated)r, t, &next))
				FUZZ_CHECK(next > t, "daily next %lld <= %lld",
					   (long long)next, (long long)t);
			if (cron_next(&hourly, z, (enum cron_dst_missing)m,
				      (enum cron_dst_repeated)r, t, &next))
				FUZZ_CHECK(next > t && next - t <= 3 * 3600,
					   "hourly next %lld after %lld",
					   (long long)next, (long long)t);
		}
	tz_free(z);
	return 0;
}
