/*
 * A fixed-size log-linear latency histogram (HdrHistogram's layout, in
 * miniature): values below HIST_SUB are counted exactly; above, each power of
 * two is split into HIST_SUB equal buckets, so any value is known to within
 * 1/HIST_SUB (6.25%) of itself, over the whole uint64_t range, with no
 * allocation and O(1) recording. Used for the time policies take per
 * statement (SHOW POLICY_STATS).
 *
 * A zeroed Histogram is a valid empty one (it may live in a calloc'd struct).
 * Not thread-safe: one histogram per thread, merged by the reader.
 */
#ifndef PGMOAT_HISTOGRAM_H
#define PGMOAT_HISTOGRAM_H

#include <stdint.h>

#define HIST_SUB_BITS 4
#define HIST_SUB (1u << HIST_SUB_BITS)
/* Exact buckets 0..HIST_SUB-1, then HIST_SUB per power of two up to 2^63. */
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

typedef struct Histogram {
	uint64_t count;		/* values recorded */
	uint64_t sum;		/* their sum (wraps only after ~584 years of nanoseconds) */
	uint64_t min;		/* meaningful once count > 0 */
	uint64_t max;
	uint64_t buckets[HIST_BUCKETS];
} Histogram;

void histogram_init(Histogram *h);	/* empty it (same as zeroing) */
void histogram_record(Histogram *h, uint64_t value);
/* dst += src (several threads' histograms into one report). */
void histogram_merge(Histogram *dst, const Histogram *src);

/*
 * The value at percentile p (0 < p <= 100): the upper bound of the bucket
 * holding the ceil(p% * count)-th smallest value, clamped to [min, max], so
 * it never understates and is exact for values below HIST_SUB. 0 if empty.
 */
uint64_t histogram_percentile(const Histogram *h, double p);
uint64_t histogram_mean(const Histogram *h);	/* 0 if empty */

/* Bucket arithmetic, exposed for tests. */
unsigned histogram_bucket_of(uint64_t value);
uint64_t histogram_bucket_low(unsigned bucket);
uint64_t histogram_bucket_high(unsigned bucket);

/* CLOCK_MONOTONIC in nanoseconds: what callers time with. */
uint64_t histogram_now_ns(void);

#endif
