/* addr.h - the one address form flowd accepts: an IPv4 literal with a port,
 * "a.b.c.d:port" (raft 0.15's transport takes nothing else), spelled one way
 * so that addresses compare as strings. Pure parsing, no I/O. */
#ifndef FLOWD_CORE_ADDR_H
#define FLOWD_CORE_ADDR_H

#include <netinet/in.h>

/* Returns 0 and fills *out (may be NULL) for "a.b.c.d:port" with a port of
 * 1..65535 written without sign or leading zero; -1 for anything else. */
int flowd_ipv4_address_parse(const char *s, struct sockaddr_in *out);

#endif
