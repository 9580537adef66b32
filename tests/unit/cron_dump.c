/* cron_dump.c - prints fire times for the differential test against
 * croniter (tests/differential). Reads lines "EXPR<TAB>ZONE<TAB>FROM<TAB>N"
 * (FROM in seconds since the epoch) and prints, per line, the next N fire
 * times separated by spaces, or "ERROR <reason>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cron.h"
#include "core/tz.h"
#include "daemon/tzdata.h"

int main(void)
{
	char line[1024];

	tz_set_loader(tzdata_load);
	while (fgets(line, sizeof line, stdin) != NULL) {
		char *expr = strtok(line, "\t\n"), *zone = strtok(NULL, "\t\n");
		char *from = strtok(NULL, "\t\n"), *count = strtok(NULL, "\t\n");
		struct cron c;
		char why[200];
		const struct tz *z;
		long long t;
		int n, i;

		if (expr == NULL || zone == NULL || from == NULL || count == NULL) {
			printf("ERROR bad input line\n");
			continue;
		}
		z = tz_get(zone);
		if (z == NULL) {
			printf("ERROR unknown zone %s\n", zone);
			continue;
		}
		if (cron_parse(expr, &c, why, sizeof why) != 0) {
			printf("ERROR %s\n", why);
			continue;
		}
		t = atoll(from);
		n = atoi(count);
		for (i = 0; i < n; i++) {
			int64_t next;

			if (!cron_next(&c, z, CRON_DST_SHIFT, CRON_DST_ONCE, t, &next))
				break;
			printf("%s%lld", i ? " " : "", (long long)next);
			t = next;
		}
		printf("\n");
		fflush(stdout);
	}
	return 0;
}
