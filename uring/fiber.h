/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/fiber: what fiber.c offers loop.c and ops.c beyond internal.h. */
#ifndef RINGPROT_UR_FIBER_H
#define RINGPROT_UR_FIBER_H

#include <ringprot/uring.h>

/*
 * Call fn("fiber <name>", file, line, arg) for each fiber spawned on loop
 * and not yet freed (running, runnable, parked, or returned but not
 * joined), with the file and line of its ur_fiber_spawn(). The name is
 * only valid during the call. fn must not spawn or free fibers.
 */
void ur__fibers_foreach_live(const struct ur_loop *loop, ur_live_fn *fn,
			     void *arg);

#endif /* RINGPROT_UR_FIBER_H */
