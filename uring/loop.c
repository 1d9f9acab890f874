/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * uring/loop: the loop turn, completion dispatch, cross-thread posts and
 * the choice of backend. Nothing here touches io_uring or epoll: that is
 * backend-uring.c's and backend-epoll.c's.
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
	case UR_MODE_SQPOLL:
		return "sqpoll";
	}
	return "?";
}

const char *ur_backend_name(enum ur_backend backend)
{
	switch (backend) {
	case UR_BACKEND_AUTO:
		return "auto";
	case UR_BACKEND_URING:
		return ur__backend_uring.name;
	case UR_BACKEND_EPOLL:
		return ur__backend_epoll.name;
	}
	return "?";
}

/* Posts: an eventfd read stays armed so any thread can wake the loop. */
static void post_efd_cqe(struct ur_op *op);

static int arm_post_read(struct ur_loop *loop)
{
	int ret = ur_read_start(loop, &loop->post_op, loop->post_efd,
				&loop->post_efd_buf, sizeof(loop->post_efd_buf),
				-1);

	if (ret < 0)
		return ret;
	loop->internal_ops++;
	return 0;
}

/*
 * Re-arming from the retry list: a post written meanwhile is still
 * counted in the eventfd, so the read completes at once.
 */
static int post_rearm(struct ur__rearm *r)
{
	return arm_post_read(ur_container_of(r, struct ur_loop, post_rearm));
}

void ur__rearm_later(struct ur_loop *loop, struct ur__rearm *r)
{
	if (!ur_list_linked(&r->link))
		ur_list_add_tail(&loop->rearm, &r->link);
}

void ur__rearm_forget(struct ur__rearm *r)
{
	if (ur_list_linked(&r->link))
		ur_list_del(&r->link);
}

/* One try for each queued re-arm; those refused again stay queued. */
static void rearm_retry(struct ur_loop *loop)
{
	struct ur_list again;
	struct ur_list *n;

	ur_list_init(&again);
	while ((n = ur_list_pop(&loop->rearm)) != NULL) {
		struct ur__rearm *r =
			ur_container_of(n, struct ur__rearm, link);

		if (r->fn(r) < 0)
			ur_list_add_tail(&again, n);
	}
	while ((n = ur_list_pop(&again)) != NULL)
		ur_list_add_tail(&loop->rearm, n);
}

void ur__run_posts(struct ur_loop *loop)
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
	ur__run_posts(loop);
	if (op->res != -ECANCELED && arm_post_read(loop) < 0)
		ur__rearm_later(loop, &loop->post_rearm);
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

bool ur__loop_inherited(const struct ur_loop *loop)
{
	return loop->fork_gen != fork_gen;
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

/*
 * Which backends to try, in order: RINGPROT_BACKEND=uring|io_uring|epoll
 * decides an AUTO choice; a forced one (opts.backend, or a ring mode)
 * is tried alone.
 */
static int backend_order(const struct ur_loop_opts *o,
			 const struct ur__backend *order[2])
{
	enum ur_backend want = o->backend;
	const char *env;

	if (want == UR_BACKEND_AUTO && o->mode != UR_MODE_AUTO)
		want = UR_BACKEND_URING;
	if (want == UR_BACKEND_AUTO) {
		env = getenv("RINGPROT_BACKEND");
		if (env == NULL || *env == '\0' || strcmp(env, "auto") == 0)
			want = UR_BACKEND_AUTO;
		else if (strcmp(env, "uring") == 0 ||
			 strcmp(env, "io_uring") == 0)
			want = UR_BACKEND_URING;
		else if (strcmp(env, "epoll") == 0)
			want = UR_BACKEND_EPOLL;
		else
			return -EINVAL;
	}
	switch (want) {
	case UR_BACKEND_URING:
		order[0] = &ur__backend_uring;
		return 1;
	case UR_BACKEND_EPOLL:
		order[0] = &ur__backend_epoll;
		return 1;
	case UR_BACKEND_AUTO:
		break;
	}
	order[0] = &ur__backend_uring;
	order[1] = &ur__backend_epoll;
	return 2;
}

/* Make the loop on backend be: 0 or -errno, *loop_out set on success. */
static int loop_new_on(const struct ur__backend *be,
		       const struct ur_loop_opts *o, struct ur_loop **loop_out)
{
	struct ur_loop *loop;
	int ret;

	loop = calloc(1, be->loop_size);
	if (loop == NULL)
		return -ENOMEM;
	loop->be = be;
	loop->thread = pthread_self();
	(void)pthread_once(&atfork_once, atfork_init);
	loop->fork_gen = fork_gen;
	ur_list_init(&loop->timers);
	ur_list_init(&loop->tslots);
	ur_list_init(&loop->rearm);
	ur_list_init(&loop->post_rearm.link);
	loop->post_rearm.fn = post_rearm;
	pthread_mutex_init(&loop->post_lock, NULL);
	loop->post_tail = &loop->post_head;
	loop->post_efd = -1;
	ret = be->init(loop, o);
	if (ret < 0)
		goto out_free;
	loop->direct_files = o->direct_files;
	loop->shared_bufs = o->shared_bufs ? o->shared_bufs : 256;
	loop->shared_buf_size = o->shared_buf_size ? o->shared_buf_size : 16384;
	ret = ur__fibers_init(loop, o->stack_size,
			      o->stack_pool_max ? o->stack_pool_max : 1024);
	if (ret < 0)
		goto out_be;
	loop->post_efd = ur__fd_off_stdio(eventfd(0, EFD_CLOEXEC));
	if (loop->post_efd < 0) {
		ret = -errno;
		goto out_fibers;
	}
	ur_op_init(&loop->post_op, post_efd_cqe, loop);
	ret = arm_post_read(loop);
	if (ret < 0)
		goto out_efd;
	*loop_out = loop;
	return 0;

out_efd:
	close(loop->post_efd);
out_fibers:
	ur__fibers_fini(loop);
out_be:
	be->fini(loop);
out_free:
	pthread_mutex_destroy(&loop->post_lock);
	free(loop);
	return ret;
}

int ur_loop_new(const struct ur_loop_opts *opts, struct ur_loop **loop_out)
{
	struct ur_loop_opts o = {0};
	const struct ur__backend *order[2];
	int n, ret = -EINVAL;

	if (opts != NULL)
		o = *opts;
	n = backend_order(&o, order);
	for (int i = 0; i < n; i++) {
		ret = loop_new_on(order[i], &o, loop_out);
		/* Only a refusal of io_uring itself falls back. */
		if (ret == 0 || (ret != -ENOSYS && ret != -EPERM))
			break;
	}
	if (ret == 0 && tls_loop == NULL)
		tls_loop = *loop_out;
	return ret;
}

void ur__op_arm(struct ur_loop *loop, struct ur_op *op, uint8_t opcode)
{
	ur_assert(op->ur__state != UR_OP_INFLIGHT);
	op->ur__loop = loop;
	op->ur__state = UR_OP_INFLIGHT;
	op->ur__opcode = opcode;
	op->ur__nowake = 0;
	op->ur__bflags = 0;
	op->res = 0;
	op->ur__flags = 0;
	loop->st.ops_inflight++;
}

void ur__op_complete(struct ur_loop *loop, struct ur_op *op, int32_t res,
		     uint32_t flags)
{
	loop->st.cqes++;
	op->res = res;
	op->ur__flags = flags;
	if (!(flags & UR__F_MORE)) {
		op->ur__state = UR_OP_DONE;
		loop->st.ops_inflight--;
	}
	if (op->ur__bgid != 0) {
		if (res == -ENOBUFS)
			loop->st.enobufs++;
		ur__bufring_cqe(loop,
				op); /* a provided buffer leaves the ring */
	}
	if (op->fn != NULL) {
		op->fn(op); /* may free op: do not touch it afterwards */
	} else if (op->ur__waiter != NULL) {
		struct ur_fiber *f = op->ur__waiter;

		if (op->ur__state == UR_OP_DONE)
			op->ur__waiter = NULL;
		ur__fiber_make_runnable(f);
	}
}

/*
 * Posts made from the loop's own thread (a fiber, a callback) wake no
 * one: there is no CQE for them, and a turn that went to sleep with one
 * queued slept until some other completion came (an IMAP IDLE notified
 * by an LMTP delivery on the same worker stayed asleep: int-imapd-mail
 * under load). Run them here, before the turn decides to wait.
 */
static unsigned run_self_posts(struct ur_loop *loop)
{
	if (!loop->self_posted)
		return 0;
	loop->self_posted = false;
	ur__run_posts(loop);
	ur__fibers_run(loop);
	return 1;
}

static bool has_runnable(const struct ur_loop *loop)
{
	return !ur_list_empty(&loop->runq) || loop->be->has_ready(loop);
}

/*
 * One turn. w (may be NULL): a waiter driving the loop outside any
 * fiber; a fiber that woke it in this turn makes the turn not sleep.
 */
static int loop_turn(struct ur_loop *loop, int64_t timeout_ns,
		     const struct ur_waiter *w)
{
	struct ur_loop *saved = tls_running;
	unsigned n;
	int ret;

	ur_assert(loop->current == NULL); /* never from a fiber */
	tls_running = loop;
	if (!ur_list_empty(&loop->rearm)) {
		rearm_retry(loop);
		if (!ur_list_empty(&loop->rearm) &&
		    (timeout_ns < 0 || timeout_ns > UR__REARM_NS))
			timeout_ns = UR__REARM_NS;
	}
	n = loop->be->dispatch_ready(loop);
	ur__fibers_run(loop);
	n += run_self_posts(loop);
	if (n > 0 || has_runnable(loop) ||
	    (w != NULL && (w->ur__woken || w->ur__timed_out)))
		timeout_ns = 0;
	ret = loop->be->wait(loop, timeout_ns);
	if (ret >= 0) {
		n += (unsigned)ret;
		n += loop->be->dispatch_ready(loop);
		ur__fibers_run(loop);
	}
	tls_running = saved;
	return ret < 0 ? ret : (int)n;
}

int ur_loop_run_once(struct ur_loop *loop, int64_t timeout_ns)
{
	return loop_turn(loop, timeout_ns, NULL);
}

int ur__loop_turn_for(struct ur_loop *loop, const struct ur_waiter *w)
{
	return loop_turn(loop, -1, w);
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

enum ur_backend ur_loop_backend(const struct ur_loop *loop)
{
	return loop->be->id;
}

bool ur_loop_has(const struct ur_loop *loop, enum ur_cap cap)
{
	return loop->be->has(loop, cap);
}

void ur__clock_was_set(struct ur_loop *loop)
{
	if (loop->be->clock_was_set != NULL)
		loop->be->clock_was_set(loop);
}

int ur_loop_napi(struct ur_loop *loop, unsigned busy_poll_us,
		 bool prefer_busy_poll)
{
	return loop->be->napi(loop, busy_poll_us, prefer_busy_poll);
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

int ur__submit_cancel(struct ur_loop *loop, struct ur_op *target)
{
	return loop->be->start(loop, NULL,
			       &(const struct ur__req){.opcode = UR__CANCEL,
						       .target = target});
}

int ur_loop_post(struct ur_loop *loop, ur_post_fn *fn, void *arg)
{
	struct ur__post *p = malloc(sizeof(*p));
	struct ur_loop *self = tls_loop;
	ssize_t wr;
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

	if (self == loop) {
		/* Our own thread: the next turn runs it, without a wake-up
		 * CQE (loop_turn checks self_posted). */
		loop->self_posted = true;
		return 0;
	}
	if (self != NULL && pthread_equal(self->thread, pthread_self()) &&
	    self->be->post_wake != NULL && self->be->post_wake(self, loop) == 0)
		return 0;
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
	loop->be->forget(loop);
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
	 * Whatever is still in flight is dropped, not dispatched: its owners
	 * are going away. The backend waits (bounded) where the kernel owns
	 * buffers until a completion.
	 */
	loop->be->fini(loop);
	ur__fibers_fini(loop);
	ur__timers_fini(loop);
	ur__bufrings_fini(loop);
	close(loop->post_efd);
	while ((p = loop->post_head) != NULL) {
		loop->post_head = p->next;
		free(p);
	}
	pthread_mutex_destroy(&loop->post_lock);
	if (tls_loop == loop)
		tls_loop = NULL;
	if (tls_running == loop)
		tls_running = NULL;
	free(loop);
}
