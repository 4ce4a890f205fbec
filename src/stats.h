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
	/*
	 * What the last period added, and how long it was: averages of several
	 * pools (SHOW STATS per database) are recomputed from these, because
	 * per-transaction times cannot be summed.
	 */
	StatCounters period_delta;
	uint64_t period_usec;
} PoolStats;

typedef struct GlobalStats {
	uint64_t clients_accepted;
	uint64_t clients_refused;
	uint64_t login_failures;
	uint64_t server_connect_failures;

	/* ops (issue 3.6): for /metrics */
	uint64_t policy_denials;	/* statements and connections a policy denied */
	uint64_t drain_closed_clients;	/* clients closed by the SIGTERM drain */
	/* transaction_session_state (sessionstate.c) */
	uint64_t session_state_warnings;	/* statements run with a warning */
	uint64_t session_state_refused;		/* statements refused (error) */
	uint64_t session_state_pins;		/* clients pinned to their server (pin) */
} GlobalStats;

/*
 * End a stats_period: avg = what happened since the previous roll, as
 * pgbouncer 1.18 reports it (counts, bytes and wait time per second;
 * xact_time per transaction; query_time per query), then snapshot.
 */
void stats_period_roll(PoolStats *ps, uint64_t period_usec);
void stats_add(StatCounters *dst, const StatCounters *src);
/* dst = a - b, field by field; a field that went backwards gives 0. */
void stats_diff(StatCounters *dst, const StatCounters *a, const StatCounters *b);
/* The averages of pgbouncer 1.18 for `delta` accumulated over period_usec (0: all zero). */
void stats_compute_avg(StatCounters *avg, const StatCounters *delta, uint64_t period_usec);

#endif
