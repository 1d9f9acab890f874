/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * uring/: the engine: loop, ops, timers, fibers, buffer rings. It runs on
 * io_uring where the kernel allows it and on epoll elsewhere (container
 * seccomp profiles, kernel.io_uring_disabled): same calls, same results.
 */
#ifndef RINGPROT_URING_H
#define RINGPROT_URING_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include <ringprot/common.h>

struct ur_loop;
struct ur_fiber;
struct ur_bufring;
struct ur_signal;
struct ur_op;
struct ur_timer;

/*
 * ---------------------------------------------------------------------
 * Loop: one per thread, one ring (or one epoll set) each.
 * ---------------------------------------------------------------------
 */

/*
 * The kernel interface a loop runs on. UR_BACKEND_AUTO takes io_uring if
 * a ring can be set up, else epoll; the environment variable
 * RINGPROT_BACKEND=uring|epoll overrides AUTO (not a forced choice).
 */
enum ur_backend {
	UR_BACKEND_AUTO = 0,
	UR_BACKEND_URING,
	UR_BACKEND_EPOLL,
};

/* io_uring backend: ring setup modes, best first. UR_MODE_AUTO probes
 * them in this order. */
enum ur_mode {
	UR_MODE_AUTO = 0,
	UR_MODE_DEFER, /* SINGLE_ISSUER | DEFER_TASKRUN */
	UR_MODE_COOP,  /* COOP_TASKRUN | TASKRUN_FLAG */
	UR_MODE_PLAIN, /* no setup flags */
	/*
	 * SQPOLL: a kernel thread takes submissions, and the loop polls the
	 * CQ for opts.spin_us before it sleeps in the kernel, so a busy
	 * loop makes almost no syscall. The poller thread spins for
	 * opts.sqpoll_idle_ms after its last work: on a small machine it
	 * takes a CPU from the application (pin it with sqpoll_pin). Never
	 * chosen by UR_MODE_AUTO.
	 */
	UR_MODE_SQPOLL,
};

struct ur_loop_opts {
	enum ur_backend backend; /* AUTO, or force one (its error if refused) */
	enum ur_mode mode;	 /* io_uring: AUTO, or force one (-EINVAL if
				    refused); setting one forces io_uring */
	unsigned sq_entries;	 /* 0: 256 */
	unsigned cq_entries;	 /* 0 or below 4 * sq_entries: 4 * sq */
	size_t stack_size;	 /* fiber stack size, 0: 64 KiB */
	unsigned stack_pool_max; /* stacks kept for reuse, 0: 1024 */
	unsigned direct_files;	 /* direct descriptor table, 0: none */
	/* UR_MODE_SQPOLL only: */
	bool sqpoll_pin;	 /* pin the poller thread to sqpoll_cpu */
	unsigned sqpoll_cpu;
	unsigned sqpoll_idle_ms; /* 0: 100 */
	unsigned spin_us;	 /* CQ polling before a sleep, 0: 50 */
	unsigned shared_bufs;	 /* ur_loop_bufring(): buffers, 0: 256 */
	size_t shared_buf_size;	 /* ... and their size, 0: 16 KiB */
};

/*
 * Create a loop and bind it to the calling thread (the first loop made on a
 * thread becomes that thread's loop, see ur_loop_current()).
 * fork(): rings are not mapped into a child, and the child's thread has
 * no loop until its first blocking call makes a fresh one. Loops, ops,
 * fibers and streams made before the fork stay the parent's: the child
 * must not use them. ur_loop_free() of an inherited loop is safe (it
 * closes the child's fd copies and never touches the ring).
 * With UR_BACKEND_AUTO a loop is made on epoll where io_uring is refused.
 * Returns 0; with the io_uring backend forced, -ENOSYS or -EPERM when
 * io_uring is unavailable; -EINVAL if a forced mode is refused or
 * RINGPROT_BACKEND names no backend; -ENOMEM, -EMFILE.
 */
RINGPROT_API int ur_loop_new(const struct ur_loop_opts *opts,
			     struct ur_loop **loop_out) RINGPROT_MUST_CHECK;

/*
 * Cancel everything still in flight, reap those completions, free the
 * stacks and the ring. Fibers still alive are abandoned (their stacks are
 * freed without unwinding): check ur_loop_live() first. Accepts NULL and
 * clears the pointer.
 */
RINGPROT_API void ur_loop_free(struct ur_loop **loopp);

/* The calling thread's loop, or NULL if none was made on this thread. */
RINGPROT_API struct ur_loop *ur_loop_current(void);

/*
 * The calling thread's loop, made with default options if there is none.
 * Returns 0 or -errno as ur_loop_new().
 */
RINGPROT_API int ur_loop_get(struct ur_loop **loop_out) RINGPROT_MUST_CHECK;

/* Bind an existing loop to the calling thread (NULL unbinds). */
RINGPROT_API void ur_loop_bind(struct ur_loop *loop);

/*
 * One loop turn: submit what is queued and wait (one io_uring_enter, or
 * one epoll_pwait2) for at least one completion or until timeout_ns
 * passes (-1: no limit, 0: do not wait), then dispatch every completion
 * and run every runnable fiber. Returns the number of completions dispatched, or -errno.
 * Must not be called from a fiber.
 */
RINGPROT_API int ur_loop_run_once(struct ur_loop *loop,
				  int64_t timeout_ns) RINGPROT_MUST_CHECK;

/*
 * Run turns until ur_loop_stop() or until nothing is alive (no fiber, no
 * op in flight, no armed timer). Returns 0 or -errno. Not from a fiber.
 */
RINGPROT_API int ur_loop_run(struct ur_loop *loop) RINGPROT_MUST_CHECK;

/* Make ur_loop_run() return after the current turn. Any thread-safe
 * caller on the loop's own thread; from other threads use ur_loop_post(). */
RINGPROT_API void ur_loop_stop(struct ur_loop *loop);

/* The backend a loop runs on (never UR_BACKEND_AUTO), and its name
 * ("io_uring", "epoll"). */
RINGPROT_API enum ur_backend ur_loop_backend(const struct ur_loop *loop);
RINGPROT_API const char *ur_backend_name(enum ur_backend backend);

/* The mode the ring was set up with (UR_MODE_AUTO on epoll) and its name. */
RINGPROT_API enum ur_mode ur_loop_mode(const struct ur_loop *loop);
RINGPROT_API const char *ur_mode_name(enum ur_mode mode);

/*
 * Busy-poll the network devices of the loop's sockets for up to
 * busy_poll_us before sleeping (NAPI busy polling: io_uring's
 * IORING_REGISTER_NAPI, epoll's EPIOCSPARAMS), for lower tail latency at
 * the cost of CPU; 0 turns it off. Sockets on devices without NAPI
 * (loopback) are not polled. Returns 0, -EOPNOTSUPP where the kernel has
 * no such registration, -errno.
 */
RINGPROT_API int ur_loop_napi(struct ur_loop *loop, unsigned busy_poll_us,
			      bool prefer_busy_poll) RINGPROT_MUST_CHECK;

/*
 * What a loop can do beyond the ops every backend serves. An op that is
 * not available is refused with -EOPNOTSUPP.
 */
enum ur_cap {
	UR_CAP_DIRECT_FILES = 1, /* descriptors outside the process fd table */
	UR_CAP_MSG_RING,	 /* posts to another loop without an eventfd */
	UR_CAP_NOWAKE,		 /* ur_op_nowake() saves an enter */
	UR_CAP_KERNEL_BUFFERS,	 /* provided buffers selected by the kernel */
};
RINGPROT_API bool ur_loop_has(const struct ur_loop *loop, enum ur_cap cap);

/* What is still alive in the loop. */
struct ur_loop_stats {
	uint64_t ops_inflight;	/* ops started, final completion not seen */
	uint64_t fibers_live;	/* spawned and not yet freed */
	uint64_t timers_armed;	/* user timers (ur_timer) armed */
	uint64_t submits;	/* io_uring_enter calls that submitted */
	uint64_t enters;	/* io_uring_enter (epoll: epoll_pwait2) calls */
	uint64_t cqes;		/* completions dispatched */
	uint64_t sq_full;	/* io_uring: times the SQ was full and flushed */
	uint64_t cq_overflow;	/* io_uring: times the kernel held CQEs back */
	uint64_t stacks_mapped; /* fiber stacks mapped (pooled or in use) */
	uint64_t enobufs;	/* provided-buffer ops that found none */
};
RINGPROT_API void ur_loop_stats(const struct ur_loop *loop,
				struct ur_loop_stats *out);

/*
 * Calls fn once for each live fiber and armed timer, naming the file and
 * line that created it, so a teardown can say what leaked.
 */
typedef void ur_live_fn(const char *what, const char *file, int line,
			void *arg);
RINGPROT_API void ur_loop_foreach_live(const struct ur_loop *loop,
				       ur_live_fn *fn, void *arg);

/*
 * Post fn(arg) to run on loop's thread at its next turn. Thread-safe: the
 * wakeup is an IORING_OP_MSG_RING from the caller's own loop when it has
 * one, else an eventfd write. Returns 0 or -ENOMEM.
 */
typedef void ur_post_fn(void *arg);
RINGPROT_API int ur_loop_post(struct ur_loop *loop, ur_post_fn *fn,
			      void *arg) RINGPROT_MUST_CHECK;

/*
 * ---------------------------------------------------------------------
 * Descriptors. A direct descriptor (a slot in the ring's registered file
 * table) is passed to every op as UR_FIXED(slot). Plain fds are passed as
 * they are. On epoll a slot names a plain fd the loop holds, so there the
 * process's fd limit (RLIMIT_NOFILE) still counts them.
 * ---------------------------------------------------------------------
 */
#define UR_FIXED_BIT	0x40000000
#define UR_FIXED(slot)	((int)((unsigned)(slot) | UR_FIXED_BIT))
#define UR_IS_FIXED(fd) ((fd) >= 0 && ((fd)&UR_FIXED_BIT) != 0)
#define UR_SLOT(fd)	((unsigned)(fd) & ~(unsigned)UR_FIXED_BIT)

/*
 * Install fd into loop's direct descriptor table (the loop must have been
 * made with opts.direct_files > 0) and return UR_FIXED(slot), or -ENFILE
 * when the table is full, -EINVAL without a table. The caller may close
 * fd afterwards: the loop holds its own reference.
 */
RINGPROT_API int ur_fd_to_direct(struct ur_loop *loop,
				 int fd) RINGPROT_MUST_CHECK;

/*
 * ---------------------------------------------------------------------
 * Ops. Every op has two faces:
 *  - ur_<op>(...): a blocking call (UR_MAY_YIELD). In a fiber it parks the
 *    fiber until the completion; outside any fiber it drives the thread's
 *    loop (ur_loop_get()) until its own completion arrives. Returns the
 *    CQE result: >= 0 on success, -errno on failure, -ECANCELED if the
 *    calling fiber was cancelled before the op completed.
 *  - ur_<op>_start(loop, op, ...): submit and return at once; op->fn runs
 *    on the loop's thread when the op completes (op->res; ur_op_more(),
 *    ur_op_buffer()). Returns 0, or -EBUSY if op is still in flight.
 * A buffer given to an op belongs to the kernel until the op's final
 * completion, cancelled ones included. op must stay valid until then too.
 * Every op is served by both backends; on epoll, sockets, pipes and other
 * pollable fds wait for readiness (the syscall is tried first), and file
 * ops (regular files, openat, fsync, renameat, unlinkat, close) run
 * inline on the loop's thread.
 * ---------------------------------------------------------------------
 */
typedef void ur_op_fn(struct ur_op *op);

struct ur_op {
	ur_op_fn *fn; /* completion callback */
	void *data;   /* free for the caller */
	int32_t res;  /* result of the last completion */
	/* private */
	uint32_t ur__flags; /* of the last completion: ur_op_more()... */
	struct ur_loop *ur__loop;
	struct ur_fiber *ur__waiter;
	/* What a readiness backend (epoll) keeps while the op waits. */
	struct ur_op *ur__next;
	void *ur__p;
	uint64_t ur__q;
	int32_t ur__fd;
	uint32_t ur__arg;
	uint8_t ur__state;
	uint8_t ur__opcode;
	uint8_t ur__nowake; /* counted by ur_op_nowake(), see ur_op_wait() */
	uint8_t ur__bflags; /* the backend's */
	uint16_t ur__bgid;  /* buffer group of a provided-buffer op, 0: none */
	uint16_t ur__pad;
};

/*
 * Will op complete again (a multishot op still armed)? When false after
 * a multishot op's completion, it has ended and may be started again.
 */
static inline bool ur_op_more(const struct ur_op *op)
{
	return (op->ur__flags & 2U) != 0;
}

/*
 * Did op's last completion carry a provided buffer? Then *bid_out is its
 * id in the op's bufring (give it back with ur_bufring_put()).
 */
static inline bool ur_op_buffer(const struct ur_op *op, unsigned *bid_out)
{
	if ((op->ur__flags & 1U) == 0)
		return false;
	*bid_out = op->ur__flags >> 16;
	return true;
}

/* Prepare caller storage for an op with callback fn and data. */
RINGPROT_API void ur_op_init(struct ur_op *op, ur_op_fn *fn, void *data);

/* Is op submitted and its final CQE not yet reaped? */
RINGPROT_API bool ur_op_is_busy(const struct ur_op *op);

/*
 * Ask for op to be cancelled. The op still completes through its callback
 * (-ECANCELED, or its result if it won the race). Returns 0, -ENOENT if
 * op is not in flight, or -errno (-ENOMEM...) if the backend could not
 * take the request: op then goes on until it completes by itself.
 */
RINGPROT_API int ur_op_cancel(struct ur_op *op) RINGPROT_MUST_CHECK;

/* Cancel every op in flight on fd. Blocking: returns the number
 * cancelled or -errno. */
RINGPROT_API int ur_cancel_fd(int fd) UR_MAY_YIELD RINGPROT_MUST_CHECK;

/* Blocking faces. */
RINGPROT_API ssize_t ur_recv(int fd, void *buf, size_t len,
			     int flags) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API ssize_t ur_send(int fd, const void *buf, size_t len,
			     int flags) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API ssize_t ur_sendmsg(int fd, const struct msghdr *msg,
				int flags) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API ssize_t ur_writev(int fd, const struct iovec *iov, int iovcnt,
			       int64_t off) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API ssize_t ur_read(int fd, void *buf, size_t len,
			     int64_t off) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API ssize_t ur_write(int fd, const void *buf, size_t len,
			      int64_t off) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API int ur_accept(int fd, struct sockaddr *addr, socklen_t *addrlen,
			   int flags) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API int ur_connect(int fd, const struct sockaddr *addr,
			    socklen_t addrlen) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API int ur_close(int fd) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API int ur_openat(int dfd, const char *path, int flags,
			   mode_t mode) UR_MAY_YIELD RINGPROT_MUST_CHECK;
/* ur_fsync's fsync_flags: 0 (fsync) or UR_FSYNC_DATASYNC (fdatasync). */
#define UR_FSYNC_DATASYNC 1U
RINGPROT_API int ur_fsync(int fd, unsigned fsync_flags) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API int ur_renameat(int olddfd, const char *oldpath, int newdfd,
			     const char *newpath, unsigned flags) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API int ur_unlinkat(int dfd, const char *path, int flags) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API int ur_linkat(int olddfd, const char *oldpath, int newdfd,
			   const char *newpath, int flags) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API int ur_mkdirat(int dfd, const char *path, mode_t mode) UR_MAY_YIELD RINGPROT_MUST_CHECK;
/* Returns the revents mask (POLLIN...) or -errno. */
RINGPROT_API int ur_poll(int fd, unsigned poll_mask) UR_MAY_YIELD RINGPROT_MUST_CHECK;
RINGPROT_API int ur_nop(void) UR_MAY_YIELD RINGPROT_MUST_CHECK;
/*
 * splice(2): move up to len bytes from fd_in to fd_out in the kernel,
 * one of them a pipe (the file pages are referenced, not copied). off_in
 * and off_out: an offset in a regular file, or -1 (a pipe or socket, or
 * the file position). flags: SPLICE_F_MORE, SPLICE_F_MOVE (SPLICE_F_NONBLOCK
 * is implied on epoll and meaningless on io_uring). len above INT_MAX is cut
 * to INT_MAX. Returns the bytes moved (0: fd_in at its end), or -errno
 * (-EINVAL when neither end is a pipe). Blocking face only: waits until
 * some bytes moved. io_uring runs it in a kernel worker, where a full
 * socket just waits; on epoll it waits for room in fd_out or, when fd_in
 * is a pipe or socket with nothing to read, for input (which must not
 * then be drained by anyone else), and a socket end is made O_NONBLOCK
 * for the call only.
 */
RINGPROT_API ssize_t ur_splice(int fd_in, int64_t off_in, int fd_out,
			       int64_t off_out, size_t len,
			       unsigned flags) UR_MAY_YIELD RINGPROT_MUST_CHECK;
/*
 * ur_splice() that gives up at deadline_ns (CLOCK_MONOTONIC, 0: none):
 * the splice is cancelled and -ETIMEDOUT returned, unless bytes moved
 * first (their count is returned, as ur_op_wait_until() does).
 */
RINGPROT_API ssize_t ur_splice_until(
	int fd_in, int64_t off_in, int fd_out, int64_t off_out, size_t len,
	unsigned flags, uint64_t deadline_ns) UR_MAY_YIELD RINGPROT_MUST_CHECK;

/*
 * Say that op, just started and not yet submitted, need not wake the
 * loop: its caller goes on to wait for another op and then for this one,
 * and needs both before it does anything else (a forced flush before the
 * read that waits for the reply). The loop's next sleep then asks
 * io_uring_enter for one more completion, so an op the kernel completes
 * during that same submission (a send into a socket with room) costs no
 * enter of its own. If op is slower, that one sleep lasts until two
 * completions have come, whichever they are; later sleeps wake as usual.
 * Waiting for op itself (ur_op_wait()) drops the allowance, so a caller
 * whose other op finished early still wakes on op alone.
 * DEFER_TASKRUN loops only (elsewhere completions may be posted from
 * other contexts between the check and the sleep); a no-op otherwise.
 */
RINGPROT_API void ur_op_nowake(struct ur_op *op);

/*
 * Wait for op (already started with fn == NULL, or any op on this loop)
 * to complete, blocking as the ur_<op>() calls do. Returns op->res.
 * Outside a fiber, a loop turn that fails cancels op and the wait goes
 * on until op is reaped (never returning while the kernel owns op's
 * buffer); then the turn's -errno is returned if op was cancelled.
 */
RINGPROT_API int ur_op_wait(struct ur_op *op) UR_MAY_YIELD RINGPROT_MUST_CHECK;

/* Callback faces: op->fn/op->data set by ur_op_init() beforehand. */
RINGPROT_API int ur_recv_start(struct ur_loop *loop, struct ur_op *op, int fd,
			       void *buf, size_t len,
			       int flags) RINGPROT_MUST_CHECK;
RINGPROT_API int ur_send_start(struct ur_loop *loop, struct ur_op *op, int fd,
			       const void *buf, size_t len,
			       int flags) RINGPROT_MUST_CHECK;
RINGPROT_API int ur_sendmsg_start(struct ur_loop *loop, struct ur_op *op,
				  int fd, const struct msghdr *msg,
				  int flags) RINGPROT_MUST_CHECK;
RINGPROT_API int ur_writev_start(struct ur_loop *loop, struct ur_op *op, int fd,
				 const struct iovec *iov, int iovcnt,
				 int64_t off) RINGPROT_MUST_CHECK;
RINGPROT_API int ur_read_start(struct ur_loop *loop, struct ur_op *op, int fd,
			       void *buf, size_t len,
			       int64_t off) RINGPROT_MUST_CHECK;
RINGPROT_API int ur_write_start(struct ur_loop *loop, struct ur_op *op, int fd,
				const void *buf, size_t len,
				int64_t off) RINGPROT_MUST_CHECK;
RINGPROT_API int ur_accept_start(struct ur_loop *loop, struct ur_op *op, int fd,
				 struct sockaddr *addr, socklen_t *addrlen,
				 int flags) RINGPROT_MUST_CHECK;
/*
 * One accept into a new direct descriptor (the loop needs
 * opts.direct_files): op->res is the slot (wrap it with UR_FIXED()), the
 * peer's address in *addr as accept(2) gives it. -ENFILE when the table
 * is full.
 */
RINGPROT_API int ur_accept_direct_start(struct ur_loop *loop, struct ur_op *op,
					int fd, struct sockaddr *addr,
					socklen_t *addrlen) RINGPROT_MUST_CHECK;
/*
 * Multishot accept: op->fn runs once per accepted connection (op->res is
 * the new fd, or with direct != 0 the new direct slot, wrap it with
 * UR_FIXED()). While ur_op_more(op) the op stays armed; when it is false
 * (an error such as -ENFILE, -EMFILE) start it again.
 */
RINGPROT_API int ur_accept_multishot_start(struct ur_loop *loop,
					   struct ur_op *op, int fd,
					   bool direct) RINGPROT_MUST_CHECK;
RINGPROT_API int ur_connect_start(struct ur_loop *loop, struct ur_op *op,
				  int fd, const struct sockaddr *addr,
				  socklen_t addrlen) RINGPROT_MUST_CHECK;
RINGPROT_API int ur_close_start(struct ur_loop *loop, struct ur_op *op,
				int fd) RINGPROT_MUST_CHECK;
RINGPROT_API int ur_poll_start(struct ur_loop *loop, struct ur_op *op, int fd,
			       unsigned poll_mask) RINGPROT_MUST_CHECK;
RINGPROT_API int ur_nop_start(struct ur_loop *loop,
			      struct ur_op *op) RINGPROT_MUST_CHECK;
/* Relative one-shot timeout as an op: res -ETIME. */
RINGPROT_API int ur_timeout_start(struct ur_loop *loop, struct ur_op *op,
				  uint64_t delay_ns) RINGPROT_MUST_CHECK;

/*
 * ---------------------------------------------------------------------
 * Timers: absolute deadlines (io_uring: IORING_OP_TIMEOUT with
 * IORING_TIMEOUT_ABS; epoll: a heap per clock, CLOCK_REALTIME on a
 * timerfd that follows clock steps). Caller storage; the kernel side
 * lives in a loop-owned slot, so a timer
 * may be stopped and its storage freed at once, whatever is in flight.
 * fn runs on the loop's thread (from the loop turn, not on a fiber).
 * ---------------------------------------------------------------------
 */
typedef void ur_timer_fn(struct ur_timer *t, void *arg);

struct ur_timer {
	/* private */
	struct ur_loop *ur__loop;
	void *ur__slot;
	ur_timer_fn *ur__fn;
	void *ur__arg;
	uint64_t ur__deadline_ns;
	int ur__clock;
	const char *ur__file;
	int ur__line;
	void *ur__link[2];
};

/* Nanoseconds on clock (CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME). */
RINGPROT_API uint64_t ur_now_ns(clockid_t clock);

RINGPROT_API void ur_timer_init(struct ur_timer *t, struct ur_loop *loop);

/*
 * Arm t to call fn(t, arg) once at deadline_ns on clock. Re-arming an
 * armed timer moves it. The callback never runs early: a completion that
 * arrives before the deadline (a clock step, a lost update race) re-arms.
 * Returns 0, -EINVAL for an unsupported clock.
 */
#define ur_timer_start_abs(t, clock, deadline_ns, fn, arg) \
	ur__timer_start_abs(t, clock, deadline_ns, fn, arg, __FILE__, __LINE__)
RINGPROT_API int ur__timer_start_abs(struct ur_timer *t, clockid_t clock,
				     uint64_t deadline_ns, ur_timer_fn *fn,
				     void *arg, const char *file,
				     int line) RINGPROT_MUST_CHECK;

/* Arm t delay_ns from now on CLOCK_MONOTONIC. */
#define ur_timer_start(t, delay_ns, fn, arg)                                  \
	ur__timer_start_abs(t, CLOCK_MONOTONIC,                               \
			    ur_now_ns(CLOCK_MONOTONIC) + (delay_ns), fn, arg, \
			    __FILE__, __LINE__)

/*
 * Move an armed timer's deadline (io_uring: one TIMEOUT_UPDATE SQE).
 * Returns 0, or -ENOENT if t is not armed (it has fired or was stopped).
 */
RINGPROT_API int ur_timer_update(struct ur_timer *t,
				 uint64_t deadline_ns) RINGPROT_MUST_CHECK;

/*
 * Disarm t. fn will not run after this returns,
 * even if the kernel already fired. Returns 0, -ENOENT if not armed, or
 * -errno (-ENOMEM...) if the backend could not take the removal: t is
 * disarmed all the same, but its kernel timeout stays in flight (and
 * keeps ur_loop_run() going) until the old deadline.
 */
RINGPROT_API int ur_timer_stop(struct ur_timer *t) RINGPROT_MUST_CHECK;

RINGPROT_API bool ur_timer_is_armed(const struct ur_timer *t);
RINGPROT_API uint64_t ur_timer_deadline(const struct ur_timer *t);

/*
 * Lazy deadline: an idle timeout that costs no SQE when it is pushed later
 * (the common case, once per read). One timeout stays armed at the
 * earliest deadline ever set; when it fires early it re-arms itself at the
 * current deadline. Only moving the deadline earlier costs an update SQE.
 * If that re-arm cannot be submitted (no memory, a ring error), fn runs
 * early rather than never.
 */
struct ur_deadline {
	struct ur_timer ur__timer;
	uint64_t ur__want_ns; /* 0: none */
	ur_timer_fn *ur__fn;
	void *ur__arg;
};
RINGPROT_API void ur_deadline_init(struct ur_deadline *d, struct ur_loop *loop,
				   ur_timer_fn *fn, void *arg);
/* Set the deadline (CLOCK_MONOTONIC ns), 0 clears it. Returns 0 or -errno. */
RINGPROT_API int ur_deadline_set(struct ur_deadline *d,
				 uint64_t deadline_ns) RINGPROT_MUST_CHECK;
RINGPROT_API void ur_deadline_fini(struct ur_deadline *d);

/*
 * Sleep until deadline_ns on clock. Blocking (parks the fiber, or drives
 * the loop). Returns 0, or -ECANCELED if the fiber was cancelled.
 */
RINGPROT_API int ur_sleep_until(clockid_t clock,
				uint64_t deadline_ns) UR_MAY_YIELD
	RINGPROT_MUST_CHECK;

/*
 * ---------------------------------------------------------------------
 * Fibers: stackful coroutines scheduled by the loop of the thread they
 * were spawned on. Stacks are lazily committed, guarded and pooled.
 * ---------------------------------------------------------------------
 */
typedef int ur_fiber_fn(void *arg);

struct ur_fiber_opts {
	size_t stack_size; /* 0: the loop's default */
	const char *name;  /* for ur_loop_foreach_live(); borrowed */
};

/*
 * Create a fiber running fn(arg) on loop (NULL: the thread's loop); it
 * first runs at the loop's next turn. The fiber starts with its creator's
 * floating-point modes.
 * The fiber is joinable: free it with ur_fiber_join(), or call
 * ur_fiber_detach() to have it freed when it returns.
 * Returns 0, -EINVAL (fn NULL, no loop), -ENOMEM (no memory or no stack
 * could be mapped).
 */
#define ur_fiber_spawn(loop, fn, arg, opts, f_out) \
	ur__fiber_spawn(loop, fn, arg, opts, f_out, __FILE__, __LINE__)
RINGPROT_API int ur__fiber_spawn(struct ur_loop *loop, ur_fiber_fn *fn,
				 void *arg, const struct ur_fiber_opts *opts,
				 struct ur_fiber **f_out, const char *file,
				 int line) RINGPROT_MUST_CHECK;

/*
 * Wait for f to return, store its return value in *ret_out (may be NULL)
 * and free it. From a fiber this parks; outside any fiber it drives the
 * loop. Returns 0; -EINVAL if f is detached, joins itself, already has a
 * joiner or is detached while being joined; -ECANCELED if the joining
 * fiber is cancelled (f then stays joinable).
 */
RINGPROT_API int ur_fiber_join(struct ur_fiber *f,
			       int *ret_out) UR_MAY_YIELD RINGPROT_MUST_CHECK;

/* Free f when it returns (now, if it already has). */
RINGPROT_API void ur_fiber_detach(struct ur_fiber *f);

/*
 * Cancel f: the op it is parked on is cancelled and the blocking call
 * returns -ECANCELED (or the op's own result if it completed first, so no
 * data is lost); every later blocking call in f returns -ECANCELED at
 * once. A parked (ur_fiber_park) fiber is woken with -ECANCELED.
 * Returns 0, -ESRCH if f has already returned, or -errno if the op f is
 * parked on could not be cancelled (as ur_op_cancel): f is cancelled all
 * the same, but wakes only when that op completes by itself.
 */
RINGPROT_API int ur_fiber_cancel(struct ur_fiber *f) RINGPROT_MUST_CHECK;

/* The running fiber, or NULL outside any fiber. */
RINGPROT_API struct ur_fiber *ur_fiber_self(void);
RINGPROT_API bool ur_fiber_is_cancelled(const struct ur_fiber *f);

/*
 * Park the running fiber until ur_fiber_wake(). Returns 0, -ECANCELED, or
 * -EINVAL outside any fiber.
 */
RINGPROT_API int ur_fiber_park(void) UR_MAY_YIELD RINGPROT_MUST_CHECK;
/*
 * End an ur_fiber_park() of f (no-op if f is not parked there; a fiber
 * blocked in an op is left alone). Loop thread only.
 */
RINGPROT_API void ur_fiber_wake(struct ur_fiber *f);
/*
 * Let other runnable fibers run; returns at the next turn. Outside a
 * fiber it runs one loop turn that does not wait.
 */
RINGPROT_API int ur_fiber_yield(void) UR_MAY_YIELD RINGPROT_MUST_CHECK;

/*
 * ---------------------------------------------------------------------
 * Waiters: "park this fiber, or drive the loop when outside any fiber,
 * until woken". Caller storage (usually on the waiting stack); one
 * waiting context at a time. Loop thread only.
 * ---------------------------------------------------------------------
 */
struct ur_waiter {
	/* private */
	struct ur_loop *ur__loop;
	struct ur_fiber *ur__fiber; /* parked in ur_waiter_wait(), or NULL */
	bool ur__woken;
	bool ur__timed_out;
};

/*
 * Prepare w on loop (the one ur_waiter_wait() drives outside a fiber).
 * Calling it again on an idle waiter drops a wake not yet consumed.
 */
RINGPROT_API void ur_waiter_init(struct ur_waiter *w, struct ur_loop *loop);

/*
 * Wait until ur_waiter_wake(w). A wake that came before the call (since
 * init or the last wait returned) returns at once; a returning wait
 * consumes the wake. In a fiber this parks it; outside any fiber it runs
 * loop turns. Returns 0 when woken; -ECANCELED if the calling fiber is
 * cancelled before or while it waits (a wake already pending wins);
 * -errno from the loop turn outside a fiber.
 */
RINGPROT_API int ur_waiter_wait(struct ur_waiter *w) UR_MAY_YIELD
	RINGPROT_MUST_CHECK;

/*
 * ur_waiter_wait() with a deadline on clock (CLOCK_MONOTONIC,
 * CLOCK_REALTIME, CLOCK_BOOTTIME): returns -ETIME if it passed before a
 * wake (a wake at the same turn wins), -EINVAL for another clock. Costs
 * one timer while it waits.
 */
RINGPROT_API int ur_waiter_wait_until(struct ur_waiter *w, clockid_t clock,
				      uint64_t deadline_ns) UR_MAY_YIELD
	RINGPROT_MUST_CHECK;

/*
 * Wake w: ends its wait, or makes the next one return at once. Callable
 * from callbacks, timers and other fibers on w's loop thread; does not
 * yield.
 */
RINGPROT_API void ur_waiter_wake(struct ur_waiter *w);

/*
 * Wait for op (started with fn == NULL) until deadline_ns on clock. At
 * the deadline op is cancelled, and the call still waits for its final
 * completion, because the kernel owns its buffer until then. Blocking as
 * ur_op_wait(), and costs one timer while op is in flight (none when op
 * has already completed or the deadline has passed).
 * Returns op->res; -ETIMEDOUT when the deadline cancelled op (a result
 * that beat the cancel is returned as it is: no data is lost); -EINVAL
 * for an unsupported clock (op is then left as it was); -errno from the
 * loop outside a fiber, as ur_op_wait().
 */
RINGPROT_API int ur_op_wait_until(struct ur_op *op, clockid_t clock,
				  uint64_t deadline_ns) UR_MAY_YIELD
	RINGPROT_MUST_CHECK;

/*
 * ---------------------------------------------------------------------
 * Provided buffer rings (io_uring: IORING_REGISTER_PBUF_RING; epoll: the
 * loop takes a buffer when the fd is readable): recv takes a buffer only
 * when bytes arrive, so an idle connection holds none.
 * ---------------------------------------------------------------------
 */

/*
 * nbufs is rounded up to a power of two (max 32768). Create, use and free
 * a bufring on its loop's thread, and free it before the loop. Returns 0,
 * -EINVAL (off the loop's thread, bad sizes), -ENOSPC (no group id left),
 * -ENOMEM.
 */
RINGPROT_API int ur_bufring_new(struct ur_loop *loop, unsigned nbufs,
				size_t buf_size,
				struct ur_bufring **br_out) RINGPROT_MUST_CHECK;
/* Unregister and free. Every buffer must be back and no fiber waiting for
 * one (-EBUSY otherwise). */
RINGPROT_API int ur_bufring_free(struct ur_bufring **brp) RINGPROT_MUST_CHECK;
/*
 * The loop br was made on, or NULL once that loop has been freed (br is
 * then detached: ur_bufring_free() only releases its memory).
 */
RINGPROT_API struct ur_loop *ur_bufring_loop(const struct ur_bufring *br);
RINGPROT_API void *ur_bufring_buf(const struct ur_bufring *br, unsigned bid);
RINGPROT_API size_t ur_bufring_buf_size(const struct ur_bufring *br);
RINGPROT_API unsigned ur_bufring_available(const struct ur_bufring *br);
/* Give buffer bid back to the kernel; wakes a fiber waiting on ENOBUFS. */
RINGPROT_API void ur_bufring_put(struct ur_bufring *br, unsigned bid);

/*
 * The loop's shared ring (opts.shared_bufs of opts.shared_buf_size), for
 * reads of many streams: made at the first call, then the same ring
 * with one more reference. Loop thread only. Returns 0 with *br_out
 * set; -EINVAL off the loop's thread; or the error ur_bufring_new()
 * gave, which every later call on this loop returns as well.
 */
RINGPROT_API int ur_loop_bufring(struct ur_loop *loop,
				 struct ur_bufring **br_out) RINGPROT_MUST_CHECK;
/*
 * Drop a reference taken with ur_loop_bufring() and clear *brp (NULL is
 * accepted). The last one frees the ring, whose buffers must all be back
 * (else the loop keeps it). ur_loop_free() frees a ring nobody holds;
 * one still held is detached, and its last put frees the memory. In a
 * forked child, a ring of an inherited loop is left alone.
 */
RINGPROT_API void ur_loop_bufring_put(struct ur_bufring **brp);

/*
 * Blocking recv into a provided buffer. Returns the byte count (0 at EOF)
 * with *bid_out set when > 0 (give it back with ur_bufring_put()), or
 * -errno. -ENOBUFS is flow control: in a fiber the call waits until a
 * buffer comes back and retries; outside a fiber it is returned. A
 * non-socket fd with flags 0 is read instead (pipes).
 * -EINVAL if the calling thread's loop is not br's.
 */
RINGPROT_API ssize_t ur_recv_pbuf(int fd, struct ur_bufring *br,
				  unsigned *bid_out, int flags) UR_MAY_YIELD
	RINGPROT_MUST_CHECK;

/* Callback faces: the buffer comes with ur_op_buffer(). */
RINGPROT_API int ur_recv_pbuf_start(struct ur_loop *loop, struct ur_op *op,
				    int fd, struct ur_bufring *br,
				    int flags) RINGPROT_MUST_CHECK;
/* Multishot: op->fn runs per completion while ur_op_more(op). Refuses
 * (-ENOBUFS) to arm on an empty ring, which would fail at once. */
RINGPROT_API int ur_recv_multishot_start(struct ur_loop *loop, struct ur_op *op,
					 int fd, struct ur_bufring *br,
					 int flags) RINGPROT_MUST_CHECK;

/*
 * ---------------------------------------------------------------------
 * Signals through a signalfd read on the loop. The signals in set are
 * blocked in the calling thread (other threads must block them too).
 * Start on the loop's thread (-EINVAL otherwise). Returns 0, -EINVAL,
 * -ENOMEM, or the -errno of signalfd() or of the ring. A read the ring
 * refuses to re-arm after a delivery is retried at each loop turn; the
 * signals wait in the signalfd meanwhile.
 * ---------------------------------------------------------------------
 */
typedef void ur_signal_fn(struct ur_signal *sig, int signo, void *arg);
RINGPROT_API int
ur_signal_start(struct ur_loop *loop, const sigset_t *set, ur_signal_fn *fn,
		void *arg, struct ur_signal **sig_out) RINGPROT_MUST_CHECK;
/*
 * Stop watching (the callback may call it), close the signalfd and unblock
 * the signals start blocked. A signal read meanwhile is raised again, not
 * lost. Call it before ur_loop_free(). If the loop is out of memory or
 * SQEs, the pending read cannot be cancelled: the stop then completes
 * when the next watched signal arrives (and raises it again).
 */
RINGPROT_API void ur_signal_stop(struct ur_signal **sigp);

#endif /* RINGPROT_URING_H */
