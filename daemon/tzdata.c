/* tzdata.c - the zone file loader (core/tz.h's tz_loader). */
#include "daemon/tzdata.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define TZDATA_MAX (1u << 20)

int tzdata_load(const char *name, void **buf, size_t *len)
{
	const char *dir = getenv("TZDIR");
	char path[512];
	struct stat st;
	char *data;
	ssize_t got = 0, n;
	int fd;

	if (dir == NULL || *dir == '\0')
		dir = "/usr/share/zoneinfo";
	if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
		return -1;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    st.st_size > TZDATA_MAX || (data = malloc((size_t)st.st_size)) == NULL) {
		close(fd);
		return -1;
	}
	while (got < st.st_size &&
	       (n = read(fd, data + got, (size_t)(st.st_size - got))) > 0)
		got += n;
	close(fd);
	if (got != st.st_size) {
		free(data);
		return -1;
	}
	*buf = data;
	*len = (size_t)got;
	return 0;
}
