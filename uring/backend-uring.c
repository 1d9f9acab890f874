/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * uring/backend-uring: the io_uring backend. Ring setup, SQE preparation
 * from an op's request, submission and the batched reaping of CQEs. The
 * only file (with compat.h) that includes liburing.
 */
#include "internal.h"

#include "compat.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ur_fsync's flags go to the kernel as they are. */
_Static_assert(UR_FSYNC_DATASYNC == IORING_FSYNC_DATASYNC,
	       "ur_fsync flags are io_uring's");

/* user_data of internal completions nobody waits for (cancel, remove). */
#define UD_IGNORE 0ULL
/* user_data of the MSG_RING wakeup a ur_loop_post() sends. */
#define UD_POST 1ULL

#define REAP_BATCH 64
#define TS_SCRATCH 256

_Static_assert(UR__F_BUFFER == IORING_CQE_F_BUFFER, "CQE flag values");
_Static_assert(UR__F_MORE == IORING_CQE_F_MORE, "CQE flag values");
_Static_assert(UR__F_BUFFER_SHIFT == IORING_CQE_BUFFER_SHIFT,
	       "CQE flag values");

/* A completion copied out of the CQ (overflow drain, see hold_cqes). */
struct held_cqe {
	uint64_t user_data;
	int32_t res;
	uint32_t flags;
};

struct uloop {
	struct ur_loop base;
	struct io_uring ring;
	unsigned features; /* io_uring_params.features */
	struct io_uring_probe *probe;
	/* Completions reaped while the SQ could not be flushed (-EBUSY):
	 * dispatched first at the next turn, never lost. */
	struct held_cqe *held;
	size_t held_n, held_cap;
	/* Timespecs needed only until submission (FEAT_SUBMIT_STABLE). */
	struct __kernel_timespec ts_scratch[TS_SCRATCH];
	unsigned ts_used;
	unsigned spin_us; /* SQPOLL: CQ polling before a sleep */
	bool napi;	  /* registered: unregister at the end */
};

static struct uloop *U(struct ur_loop *loop)
{
	return ur_container_of(loop, struct uloop, base);
}

static const struct uloop *CU(const struct ur_loop *loop)
{
	return ur_container_of(loop, const struct uloop, base);
}

/*
 * ---------------------------------------------------------------------
 * Setup
 * ---------------------------------------------------------------------
 */

static unsigned mode_flags(enum ur_mode mode, const struct ur_loop_opts *o)
{
	switch (mode) {
	case UR_MODE_DEFER:
		return IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	case UR_MODE_COOP:
		return IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
	case UR_MODE_SQPOLL:
		return IORING_SETUP_SQPOLL |
		       (o->sqpoll_pin ? IORING_SETUP_SQ_AFF : 0);
	default:
		return 0;
	}
}

/*
 * Try one mode. SUBMIT_ALL (5.18) keeps a bad SQE from stalling the rest of
 * a batch; it is dropped again if the kernel does not know it.
 */
static int try_mode(struct uloop *u, enum ur_mode mode, unsigned sq,
		    unsigned cq, const struct ur_loop_opts *o)
{
	unsigned extra[] = {IORING_SETUP_SUBMIT_ALL, 0};
	int ret = -EINVAL;

	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
		struct io_uring_params p;

		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE | mode_flags(mode, o) | extra[i];
		p.cq_entries = cq;
		p.sq_thread_cpu = o->sqpoll_cpu;
		p.sq_thread_idle = o->sqpoll_idle_ms ? o->sqpoll_idle_ms : 100;
		ret = io_uring_queue_init_params(sq, &u->ring, &p);
		if (ret == 0) {
			u->base.mode = mode;
			u->features = p.features;
			return 0;
		}
		if (ret != -EINVAL)
			return ret;
	}
	return ret;
}

static int setup_ring(struct uloop *u, const struct ur_loop_opts *o)
{
	static const enum ur_mode ladder[] = {UR_MODE_DEFER, UR_MODE_COOP,
					      UR_MODE_PLAIN};
	unsigned sq = o->sq_entries ? o->sq_entries : 256;
	unsigned cq = o->cq_entries;
	int ret = -EINVAL;

	if (cq < 4 * sq)
		cq = 4 * sq;
	if (o->mode != UR_MODE_AUTO)
		return try_mode(u, o->mode, sq, cq, o);
	for (size_t i = 0; i < sizeof(ladder) / sizeof(ladder[0]); i++) {
		ret = try_mode(u, ladder[i], sq, cq, o);
		if (ret != -EINVAL)
			return ret; /* 0, or ENOSYS/EPERM/ENOMEM: no retry */
	}
	return ret;
}

static int u_init(struct ur_loop *loop, const struct ur_loop_opts *o)
{
	struct uloop *u = U(loop);
	int ret = setup_ring(u, o);

	if (ret < 0)
		return ret;
	u->spin_us = o->spin_us ? o->spin_us : 50;
	(void)io_uring_ring_dontfork(&u->ring); /* best effort */
	u->ring.ring_fd = ur__fd_off_stdio(u->ring.ring_fd);
	u->ring.enter_ring_fd = u->ring.ring_fd;
	(void)io_uring_register_ring_fd(&u->ring); /* optional: cheaper enter */
	u->probe = io_uring_get_probe_ring(&u->ring);
	if (o->direct_files > 0) {
		ret = io_uring_register_files_sparse(&u->ring, o->direct_files);
		if (ret < 0) {
			if (u->probe != NULL)
				io_uring_free_probe(u->probe);
			io_uring_queue_exit(&u->ring);
			return ret;
		}
	}
	return 0;
}

/*
 * ---------------------------------------------------------------------
 * Submission
 * ---------------------------------------------------------------------
 */

static void dispatch_cqe(struct ur_loop *loop, uint64_t user_data,
			 int32_t res, uint32_t flags);

/* Copy completions out of the CQ into u->held without dispatching. */
static int hold_cqes(struct uloop *u)
{
	struct io_uring_cqe *cqes[REAP_BATCH];
	unsigned n;

	(void)io_uring_get_events(&u->ring); /* flush kernel overflow */
	while ((n = io_uring_peek_batch_cqe(&u->ring, cqes, REAP_BATCH))) {
		if (u->held_n + n > u->held_cap) {
			size_t cap = (u->held_cap + n) * 2;
			struct held_cqe *h = realloc(u->held, cap * sizeof(*h));

			if (h == NULL)
				return -ENOMEM;
			u->held = h;
			u->held_cap = cap;
		}
		for (unsigned i = 0; i < n; i++) {
			struct held_cqe *c = &u->held[u->held_n++];

			c->user_data = cqes[i]->user_data;
			c->res = cqes[i]->res;
			c->flags = cqes[i]->flags;
		}
		io_uring_cq_advance(&u->ring, n);
	}
	return 0;
}

/* Forget scratch timespecs once the kernel has consumed every SQE. */
static void submitted(struct uloop *u)
{
	if (io_uring_sq_ready(&u->ring) == 0) {
		u->ts_used = 0;
		u->base.nowake = 0; /* those ops are the kernel's now */
	}
}

/* Submit until the SQ is empty, holding completions on -EBUSY. */
static int sq_flush(struct uloop *u)
{
	while (io_uring_sq_ready(&u->ring) > 0) {
		int ret = io_uring_submit(&u->ring);

		u->base.st.enters++;
		if (ret >= 0) {
			u->base.st.submits++;
			continue;
		}
		if (ret == -EBUSY || ret == -EAGAIN) {
			/* The kernel holds completions we have not reaped
			 * (FEAT_NODROP): take them out, dispatch later. */
			u->base.st.cq_overflow++;
			ret = hold_cqes(u);
			if (ret < 0)
				return ret;
			continue;
		}
		if (ret == -EINTR)
			continue;
		return ret;
	}
	submitted(u);
	return 0;
}

/*
 * An SQE, or NULL with *err: a full SQ is submitted and, while the kernel
 * refuses (-EBUSY: completions it holds for us), the CQ is drained into
 * u->held first. The caller must fill it before the next call.
 */
static struct io_uring_sqe *sqe_get(struct uloop *u, int *err)
{
	struct io_uring_sqe *sqe;

	while ((sqe = io_uring_get_sqe(&u->ring)) == NULL) {
		u->base.st.sq_full++;
		*err = sq_flush(u);
		if (*err < 0)
			return NULL;
	}
	return sqe;
}

/*
 * A timespec holding ns that stays valid until the SQ is next submitted.
 * u_start() makes room before it takes its SQE (a flush in between would
 * submit the SQE unfilled), so there always is one here.
 */
static struct __kernel_timespec *ts_scratch(struct uloop *u, uint64_t ns)
{
	struct __kernel_timespec *ts;

	ur_assert(u->ts_used < TS_SCRATCH);
	ts = &u->ts_scratch[u->ts_used++];
	ts->tv_sec = (long long)(ns / 1000000000);
	ts->tv_nsec = (long long)(ns % 1000000000);
	return ts;
}

static bool needs_ts(uint8_t opcode)
{
	return opcode == UR__TIMEOUT || opcode == UR__TIMER ||
	       opcode == UR__TIMER_UPDATE;
}

/* Direct descriptors travel as UR_FIXED(slot): point sqe at the slot. */
static void sqe_set_fd(struct io_uring_sqe *sqe, int fd)
{
	if (UR_IS_FIXED(fd)) {
		sqe->fd = (int)UR_SLOT(fd);
		sqe->flags |= IOSQE_FIXED_FILE;
	}
}

static unsigned clock_flags(clockid_t clock)
{
	switch (clock) {
	case CLOCK_REALTIME:
		return IORING_TIMEOUT_REALTIME;
	case CLOCK_BOOTTIME:
		return IORING_TIMEOUT_BOOTTIME;
	default:
		return 0;
	}
}

/* Fill sqe for one of the ops on a file descriptor. */
static int prep_io(struct uloop *u, struct io_uring_sqe *sqe, struct ur_op *op,
		   const struct ur__req *r)
{
	switch (r->opcode) {
	case UR__RECV:
		io_uring_prep_recv(sqe, r->fd, r->buf, r->len, r->flags);
		break;
	case UR__SEND:
		io_uring_prep_send(sqe, r->fd, r->buf, r->len, r->flags);
		break;
	case UR__SENDMSG:
		io_uring_prep_sendmsg(sqe, r->fd, r->buf, (unsigned)r->flags);
		break;
	case UR__READ:
		io_uring_prep_read(sqe, r->fd, r->buf, (unsigned)r->len,
				   (uint64_t)r->off);
		break;
	case UR__WRITE:
		io_uring_prep_write(sqe, r->fd, r->buf, (unsigned)r->len,
				    (uint64_t)r->off);
		break;
	case UR__WRITEV:
		io_uring_prep_writev(sqe, r->fd, r->buf, (unsigned)r->len,
				     (uint64_t)r->off);
		break;
	case UR__ACCEPT:
		if (r->uflags & UR__REQ_DIRECT)
			io_uring_prep_accept_direct(
				sqe, r->fd, r->buf, (socklen_t *)r->buf2,
				r->flags, IORING_FILE_INDEX_ALLOC - 1);
		else
			io_uring_prep_accept(sqe, r->fd, r->buf,
					     (socklen_t *)r->buf2, r->flags);
		break;
	case UR__ACCEPT_MULTI:
		if (r->uflags & UR__REQ_DIRECT)
			io_uring_prep_multishot_accept_direct(
				sqe, r->fd, NULL, NULL, r->flags);
		else
			io_uring_prep_multishot_accept(sqe, r->fd, NULL, NULL,
						       r->flags);
		break;
	case UR__CONNECT:
		io_uring_prep_connect(sqe, r->fd, r->buf, (socklen_t)r->len);
		break;
	case UR__POLL:
		io_uring_prep_poll_add(sqe, r->fd, r->uflags);
		break;
	case UR__FSYNC:
		io_uring_prep_fsync(sqe, r->fd, r->uflags);
		break;
	case UR__RECV_PBUF:
	case UR__READ_PBUF:
	case UR__RECV_MULTI:
		if (r->opcode == UR__READ_PBUF) {
			io_uring_prep_read(sqe, r->fd, NULL,
					   (unsigned)r->br->buf_size,
					   (uint64_t)-1);
		} else if (r->opcode == UR__RECV_MULTI) {
			io_uring_prep_recv_multishot(sqe, r->fd, NULL, 0,
						     r->flags);
		} else {
			io_uring_prep_recv(sqe, r->fd, NULL, r->br->buf_size,
					   r->flags);
			if (r->uflags & UR__REQ_POLL_FIRST)
				sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
		}
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = r->br->bgid;
		break;
	case UR__SPLICE: {
		const struct ur__splice *sp = r->buf;
		unsigned flags = r->uflags;
		int in = sp->fd_in;

		if (UR_IS_FIXED(in)) {
			in = (int)UR_SLOT(in);
			flags |= SPLICE_F_FD_IN_FIXED;
		}
		/* fd_out is the SQE's own fd: sqe_set_fd() below. */
		io_uring_prep_splice(sqe, in, sp->off_in, r->fd, sp->off_out,
				     (unsigned)r->len, flags);
		break;
	}
	case UR__CANCEL_FD: {
		unsigned flags = IORING_ASYNC_CANCEL_ALL;
		int fd = r->fd;

		if (UR_IS_FIXED(fd)) {
			fd = (int)UR_SLOT(fd);
			flags |= IORING_ASYNC_CANCEL_FD_FIXED;
		}
		io_uring_prep_cancel_fd(sqe, fd, flags);
		return 0; /* the fd is the cancel's operand, not a file */
	}
	case UR__FILES_UPDATE:
		/* The kernel writes the slot it allocates over the fd. */
		op->ur__fd = r->fd;
		io_uring_prep_files_update(sqe, &op->ur__fd, 1,
					   (int)IORING_FILE_INDEX_ALLOC);
		return 0;
	default:
		(void)u;
		return -EINVAL;
	}
	sqe_set_fd(sqe, r->fd);
	return 0;
}

static int u_start(struct ur_loop *loop, struct ur_op *op,
		   const struct ur__req *r)
{
	struct uloop *u = U(loop);
	struct __kernel_timespec *ts;
	struct io_uring_sqe *sqe;
	int err = 0;

	if (needs_ts(r->opcode) && u->ts_used == TS_SCRATCH) {
		err = sq_flush(u);
		if (err < 0)
			return err;
	}
	sqe = sqe_get(u, &err); /* a flush here frees every scratch ts */
	if (sqe == NULL)
		return err;
	switch (r->opcode) {
	case UR__NOP:
		io_uring_prep_nop(sqe);
		break;
	case UR__TIMEOUT:
		ts = ts_scratch(u, r->ns);
		io_uring_prep_timeout(sqe, ts, 0, 0);
		break;
	case UR__TIMER:
		/*
		 * A deadline already passed completes through a NOP: an
		 * expired hrtimer costs a timer interrupt (about 16 us on
		 * this VM) for nothing. timer.c treats both CQEs alike, and
		 * an update or remove aimed at the NOP finds nothing
		 * (-ENOENT), which its rules already cover.
		 */
		if (r->ns <= ur_now_ns((clockid_t)r->uflags)) {
			io_uring_prep_nop(sqe);
			break;
		}
		ts = ts_scratch(u, r->ns);
		io_uring_prep_timeout(sqe, ts, 0,
				      IORING_TIMEOUT_ABS |
					      clock_flags((clockid_t)r->uflags));
		break;
	case UR__TIMER_UPDATE:
		ts = ts_scratch(u, r->ns);
		io_uring_prep_timeout_update(
			sqe, ts, (uint64_t)(uintptr_t)r->target,
			IORING_TIMEOUT_ABS | clock_flags((clockid_t)r->uflags));
		break;
	case UR__TIMER_REMOVE:
		io_uring_prep_timeout_remove(
			sqe, (uint64_t)(uintptr_t)r->target, 0);
		break;
	case UR__CANCEL:
		io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)r->target, 0);
		break;
	case UR__CLOSE:
		if (UR_IS_FIXED(r->fd))
			io_uring_prep_close_direct(sqe, UR_SLOT(r->fd));
		else
			io_uring_prep_close(sqe, r->fd);
		break;
	case UR__OPENAT:
		io_uring_prep_openat(sqe, r->fd, r->buf, r->flags,
				     (mode_t)r->len);
		break;
	case UR__RENAMEAT:
		io_uring_prep_renameat(sqe, r->fd, r->buf, r->fd2, r->buf2,
				       r->uflags);
		break;
	case UR__UNLINKAT:
		io_uring_prep_unlinkat(sqe, r->fd, r->buf, r->flags);
		break;
	case UR__LINKAT:
		io_uring_prep_linkat(sqe, r->fd, r->buf, r->fd2, r->buf2,
				     r->flags);
		break;
	case UR__MKDIRAT:
		io_uring_prep_mkdirat(sqe, r->fd, r->buf, (mode_t)r->len);
		break;
	default:
		err = prep_io(u, sqe, op, r);
		if (err < 0)
			goto fail;
		break;
	}
	if (op == NULL) {
		io_uring_sqe_set_data64(sqe, UD_IGNORE);
		return 0;
	}
	ur__op_arm(loop, op, r->opcode);
	io_uring_sqe_set_data(sqe, op);
	return 0;

fail:
	/* Give the SQE back as a NOP nobody waits for. */
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data64(sqe, UD_IGNORE);
	return err;
}

/*
 * ---------------------------------------------------------------------
 * Completion
 * ---------------------------------------------------------------------
 */

static void dispatch_cqe(struct ur_loop *loop, uint64_t user_data,
			 int32_t res, uint32_t flags)
{
	struct ur_op *op;

	if (user_data == UD_IGNORE)
		return;
	if (user_data == UD_POST) {
		loop->st.cqes++;
		ur__run_posts(loop);
		return;
	}
	op = (struct ur_op *)(uintptr_t)user_data;
	if (op->ur__opcode == UR__FILES_UPDATE && res > 0)
		res = op->ur__fd; /* the slot the kernel allocated */
	ur__op_complete(loop, op, res, flags);
}

/*
 * Dispatch held completions first: they are older than anything in the
 * CQ. A callback may hold more meanwhile: those go in a new array.
 */
static unsigned dispatch_held(struct ur_loop *loop)
{
	struct uloop *u = U(loop);
	unsigned n = 0;

	while (u->held_n > 0) {
		struct held_cqe *batch = u->held;
		size_t cnt = u->held_n, cap = u->held_cap;

		u->held = NULL;
		u->held_n = u->held_cap = 0;
		for (size_t i = 0; i < cnt; i++)
			dispatch_cqe(loop, batch[i].user_data, batch[i].res,
				     batch[i].flags);
		if (u->held == NULL) {
			u->held = batch;
			u->held_cap = cap;
		} else {
			free(batch);
		}
		n += (unsigned)cnt;
	}
	return n;
}

static bool u_has_ready(const struct ur_loop *loop)
{
	return CU(loop)->held_n > 0;
}

/*
 * Reap everything the CQ holds, in batches: each batch is copied out and
 * the CQ advanced once before dispatching, so callbacks may submit (and
 * even drain the CQ on -EBUSY) without disturbing the batch.
 */
static unsigned reap(struct uloop *u)
{
	struct io_uring_cqe *cqes[REAP_BATCH];
	struct held_cqe batch[REAP_BATCH];
	unsigned total = 0;
	unsigned n;

	for (;;) {
		n = io_uring_peek_batch_cqe(&u->ring, cqes, REAP_BATCH);
		if (n == 0) {
			if (!io_uring_cq_has_overflow(&u->ring))
				break;
			u->base.st.cq_overflow++;
			(void)io_uring_get_events(&u->ring);
			continue;
		}
		for (unsigned i = 0; i < n; i++) {
			batch[i].user_data = cqes[i]->user_data;
			batch[i].res = cqes[i]->res;
			batch[i].flags = cqes[i]->flags;
		}
		io_uring_cq_advance(&u->ring, n);
		for (unsigned i = 0; i < n; i++)
			dispatch_cqe(&u->base, batch[i].user_data,
				     batch[i].res, batch[i].flags);
		total += n;
	}
	return total;
}

/*
 * With DEFER_TASKRUN the kernel runs at most about 20 deferred task-work
 * items per enter (IO_LOCAL_TW_DEFAULT_MAX, 6.13+), so a busy turn may
 * leave completions behind. While a reap comes back that full, ask for
 * more events (bounded, so fibers still get to run).
 */
#define DEFER_TW_BATCH 20

static unsigned reap_all(struct uloop *u)
{
	unsigned total = reap(u);
	unsigned got = total;

	for (int i = 0;
	     i < 64 && u->base.mode == UR_MODE_DEFER && got >= DEFER_TW_BATCH;
	     i++) {
		(void)io_uring_get_events(&u->ring);
		u->base.st.enters++;
		got = reap(u);
		total += got;
	}
	return total;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

/*
 * SQPOLL: the poller thread submits; poll the CQ for a while before
 * sleeping in the kernel. True if completions came (the caller then only
 * needs a submit, which makes no syscall while the poller is awake).
 */
static bool spin_for_cqes(struct uloop *u, int64_t timeout_ns)
{
	uint64_t until;

	if (u->base.mode != UR_MODE_SQPOLL || timeout_ns == 0)
		return false;
	until = ur_now_ns(CLOCK_MONOTONIC) + (uint64_t)u->spin_us * 1000;
	if (timeout_ns > 0 && (uint64_t)timeout_ns < (uint64_t)u->spin_us * 1000)
		until = ur_now_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_ns;
	do {
		if (io_uring_cq_ready(&u->ring) > 0 ||
		    io_uring_cq_has_overflow(&u->ring))
			return true;
		cpu_relax();
	} while (ur_now_ns(CLOCK_MONOTONIC) < until);
	return false;
}

/* One io_uring_enter: submit what is queued, wait as asked. */
static int enter(struct uloop *u, int64_t timeout_ns)
{
	struct io_uring_cqe *cqe;
	unsigned want = 1;
	int ret;

	if (u->base.mode == UR_MODE_SQPOLL) {
		/* With a poller, a submit enters only to wake it up. */
		ret = io_uring_submit(&u->ring);
		submitted(u);
		if (ret < 0 && ret != -EBUSY && ret != -EAGAIN)
			return ret;
		if (io_uring_cq_ready(&u->ring) > 0 ||
		    spin_for_cqes(u, timeout_ns))
			return 0;
	}
	u->base.st.enters++;
	if (io_uring_sq_ready(&u->ring) > 0)
		u->base.st.submits++;
	/*
	 * ur_op_nowake(): with DEFER_TASKRUN only this thread posts CQEs, so
	 * an empty CQ now means every CQE counted by the wait comes from this
	 * submission or later; one from a nowake op is not a reason to wake.
	 * (submitted() forgets the count once the SQ is drained.)
	 */
	if (u->base.nowake > 0 && io_uring_cq_ready(&u->ring) == 0)
		want += u->base.nowake;
	if (timeout_ns == 0) {
		ret = io_uring_submit_and_get_events(&u->ring);
	} else if (timeout_ns < 0) {
		ret = io_uring_submit_and_wait(&u->ring, want);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = timeout_ns / 1000000000,
			.tv_nsec = timeout_ns % 1000000000,
		};

		ret = io_uring_submit_and_wait_timeout(&u->ring, &cqe, want,
						       &ts, NULL);
	}
	submitted(u);
	if (ret == -ETIME || ret == -EINTR || ret == -EAGAIN)
		return 0;
	if (ret == -EBUSY) {
		u->base.st.cq_overflow++;
		return 0; /* reap() below empties the CQ, then we resubmit */
	}
	return ret < 0 ? ret : 0;
}

static int u_wait(struct ur_loop *loop, int64_t timeout_ns)
{
	struct uloop *u = U(loop);
	int ret = enter(u, timeout_ns);

	if (ret < 0)
		return ret;
	return (int)reap_all(u);
}

/*
 * ---------------------------------------------------------------------
 * Capabilities, nowake, posts
 * ---------------------------------------------------------------------
 */

static bool has_op(const struct uloop *u, int opcode)
{
	if (u->probe == NULL)
		return opcode <= IORING_OP_LAST; /* no probe: assume */
	return io_uring_opcode_supported(u->probe, opcode) != 0;
}

static bool u_has(const struct ur_loop *loop, enum ur_cap cap)
{
	switch (cap) {
	case UR_CAP_DIRECT_FILES:
		return has_op(CU(loop), IORING_OP_FILES_UPDATE);
	case UR_CAP_MSG_RING:
		return has_op(CU(loop), IORING_OP_MSG_RING);
	case UR_CAP_NOWAKE:
		return loop->mode == UR_MODE_DEFER;
	case UR_CAP_KERNEL_BUFFERS:
		return true;
	}
	return false;
}

static void u_nowake(struct ur_loop *loop, struct ur_op *op)
{
	struct uloop *u = U(loop);

	if (loop->mode == UR_MODE_DEFER && io_uring_sq_ready(&u->ring) > 0 &&
	    !op->ur__nowake) {
		op->ur__nowake = 1;
		loop->nowake++;
	}
}

/* A CQE lands straight in the target's ring. */
static int u_post_wake(struct ur_loop *self, struct ur_loop *target)
{
	struct uloop *u = U(self);
	struct io_uring_sqe *sqe;
	int ret = 0;

	if (target->be != self->be || !has_op(u, IORING_OP_MSG_RING))
		return -EOPNOTSUPP;
	sqe = sqe_get(u, &ret);
	if (sqe == NULL)
		return ret;
	io_uring_prep_msg_ring(sqe, U(target)->ring.ring_fd, 0, UD_POST, 0);
	io_uring_sqe_set_data64(sqe, UD_IGNORE);
	ret = io_uring_submit(&u->ring);
	submitted(u);
	return ret < 0 ? ret : 0;
}

/*
 * NAPI busy polling (Linux 6.9): IORING_REGISTER_NAPI. Debian's liburing
 * 2.3 predates it, so the raw register call and the kernel's struct.
 */
#define REGISTER_NAPI	27
#define UNREGISTER_NAPI 28

struct napi_reg {
	uint32_t busy_poll_to;
	uint8_t prefer_busy_poll;
	uint8_t opcode; /* 0: register, dynamic tracking (6.13) */
	uint8_t pad[2];
	uint32_t op_param;
	uint32_t resv;
};

static int napi_register(struct uloop *u, unsigned op, struct napi_reg *reg)
{
	int ret = (int)syscall(__NR_io_uring_register, u->ring.ring_fd, op, reg,
			       1);

	return ret < 0 ? -errno : ret;
}

static int u_napi(struct ur_loop *loop, unsigned busy_poll_us, bool prefer)
{
	struct uloop *u = U(loop);
	struct napi_reg reg;
	int ret;

	memset(&reg, 0, sizeof(reg));
	if (busy_poll_us == 0) {
		if (!u->napi)
			return 0;
		ret = napi_register(u, UNREGISTER_NAPI, &reg);
		if (ret == 0)
			u->napi = false;
		return ret;
	}
	reg.busy_poll_to = busy_poll_us;
	reg.prefer_busy_poll = prefer;
	ret = napi_register(u, REGISTER_NAPI, &reg);
	if (ret == -EINVAL && !u->napi)
		return -EOPNOTSUPP; /* a kernel before 6.9 */
	if (ret == 0)
		u->napi = true;
	return ret;
}

/*
 * ---------------------------------------------------------------------
 * Provided buffers: a kernel buffer ring per bufring
 * ---------------------------------------------------------------------
 */

static void ring_add(struct ur_bufring *br, unsigned bid, int offset)
{
	io_uring_buf_ring_add(br->be, br->bufs + (size_t)bid * br->stride,
			      (unsigned)br->buf_size, (unsigned short)bid,
			      (int)br->mask, offset);
}

static int u_pbuf_init(struct ur_bufring *br)
{
	struct io_uring_buf_reg reg;
	long page = sysconf(_SC_PAGESIZE);
	size_t pg = page > 0 ? (size_t)page : 4096;
	void *p;
	int ret;

	br->be_len = (br->nbufs * sizeof(struct io_uring_buf) + pg - 1) / pg *
		     pg;
	p = mmap(NULL, br->be_len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	br->be = p;
	io_uring_buf_ring_init(br->be);
	for (unsigned i = 0; i < br->nbufs; i++)
		ring_add(br, i, (int)i);
	io_uring_buf_ring_advance(br->be, (int)br->nbufs);

	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)br->be;
	reg.ring_entries = br->nbufs;
	reg.bgid = br->bgid;
	ret = io_uring_register_buf_ring(&U(br->loop)->ring, &reg, 0);
	if (ret < 0) {
		munmap(br->be, br->be_len);
		br->be = NULL;
	}
	return ret;
}

static void u_pbuf_fini(struct ur_bufring *br)
{
	if (br->be == NULL)
		return;
	(void)io_uring_unregister_buf_ring(&U(br->loop)->ring, br->bgid);
	munmap(br->be, br->be_len);
	br->be = NULL;
}

static void u_pbuf_put(struct ur_bufring *br, unsigned bid)
{
	ring_add(br, bid, 0);
	io_uring_buf_ring_advance(br->be, 1);
}

/*
 * ---------------------------------------------------------------------
 * Teardown
 * ---------------------------------------------------------------------
 */

/*
 * Cancel everything the kernel still holds and wait (bounded) for those
 * completions: the kernel owns their buffers until then. They are
 * dropped, not dispatched.
 */
static void u_fini(struct ur_loop *loop)
{
	struct uloop *u = U(loop);

	if (loop->st.ops_inflight > 0) {
		struct __kernel_timespec ts = {.tv_nsec = 10 * 1000 * 1000};
		struct io_uring_cqe *cqe;
		struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);

		if (sqe == NULL) {
			(void)io_uring_submit(&u->ring);
			sqe = io_uring_get_sqe(&u->ring);
		}
		if (sqe != NULL) {
			io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
			io_uring_sqe_set_data64(sqe, UD_IGNORE);
		}
		(void)io_uring_submit(&u->ring);
		for (int i = 0; i < 100 && loop->st.ops_inflight > 0; i++) {
			if (io_uring_wait_cqe_timeout(&u->ring, &cqe, &ts) < 0)
				continue;
			if (cqe->user_data != UD_IGNORE &&
			    cqe->user_data != UD_POST &&
			    !(cqe->flags & IORING_CQE_F_MORE))
				loop->st.ops_inflight--;
			io_uring_cqe_seen(&u->ring, cqe);
		}
	}
	io_uring_queue_exit(&u->ring);
	if (u->probe != NULL)
		io_uring_free_probe(u->probe);
	free(u->held);
}

/* A forked child's copy: the ring is the parent's and not mapped here. */
static void u_forget(struct ur_loop *loop)
{
	close(U(loop)->ring.ring_fd);
}

const struct ur__backend ur__backend_uring = {
	.name = "io_uring",
	.id = UR_BACKEND_URING,
	.loop_size = sizeof(struct uloop),
	.init = u_init,
	.fini = u_fini,
	.forget = u_forget,
	.start = u_start,
	.wait = u_wait,
	.dispatch_ready = dispatch_held,
	.has_ready = u_has_ready,
	.has = u_has,
	.napi = u_napi,
	.nowake = u_nowake,
	.post_wake = u_post_wake,
	.pbuf_init = u_pbuf_init,
	.pbuf_fini = u_pbuf_fini,
	.pbuf_put = u_pbuf_put,
};
