/* routes.h - flowd's REST API as one table: every endpoint is a row
 * (method, path, role, body schema, handler) of routes_table, handed to
 * api_server_start() by main.c. api/README.md, "How to add an endpoint". */
#ifndef FLOWD_DAEMON_ROUTES_H
#define FLOWD_DAEMON_ROUTES_H

#include "api/api.h"

/* Ended by a row whose method is NULL. Static: borrowed by anyone. */
extern const struct api_route routes_table[];
/* The table of node.metrics_address: GET /metrics alone, public. */
extern const struct api_route routes_metrics_table[];

#endif
