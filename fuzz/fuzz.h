/* fuzz.h - what the libFuzzer targets (fuzz/fuzz_*.c) share: the process
 * set-up, splitting an input into lines, and the check that stops a run.
 *
 * A target is one file with LLVMFuzzerTestOneInput (and optionally
 * LLVMFuzzerInitialize); fuzz/fuzz.mk links it against the library built
 * with clang. A property a target checks beyond "no crash" (a snapshot
 * restores to the same bytes, a normalized spec parses again) fails with
 * FUZZ_CHECK, which aborts with the reason, so libFuzzer records the input
 * as a crash like any other. */
#ifndef FLOWD_FUZZ_FUZZ_H
#define FLOWD_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/tz.h"
#include "daemon/tzdata.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond, ...)                                            \
	do {                                                             \
		if (!(cond)) {                                           \
			fprintf(stderr, "fuzz check failed: %s: ", #cond); \
			fprintf(stderr, __VA_ARGS__);                    \
			fputc('\n', stderr);                             \
			abort();                                         \
		}                                                        \
	} while (0)

/* Once per process: zones from the system tzdata (as the daemon reads
 * them), and the log quiet unless FLOWD_FUZZ_LOG=debug|info|... asks (a
 * log line per input costs more than most inputs). */
static inline void fuzz_setup(void)
{
	const char *lv = getenv("FLOWD_FUZZ_LOG");

	tz_set_loader(tzdata_load);
	flowd_log_level = lv != NULL && flowd_log_level_parse(lv) >= 0
				  ? flowd_log_level_parse(lv)
				  : FLOWD_LOG_ERROR + 1;
}

/* The next line of data[*at..size) (without its '\n'): a pointer into the
 * input and its length. Returns 0 at the end of the input. */
static inline int fuzz_line(const uint8_t *data, size_t size, size_t *at,
			    const char **line, size_t *len)
{
	const uint8_t *nl;

	if (*at >= size)
		return 0;
	*line = (const char *)data + *at;
	nl = memchr(data + *at, '\n', size - *at);
	*len = nl ? (size_t)(nl - (data + *at)) : size - *at;
	*at += *len + 1;
	return 1;
}

/* A NUL-terminated copy of data[0..len) (caller frees). */
static inline char *fuzz_strndup(const char *data, size_t len)
{
	char *s = malloc(len + 1);

	if (s == NULL)
		abort();
	memcpy(s, data, len);
	s[len] = '\0';
	return s;
}

#endif
