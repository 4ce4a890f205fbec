/* Log-linear latency histogram: see histogram.h for the layout. */
#include <string.h>
#include <time.h>

#include "histogram.h"

void histogram_init(Histogram *h)
{
	memset(h, 0, sizeof(*h));
}

unsigned histogram_bucket_of(uint64_t value)
{
	if (value < HIST_SUB)
		return (unsigned)value;
	unsigned top = 63u - (unsigned)__builtin_clzll(value);	/* >= HIST_SUB_BITS */
	unsigned shift = top - HIST_SUB_BITS;
	unsigned sub = (unsigned)(value >> shift) - HIST_SUB;	/* the bits below the top one */
	return (shift + 1) * HIST_SUB + sub;
}

uint64_t histogram_bucket_low(unsigned bucket)
{
	if (bucket < HIST_SUB)
		return bucket;
	unsigned shift = bucket / HIST_SUB - 1;
	return (uint64_t)(HIST_SUB + bucket % HIST_SUB) << shift;
}

uint64_t histogram_bucket_high(unsigned bucket)
{
	if (bucket < HIST_SUB)
		return bucket;
	unsigned shift = bucket / HIST_SUB - 1;
	return histogram_bucket_low(bucket) + (((uint64_t)1 << shift) - 1);
}

void histogram_record(Histogram *h, uint64_t value)
{
	h->buckets[histogram_bucket_of(value)]++;
	if (h->count == 0 || value < h->min)
		h->min = value;
	h->count++;
	h->sum += value;
	if (value > h->max)
		h->max = value;
}

void histogram_merge(Histogram *dst, const Histogram *src)
{
	if (src->count == 0)
		return;
	for (unsigned i = 0; i < HIST_BUCKETS; i++)
		dst->buckets[i] += src->buckets[i];
	if (dst->count == 0 || src->min < dst->min)
		dst->min = src->min;
	dst->count += src->count;
	dst->sum += src->sum;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t histogram_percentile(const Histogram *h, double p)
{
	if (h->count == 0)
		return 0;
	if (p > 100.0)
		p = 100.0;
	/* The 1-based rank of the wanted value: ceil(p% of count), at least 1. */
	double want = p * (double)h->count / 100.0;
	uint64_t rank = (uint64_t)want;
	if ((double)rank < want)
		rank++;
	if (rank == 0)
		rank = 1;
	uint64_t seen = 0;
	unsigned i = 0;
	for (; i < HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen >= rank)
			break;
	}
	if (i == HIST_BUCKETS)
		return h->max;	/* unreachable while count matches the buckets */
	uint64_t v = histogram_bucket_high(i);
	if (v > h->max)
		v = h->max;
	if (v < h->min)
		v = h->min;
	return v;
}

uint64_t histogram_mean(const Histogram *h)
{
	return h->count ? h->sum / h->count : 0;
}

uint64_t histogram_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
