/* Stats arithmetic: the averages SHOW STATS prints, with pgbouncer 1.18's definitions. */
#include <criterion/criterion.h>
#include <string.h>

#include "../../src/stats.h"

#define SEC 1000000ull

Test(stats, roll_gives_per_second_counts_over_the_period)
{
	PoolStats ps;
	memset(&ps, 0, sizeof(ps));
	ps.total.xact_count = 120;
	ps.total.query_count = 240;
	ps.total.bytes_received = 6000;
	ps.total.bytes_sent = 60000;
	stats_period_roll(&ps, 60 * SEC);
	cr_assert_eq(ps.avg.xact_count, 2);
	cr_assert_eq(ps.avg.query_count, 4);
	cr_assert_eq(ps.avg.bytes_received, 100);
	cr_assert_eq(ps.avg.bytes_sent, 1000);
}

Test(stats, roll_gives_times_per_transaction_and_per_query)
{
	PoolStats ps;
	memset(&ps, 0, sizeof(ps));
	ps.total.xact_count = 10;
	ps.total.xact_time = 5000;
	ps.total.query_count = 20;
	ps.total.query_time = 3000;
	ps.total.wait_time = 2 * SEC;
	stats_period_roll(&ps, 4 * SEC);
	cr_assert_eq(ps.avg.xact_time, 500);
	cr_assert_eq(ps.avg.query_time, 150);
	/* 1.18: wait time is microseconds waited per second of the period */
	cr_assert_eq(ps.avg.wait_time, SEC / 2);
}

Test(stats, second_roll_counts_only_the_new_period)
{
	PoolStats ps;
	memset(&ps, 0, sizeof(ps));
	ps.total.query_count = 100;
	ps.total.query_time = 100000;
	stats_period_roll(&ps, 10 * SEC);
	ps.total.query_count += 10;
	ps.total.query_time += 50;
	stats_period_roll(&ps, 10 * SEC);
	cr_assert_eq(ps.avg.query_count, 1);
	cr_assert_eq(ps.avg.query_time, 5);
	cr_assert_eq(ps.period_delta.query_count, 10);
	cr_assert_eq(ps.last_period.query_count, 110);
}

Test(stats, roll_with_no_traffic_or_zero_period_gives_zero)
{
	PoolStats ps;
	memset(&ps, 0, sizeof(ps));
	ps.total.xact_count = 5;
	stats_period_roll(&ps, 0);
	cr_assert_eq(ps.avg.xact_count, 0);
	stats_period_roll(&ps, SEC);
	cr_assert_eq(ps.avg.xact_count, 0);
	cr_assert_eq(ps.avg.xact_time, 0);
}

Test(stats, counter_going_backwards_gives_zero_not_a_huge_number)
{
	StatCounters a, b, d;
	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	a.bytes_sent = 5;
	b.bytes_sent = 9;
	stats_diff(&d, &a, &b);
	cr_assert_eq(d.bytes_sent, 0);
}

Test(stats, add_sums_every_field)
{
	StatCounters a, b;
	memset(&a, 0, sizeof(a));
	memset(&b, 1, sizeof(b));	/* every byte set: every field nonzero */
	stats_add(&a, &b);
	cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0);
}

Test(stats, averages_of_merged_pools_weight_by_transactions)
{
	StatCounters delta, avg;
	memset(&delta, 0, sizeof(delta));
	/* pool A: 1 xact of 1000us; pool B: 3 xacts of 200us each */
	delta.xact_count = 4;
	delta.xact_time = 1000 + 600;
	stats_compute_avg(&avg, &delta, SEC);
	cr_assert_eq(avg.xact_time, 400);
	cr_assert_eq(avg.xact_count, 4);
}
