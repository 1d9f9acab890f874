/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/loadgen/hist: log-linear latency histogram (HdrHistogram's idea). */
#include "loadgen.h"

#include <string.h>

/*
 * Values below LG_HIST_SUB are their own bucket. Above, a value with its
 * top bit at position msb falls in octave (msb - SUB_BITS + 1), and the
 * SUB_BITS bits under the top bit choose one of LG_HIST_SUB buckets of
 * width 2^(msb - SUB_BITS) inside it.
 */
static unsigned bucket_of(uint64_t v)
{
	unsigned msb, shift;

	if (v < LG_HIST_SUB)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	shift = msb - LG_HIST_SUB_BITS;
	return (shift + 1) * LG_HIST_SUB +
	       (unsigned)((v >> shift) - LG_HIST_SUB);
}

static uint64_t bucket_low(unsigned i, uint64_t *width_out)
{
	unsigned shift;

	if (i < LG_HIST_SUB) {
		*width_out = 1;
		return i;
	}
	shift = i / LG_HIST_SUB - 1;
	*width_out = 1ull << shift;
	return (uint64_t)(LG_HIST_SUB + i % LG_HIST_SUB) << shift;
}

void lg_hist_reset(struct lg_hist *h)
{
	memset(h, 0, sizeof(*h));
}

void lg_hist_add(struct lg_hist *h, uint64_t ns)
{
	h->bucket[bucket_of(ns)]++;
	h->count++;
	h->sum_ns += ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

void lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src)
{
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
		dst->bucket[i] += src->bucket[i];
	dst->count += src->count;
	dst->sum_ns += src->sum_ns;
	if (src->max_ns > dst->max_ns)
		dst->max_ns = src->max_ns;
}

uint64_t lg_hist_quantile(const struct lg_hist *h, double q)
{
	uint64_t rank, seen = 0;

	if (h->count == 0)
		return 0;
	/* The smallest value with at least q of the samples at or below. */
	rank = (uint64_t)(q * (double)h->count + 0.5);
	if (rank < 1)
		rank = 1;
	if (rank > h->count)
		rank = h->count;
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
		uint64_t width, low, mid;

		seen += h->bucket[i];
		if (seen < rank)
			continue;
		low = bucket_low(i, &width);
		mid = low + width / 2;
		return mid < h->max_ns ? mid : h->max_ns;
	}
	return h->max_ns;
}
