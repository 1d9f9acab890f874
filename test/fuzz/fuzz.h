/* SPDX-License-Identifier: BSD-3-Clause */
/* test/fuzz: what the fuzz targets and the corpus runner share. */
#ifndef RINGPROT_FUZZ_H
#define RINGPROT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The libFuzzer entry point: every target defines it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * An invariant: explicit, so it holds in release builds and under gcc
 * without sanitizers (assert() could be compiled out).
 */
#define FUZZ_CHECK(cond)                                                   \
	do {                                                               \
		if (!(cond)) {                                             \
			(void)fprintf(stderr, "%s:%d: check failed: %s\n", \
				      __FILE__, __LINE__, #cond);          \
			abort();                                           \
		}                                                          \
	} while (0)

/*
 * A coverage hint: a state worth reaching (a boundary of the rules) made
 * an edge of its own, so that libFuzzer works towards it and a corpus
 * minimised on edges alone (-merge=1 -use_counters=0) keeps an input that
 * reaches it. The volatile store keeps the branch: one edge per site.
 */
static volatile int fuzz_hint_sink __attribute__((unused));
#define HINT(cond)                                 \
	do {                                       \
		if (cond)                          \
			fuzz_hint_sink = __LINE__; \
	} while (0)

/*
 * Control bytes: a cursor over part of the input. Reading past the end
 * gives zeros, so every input is a valid program.
 */
struct fuzz_in {
	const uint8_t *p;
	size_t n;
};

static inline unsigned fuzz_u8(struct fuzz_in *in)
{
	unsigned v;

	if (in->n == 0)
		return 0;
	v = in->p[0];
	in->p++;
	in->n--;
	return v;
}

static inline unsigned fuzz_u16(struct fuzz_in *in)
{
	unsigned lo = fuzz_u8(in);

	return lo | fuzz_u8(in) << 8;
}

/* A growable byte buffer for the targets' reference copies. */
#define FUZZ_OBUF_LIMIT (1 << 28) /* 256 MiB: far above any bomb of max_len */

struct obuf {
	uint8_t *p;
	size_t len, cap;
};

static inline void obuf_room(struct obuf *o, size_t want)
{
	if (o->cap - o->len >= want)
		return;
	while (o->cap - o->len < want)
		o->cap = o->cap ? o->cap * 2 : 16384;
	FUZZ_CHECK(o->cap <= FUZZ_OBUF_LIMIT);
	o->p = realloc(o->p, o->cap);
	FUZZ_CHECK(o->p != NULL);
}

static inline void obuf_add(struct obuf *o, const void *p, size_t n)
{
	if (n == 0)
		return;
	obuf_room(o, n);
	memcpy(o->p + o->len, p, n);
	o->len += n;
}

#endif /* RINGPROT_FUZZ_H */
