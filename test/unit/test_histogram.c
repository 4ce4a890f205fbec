/* The latency histogram behind SHOW POLICY_STATS: bucket layout, percentiles, merging. */
#include <criterion/criterion.h>
#include <stdint.h>

#include "../../src/histogram.h"

Test(histogram, small_values_have_exact_buckets)
{
	for (uint64_t v = 0; v < HIST_SUB; v++) {
		unsigned b = histogram_bucket_of(v);
		cr_assert_eq(histogram_bucket_low(b), v);
		cr_assert_eq(histogram_bucket_high(b), v);
	}
}

Test(histogram, every_value_lies_in_its_bucket_within_one_sixteenth)
{
	/* Powers of two, their neighbours, and a spread in between, up to UINT64_MAX. */
	uint64_t vals[400];
	int n = 0;
	for (unsigned e = 1; e < 64; e++) {
		uint64_t p = (uint64_t)1 << e;
		vals[n++] = p - 1;
		vals[n++] = p;
		vals[n++] = p + 1;
		vals[n++] = p + p / 3;
	}
	vals[n++] = UINT64_MAX;
	for (int i = 0; i < n; i++) {
		unsigned b = histogram_bucket_of(vals[i]);
		cr_assert_lt(b, HIST_BUCKETS, "value %llu", (unsigned long long)vals[i]);
		uint64_t lo = histogram_bucket_low(b), hi = histogram_bucket_high(b);
		cr_assert(lo <= vals[i] && vals[i] <= hi, "value %llu in [%llu, %llu]",
			  (unsigned long long)vals[i], (unsigned long long)lo, (unsigned long long)hi);
		cr_assert_leq(hi - lo, lo / HIST_SUB, "bucket %u too wide", b);
	}
	cr_assert_eq(histogram_bucket_of(UINT64_MAX), HIST_BUCKETS - 1);
	cr_assert_eq(histogram_bucket_high(HIST_BUCKETS - 1), UINT64_MAX);
}

Test(histogram, buckets_are_contiguous_and_increasing)
{
	for (unsigned b = 1; b < HIST_BUCKETS; b++)
		cr_assert_eq(histogram_bucket_low(b), histogram_bucket_high(b - 1) + 1, "bucket %u", b);
}

Test(histogram, empty_histogram_reports_zero)
{
	Histogram h;
	histogram_init(&h);
	cr_assert_eq(h.count, 0);
	cr_assert_eq(histogram_percentile(&h, 50), 0);
	cr_assert_eq(histogram_percentile(&h, 99), 0);
	cr_assert_eq(histogram_mean(&h), 0);
}

Test(histogram, percentiles_of_one_to_a_hundred_are_exact_for_small_values)
{
	Histogram h;
	histogram_init(&h);
	for (uint64_t v = 1; v <= 15; v++)
		histogram_record(&h, v);
	cr_assert_eq(histogram_percentile(&h, 100), 15);
	cr_assert_eq(histogram_percentile(&h, 20), 3);	/* ceil(0.2 * 15) = 3rd value */
	cr_assert_eq(histogram_percentile(&h, 0.001), 1);
	cr_assert_eq(histogram_mean(&h), 8);
}

Test(histogram, p99_finds_the_slow_tail_within_bucket_precision)
{
	Histogram h;
	histogram_init(&h);
	/* 990 fast calls of 5 us, 10 slow ones of 800 us (in ns). */
	for (int i = 0; i < 990; i++)
		histogram_record(&h, 5000);
	for (int i = 0; i < 10; i++)
		histogram_record(&h, 800000);
	uint64_t p50 = histogram_percentile(&h, 50);
	uint64_t p99 = histogram_percentile(&h, 99);
	uint64_t p991 = histogram_percentile(&h, 99.1);
	cr_assert(p50 >= 5000 && p50 <= 5000 + 5000 / HIST_SUB, "p50 %llu", (unsigned long long)p50);
	/* the 990th value is still fast; the 991st is slow */
	cr_assert(p99 >= 5000 && p99 <= 5000 + 5000 / HIST_SUB, "p99 %llu", (unsigned long long)p99);
	cr_assert_eq(p991, 800000, "p99.1 is clamped to the max: %llu", (unsigned long long)p991);
	cr_assert_eq(h.max, 800000);
	cr_assert_eq(h.min, 5000);
	cr_assert_eq(histogram_mean(&h), (990ull * 5000 + 10ull * 800000) / 1000);
}

Test(histogram, percentile_never_understates_nor_passes_the_extremes)
{
	Histogram h;
	histogram_init(&h);
	histogram_record(&h, 1000003);
	cr_assert_eq(histogram_percentile(&h, 1), 1000003);
	cr_assert_eq(histogram_percentile(&h, 100), 1000003);
	histogram_record(&h, 1000100);
	uint64_t p50 = histogram_percentile(&h, 50);
	cr_assert(p50 >= 1000003 && p50 <= 1000100, "p50 %llu", (unsigned long long)p50);
}

Test(histogram, merge_equals_recording_everything_in_one)
{
	Histogram a, b, all;
	histogram_init(&a);
	histogram_init(&b);
	histogram_init(&all);
	for (uint64_t v = 1; v < 100000; v += 37) {
		histogram_record(v % 2 ? &a : &b, v * 3);
		histogram_record(&all, v * 3);
	}
	Histogram m;
	histogram_init(&m);
	histogram_merge(&m, &a);
	histogram_merge(&m, &b);
	cr_assert_eq(m.count, all.count);
	cr_assert_eq(m.sum, all.sum);
	cr_assert_eq(m.min, all.min);
	cr_assert_eq(m.max, all.max);
	for (double p = 1; p <= 100; p += 7)
		cr_assert_eq(histogram_percentile(&m, p), histogram_percentile(&all, p), "p%.0f", p);
}

Test(histogram, merging_an_empty_histogram_changes_nothing)
{
	Histogram a, empty;
	histogram_init(&a);
	histogram_init(&empty);
	histogram_record(&a, 42);
	histogram_merge(&a, &empty);
	cr_assert_eq(a.count, 1);
	cr_assert_eq(a.min, 42);
	cr_assert_eq(a.max, 42);
}

Test(histogram, clock_is_monotonic_nanoseconds)
{
	uint64_t t0 = histogram_now_ns();
	uint64_t t1 = histogram_now_ns();
	cr_assert_geq(t1, t0);
	cr_assert_gt(t0, 0);
}

Test(histogram, zeroed_memory_is_an_empty_histogram)
{
	static Histogram h;	/* zeroed, like a calloc'd Worker */
	histogram_record(&h, 700);
	histogram_record(&h, 300);
	cr_assert_eq(h.min, 300);
	cr_assert_eq(h.max, 700);
	cr_assert_eq(h.count, 2);
}
