/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/loop: ring setup, the loop turn, CQE dispatch and cross-thread posts.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* The thread's loop, and the loop whose turn is running on this thread. */
static __thread struct ur_loop *tls_loop;
static __thread struct ur_loop *tls_running;

/* user_data of the MSG_RING wakeup a ur_loop_post() sends. */
#define UR_UD_POST 1ULL

#define REAP_BATCH 64

void ur__assert_fail(const char *expr, const char *file, int line,
		     const char *func)
{
	fprintf(stderr, "ringprot: assertion failed: %s (%s:%d, %s)\n", expr,
		file, line, func);
	abort();
}

const char *ur_mode_name(enum ur_mode mode)
{
	switch (mode) {
	case UR_MODE_AUTO:
		return "auto";
	case UR_MODE_DEFER:
		return "defer-taskrun";
	case UR_MODE_COOP:
		return "coop-taskrun";
	case UR_MODE_PLAIN:
		return "plain";
	}
	return "?";
}

static unsigned mode_flags(enum ur_mode mode)
{
	switch (mode) {
	case UR_MODE_DEFER:
		return IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	case UR_MODE_COOP:
		return IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
	default:
		return 0;
	}
}

/*
 * Try one mode. SUBMIT_ALL (5.18) keeps a bad SQE from stalling the rest of
 * a batch; it is dropped again if the kernel does not know it.
 */
static int try_mode(struct ur_loop *loop, enum ur_mode mode, unsigned sq,
		    unsigned cq)
{
	unsigned extra[] = {IORING_SETUP_SUBMIT_ALL, 0};
	int ret = -EINVAL;

	for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++) {
		struct io_uring_params p;

		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE | mode_flags(mode) | extra[i];
		p.cq_entries = cq;
		ret = io_uring_queue_init_params(sq, &loop->ring, &p);
		if (ret == 0) {
			loop->mode = mode;
			loop->features = p.features;
			return 0;
		}
		if (ret != -EINVAL)
			return ret;
	}
	return ret;
}

static int setup_ring(struct ur_loop *loop, const struct ur_loop_opts *o)
{
	static const enum ur_mode ladder[] = {UR_MODE_DEFER, UR_MODE_COOP,
					      UR_MODE_PLAIN};
	unsigned sq = o->sq_entries ? o->sq_entries : 256;
	unsigned cq = o->cq_entries;
	int ret = -EINVAL;

	if (cq < 4 * sq)
		cq = 4 * sq;
	if (o->mode != UR_MODE_AUTO)
		return try_mode(loop, o->mode, sq, cq);
	for (size_t i = 0; i < sizeof(ladder) / sizeof(ladder[0]); i++) {
		ret = try_mode(loop, ladder[i], sq, cq);
		if (ret != -EINVAL)
			return ret; /* 0, or ENOSYS/EPERM/ENOMEM: no retry */
	}
	return ret;
}

/* Posts: an eventfd read stays armed so any thread can wake the loop. */
static void post_efd_cqe(struct ur_op *op);

static void arm_post_read(struct ur_loop *loop)
{
	struct io_uring_sqe *sqe = ur__sqe_get(loop);

	io_uring_prep_read(sqe, loop->post_efd, &loop->post_efd_buf,
			   sizeof(loop->post_efd_buf), 0);
	ur__op_arm(loop, &loop->post_op, sqe);
	loop->internal_ops++;
}

static void run_posts(struct ur_loop *loop)
{
	struct ur__post *p;

	pthread_mutex_lock(&loop->post_lock);
	p = loop->post_head;
	loop->post_head = NULL;
	loop->post_tail = &loop->post_head;
	pthread_mutex_unlock(&loop->post_lock);
	while (p != NULL) {
		struct ur__post *next = p->next;

		p->fn(p->arg);
		free(p);
		p = next;
	}
}

static void post_efd_cqe(struct ur_op *op)
{
	struct ur_loop *loop = op->data;

	loop->internal_ops--;
	run_posts(loop);
	if (op->res != -ECANCELED)
		arm_post_read(loop);
}

/*
 * fork(): the child would inherit the parent's rings, the same kernel
 * objects, and the forking thread's loop. Submitting to them from the
 * child would run ops in the parent's ring (or be refused: SINGLE_ISSUER)
 * and its completions could land in either. So every ring is made with
 * MADV_DONTFORK (the child has no mapping of it), and the child forgets
 * the loop and fiber it inherited: its first blocking call makes a fresh
 * loop (Cyrus's services open their streams after fork, as the uring
 * notes advise). A loop, stream or op made before the fork is the
 * parent's and must not be used in the child; ur_loop_free() of such a
 * loop only lets go of the child's copies and never touches the ring.
 */
static unsigned fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void forked_child(void)
{
	fork_gen++;
	tls_loop = NULL;
	tls_running = NULL;
	ur__fiber_forget();
}

static void atfork_init(void)
{
	(void)pthread_atfork(NULL, NULL, forked_child);
}

int ur__fd_off_stdio(int fd)
{
	int nfd;

	if (fd < 0 || fd > 2)
		return fd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (nfd < 0)
		return fd; /* no fd left: keep the low one, still working */
	close(fd);
	return nfd;
}

int ur_loop_new(const struct ur_loop_opts *opts, struct ur_loop **loop_out)
{
	struct ur_loop_opts o = {0};
	struct ur_loop *loop;
	int ret;

	if (opts != NULL)
		o = *opts;
	loop = calloc(1, sizeof(*loop));
	if (loop == NULL)
		return -ENOMEM;
	ret = setup_ring(loop, &o);
	if (ret < 0)
		goto out_free;
	loop->thread = pthread_self();
	(void)pthread_once(&atfork_once, atfork_init);
	loop->fork_gen = fork_gen;
	(void)io_uring_ring_dontfork(&loop->ring); /* best effort */
	loop->ring.ring_fd = ur__fd_off_stdio(loop->ring.ring_fd);
	loop->ring.enter_ring_fd = loop->ring.ring_fd;
	(void)io_uring_register_ring_fd(
		&loop->ring); /* optional: cheaper enter */
	loop->probe = io_uring_get_probe_ring(&loop->ring);
	if (o.direct_files > 0) {
		ret = io_uring_register_files_sparse(&loop->ring,
						     o.direct_files);
		if (ret < 0)
			goto out_ring;
		loop->direct_files = o.direct_files;
	}
	ur_list_init(&loop->timers);
	ur_list_init(&loop->tslots);
	ret = ur__fibers_init(loop, o.stack_size,
			      o.stack_pool_max ? o.stack_pool_max : 1024);
	if (ret < 0)
		goto out_ring;
	pthread_mutex_init(&loop->post_lock, NULL);
	loop->post_tail = &loop->post_head;
	loop->post_efd = ur__fd_off_stdio(eventfd(0, EFD_CLOEXEC));
	if (loop->post_efd < 0) {
		ret = -errno;
		goto out_fibers;
	}
	ur_op_init(&loop->post_op, post_efd_cqe, loop);
	arm_post_read(loop);
	if (tls_loop == NULL)
		tls_loop = loop;
	*loop_out = loop;
	return 0;

out_fibers:
	pthread_mutex_destroy(&loop->post_lock);
	ur__fibers_fini(loop);
out_ring:
	if (loop->probe != NULL)
		io_uring_free_probe(loop->probe);
	io_uring_queue_exit(&loop->ring);
out_free:
	free(loop);
	return ret;
}

/* Copy completions out of the CQ into loop->held without dispatching. */
static void hold_cqes(struct ur_loop *loop)
{
	struct io_uring_cqe *cqes[REAP_BATCH];
	unsigned n;

	(void)io_uring_get_events(&loop->ring); /* flush kernel overflow */
	while ((n = io_uring_peek_batch_cqe(&loop->ring, cqes, REAP_BATCH))) {
		if (loop->held_n + n > loop->held_cap) {
			size_t cap = (loop->held_cap + n) * 2;
			struct ur__cqe *h =
				realloc(loop->held, cap * sizeof(*h));

			ur_assert(h != NULL);
			loop->held = h;
			loop->held_cap = cap;
		}
		for (unsigned i = 0; i < n; i++) {
			struct ur__cqe *c = &loop->held[loop->held_n++];

			c->user_data = cqes[i]->user_data;
			c->res = cqes[i]->res;
			c->flags = cqes[i]->flags;
		}
		io_uring_cq_advance(&loop->ring, n);
	}
}

void ur__sq_flush(struct ur_loop *loop)
{
	while (io_uring_sq_ready(&loop->ring) > 0) {
		int ret = io_uring_submit(&loop->ring);

		loop->st.enters++;
		if (ret >= 0) {
			loop->st.submits++;
			continue;
		}
		if (ret == -EBUSY || ret == -EAGAIN) {
			/* The kernel holds completions we have not reaped
			 * (FEAT_NODROP): take them out, dispatch later. */
			loop->st.cq_overflow++;
			hold_cqes(loop);
			continue;
		}
		if (ret == -EINTR)
			continue;
		ur__assert_fail("io_uring_submit failed", __FILE__, __LINE__,
				strerror(-ret));
	}
	ur__submitted(loop);
}

struct io_uring_sqe *ur__sqe_get(struct ur_loop *loop)
{
	struct io_uring_sqe *sqe;

	while ((sqe = io_uring_get_sqe(&loop->ring)) == NULL) {
		loop->st.sq_full++;
		ur__sq_flush(loop);
	}
	return sqe;
}

void ur__op_arm(struct ur_loop *loop, struct ur_op *op,
		struct io_uring_sqe *sqe)
{
	ur_assert(op->ur__state != UR_OP_INFLIGHT);
	op->ur__loop = loop;
	op->ur__state = UR_OP_INFLIGHT;
	op->ur__opcode = sqe->opcode;
	op->ur__nowake = 0;
	op->res = 0;
	op->cqe_flags = 0;
	io_uring_sqe_set_data(sqe, op);
	loop->st.ops_inflight++;
}

void ur__cqe_dispatch(struct ur_loop *loop, uint64_t user_data, int32_t res,
		      uint32_t flags)
{
	struct ur_op *op;

	if (user_data == UR_UD_IGNORE)
		return;
	loop->st.cqes++;
	if (user_data == UR_UD_POST) {
		run_posts(loop);
		return;
	}
	op = (struct ur_op *)(uintptr_t)user_data;
	op->res = res;
	op->cqe_flags = flags;
	if (!(flags & IORING_CQE_F_MORE)) {
		op->ur__state = UR_OP_DONE;
		loop->st.ops_inflight--;
	}
	if (op->ur__bgid != 0)
		ur__bufring_cqe(loop,
				op); /* a provided buffer leaves the ring */
	if (op->fn != NULL) {
		op->fn(op); /* may free op: do not touch it afterwards */
	} else if (op->ur__waiter != NULL) {
		struct ur_fiber *f = op->ur__waiter;

		if (op->ur__state == UR_OP_DONE)
			op->ur__waiter = NULL;
		ur__fiber_make_runnable(f);
	}
}

/* Dispatch held completions first: they are older than anything in the CQ. */
static unsigned dispatch_held(struct ur_loop *loop)
{
	unsigned n = 0;

	while (loop->held_n > 0) {
		size_t cnt = loop->held_n;
		struct ur__cqe *batch = malloc(cnt * sizeof(*batch));

		ur_assert(batch != NULL);
		memcpy(batch, loop->held, cnt * sizeof(*batch));
		loop->held_n = 0;
		for (size_t i = 0; i < cnt; i++)
			ur__cqe_dispatch(loop, batch[i].user_data, batch[i].res,
					 batch[i].flags);
		free(batch);
		n += (unsigned)cnt;
	}
	return n;
}

/*
 * Reap everything the CQ holds, in batches: each batch is copied out and
 * the CQ advanced once before dispatching, so callbacks may submit (and
 * even drain the CQ on -EBUSY) without disturbing the batch.
 */
static unsigned reap(struct ur_loop *loop)
{
	struct io_uring_cqe *cqes[REAP_BATCH];
	struct ur__cqe batch[REAP_BATCH];
	unsigned total = 0;
	unsigned n;

	for (;;) {
		n = io_uring_peek_batch_cqe(&loop->ring, cqes, REAP_BATCH);
		if (n == 0) {
			if (!io_uring_cq_has_overflow(&loop->ring))
				break;
			loop->st.cq_overflow++;
			(void)io_uring_get_events(&loop->ring);
			continue;
		}
		for (unsigned i = 0; i < n; i++) {
			batch[i].user_data = cqes[i]->user_data;
			batch[i].res = cqes[i]->res;
			batch[i].flags = cqes[i]->flags;
		}
		io_uring_cq_advance(&loop->ring, n);
		for (unsigned i = 0; i < n; i++)
			ur__cqe_dispatch(loop, batch[i].user_data, batch[i].res,
					 batch[i].flags);
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
#define UR_DEFER_TW_BATCH 20

static unsigned reap_all(struct ur_loop *loop)
{
	unsigned total = reap(loop);
	unsigned got = total;

	for (int i = 0;
	     i < 64 && loop->mode == UR_MODE_DEFER && got >= UR_DEFER_TW_BATCH;
	     i++) {
		(void)io_uring_get_events(&loop->ring);
		loop->st.enters++;
		got = reap(loop);
		total += got;
	}
	return total;
}

static bool has_runnable(const struct ur_loop *loop)
{
	return !ur_list_empty(&loop->runq) || loop->held_n > 0;
}

/* One io_uring_enter: submit what is queued, wait as asked. */
static int enter(struct ur_loop *loop, int64_t timeout_ns)
{
	struct io_uring_cqe *cqe;
	unsigned want = 1;
	int ret;

	loop->st.enters++;
	if (io_uring_sq_ready(&loop->ring) > 0)
		loop->st.submits++;
	/*
	 * ur_op_nowake(): with DEFER_TASKRUN only this thread posts CQEs, so
	 * an empty CQ now means every CQE counted by the wait comes from this
	 * submission or later; one from a nowake op is not a reason to wake.
	 * (ur__submitted() forgets the count once the SQ is drained.)
	 */
	if (loop->nowake > 0 && io_uring_cq_ready(&loop->ring) == 0)
		want += loop->nowake;
	if (timeout_ns == 0 || has_runnable(loop)) {
		ret = io_uring_submit_and_get_events(&loop->ring);
	} else if (timeout_ns < 0) {
		ret = io_uring_submit_and_wait(&loop->ring, want);
	} else {
		struct __kernel_timespec ts = {
			.tv_sec = timeout_ns / 1000000000,
			.tv_nsec = timeout_ns % 1000000000,
		};

		ret = io_uring_submit_and_wait_timeout(&loop->ring, &cqe, want,
						       &ts, NULL);
	}
	ur__submitted(loop);
	if (ret == -ETIME || ret == -EINTR || ret == -EAGAIN)
		return 0;
	if (ret == -EBUSY) {
		loop->st.cq_overflow++;
		return 0; /* reap() below empties the CQ, then we resubmit */
	}
	return ret < 0 ? ret : 0;
}

int ur_loop_run_once(struct ur_loop *loop, int64_t timeout_ns)
{
	struct ur_loop *saved = tls_running;
	unsigned n;
	int ret;

	ur_assert(loop->current == NULL); /* never from a fiber */
	tls_running = loop;
	n = dispatch_held(loop);
	ur__fibers_run(loop);
	ret = enter(loop, n > 0 ? 0 : timeout_ns);
	if (ret == 0) {
		n += reap_all(loop);
		n += dispatch_held(loop);
		ur__fibers_run(loop);
	}
	tls_running = saved;
	return ret < 0 ? ret : (int)n;
}

static bool loop_alive(const struct ur_loop *loop)
{
	return loop->st.fibers_live > 0 ||
	       loop->st.ops_inflight > loop->internal_ops ||
	       loop->post_head != NULL;
}

int ur_loop_run(struct ur_loop *loop)
{
	loop->stop = false;
	while (!loop->stop && loop_alive(loop)) {
		int ret = ur_loop_run_once(loop, -1);

		if (ret < 0)
			return ret;
	}
	loop->stop = false;
	return 0;
}

void ur_loop_stop(struct ur_loop *loop)
{
	loop->stop = true;
}

enum ur_mode ur_loop_mode(const struct ur_loop *loop)
{
	return loop->mode;
}

bool ur_loop_has_op(const struct ur_loop *loop, int opcode)
{
	if (loop->probe == NULL)
		return opcode <= IORING_OP_LAST; /* no probe: assume */
	return io_uring_opcode_supported(loop->probe, opcode) != 0;
}

void ur_loop_stats(const struct ur_loop *loop, struct ur_loop_stats *out)
{
	*out = loop->st;
	out->ops_inflight = loop->st.ops_inflight - loop->internal_ops;
	out->timers_armed = loop->timers_armed;
}

void ur_loop_foreach_live(const struct ur_loop *loop, ur_live_fn *fn, void *arg)
{
	const struct ur_list *pos;

	ur__fibers_foreach_live(loop, fn, arg);
	ur_list_for_each(pos, &loop->timers) {
		const struct ur_timer *t =
			ur_container_of(pos, struct ur_timer, ur__link);

		fn("timer", t->ur__file, t->ur__line, arg);
	}
}

struct ur_loop *ur_loop_current(void)
{
	return tls_loop;
}

void ur_loop_bind(struct ur_loop *loop)
{
	tls_loop = loop;
}

int ur_loop_get(struct ur_loop **loop_out)
{
	if (tls_loop == NULL) {
		struct ur_loop *loop;
		int ret = ur_loop_new(NULL, &loop);

		if (ret < 0)
			return ret;
		tls_loop = loop;
	}
	*loop_out = tls_loop;
	return 0;
}

struct ur_loop *ur__loop_for_call(int *err)
{
	struct ur_loop *loop;

	if (tls_running != NULL)
		return tls_running;
	*err = ur_loop_get(&loop);
	return *err < 0 ? NULL : loop;
}

void ur__submit_cancel(struct ur_loop *loop, struct ur_op *target)
{
	struct io_uring_sqe *sqe = ur__sqe_get(loop);

	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)target, 0);
	io_uring_sqe_set_data64(sqe, UR_UD_IGNORE);
}

int ur_loop_post(struct ur_loop *loop, ur_post_fn *fn, void *arg)
{
	struct ur__post *p = malloc(sizeof(*p));
	struct ur_loop *self = tls_loop;
	ssize_t wr;
	int ret;
	uint64_t one = 1;

	if (p == NULL)
		return -ENOMEM;
	p->fn = fn;
	p->arg = arg;
	p->next = NULL;
	pthread_mutex_lock(&loop->post_lock);
	*loop->post_tail = p;
	loop->post_tail = &p->next;
	pthread_mutex_unlock(&loop->post_lock);

	if (self == loop)
		return 0; /* runs at our own next turn */
	if (self != NULL && pthread_equal(self->thread, pthread_self()) &&
	    ur_loop_has_op(self, IORING_OP_MSG_RING)) {
		struct io_uring_sqe *sqe = ur__sqe_get(self);

		/* A CQE lands straight in the target's ring. */
		io_uring_prep_msg_ring(sqe, loop->ring.ring_fd, 0, UR_UD_POST,
				       0);
		io_uring_sqe_set_data64(sqe, UR_UD_IGNORE);
		ret = io_uring_submit(&self->ring);
		ur__submitted(self);
		if (ret >= 0)
			return 0;
	}
	do {
		wr = write(loop->post_efd, &one, sizeof(one));
	} while (wr < 0 && errno == EINTR);
	return 0;
}

/*
 * A loop a forked child inherited: its ring is the parent's (and not
 * mapped here). Close the child's copies of its fds; the memory it
 * points at (stacks, buffers, records) stays, a copy that is the child's
 * only until it exits or execs.
 */
static void inherited_free(struct ur_loop *loop)
{
	close(loop->ring.ring_fd);
	close(loop->post_efd);
	if (tls_loop == loop)
		tls_loop = NULL;
}

void ur_loop_free(struct ur_loop **loopp)
{
	struct ur_loop *loop = *loopp;
	struct ur__post *p;

	if (loop == NULL)
		return;
	*loopp = NULL;
	if (loop->fork_gen != fork_gen) {
		inherited_free(loop);
		return;
	}
	/*
	 * Cancel everything the kernel still holds and wait (bounded) for
	 * those completions: the kernel owns their buffers until then. They
	 * are dropped, not dispatched: their owners are going away.
	 */
	if (loop->st.ops_inflight > 0) {
		struct io_uring_sqe *sqe = ur__sqe_get(loop);
		struct __kernel_timespec ts = {.tv_nsec = 10 * 1000 * 1000};
		struct io_uring_cqe *cqe;

		io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY);
		io_uring_sqe_set_data64(sqe, UR_UD_IGNORE);
		(void)io_uring_submit(&loop->ring);
		for (int i = 0; i < 100 && loop->st.ops_inflight > 0; i++) {
			if (io_uring_wait_cqe_timeout(&loop->ring, &cqe, &ts) <
			    0)
				continue;
			if (cqe->user_data != UR_UD_IGNORE &&
			    cqe->user_data != UR_UD_POST &&
			    !(cqe->flags & IORING_CQE_F_MORE))
				loop->st.ops_inflight--;
			io_uring_cqe_seen(&loop->ring, cqe);
		}
	}
	ur__fibers_fini(loop);
	ur__timers_fini(loop);
	ur__bufrings_fini(loop);
	io_uring_queue_exit(&loop->ring);
	if (loop->probe != NULL)
		io_uring_free_probe(loop->probe);
	close(loop->post_efd);
	while ((p = loop->post_head) != NULL) {
		loop->post_head = p->next;
		free(p);
	}
	pthread_mutex_destroy(&loop->post_lock);
	free(loop->held);
	if (tls_loop == loop)
		tls_loop = NULL;
	if (tls_running == loop)
		tls_running = NULL;
	free(loop);
}
