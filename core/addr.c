/* addr.c - parsing "a.b.c.d:port". */
#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int flowd_ipv4_address_parse(const char *s, struct sockaddr_in *out)
{
	char host[INET_ADDRSTRLEN];
	struct in_addr in;
	const char *colon, *p;
	unsigned long port;
	size_t hl;
	char *end;

	colon = s != NULL ? strrchr(s, ':') : NULL;
	if (colon == NULL)
		return -1;
	hl = (size_t)(colon - s);
	if (hl == 0 || hl >= sizeof host)
		return -1;
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (inet_pton(AF_INET, host, &in) != 1)
		return -1;
	/* One spelling per port: no sign, no leading zero, digits only. */
	if (colon[1] < '1' || colon[1] > '9')
		return -1;
	for (p = colon + 1; *p != '\0'; p++)
		if (*p < '0' || *p > '9')
			return -1;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || port < 1 || port > 65535)
		return -1;
	if (out != NULL) {
		memset(out, 0, sizeof *out);
		out->sin_family = AF_INET;
		out->sin_addr = in;
		out->sin_port = htons((uint16_t)port);
	}
	return 0;
}
