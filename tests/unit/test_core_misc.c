/* test_core_misc.c - the small core modules: flowd_error_set always leaves
 * valid UTF-8 (error.c), and log lines carry an RFC 3339 time outside
 * journald (log.c). The log tests fork a child that writes to a pipe in
 * place of stderr, because the journald decision is made once a process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <regex.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"

/* What the API does with an error: jansson refuses invalid UTF-8, and a
 * NULL here is the 500 "no response" a client used to get. */
static bool json_ok(const char *s)
{
	json_t *j = json_string(s);

	json_decref(j);
	return j != NULL;
}

static void assert_error_encodes(const struct flowd_error *e)
{
	assert_true(json_ok(e->code));
	assert_true(json_ok(e->message));
	assert_true(json_ok(e->field));
}

/* ----------------------------------------------------------------- error */

static void error_set_replaces_invalid_bytes(void **state)
{
	struct flowd_error e;

	/* GET /v1/cron/preview?expr=%FF%FE+*+*+*+*: cron quotes the field */
	flowd_error_set(&e, FLOWD_E_INVALID, "invalid_query", "expr",
			"field 1 (minute): \"%s\" is not a number", "\xFF\xFE");
	assert_int_equal(e.errc, FLOWD_E_INVALID);
	assert_string_equal(e.code, "invalid_query");
	assert_string_equal(e.field, "expr");
	assert_string_equal(e.message,
			    "field 1 (minute): \"\xEF\xBF\xBD\xEF\xBF\xBD\""
			    " is not a number");
	assert_error_encodes(&e);

	/* overlong NUL, a surrogate, past U+10FFFF, a lone continuation byte,
	 * a sequence cut by the end of the string: each byte is one U+FFFD */
	flowd_error_set(&e, FLOWD_E_INVALID, "c", "f\xC0\x80", "%s|%s|%s|%s|%s",
			"\xC0\x80", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\x80",
			"a\xE2\x82");
	assert_error_encodes(&e);
	assert_string_equal(e.field, "f\xEF\xBF\xBD\xEF\xBF\xBD");
	assert_non_null(strstr(e.message, "|a\xEF\xBF\xBD\xEF\xBF\xBD"));

	/* well-formed text of every length is kept as it is */
	flowd_error_set(
	    &e, FLOWD_E_INVALID, "c", "k\xC3\xA9", "%s",
	    "\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF");
	assert_string_equal(e.field, "k\xC3\xA9");
	assert_string_equal(
	    e.message,
	    "\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF");

	/* code too, and NULL e is allowed */
	flowd_error_set(&e, FLOWD_E_INVALID, "bad\xFF", NULL, "x");
	assert_string_equal(e.code, "bad\xEF\xBF\xBD");
	assert_string_equal(e.field, "");
	assert_int_equal(flowd_error_set(NULL, FLOWD_E_INVALID, "c", "f", "x"),
			 -1);
}

static void error_set_cuts_between_characters(void **state)
{
	struct flowd_error e;
	char text[600];

	/* message: 254 bytes, then a 2-byte character at 254..255; the buffer
	 * holds 255 bytes, so the character does not fit, not even half */
	memset(text, 'a', 254);
	strcpy(text + 254, "\xC3\xA9tail");
	flowd_error_set(&e, FLOWD_E_INVALID, "c", "", "%s", text);
	assert_error_encodes(&e);
	assert_int_equal(strlen(e.message), 254);

	/* one byte less in front: the character fits, what follows does not */
	flowd_error_set(&e, FLOWD_E_INVALID, "c", "", "%s", text + 1);
	assert_error_encodes(&e);
	assert_int_equal(strlen(e.message), 255);
	assert_memory_equal(e.message + 253, "\xC3\xA9", 2);

	/* a 4-byte character across the end of the field buffer (191 bytes) */
	memset(text, 'f', 189);
	strcpy(text + 189, "\xF0\x9F\x98\x80");
	flowd_error_set(&e, FLOWD_E_INVALID, "c", text, "x");
	assert_error_encodes(&e);
	assert_int_equal(strlen(e.field), 189);

	/* the same in code (47 bytes) */
	memset(text, 'c', 46);
	strcpy(text + 46, "\xE2\x82\xAC");
	flowd_error_set(&e, FLOWD_E_INVALID, text, "", "x");
	assert_error_encodes(&e);
	assert_int_equal(strlen(e.code), 46);

	/* a message far over the buffer is cut, still valid */
	for (size_t i = 0; i + 2 < sizeof text; i += 2)
		memcpy(text + i, "\xC3\xA9", 2);
	text[sizeof text - 2] = '\0';
	flowd_error_set(&e, FLOWD_E_INVALID, "c", "", "%s", text);
	assert_error_encodes(&e);
	assert_int_equal(strlen(e.message), 254);
}

static void error_set_may_reuse_its_own_fields(void **state)
{
	struct flowd_error e;
	char outer[sizeof e.field + 32];

	flowd_error_set(&e, FLOWD_E_INVALID, "unknown_field", "parameters.x",
			"the flow has no parameter \"x\"");
	snprintf(outer, sizeof outer, "triggers.schedules[0].%s", e.field);
	flowd_error_set(&e, e.errc, e.code, outer, "%s", e.message);
	assert_int_equal(e.errc, FLOWD_E_INVALID);
	assert_string_equal(e.code, "unknown_field");
	assert_string_equal(e.field, "triggers.schedules[0].parameters.x");
	assert_string_equal(e.message, "the flow has no parameter \"x\"");
}

static void quote_len_never_splits_a_character(void **state)
{
	char key[80];

	/* the unknown key of 63 'k' and an e-acute: "%.64s" cut the e-acute */
	memset(key, 'k', 63);
	strcpy(key + 63, "\xC3\xA9");
	assert_int_equal(flowd_error_quote_len(key, 64), 63);
	assert_int_equal(flowd_error_quote_len(key, 65), 65);
	assert_int_equal(flowd_error_quote_len(key, 200), 65);
	assert_int_equal(flowd_error_quote_len(key, 63), 63);
	/* a 4-byte character cut after 1, 2 or 3 of its bytes */
	strcpy(key, "ab\xF0\x9F\x98\x80z");
	for (int max = 3; max <= 5; max++)
		assert_int_equal(flowd_error_quote_len(key, max), 2);
	assert_int_equal(flowd_error_quote_len(key, 6), 6);
	assert_int_equal(flowd_error_quote_len("", 64), 0);
	assert_int_equal(flowd_error_quote_len(NULL, 64), 0);
	assert_int_equal(flowd_error_quote_len("abc", 0), 0);
}

/* ------------------------------------------------------------------- log */

static void log_time_is_rfc3339_utc_with_milliseconds(void **state)
{
	char buf[FLOWD_LOG_TIME_LEN + 1];

	flowd_log_time_format(buf, 1796474096789);
	assert_string_equal(buf, "2026-12-05T12:34:56.789Z");
	flowd_log_time_format(buf, 0);
	assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
	flowd_log_time_format(buf, 1796474096005);
	assert_string_equal(buf, "2026-12-05T12:34:56.005Z");
	flowd_log_time_format(buf, -1);
	assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
	flowd_log_time_format(buf, 951782400000); /* a leap day */
	assert_string_equal(buf, "2000-02-29T00:00:00.000Z");
}

static void journal_stream_must_name_stderr_itself(void **state)
{
	char value[64];
	struct stat st;
	int fds[2], other;

	assert_int_equal(pipe(fds), 0);
	other = open("/dev/null", O_WRONLY | O_CLOEXEC);
	assert_true(other >= 0);
	assert_int_equal(fstat(fds[1], &st), 0);
	snprintf(value, sizeof value, "%ju:%ju", (uintmax_t)st.st_dev,
		 (uintmax_t)st.st_ino);
	assert_true(flowd_log_is_journal(value, fds[1]));
	assert_false(flowd_log_is_journal(value, other));
	assert_false(flowd_log_is_journal(NULL, fds[1]));
	assert_false(flowd_log_is_journal("", fds[1]));
	assert_false(flowd_log_is_journal("journal", fds[1]));
	strcat(value, "x");
	assert_false(flowd_log_is_journal(value, fds[1]));
	close(fds[0]);
	close(fds[1]);
	close(other);
}

/* Run flowd_log_write in a child whose stderr is a pipe, with
 * JOURNAL_STREAM unset (journal false) or naming that pipe (true); returns
 * what it wrote (malloc'd). */
static char *log_line_of_child(bool journal)
{
	char value[64], *out = malloc(4096);
	size_t got = 0;
	struct stat st;
	int fds[2], status;
	ssize_t n;
	pid_t pid;

	assert_non_null(out);
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (dup2(fds[1], STDERR_FILENO) < 0)
			_exit(2);
		close(fds[0]);
		close(fds[1]);
		unsetenv("JOURNAL_STREAM");
		if (journal) {
			if (fstat(STDERR_FILENO, &st) != 0)
				_exit(3);
			snprintf(value, sizeof value, "%ju:%ju",
				 (uintmax_t)st.st_dev, (uintmax_t)st.st_ino);
			setenv("JOURNAL_STREAM", value, 1);
		}
		flowd_log_level = FLOWD_LOG_INFO;
		log_debug("not written");
		log_info("probe k=%d", 1);
		log_warn("probe k=%d", 2);
		_exit(0);
	}
	close(fds[1]);
	while (got < 4095 && (n = read(fds[0], out + got, 4095 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	return out;
}

static void log_lines_start_with_the_time_outside_journald(void **state)
{
	char *text = log_line_of_child(false), stamp[FLOWD_LOG_TIME_LEN + 1];
	regex_t re;
	struct timespec now;
	int64_t ms;

	assert_int_equal(
	    regcomp(&re,
		    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
		    "\\.[0-9]{3}Z flowd info: probe k=1\n"
		    "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
		    "\\.[0-9]{3}Z flowd warn: probe k=2\n$",
		    REG_EXTENDED | REG_NOSUB),
	    0);
	if (regexec(&re, text, 0, NULL, 0) != 0)
		fail_msg("log lines without a time: \"%s\"", text);
	regfree(&re);
	/* and it is now, not some fixed time: same date and hour, give or
	 * take a second around a boundary */
	clock_gettime(CLOCK_REALTIME, &now);
	ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	flowd_log_time_format(stamp, ms);
	if (memcmp(text, stamp, 13) != 0) {
		flowd_log_time_format(stamp, ms - 5000);
		assert_memory_equal(text, stamp, 13);
	}
	free(text);
}

static void log_lines_have_no_time_under_journald(void **state)
{
	char *text = log_line_of_child(true);

	assert_string_equal(text,
			    "flowd info: probe k=1\nflowd warn: probe k=2\n");
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(error_set_replaces_invalid_bytes),
	    cmocka_unit_test(error_set_cuts_between_characters),
	    cmocka_unit_test(error_set_may_reuse_its_own_fields),
	    cmocka_unit_test(quote_len_never_splits_a_character),
	    cmocka_unit_test(log_time_is_rfc3339_utc_with_milliseconds),
	    cmocka_unit_test(journal_stream_must_name_stderr_itself),
	    cmocka_unit_test(log_lines_start_with_the_time_outside_journald),
	    cmocka_unit_test(log_lines_have_no_time_under_journald),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
