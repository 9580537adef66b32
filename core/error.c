/* error.c - filling struct flowd_error, always with valid UTF-8. */
#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* Room to format a message before it is checked and cut to fit: a cut made
 * here may split a character, which the copy below then drops. */
#define FORMAT_ROOM 1024

/* The length of the well-formed UTF-8 sequence at s (RFC 3629, table 3-7
 * of Unicode: no overlong forms, no surrogates, nothing past U+10FFFF), or
 * 0 if the bytes there are not one. s is NUL-terminated, and NUL is never a
 * continuation byte, so no read goes past the end. */
static size_t seq_len(const unsigned char *s)
{
	unsigned char lo = 0x80, hi = 0xBF;
	size_t n, i;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		n = 2;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		n = 3;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		n = 4;
	else
		return 0; /* a continuation byte, C0, C1 or F5..FF */
	if (s[0] == 0xE0)
		lo = 0xA0;
	else if (s[0] == 0xED)
		hi = 0x9F;
	else if (s[0] == 0xF0)
		lo = 0x90;
	else if (s[0] == 0xF4)
		hi = 0x8F;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return n;
}

/* Copy src into dst[size] (size >= 1) as valid UTF-8: whole characters
 * only, each invalid byte replaced by U+FFFD; stops at the first character
 * that does not fit. */
static void copy_utf8(char *dst, size_t size, const char *src)
{
	static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */
	const unsigned char *s = (const unsigned char *)src;
	size_t out = 0;

	while (*s != '\0') {
		size_t n = seq_len(s);
		const char *from = n > 0 ? (const char *)s : replacement;
		size_t len = n > 0 ? n : sizeof replacement - 1;

		if (out + len >= size)
			break;
		memcpy(dst + out, from, len);
		out += len;
		s += n > 0 ? n : 1;
	}
	dst[out] = '\0';
}

int flowd_error_set(struct flowd_error *e, enum flowd_errc errc,
		    const char *code, const char *field, const char *fmt, ...)
{
	char msg[FORMAT_ROOM], cbuf[sizeof e->code], fbuf[sizeof e->field];
	va_list ap;

	if (e == NULL)
		return -1;
	/* Everything is read into locals first: the arguments may point into
	 * *e (a caller re-setting an error with its own message). */
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	copy_utf8(cbuf, sizeof cbuf, code ? code : "error");
	copy_utf8(fbuf, sizeof fbuf, field ? field : "");
	e->errc = errc;
	memcpy(e->code, cbuf, sizeof cbuf);
	memcpy(e->field, fbuf, sizeof fbuf);
	copy_utf8(e->message, sizeof e->message, msg);
	return -1;
}

void flowd_error_clear(struct flowd_error *e)
{
	if (e == NULL)
		return;
	memset(e, 0, sizeof *e);
}

int flowd_error_quote_len(const char *s, int max)
{
	int n = 0, back;

	if (s == NULL || max <= 0)
		return 0;
	while (n < max && s[n] != '\0')
		n++;
	/* s[n] is the first byte left out; a continuation byte there means
	 * the cut is inside a character: leave out its first bytes too (at
	 * most three: a longer run is invalid anyway, and replaced). */
	for (back = 0;
	     back < 3 && n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80; back++)
		n--;
	return n;
}
