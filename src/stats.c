/*
 * Stats arithmetic. The pooler bumps PoolStats.total as traffic flows; once
 * per stats_period the period is rolled and the averages SHOW STATS prints are
 * computed here, with pgbouncer 1.18's definitions.
 */
#include "stats.h"

#include <string.h>

/* Every counter, so add/diff cannot forget a field added later. */
#define STATS_FOR_EACH_FIELD(X) \
	X(server_assignment_count) \
	X(xact_count) \
	X(query_count) \
	X(bytes_received) \
	X(bytes_sent) \
	X(xact_time) \
	X(query_time) \
	X(wait_time)

void stats_add(StatCounters *dst, const StatCounters *src)
{
#define ADD_FIELD(f) dst->f += src->f;
	STATS_FOR_EACH_FIELD(ADD_FIELD)
#undef ADD_FIELD
}

void stats_diff(StatCounters *dst, const StatCounters *a, const StatCounters *b)
{
#define DIFF_FIELD(f) dst->f = a->f >= b->f ? a->f - b->f : 0;
	STATS_FOR_EACH_FIELD(DIFF_FIELD)
#undef DIFF_FIELD
}

/* n per second over period_usec; multiply first to keep sub-second periods exact. */
static uint64_t stats_per_second(uint64_t n, uint64_t period_usec)
{
	const uint64_t usec_per_sec = 1000000;

	if (n > UINT64_MAX / usec_per_sec)
		return n / period_usec * usec_per_sec;
	return n * usec_per_sec / period_usec;
}

void stats_compute_avg(StatCounters *avg, const StatCounters *delta, uint64_t period_usec)
{
	memset(avg, 0, sizeof(*avg));
	if (period_usec == 0)
		return;
	avg->server_assignment_count = stats_per_second(delta->server_assignment_count, period_usec);
	avg->xact_count = stats_per_second(delta->xact_count, period_usec);
	avg->query_count = stats_per_second(delta->query_count, period_usec);
	avg->bytes_received = stats_per_second(delta->bytes_received, period_usec);
	avg->bytes_sent = stats_per_second(delta->bytes_sent, period_usec);
	/* pgbouncer 1.18: wait time is usec waited per second, not per client */
	avg->wait_time = stats_per_second(delta->wait_time, period_usec);
	if (delta->xact_count > 0)
		avg->xact_time = delta->xact_time / delta->xact_count;
	if (delta->query_count > 0)
		avg->query_time = delta->query_time / delta->query_count;
}

void stats_period_roll(PoolStats *ps, uint64_t period_usec)
{
	stats_diff(&ps->period_delta, &ps->total, &ps->last_period);
	ps->period_usec = period_usec;
	stats_compute_avg(&ps->avg, &ps->period_delta, period_usec);
	ps->last_period = ps->total;
}
