/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/internal: what the engine's files share; not installed. */
#ifndef RINGPROT_UR_INTERNAL_H
#define RINGPROT_UR_INTERNAL_H

#include <ringprot/uring.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

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
	UR_OP_INFLIGHT, /* given to the backend, final completion not seen */
	UR_OP_DONE,	/* final completion dispatched (until reused) */
};

/*
 * Completion flags (struct ur_op ur__flags). The values are io_uring's
 * CQE flags, so the io_uring backend copies them as they come; the epoll
 * backend makes the same ones (backend-uring.c checks they agree).
 */
#define UR__F_BUFFER	   (1U << 0)
#define UR__F_MORE	   (1U << 1)
#define UR__F_BUFFER_SHIFT 16

/* What an op asks for, in the engine's own names. */
enum ur__opcode {
	UR__NOP = 0,
	UR__RECV,
	UR__SEND,
	UR__SENDMSG,
	UR__READ,
	UR__WRITE,
	UR__WRITEV,
	UR__ACCEPT,
	UR__ACCEPT_MULTI, /* direct: flags UR__REQ_DIRECT (UR__ACCEPT too) */
	UR__CONNECT,
	UR__CLOSE,
	UR__POLL,
	UR__TIMEOUT, /* relative, res -ETIME */
	UR__TIMER,   /* absolute deadline on a clock, res -ETIME */
	UR__OPENAT,
	UR__FSYNC,
	UR__RENAMEAT,
	UR__UNLINKAT,
	UR__LINKAT,
	UR__MKDIRAT,
	UR__RECV_PBUF,	/* recv into a provided buffer */
	UR__READ_PBUF,	/* read (not a socket) into a provided buffer */
	UR__RECV_MULTI, /* multishot recv into provided buffers */
	UR__FILES_UPDATE, /* install req.fd as a direct descriptor */
	UR__SPLICE,	  /* req.fd: fd_out, req.buf: struct ur__splice */
	/* Requests about other ops: never carry an op of their own. */
	UR__CANCEL,	    /* target */
	UR__CANCEL_FD,	    /* every op on req.fd; this one carries an op */
	UR__TIMER_UPDATE,   /* target to req.ns */
	UR__TIMER_REMOVE,   /* target */
	UR__OPCODE_COUNT
};

/* req.flags for UR__ACCEPT_MULTI / UR__RECV_PBUF. */
#define UR__REQ_DIRECT	   1U
#define UR__REQ_POLL_FIRST 2U

/*
 * What ops.c hands a backend: the op's arguments, read during the start
 * call. A readiness backend copies into the op what it needs later.
 */
struct ur__req {
	uint8_t opcode;
	int fd;		    /* or dfd (openat, renameat, unlinkat) */
	int fd2;	    /* renameat: newdfd */
	int flags;	    /* msg flags, open flags, accept flags... */
	unsigned uflags;    /* poll mask, fsync flags, UR__REQ_*, clock */
	void *buf;	    /* buffer, msghdr, iovec, sockaddr, path */
	const void *buf2;   /* renameat: newpath; accept: socklen_t * */
	size_t len;	    /* length, iovcnt, addrlen, mode */
	int64_t off;	    /* file offset, -1: the file position */
	uint64_t ns;	    /* timeout or deadline */
	struct ur_op *target; /* cancel, timer update/remove */
	struct ur_bufring *br; /* provided-buffer ops */
};

/*
 * UR__SPLICE's operands beyond one fd, owned by ur_splice()'s frame
 * (a blocking face only, so they outlive the op). len and flags travel
 * in req.len and req.uflags.
 */
struct ur__splice {
	int fd_in;
	int fd_out;	 /* req.fd too */
	int64_t off_in;	 /* -1: none (a pipe or socket, or the position) */
	int64_t off_out; /* likewise */
};

struct ur__post {
	ur_post_fn *fn;
	void *arg;
	struct ur__post *next;
};

/*
 * A read the engine re-arms from its own completion (the post eventfd, a
 * signalfd) has nobody to return an error to. If the backend refuses it
 * (no SQE, no memory), ur__rearm_later() queues it and each loop turn
 * calls fn again first (and sleeps at most UR__REARM_NS meanwhile) until
 * fn returns 0.
 */
struct ur__rearm {
	struct ur_list link;
	int (*fn)(struct ur__rearm *r);
};
#define UR__REARM_NS 10000000 /* 10 ms */

struct ur_fiber;

/*
 * A backend: the one place that talks to the kernel's event interface
 * (backend-uring.c, backend-epoll.c). nginx's event "actions" are the
 * model. Every function runs on the loop's thread.
 */
struct ur__backend {
	const char *name;
	enum ur_backend id;
	size_t loop_size; /* the backend's loop, struct ur_loop first */
	/* Set up the kernel side: 0 or -errno (-ENOSYS/-EPERM: refused). */
	int (*init)(struct ur_loop *loop, const struct ur_loop_opts *o);
	/* Drop whatever is in flight (waiting for the kernel where it owns
	 * buffers) without dispatching, and free the kernel side. */
	void (*fini)(struct ur_loop *loop);
	/* A forked child's copy: close its fds, touch nothing shared. */
	void (*forget)(struct ur_loop *loop);
	/* Queue req; op (NULL for requests about other ops) completes
	 * through ur__op_complete(). 0, or -errno (nothing queued). */
	int (*start)(struct ur_loop *loop, struct ur_op *op,
		     const struct ur__req *req);
	/* Submit what is queued, wait up to timeout_ns (-1: no limit, 0:
	 * not at all) for completions, dispatch them. Count or -errno. */
	int (*wait)(struct ur_loop *loop, int64_t timeout_ns);
	/* Dispatch completions already known without waiting; count. */
	unsigned (*dispatch_ready)(struct ur_loop *loop);
	/* Does dispatch_ready() have something? */
	bool (*has_ready)(const struct ur_loop *loop);
	bool (*has)(const struct ur_loop *loop, enum ur_cap cap);
	/* The realtime clock was set: re-check marks (optional). */
	void (*clock_was_set)(struct ur_loop *loop);
	/* ur_loop_napi(). */
	int (*napi)(struct ur_loop *loop, unsigned busy_poll_us, bool prefer);
	/* ur_op_nowake(), optional. */
	void (*nowake)(struct ur_loop *loop, struct ur_op *op);
	/* Wake target from this thread's loop self without the eventfd,
	 * optional: 0 or -errno (then the eventfd is written). */
	int (*post_wake)(struct ur_loop *self, struct ur_loop *target);
	/* Provided buffers: map and publish every buffer, unpublish, give
	 * one back. */
	int (*pbuf_init)(struct ur_bufring *br);
	void (*pbuf_fini)(struct ur_bufring *br);
	void (*pbuf_put)(struct ur_bufring *br, unsigned bid);
};

extern const struct ur__backend ur__backend_uring;
extern const struct ur__backend ur__backend_epoll;

struct ur_loop {
	const struct ur__backend *be;
	pthread_t thread;
	bool stop;
	bool in_dispatch;
	/* ur_op_nowake() ops queued since the last enter (io_uring) */
	unsigned nowake;
	/* fork() generation the loop was made in; another one: inherited */
	unsigned fork_gen;
	unsigned direct_files;
	enum ur_mode mode; /* io_uring backend: the ring's mode */

	/* Fibers (fiber.c). */
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
	/* ur_loop_post() from this loop's own thread since the last run of
	 * the posts: no wake-up CQE comes for those (loop thread only). */
	bool self_posted;
	int post_efd;
	uint64_t post_efd_buf;
	struct ur_op post_op;
	uint64_t internal_ops; /* in-flight ops of our own (post read) */
	struct ur__rearm post_rearm;
	struct ur_list rearm; /* struct ur__rearm to retry at each turn */

	/* Buffer-ring group ids in use (bufring.c). */
	uint64_t bgid_used[1024 / 64];
	struct ur_bufring *bufrings; /* made on this loop */
	struct ur_bufring *shared_br; /* ur_loop_bufring() */
	int shared_err;		      /* its creation failed: this error */
	unsigned shared_bufs;
	size_t shared_buf_size;

	struct ur_loop_stats st;
};

/* A provided buffer ring (bufring.c); the backend keeps be/be_len. */
struct ur_bufring {
	struct ur_loop *loop;
	void *be; /* the backend's: a kernel buffer ring, a free stack */
	size_t be_len;
	unsigned char *bufs; /* nbufs * stride, one mapping */
	size_t bufs_len;
	size_t buf_size; /* what the kernel may fill */
	size_t stride;	 /* buf_size rounded up to 64 */
	unsigned nbufs;
	unsigned mask;
	unsigned avail;	  /* entries the kernel may still take */
	unsigned callers; /* ur_recv_pbuf() calls in progress */
	unsigned be_head, be_count; /* epoll: the free FIFO in be */
	uint64_t puts;	  /* bumped by every put: ENOBUFS retry check */
	uint64_t *out;	  /* bit per bid: handed to the app, not put back */
	uint16_t bgid;
	bool shared;	      /* the loop's shared ring */
	unsigned shared_refs; /* ur_loop_bufring() references */
	struct ur_list waiters;	 /* struct pbuf_waiter, FIFO */
	struct ur_bufring *next; /* loop->bufrings */
};

/* Mark op in flight on loop for req's opcode: state, counters. */
void ur__op_arm(struct ur_loop *loop, struct ur_op *op, uint8_t opcode);

/* An op's completion (final unless flags has UR__F_MORE): account and
 * run its callback or wake its waiter. op may be freed on return. */
void ur__op_complete(struct ur_loop *loop, struct ur_op *op, int32_t res,
		     uint32_t flags);

/* Retry r->fn at the next turns (see struct ur__rearm); forget it. */
void ur__rearm_later(struct ur_loop *loop, struct ur__rearm *r);
void ur__rearm_forget(struct ur__rearm *r);
/* ur_loop_run_once(loop, -1) for a waiter w outside any fiber: a fiber
 * that wakes w in the turn keeps it from sleeping. */
int ur__loop_turn_for(struct ur_loop *loop, const struct ur_waiter *w);

/* Run the posts queued by ur_loop_post(). */
void ur__run_posts(struct ur_loop *loop);

/* The loop to use for a blocking call from this thread (fiber's or the
 * thread's, made on demand); NULL with *err set on failure. */
struct ur_loop *ur__loop_for_call(int *err);

/*
 * fd moved to 3 or above (close-on-exec) if it is 0, 1 or 2: a program
 * started with stdin, stdout or stderr closed must not find the ring or
 * an eventfd there when it later opens or reads "its" stdio (a Cyrus
 * service reading fd 0 would read the ring). Returns the fd to use.
 */
int ur__fd_off_stdio(int fd);

/* Was loop made before a fork() this process is the child of? */
bool ur__loop_inherited(const struct ur_loop *loop);

/* A forked child forgets the running fiber it inherited (fiber.c). */
void ur__fiber_forget(void);

/*
 * A test seam for clock steps, which a test cannot make for real without
 * moving the whole machine's clock (time namespaces leave CLOCK_REALTIME
 * alone): added to every CLOCK_REALTIME reading (0 in production). After
 * changing it, ur__clock_was_set() does what the kernel's notice of a
 * clock step does (TFD_TIMER_CANCEL_ON_SET on epoll).
 */
extern int64_t ur__realtime_skew_ns;
void ur__clock_was_set(struct ur_loop *loop);

/*
 * Ask the backend to cancel target: 0, or -errno if it could not take
 * the request (no SQE, no memory); target then goes on.
 */
int ur__submit_cancel(struct ur_loop *loop,
		       struct ur_op *target) RINGPROT_MUST_CHECK;

/* Start req on op (NULL for requests about other ops): -EBUSY if op is
 * in flight. */
int ur__start(struct ur_loop *loop, struct ur_op *op,
	      const struct ur__req *req) RINGPROT_MUST_CHECK;

/*
 * fiber.c provides these to loop.c.
 */
int ur__fibers_init(struct ur_loop *loop, size_t stack_size,
		    unsigned pool_max) RINGPROT_MUST_CHECK;
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
int ur__fiber_park_on(struct ur_loop *loop,
		      struct ur_op *op) RINGPROT_MUST_CHECK;
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
