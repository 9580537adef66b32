/* cron.c - cron expressions: parsing, and the next fire time in a zone.
 *
 * The next fire time is found one interval of constant UTC offset at a
 * time: inside [t, b) (b the zone's next change) the fire instants are the
 * matching wall-clock times W minus the offset o. A match beyond b that
 * falls in a spring-forward gap is shifted to b or skipped; a match in the
 * second pass of a fall-back hour is skipped under `once` by jumping past
 * that pass. Every loop is bounded. */
#include "cron.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEARCH_YEARS 30
#define INTERVALS_MAX 512

struct field_def {
	const char *what;
	int lo, hi;
	const char *const *names; /* names[i] is value lo+i; NULL if none */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr",
					  "may", "jun", "jul", "aug",
					  "sep", "oct", "nov", "dec"};
static const char *const day_names[] = {"sun", "mon", "tue", "wed",
					"thu", "fri", "sat"};

static const struct field_def fields[6] = {
	{"second", 0, 59, NULL},      {"minute", 0, 59, NULL},
	{"hour", 0, 23, NULL},        {"day of month", 1, 31, NULL},
	{"month", 1, 12, month_names}, {"day of week", 0, 7, day_names},
};

/* ------------------------------------------------------------------------
 * Parsing
 */

static int fail(char *why, size_t len, int index, const struct field_def *f,
		const char *fmt, const char *item)
{
	char msg[160];

	snprintf(msg, sizeof msg, fmt, item);
	snprintf(why, len, "field %d (%s): %s", index, f->what, msg);
	return -1;
}

/* A number or (where the field has them) a three-letter name. */
static int parse_value(const char **p, const struct field_def *f, int *out)
{
	const char *s = *p;

	if (isdigit((unsigned char)*s)) {
		long v = 0;
		int digits = 0;

		while (isdigit((unsigned char)*s) && digits < 4)
			v = v * 10 + (*s++ - '0'), digits++;
		if (isdigit((unsigned char)*s))
			return -1;
		*out = (int)v;
		*p = s;
		return 0;
	}
	if (f->names != NULL && isalpha((unsigned char)s[0]) &&
	    isalpha((unsigned char)s[1]) && isalpha((unsigned char)s[2]) &&
	    !isalpha((unsigned char)s[3])) {
		int i, n = f == &fields[4] ? 12 : 7;

		for (i = 0; i < n; i++) {
			if (strncasecmp(s, f->names[i], 3) == 0) {
				*out = f->lo + i;
				*p = s + 3;
				return 0;
			}
		}
	}
	return -1;
}

/* One field (its text is NUL-terminated) into a bit set. */
static int parse_field(const char *text, int index, const struct field_def *f,
		       uint64_t *bits, char *why, size_t why_len)
{
	char item[64];
	const char *s = text;

	*bits = 0;
	while (1) {
		const char *start = s, *comma = strchr(s, ',');
		size_t n = comma != NULL ? (size_t)(comma - s) : strlen(s);
		int a, b, step = 1, v;
		bool star = false;

		if (n == 0)
			return fail(why, why_len, index, f, "empty list item%s", "");
		if (n >= sizeof item)
			n = sizeof item - 1;
		memcpy(item, start, n);
		item[n] = '\0';
		s = item;
		if (*s == '*') {
			star = true;
			a = f->lo;
			b = f->hi == 7 ? 6 : f->hi;
			s++;
		} else {
			if (parse_value(&s, f, &a) != 0)
				return fail(why, why_len, index, f,
					    "\"%s\" is not a value", item);
			b = a;
			if (*s == '-') {
				s++;
				if (parse_value(&s, f, &b) != 0)
					return fail(why, why_len, index, f,
						    "\"%s\" is not a range", item);
			}
		}
		if (*s == '/') {
			s++;
			if (!isdigit((unsigned char)*s) ||
			    parse_value(&s, &fields[0], &step) != 0 || step < 1)
				return fail(why, why_len, index, f,
					    "\"%s\" has a bad step", item);
			if (!star && b == a && strchr(item, '-') == NULL)
				b = f->hi == 7 ? 6 : f->hi; /* "N/S" = N-max/S */
			if (step > f->hi - f->lo + 1)
				return fail(why, why_len, index, f,
					    "\"%s\" has a step larger than the field", item);
		}
		if (*s != '\0')
			return fail(why, why_len, index, f,
				    "\"%s\" is not understood", item);
		if (a < f->lo || a > f->hi || b < f->lo || b > f->hi) {
			char msg[96];

			snprintf(msg, sizeof msg, "\"%%s\" is outside %d-%d",
				 f->lo, f->hi);
			return fail(why, why_len, index, f, msg, item);
		}
		if (a > b)
			return fail(why, why_len, index, f,
				    "\"%s\": a range must not run backwards", item);
		for (v = a; v <= b; v += step)
			*bits |= (uint64_t)1 << (f->hi == 7 && v == 7 ? 0 : v);
		if (comma == NULL)
			break;
		s = comma + 1;
	}
	return 0;
}

static int parse_duration(const char *s, int64_t *out)
{
	int64_t total = 0;

	if (*s == '\0')
		return -1;
	while (*s != '\0') {
		int64_t v = 0, unit;
		int digits = 0;

		while (isdigit((unsigned char)*s) && digits < 9)
			v = v * 10 + (*s++ - '0'), digits++;
		if (digits == 0)
			return -1;
		switch (*s++) {
		case 's': unit = 1; break;
		case 'm': unit = 60; break;
		case 'h': unit = 3600; break;
		case 'd': unit = 86400; break;
		default: return -1;
		}
		total += v * unit;
		if (total > CRON_EVERY_MAX)
			return -1;
	}
	*out = total;
	return total >= 1 ? 0 : -1;
}

static bool can_match(const struct cron *c)
{
	unsigned m, d;

	if (!c->dow_star && !c->dom_star)
		return true; /* either matches: some weekday always comes */
	if (c->dow == 0)
		return false;
	for (m = 1; m <= 12; m++) {
		unsigned dim = m == 2 ? 29 : tz_days_in_month(2001, m);

		if (!(c->mon & (1u << m)))
			continue;
		for (d = 1; d <= dim; d++)
			if (c->dom & (1u << d))
				return true;
	}
	return false;
}

int cron_parse(const char *expr, struct cron *c, char *why, size_t why_len)
{
	static const struct {
		const char *name, *expr;
	} macros[] = {
		{"@yearly", "0 0 1 1 *"},  {"@annually", "0 0 1 1 *"},
		{"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
		{"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
		{"@hourly", "0 * * * *"},
	};
	char buf[256], *tok[7], *save = NULL, *t;
	int n = 0, i, first;
	uint64_t bits[6];
	size_t k;

	memset(c, 0, sizeof *c);
	if (expr == NULL || strlen(expr) >= sizeof buf) {
		snprintf(why, why_len, "an expression is at most %zu bytes",
			 sizeof buf - 1);
		return -1;
	}
	while (isspace((unsigned char)*expr))
		expr++;
	if (expr[0] == '@') {
		if (strncmp(expr, "@every", 6) == 0 &&
		    isspace((unsigned char)expr[6])) {
			const char *d = expr + 7;

			while (isspace((unsigned char)*d))
				d++;
			snprintf(buf, sizeof buf, "%s", d);
			for (k = strlen(buf); k > 0 && isspace((unsigned char)buf[k - 1]); k--)
				buf[k - 1] = '\0';
			if (parse_duration(buf, &c->every) != 0) {
				snprintf(why, why_len,
					 "@every takes a duration like 30s, 5m, "
					 "1h30m or 1d, from 1s to 366d");
				return -1;
			}
			return 0;
		}
		for (k = 0; k < sizeof macros / sizeof macros[0]; k++) {
			size_t len = strlen(macros[k].name);

			if (strncmp(expr, macros[k].name, len) == 0 &&
			    expr[len + strspn(expr + len, " \t")] == '\0')
				return cron_parse(macros[k].expr, c, why, why_len);
		}
		snprintf(why, why_len,
			 "unknown macro (use @yearly, @annually, @monthly, "
			 "@weekly, @daily, @midnight, @hourly or @every)");
		return -1;
	}
	snprintf(buf, sizeof buf, "%s", expr);
	for (t = strtok_r(buf, " \t", &save); t != NULL && n < 7;
	     t = strtok_r(NULL, " \t", &save))
		tok[n++] = t;
	if (n != 5 && n != 6) {
		snprintf(why, why_len,
			 "an expression has 5 fields (minute hour day-of-month "
			 "month day-of-week) or 6 (seconds first), not %d", n);
		return -1;
	}
	first = n == 5 ? 1 : 0;
	bits[0] = 1; /* 5 fields: second 0 */
	for (i = 0; i < n; i++) {
		int f = first + i;

		if (parse_field(tok[i], i + 1, &fields[f], &bits[f], why,
				why_len) != 0)
			return -1;
	}
	c->sec = bits[0];
	c->min = bits[1];
	c->hour = (uint32_t)bits[2];
	c->dom = (uint32_t)bits[3];
	c->mon = (uint16_t)bits[4];
	c->dow = (uint8_t)bits[5];
	c->dom_star = tok[2 + (n == 6)][0] == '*';
	c->dow_star = tok[4 + (n == 6)][0] == '*';
	c->hour_star = strcmp(tok[1 + (n == 6)], "*") == 0;
	if (!can_match(c)) {
		snprintf(why, why_len,
			 "the expression never matches (no such day in the "
			 "months it names)");
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------------
 * Wall-clock search
 */

static int next_bit(uint64_t bits, int from, int max)
{
	int i;

	for (i = from; i <= max; i++)
		if (bits & ((uint64_t)1 << i))
			return i;
	return -1;
}

static bool day_matches(const struct cron *c, int64_t days, unsigned d)
{
	unsigned wd = (unsigned)(((days % 7) + 7 + 4) % 7);
	bool dom_ok = (c->dom >> d) & 1, dow_ok = (c->dow >> wd) & 1;

	if (c->dom_star || c->dow_star)
		return dom_ok && dow_ok;
	return dom_ok || dow_ok;
}

/* The first matching wall-clock time >= wall (local seconds since the
 * epoch, read as if UTC). */
static bool naive_ge(const struct cron *c, int64_t wall, int64_t *out)
{
	int64_t days = wall >= 0 ? wall / 86400 : -((-wall + 86399) / 86400);
	int64_t sod = wall - days * 86400, y, limit;
	unsigned m, d;
	int h = (int)(sod / 3600), mi = (int)(sod / 60 % 60), s = (int)(sod % 60);

	tz_civil_from_days(days, &y, &m, &d);
	limit = y + SEARCH_YEARS;
	while (y <= limit) {
		int v;

		if (!(c->mon & (1u << m))) {
			days += tz_days_in_month(y, m) - d + 1;
			goto new_day;
		}
		if (!day_matches(c, days, d)) {
			days++;
			goto new_day;
		}
		if ((v = next_bit(c->hour, h, 23)) < 0) {
			days++;
			goto new_day;
		}
		if (v != h) {
			h = v;
			mi = s = 0;
		}
		if ((v = next_bit(c->min, mi, 59)) < 0) {
			h++;
			mi = s = 0;
			if (h > 23) {
				days++;
				goto new_day;
			}
			continue;
		}
		if (v != mi) {
			mi = v;
			s = 0;
		}
		if ((v = next_bit(c->sec, s, 59)) < 0) {
			mi++;
			s = 0;
			if (mi > 59) {
				mi = 0;
				h++;
				if (h > 23) {
					days++;
					goto new_day;
				}
			}
			continue;
		}
		*out = days * 86400 + h * 3600 + mi * 60 + v;
		return true;
new_day:
		h = mi = s = 0;
		tz_civil_from_days(days, &y, &m, &d);
	}
	return false;
}

/* ------------------------------------------------------------------------
 * Zones
 */

static int64_t every_next(int64_t period, int64_t after)
{
	int64_t q = after / period;

	if (after < 0 && after % period != 0)
		q--;
	return (q + 1) * period;
}

bool cron_next(const struct cron *c, const struct tz *z,
	       enum cron_dst_missing missing, enum cron_dst_repeated repeated,
	       int64_t after, int64_t *next)
{
	int64_t t = after + 1;
	int i;

	if (c->every > 0) {
		*next = every_next(c->every, after);
		return true;
	}
	if (z == NULL)
		z = tz_get("UTC");
	for (i = 0; i < INTERVALS_MAX; i++) {
		int32_t o = tz_offset(z, t), o2, prev;
		int64_t b, a, w, u;
		bool bounded = tz_next_change(z, t, &b);

		if (!naive_ge(c, t + o, &w))
			return false;
		u = w - o;
		if (!bounded || u < b) {
			/* The second pass of a repeated wall-clock time? */
			if (repeated == CRON_DST_ONCE && !c->hour_star &&
			    tz_prev_change(z, u, &a) &&
			    (prev = tz_offset(z, a - 1)) > o && w < a + prev) {
				t = a + (prev - o);
				continue;
			}
			*next = u;
			return true;
		}
		o2 = tz_offset(z, b);
		if (o2 > o && w < b + o2 && missing == CRON_DST_SHIFT) {
			*next = b; /* w does not exist: the gap ends at b */
			return true;
		}
		t = b;
	}
	return false;
}

uint64_t cron_count(const struct cron *c, const struct tz *z,
		    enum cron_dst_missing missing,
		    enum cron_dst_repeated repeated, int64_t from, int64_t to,
		    uint64_t cap)
{
	uint64_t n = 0;
	int64_t t = from, next;

	if (to <= from)
		return 0;
	if (c->every > 0) {
		int64_t first = every_next(c->every, from);

		n = first > to ? 0 : (uint64_t)((to - first) / c->every) + 1;
		return n > cap ? cap : n;
	}
	while (n < cap && cron_next(c, z, missing, repeated, t, &next) &&
	       next <= to) {
		n++;
		t = next;
	}
	return n;
}

/* ------------------------------------------------------------------------
 * Time text
 */

static bool digits(const char *s, int n, int *out)
{
	int v = 0, i;

	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

int cron_time_parse(const char *s, int64_t *out)
{
	int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
	const char *p;

	if (s == NULL || strlen(s) < 20 || !digits(s, 4, &y) || s[4] != '-' ||
	    !digits(s + 5, 2, &mo) || s[7] != '-' || !digits(s + 8, 2, &d) ||
	    (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
	    !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) ||
	    s[16] != ':' || !digits(s + 17, 2, &sec))
		return -1;
	p = s + 19;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p == '-' ? -1 : 1;
		if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om))
			return -1;
		p += 6;
	} else {
		return -1;
	}
	if (*p != '\0' || y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 ||
	    (unsigned)d > tz_days_in_month(y, (unsigned)mo) || h > 23 ||
	    mi > 59 || sec > 60 || oh > 23 || om > 59)
		return -1;
	*out = tz_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 +
	       h * 3600 + mi * 60 + (sec == 60 ? 59 : sec) -
	       sign * (oh * 3600 + om * 60);
	return 0;
}

void cron_time_utc(int64_t t, char buf[40])
{
	int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400), y;
	int64_t sod = t - days * 86400;
	unsigned m, d;

	tz_civil_from_days(days, &y, &m, &d);
	snprintf(buf, 40, "%04lld-%02u-%02uT%02d:%02d:%02dZ", (long long)y, m,
		 d, (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60));
}

void cron_time_local(int64_t t, const struct tz *z, char buf[40])
{
	int32_t off = z ? tz_offset(z, t) : 0;
	int64_t w = t + off, days, y;
	unsigned m, d;
	int64_t sod;
	int32_t a = off < 0 ? -off : off;

	days = w >= 0 ? w / 86400 : -((-w + 86399) / 86400);
	sod = w - days * 86400;
	tz_civil_from_days(days, &y, &m, &d);
	snprintf(buf, 40, "%04lld-%02u-%02uT%02d:%02d:%02d%c%02d:%02d",
		 (long long)y, m, d, (int)(sod / 3600), (int)(sod / 60 % 60),
		 (int)(sod % 60), off < 0 ? '-' : '+', (int)(a / 3600),
		 (int)(a / 60 % 60));
}
