/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/internal: what the engine's files share; not installed. */
#ifndef RINGPROT_UR_INTERNAL_H
#define RINGPROT_UR_INTERNAL_H

#include <ringprot/uring.h>

#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "compat.h"
#include "ctx.h"
#include "fiber.h"
#include "list.h"
#include "stack.h"

/* Our own bugs: always on, even in release builds. */
#define ur_assert(expr)                                                       \
	do {                                                                  \
		if (__builtin_expect(!(expr), 0))                             \
			ur__assert_fail(#expr, __FILE__, __LINE__, __func__); \
	} while (0)
__attribute__((noreturn)) void
ur__assert_fail(const char *expr, const char *file, int line, const char *func);

/* struct ur_op ur__state values. */
enum {
	UR_OP_IDLE = 0,
	UR_OP_INFLIGHT, /* SQE handed out, final CQE not reaped */
	UR_OP_DONE,	/* final CQE reaped (until the op is reused) */
};

/* A completion copied out of the CQ (overflow drain, see loop.c). */
struct ur__cqe {
	uint64_t user_data;
	int32_t res;
	uint32_t flags;
};

struct ur__post {
	ur_post_fn *fn;
	void *arg;
	struct ur__post *next;
};

struct ur_fiber;

#define UR_TS_SCRATCH 64

struct ur_loop {
	struct io_uring ring;
	enum ur_mode mode;
	unsigned features; /* io_uring_params.features */
	struct io_uring_probe *probe;
	pthread_t thread;
	bool stop;
	bool in_dispatch;
	/* ur_op_nowake() ops queued since the last enter (loop.c). */
	unsigned nowake;
	/* fork() generation the loop was made in; another one: inherited */
	unsigned fork_gen;
	unsigned direct_files;

	/* Completions reaped while the SQ could not be flushed (-EBUSY):
	 * dispatched first at the next turn, never lost. */
	struct ur__cqe *held;
	size_t held_n, held_cap;

	/* Fibers (fiber.c). */
	struct ur__ctx sched_ctx; /* unused placeholder for non-nested runs */
	struct ur_fiber *current; /* running fiber, NULL in the scheduler */
	struct ur_list runq;	  /* runnable fibers, FIFO */
	struct ur_list fibers;	  /* every live fiber (foreach_live) */
	struct ur__stack_pool stacks;
	size_t stack_size;

	/* Timers (timer.c). */
	struct ur_list timers; /* armed user timers (foreach_live) */
	void *tslot_free;      /* free kernel-side timer slots */
	struct ur_list tslots; /* slots in use */
	uint64_t timers_armed;

	/* Cross-thread posts (loop.c). */
	pthread_mutex_t post_lock;
	struct ur__post *post_head, **post_tail;
	int post_efd;
	uint64_t post_efd_buf;
	struct ur_op post_op;
	uint64_t internal_ops; /* in-flight ops of our own (post read) */

	/* Timespecs needed only until submission (ops.c ur__ts_scratch). */
	struct __kernel_timespec ts_scratch[UR_TS_SCRATCH];
	unsigned ts_used;

	/* Buffer-ring group ids in use (bufring.c). */
	uint64_t bgid_used[1024 / 64];

	struct ur_loop_stats st;
};

/*
 * An SQE for loop, never NULL: a full SQ is submitted and, while the kernel
 * refuses (-EBUSY: completions it holds for us), the CQ is drained into
 * loop->held first. The caller must fill it before the next call.
 */
struct io_uring_sqe *ur__sqe_get(struct ur_loop *loop);

/* Submit until the SQ is empty, holding completions on -EBUSY. */
void ur__sq_flush(struct ur_loop *loop);

/* Direct descriptors travel as UR_FIXED(slot): point sqe at the slot. */
static inline void ur__sqe_set_fd(struct io_uring_sqe *sqe, int fd)
{
	if (UR_IS_FIXED(fd)) {
		sqe->fd = (int)UR_SLOT(fd);
		sqe->flags |= IOSQE_FIXED_FILE;
	}
}

/* Bind op to sqe: user_data, state INFLIGHT, counters. */
void ur__op_arm(struct ur_loop *loop, struct ur_op *op,
		struct io_uring_sqe *sqe);

/* Dispatch one completion (the CQE has been copied out already). */
void ur__cqe_dispatch(struct ur_loop *loop, uint64_t user_data, int32_t res,
		      uint32_t flags);

/* user_data of internal completions nobody waits for (cancel, remove). */
#define UR_UD_IGNORE 0ULL

/* The loop to use for a blocking call from this thread (fiber's or the
 * thread's, made on demand); NULL with *err set on failure. */
struct ur_loop *ur__loop_for_call(int *err);

/* A timespec holding ns that stays valid until the SQ is next submitted. */
struct __kernel_timespec *ur__ts_scratch(struct ur_loop *loop, uint64_t ns);

/*
 * fd moved to 3 or above (close-on-exec) if it is 0, 1 or 2: a program
 * started with stdin, stdout or stderr closed must not find the ring or
 * an eventfd there when it later opens or reads "its" stdio (a Cyrus
 * service reading fd 0 would read the ring). Returns the fd to use.
 */
int ur__fd_off_stdio(int fd);

/* A forked child forgets the running fiber it inherited (fiber.c). */
void ur__fiber_forget(void);

/* Forget scratch timespecs once the kernel has consumed every SQE. */
static inline void ur__submitted(struct ur_loop *loop)
{
	if (io_uring_sq_ready(&loop->ring) == 0) {
		loop->ts_used = 0;
		loop->nowake = 0; /* those ops are the kernel's now */
	}
}

/* Fire-and-forget SQEs. */
void ur__submit_cancel(struct ur_loop *loop, struct ur_op *target);

/*
 * fiber.c provides these to loop.c.
 */
int ur__fibers_init(struct ur_loop *loop, size_t stack_size, unsigned pool_max);
void ur__fibers_fini(struct ur_loop *loop);
/* Run every fiber runnable now (not those made runnable meanwhile).
 * Returns how many ran. Called from the scheduler context. */
unsigned ur__fibers_run(struct ur_loop *loop);
/* The fiber running on loop, or NULL. */
static inline struct ur_fiber *ur__fiber_current(struct ur_loop *loop)
{
	return loop->current;
}
/*
 * Park the running fiber while it waits on op (op may be NULL: plain
 * park). Returns 0 when woken, -ECANCELED if the fiber was cancelled: for
 * an op, fiber.c has submitted the cancel itself and returns only once the
 * op's final completion has arrived.
 */
int ur__fiber_park_on(struct ur_loop *loop, struct ur_op *op);
/* Runnable again (from a CQE dispatch or a wake). */
void ur__fiber_make_runnable(struct ur_fiber *f);
bool ur__fiber_cancelled(const struct ur_fiber *f);

/*
 * bufring.c: the CQE of an op armed with a buffer group (op->ur__bgid,
 * never 0) accounts the buffer it carries; dispatch calls it before the
 * op's callback or waiter.
 */
void ur__bufring_cqe(struct ur_loop *loop, struct ur_op *op);
/* ur_loop_free(): detach the rings still made on loop. */
void ur__bufrings_fini(struct ur_loop *loop);

/* timer.c: a timer slot's CQE. */
void ur__timer_slot_cqe(struct ur_loop *loop, struct ur_op *op);
void ur__timers_fini(struct ur_loop *loop);

#endif /* RINGPROT_UR_INTERNAL_H */
