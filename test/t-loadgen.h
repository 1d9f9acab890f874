/* SPDX-License-Identifier: BSD-3-Clause */
/* test/t-loadgen: a worker double for bench/loadgen's modes. */
#ifndef RINGPROT_T_LOADGEN_H
#define RINGPROT_T_LOADGEN_H

#include "loadgen.h" /* bench/loadgen */

#include <stddef.h>
#include <stdint.h>

/*
 * The calls a mode makes into bench/loadgen/worker.c, recorded instead
 * of done: what was sent (appended, at most T_LG_SENT bytes kept), how
 * often each was called. The test completes sends itself, by calling
 * the mode's sent(), in whatever order it wants to check.
 */
#define T_LG_SENT 4096

struct t_lg {
	char sent[T_LG_SENT + 1];
	size_t sent_len;
	unsigned sends, ready, done, errors;
	uint64_t bytes;
};

extern struct t_lg t_lg;

/* Forget all calls so far (sent is emptied). */
void t_lg_reset(void);

#endif /* RINGPROT_T_LOADGEN_H */
