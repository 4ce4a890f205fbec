/*
 * /metrics: the pools, traffic and error counters in the Prometheus text
 * exposition format (version 0.0.4). Names and labels are listed in
 * doc/operations.md.
 */
#ifndef PGMOAT_METRICS_H
#define PGMOAT_METRICS_H

#include <event2/buffer.h>

/* Append the whole exposition to out. */
void metrics_render(struct evbuffer *out);

/* Register GET/HEAD /metrics with the HTTP listener. */
void metrics_register_routes(void);

#endif
