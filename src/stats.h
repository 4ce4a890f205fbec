/* Traffic and timing counters kept per pool, reported by SHOW STATS and friends. */
#ifndef PGMOAT_STATS_H
#define PGMOAT_STATS_H

#include <stdint.h>

typedef struct StatCounters {
	uint64_t server_assignment_count;
	uint64_t xact_count;
	uint64_t query_count;
	uint64_t bytes_received;	/* from clients */
	uint64_t bytes_sent;		/* to clients */
	uint64_t xact_time;		/* usec */
	uint64_t query_time;		/* usec */
	uint64_t wait_time;		/* usec clients waited for a server */
} StatCounters;

typedef struct PoolStats {
	StatCounters total;
	StatCounters last_period;	/* snapshot at the previous stats_period */
	StatCounters avg;		/* per-second averages over the last period */
	uint64_t max_wait_us;		/* not a counter: recomputed on demand */
} PoolStats;

typedef struct GlobalStats {
	uint64_t clients_accepted;
	uint64_t clients_refused;
	uint64_t login_failures;
	uint64_t server_connect_failures;
} GlobalStats;

void stats_period_roll(PoolStats *ps, uint64_t period_usec);
void stats_add(StatCounters *dst, const StatCounters *src);

#endif
