/* tz.c - TZif (RFC 8536) zones and their POSIX TZ footer rules. */
#include "tz.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "map.h"

/* One transition date of a footer rule (POSIX "Mm.w.d", "Jn" or "n"),
 * at `secs` local time (may be negative or past 24 h, TZif v3). */
struct rule_date {
	char kind; /* 'M', 'J' or 'N' */
	int m, w, d, n;
	int32_t secs;
};

struct tz {
	char *name;
	int64_t *at;     /* transition instants, ascending */
	uint8_t *type;   /* local time type after each transition */
	size_t n;
	int32_t *off;    /* UTC offset of each local time type */
	size_t n_types;
	bool rule;       /* a footer rule with DST exists */
	int32_t std, dst;
	struct rule_date start, end; /* std -> dst, dst -> std */
	int32_t fixed;   /* the footer's only offset when it has no DST */
	bool has_fixed;
};

#define YEARS_SEARCHED 100

/* ------------------------------------------------------------------------
 * Calendar (days since 1970-01-01, proleptic Gregorian)
 */

static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int64_t tz_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = floor_div(y, 400);
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

void tz_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = floor_div(z, 146097);
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
	*m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static bool leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

unsigned tz_days_in_month(int64_t y, unsigned m)
{
	static const unsigned dim[] = {31, 28, 31, 30, 31, 30,
				       31, 31, 30, 31, 30, 31};

	return m == 2 && leap(y) ? 29 : dim[m - 1];
}

/* 0 = Sunday */
static unsigned weekday(int64_t days)
{
	return (unsigned)(((days % 7) + 7 + 4) % 7);
}

/* ------------------------------------------------------------------------
 * Footer rules
 */

/* The instant (UTC) at which rule date `rd` falls in year y, when the
 * offset in effect just before it is `before`. */
static int64_t rule_when(const struct rule_date *rd, int64_t y, int32_t before)
{
	int64_t days;

	switch (rd->kind) {
	case 'J':
		days = tz_days_from_civil(y, 1, 1) + rd->n - 1 +
		       (leap(y) && rd->n >= 60);
		break;
	case 'N':
		days = tz_days_from_civil(y, 1, 1) + rd->n;
		break;
	default: {
		int64_t first = tz_days_from_civil(y, (unsigned)rd->m, 1);
		unsigned dim = tz_days_in_month(y, (unsigned)rd->m);
		unsigned day = ((unsigned)rd->d + 7 - weekday(first)) % 7 + 1;

		day += (unsigned)(rd->w - 1) * 7;
		while (day > dim)
			day -= 7;
		days = first + day - 1;
		break;
	}
	}
	return days * 86400 + rd->secs - before;
}

static int64_t year_of(int64_t t, int32_t off)
{
	int64_t y;
	unsigned m, d;

	tz_civil_from_days(floor_div(t + off, 86400), &y, &m, &d);
	return y;
}

static int32_t rule_offset(const struct tz *z, int64_t t)
{
	int64_t y = year_of(t, z->std);
	int64_t s = rule_when(&z->start, y, z->std);
	int64_t e = rule_when(&z->end, y, z->dst);

	if (s < e)
		return (t >= s && t < e) ? z->dst : z->std;
	return (t >= e && t < s) ? z->std : z->dst;
}

/* ------------------------------------------------------------------------
 * Offsets
 */

static int32_t type_before(const struct tz *z, size_t j)
{
	return j == 0 ? z->off[0] : z->off[z->type[j - 1]];
}

/* Index of the last transition <= t, or -1. */
static long last_at_or_before(const struct tz *z, int64_t t)
{
	size_t lo = 0, hi = z->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (z->at[mid] <= t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (long)lo - 1;
}

static bool footer_applies(const struct tz *z, int64_t t)
{
	return z->n == 0 || t >= z->at[z->n - 1];
}

int32_t tz_offset(const struct tz *z, int64_t t)
{
	long i;

	if (footer_applies(z, t) && (z->rule || z->has_fixed))
		return z->rule ? rule_offset(z, t) : z->fixed;
	if (z->n == 0)
		return z->off[0];
	i = last_at_or_before(z, t);
	return i < 0 ? z->off[0] : z->off[z->type[i]];
}

static bool changes_at(const struct tz *z, int64_t c)
{
	return tz_offset(z, c) != tz_offset(z, c - 1);
}

bool tz_next_change(const struct tz *z, int64_t t, int64_t *when)
{
	size_t j = (size_t)(last_at_or_before(z, t) + 1);
	int64_t y, from;

	for (; j < z->n; j++) {
		if (z->off[z->type[j]] != type_before(z, j) &&
		    changes_at(z, z->at[j])) {
			*when = z->at[j];
			return true;
		}
	}
	if (!z->rule)
		return false;
	from = z->n > 0 && z->at[z->n - 1] > t ? z->at[z->n - 1] : t;
	for (y = year_of(from, z->std) - 1;
	     y <= year_of(from, z->std) + YEARS_SEARCHED; y++) {
		int64_t s = rule_when(&z->start, y, z->std);
		int64_t e = rule_when(&z->end, y, z->dst);
		int64_t a = s < e ? s : e, b = s < e ? e : s;

		if (a > t && a > from - 1 && changes_at(z, a)) {
			*when = a;
			return true;
		}
		if (b > t && b > from - 1 && changes_at(z, b)) {
			*when = b;
			return true;
		}
	}
	return false;
}

bool tz_prev_change(const struct tz *z, int64_t t, int64_t *when)
{
	long j;
	int64_t y;

	if (z->rule && footer_applies(z, t)) {
		int64_t floor_at = z->n > 0 ? z->at[z->n - 1] : INT64_MIN;

		for (y = year_of(t, z->std) + 1;
		     y >= year_of(t, z->std) - YEARS_SEARCHED; y--) {
			int64_t s = rule_when(&z->start, y, z->std);
			int64_t e = rule_when(&z->end, y, z->dst);
			int64_t a = s < e ? s : e, b = s < e ? e : s;

			if (b <= t && b > floor_at && changes_at(z, b)) {
				*when = b;
				return true;
			}
			if (a <= t && a > floor_at && changes_at(z, a)) {
				*when = a;
				return true;
			}
			if (b <= floor_at)
				break;
		}
	}
	for (j = last_at_or_before(z, t); j >= 0; j--) {
		if (z->off[z->type[j]] != type_before(z, (size_t)j) &&
		    changes_at(z, z->at[j])) {
			*when = z->at[j];
			return true;
		}
	}
	return false;
}

const char *tz_name(const struct tz *z)
{
	return z->name;
}

/* ------------------------------------------------------------------------
 * POSIX TZ strings (the TZif footer)
 */

static bool parse_name(const char **p)
{
	const char *s = *p;
	size_t n = 0;

	if (*s == '<') {
		s++;
		while (*s != '\0' && *s != '>')
			s++, n++;
		if (*s != '>' || n < 3)
			return false;
		*p = s + 1;
		return true;
	}
	while ((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z'))
		s++, n++;
	if (n < 3)
		return false;
	*p = s;
	return true;
}

/* [+-]hh[:mm[:ss]], hh <= max_h. */
static bool parse_hms(const char **p, int max_h, int32_t *out)
{
	const char *s = *p;
	int sign = 1, part[3] = {0, 0, 0}, i;

	if (*s == '+' || *s == '-')
		sign = *s++ == '-' ? -1 : 1;
	for (i = 0; i < 3; i++) {
		int v = 0, digits = 0;

		while (*s >= '0' && *s <= '9' && digits < 3)
			v = v * 10 + (*s++ - '0'), digits++;
		if (digits == 0)
			return false;
		part[i] = v;
		if (*s != ':')
			break;
		s++;
	}
	if (part[0] > max_h || part[1] > 59 || part[2] > 59)
		return false;
	*out = sign * (part[0] * 3600 + part[1] * 60 + part[2]);
	*p = s;
	return true;
}

static bool parse_int(const char **p, int lo, int hi, int *out)
{
	const char *s = *p;
	int v = 0, digits = 0;

	while (*s >= '0' && *s <= '9' && digits < 4)
		v = v * 10 + (*s++ - '0'), digits++;
	if (digits == 0 || v < lo || v > hi)
		return false;
	*out = v;
	*p = s;
	return true;
}

static bool parse_rule_date(const char **p, struct rule_date *rd)
{
	const char *s = *p;

	memset(rd, 0, sizeof *rd);
	if (*s == 'M') {
		s++;
		rd->kind = 'M';
		if (!parse_int(&s, 1, 12, &rd->m) || *s++ != '.' ||
		    !parse_int(&s, 1, 5, &rd->w) || *s++ != '.' ||
		    !parse_int(&s, 0, 6, &rd->d))
			return false;
	} else if (*s == 'J') {
		s++;
		rd->kind = 'J';
		if (!parse_int(&s, 1, 365, &rd->n))
			return false;
	} else {
		rd->kind = 'N';
		if (!parse_int(&s, 0, 365, &rd->n))
			return false;
	}
	rd->secs = 7200;
	if (*s == '/') {
		s++;
		if (!parse_hms(&s, 167, &rd->secs))
			return false;
	}
	*p = s;
	return true;
}

static bool parse_footer(struct tz *z, const char *s)
{
	int32_t std_off, dst_off;

	if (*s == '\0')
		return true; /* no rule: the last transition's type holds */
	if (!parse_name(&s) || !parse_hms(&s, 24, &std_off))
		return false;
	z->std = -std_off;
	if (*s == '\0') {
		z->fixed = z->std;
		z->has_fixed = true;
		return true;
	}
	if (!parse_name(&s))
		return false;
	z->dst = z->std + 3600;
	if (*s != ',' && *s != '\0') {
		if (!parse_hms(&s, 24, &dst_off))
			return false;
		z->dst = -dst_off;
	}
	if (*s == '\0') {
		/* No rule given: POSIX leaves it to the implementation; use
		 * the US rule as glibc does. */
		z->start = (struct rule_date){'M', 3, 2, 0, 0, 7200};
		z->end = (struct rule_date){'M', 11, 1, 0, 0, 7200};
	} else if (*s++ != ',' || !parse_rule_date(&s, &z->start) ||
		   *s++ != ',' || !parse_rule_date(&s, &z->end) || *s != '\0') {
		return false;
	}
	z->rule = z->std != z->dst;
	if (!z->rule) {
		z->fixed = z->std;
		z->has_fixed = true;
	}
	return true;
}

/* ------------------------------------------------------------------------
 * TZif
 */

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

struct header {
	uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
};

static bool read_header(const unsigned char *p, size_t len,
			struct header *h, char *version)
{
	if (len < 44 || memcmp(p, "TZif", 4) != 0)
		return false;
	*version = (char)p[4];
	h->isutcnt = be32(p + 20);
	h->isstdcnt = be32(p + 24);
	h->leapcnt = be32(p + 28);
	h->timecnt = be32(p + 32);
	h->typecnt = be32(p + 36);
	h->charcnt = be32(p + 40);
	return h->typecnt >= 1 && h->typecnt <= 256 && h->timecnt <= 100000 &&
	       h->charcnt <= 65536 && h->leapcnt <= 100000 &&
	       h->isutcnt <= 256 && h->isstdcnt <= 256;
}

static size_t body_len(const struct header *h, size_t tsize)
{
	return h->timecnt * tsize + h->timecnt + h->typecnt * 6 + h->charcnt +
	       h->leapcnt * (tsize + 4) + h->isstdcnt + h->isutcnt;
}

struct tz *tz_parse(const char *name, const void *buf, size_t len)
{
	const unsigned char *p = buf, *body;
	struct header h;
	char version;
	size_t tsize = 4, i, avail = len;
	struct tz *z;

	if (!read_header(p, avail, &h, &version))
		return NULL;
	if (version >= '2') {
		size_t skip = 44 + body_len(&h, 4);

		if (skip > avail)
			return NULL;
		p += skip;
		avail -= skip;
		if (!read_header(p, avail, &h, &version))
			return NULL;
		tsize = 8;
	}
	if (44 + body_len(&h, tsize) > avail)
		return NULL;
	body = p + 44;
	z = calloc(1, sizeof *z);
	if (z == NULL)
		return NULL;
	z->name = strdup(name);
	z->n = h.timecnt;
	z->n_types = h.typecnt;
	z->at = calloc(h.timecnt + 1, sizeof *z->at);
	z->type = calloc(h.timecnt + 1, 1);
	z->off = calloc(h.typecnt, sizeof *z->off);
	if (z->name == NULL || z->at == NULL || z->type == NULL ||
	    z->off == NULL)
		goto fail;
	for (i = 0; i < h.timecnt; i++) {
		z->at[i] = tsize == 8 ? be64(body + i * 8)
				      : (int32_t)be32(body + i * 4);
		if (i > 0 && z->at[i] <= z->at[i - 1])
			goto fail;
	}
	body += h.timecnt * tsize;
	for (i = 0; i < h.timecnt; i++) {
		z->type[i] = body[i];
		if (z->type[i] >= h.typecnt)
			goto fail;
	}
	body += h.timecnt;
	for (i = 0; i < h.typecnt; i++) {
		int32_t off = (int32_t)be32(body + i * 6);

		if (off < -25 * 3600 || off > 26 * 3600)
			goto fail;
		z->off[i] = off;
	}
	body += body_len(&h, tsize) - h.timecnt * tsize - h.timecnt;
	if (tsize == 8) {
		const unsigned char *end = (const unsigned char *)buf + len;
		const unsigned char *nl;
		char footer[128];
		size_t n;

		if (body >= end || *body != '\n')
			goto fail;
		nl = memchr(body + 1, '\n', (size_t)(end - body - 1));
		if (nl == NULL)
			goto fail;
		n = (size_t)(nl - body - 1);
		if (n >= sizeof footer)
			goto fail;
		memcpy(footer, body + 1, n);
		footer[n] = '\0';
		if (!parse_footer(z, footer))
			goto fail;
	}
	return z;
fail:
	tz_free(z);
	return NULL;
}

void tz_free(struct tz *z)
{
	if (z == NULL)
		return;
	free(z->name);
	free(z->at);
	free(z->type);
	free(z->off);
	free(z);
}

/* ------------------------------------------------------------------------
 * The process-wide cache
 */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct map cache; /* name -> struct tz* */
static bool cache_ready;
static tz_loader loader;
static struct tz utc_zone = {
	.name = "UTC", .off = (int32_t[]){0}, .n_types = 1,
};

void tz_set_loader(tz_loader load)
{
	pthread_mutex_lock(&cache_lock);
	loader = load;
	pthread_mutex_unlock(&cache_lock);
}

bool tz_name_valid(const char *name)
{
	size_t n = 0;
	const char *s, *seg = name;

	if (name == NULL || *name == '\0' || *name == '/')
		return false;
	for (s = name; *s != '\0'; s++, n++) {
		char c = *s;

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      (c >= '0' && c <= '9') || c == '_' || c == '+' ||
		      c == '-' || c == '/' || c == '.'))
			return false;
		if (c == '/' || s[1] == '\0') {
			const char *e = c == '/' ? s : s + 1;

			if (e == seg || (e - seg <= 2 && seg[0] == '.'))
				return false; /* empty, "." or ".." */
			seg = s + 1;
		}
	}
	return n <= 64;
}

/* The cache holds zones that exist and parse, and nothing else. Callers
 * keep the pointers tz_get returns for as long as they like (a deployed
 * schedule holds its zone forever), so an entry is never evicted; what bounds
 * the cache is that a name is cached only if its file exists: about 1,300 on
 * Debian 12 (600 zones, their aliases, posix/ and right/), 1 to 3 KB each.
 * Names that are not zones are not cached, or every made-up name in a
 * request (GET /v1/cron/preview?tz=Zz/<unique>) would stay for good: such a
 * lookup costs a failed open() each time instead. TZ_CACHE_MAX stops a
 * zoneinfo tree with symlink loops from growing it further: past it, a zone
 * not yet cached is unknown. */
#define TZ_CACHE_MAX 4096

const struct tz *tz_get(const char *name)
{
	struct tz *z, *made = NULL;
	tz_loader load;
	void *buf = NULL;
	size_t len = 0;

	if (name != NULL && strcmp(name, "UTC") == 0)
		return &utc_zone;
	if (!tz_name_valid(name))
		return NULL;
	pthread_mutex_lock(&cache_lock);
	if (!cache_ready) {
		map_init(&cache);
		cache_ready = true;
	}
	z = map_get(&cache, name);
	load = loader;
	pthread_mutex_unlock(&cache_lock);
	if (z != NULL)
		return z;
	/* Read and parse outside the lock (other threads keep going). */
	if (load != NULL && load(name, &buf, &len) == 0) {
		made = tz_parse(name, buf, len);
		free(buf);
	}
	if (made == NULL)
		return NULL; /* not a zone: nothing is remembered */
	pthread_mutex_lock(&cache_lock);
	z = map_get(&cache, name); /* another thread may have been first */
	if (z == NULL && cache.size < TZ_CACHE_MAX &&
	    map_put(&cache, name, made) == 0) {
		z = made;
		made = NULL; /* the cache owns it */
	}
	pthread_mutex_unlock(&cache_lock);
	tz_free(made);
	return z;
}

size_t tz_cache_size(void)
{
	size_t n;

	pthread_mutex_lock(&cache_lock);
	n = cache_ready ? cache.size : 0;
	pthread_mutex_unlock(&cache_lock);
	return n;
}
