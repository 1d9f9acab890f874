/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/fiber: stackful fibers on a loop: spawn, park, wake, join, cancel. */
#include "fiber.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

#if defined(__SANITIZE_ADDRESS__)
#define FIBER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FIBER_ASAN 1
#endif
#endif
#ifndef FIBER_ASAN
#define FIBER_ASAN 0
#endif
#if FIBER_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

enum fiber_state {
	F_RUNNABLE, /* on loop->runq (or the batch ur__fibers_run took) */
	F_RUNNING,
	F_PARKED,
	F_DONE, /* fn returned: stack released, record kept for join */
};

/*
 * A pending ur_fiber_join(), on the joiner's stack (or the caller's,
 * outside a fiber). The joined fiber only ever writes here, so the joiner
 * never touches a fiber that detach may have freed meanwhile.
 */
struct join_wait {
	struct ur_waiter w; /* parks the joining fiber, or drives the loop */
	bool done;
	bool detached;
};

/*
 * Kept small: a parked fiber costs this record, a struct ur__stack and
 * the stack pages it touched (usually one).
 */
struct ur_fiber {
	struct ur__ctx ctx;
	struct ur__ctx *resumer; /* switched back to on park/yield/exit */
	struct ur_loop *loop;
	struct ur__stack *stack; /* NULL once returned */
	ur_fiber_fn *fn;
	void *arg;
	struct ur_list run_link;
	struct ur_list all_link; /* loop->fibers */
	struct ur_op *wait_op;	 /* parked on this op (NULL: plain park) */
	struct ur_op *cancel_op; /* a cancel was submitted for this op */
	struct join_wait *join;
	const char *name;
	const char *file;
	int line;
	int ret;
	uint8_t state;
	bool detached;
	bool cancelled;
	bool woken;	   /* ur_fiber_wake() since ur_fiber_park() began */
	bool custom_stack; /* larger than the pool's: mapped for this fiber */
#if FIBER_ASAN
	void *asan_fake;	  /* ASan's fake stack while switched out */
	const void *asan_from_lo; /* the resumer's stack, as ASan saw it */
	size_t asan_from_size;
#endif
};

/* The fiber running on this thread, whichever loop it belongs to. */
static __thread struct ur_fiber *tls_self;

/*
 * ASan must hear about each switch, or it reports the fiber's frames as
 * stack-buffer overflows of the thread's stack. start_ names the stack
 * being entered; finish_ runs on arrival and learns the stack left.
 */
static inline void asan_enter_fiber(void **fake, const struct ur_fiber *f)
{
#if FIBER_ASAN
	__sanitizer_start_switch_fiber(fake, f->stack->lo, f->stack->size);
#else
	(void)fake;
	(void)f;
#endif
}

static inline void asan_back_from_fiber(void *fake)
{
#if FIBER_ASAN
	__sanitizer_finish_switch_fiber(fake, NULL, NULL);
#else
	(void)fake;
#endif
}

/* exiting: the fiber's stack dies, so ASan may drop its fake stack. */
static inline void asan_leave_fiber(struct ur_fiber *f, bool exiting)
{
#if FIBER_ASAN
	__sanitizer_start_switch_fiber(exiting ? NULL : &f->asan_fake,
				       f->asan_from_lo, f->asan_from_size);
#else
	(void)f;
	(void)exiting;
#endif
}

static inline void asan_arrive_in_fiber(struct ur_fiber *f, bool first)
{
#if FIBER_ASAN
	__sanitizer_finish_switch_fiber(first ? NULL : f->asan_fake,
					&f->asan_from_lo, &f->asan_from_size);
#else
	(void)f;
	(void)first;
#endif
}

/* Stacks no larger than the loop's come from its pool. */
static struct ur__stack *stack_acquire(struct ur_loop *loop, size_t want,
				       bool *custom)
{
	struct ur__stack_pool *p = &loop->stacks;
	struct ur__stack_pool one;
	unsigned long before = p->mapped;
	struct ur__stack *s;

	if (want <= p->stack_size) {
		*custom = false;
		s = ur__stack_get(p);
		loop->st.stacks_mapped += p->mapped - before;
		return s;
	}
	*custom = true;
	ur__stack_pool_init(&one, want, 0);
	s = ur__stack_get(&one);
	if (s != NULL)
		loop->st.stacks_mapped++;
	return s;
}

static void stack_release(struct ur_loop *loop, struct ur_fiber *f)
{
	struct ur__stack_pool *p = &loop->stacks;
	struct ur__stack_pool one;
	unsigned long before = p->mapped;

	if (f->stack == NULL)
		return;
	ur__ctx_fini(&f->ctx);
	if (f->custom_stack) {
		/* A pool that caches nothing unmaps it. */
		ur__stack_pool_init(&one, f->stack->size, 0);
		one.mapped = 1;
		ur__stack_put(&one, f->stack);
		loop->st.stacks_mapped--;
	} else {
		ur__stack_put(p, f->stack);
		loop->st.stacks_mapped -= before - p->mapped;
	}
	f->stack = NULL;
}

static void fiber_free(struct ur_fiber *f)
{
	struct ur_loop *loop = f->loop;

	stack_release(loop, f);
	ur_list_del(&f->all_link);
	loop->st.fibers_live--;
	free(f);
}

/* Switch from the running fiber f back to whoever resumed it. */
static void fiber_suspend(struct ur_fiber *f)
{
	asan_leave_fiber(f, false);
	ur__ctx_switch(&f->ctx, f->resumer);
	asan_arrive_in_fiber(f, false);
}

static void fiber_main(void *p)
{
	struct ur_fiber *f = p;
	struct join_wait *jw;

	asan_arrive_in_fiber(f, true);
	f->ret = f->fn(f->arg);
	f->state = F_DONE;
	jw = f->join;
	if (jw != NULL) {
		f->join = NULL;
		jw->done = true;
		ur_waiter_wake(&jw->w);
	}
	/*
	 * The stack cannot be released while we run on it: the resumer
	 * does that (fiber_resume) once this switch has left it for good.
	 */
	asan_leave_fiber(f, true);
	ur__ctx_switch(&f->ctx, f->resumer);
	ur_assert(!"a finished fiber was resumed");
}

/*
 * Run f until it parks, yields or returns. The switch back lands here,
 * in whatever context resumed f this time, so ur__fibers_run() may run
 * in nested ur_loop_run_once() calls.
 */
static void fiber_resume(struct ur_loop *loop, struct ur_fiber *f)
{
	struct ur__ctx here = {NULL, NULL};
	struct ur_fiber *outer = tls_self;
	void *fake = NULL;

	f->resumer = &here;
	f->state = F_RUNNING;
	loop->current = f;
	tls_self = f;
	asan_enter_fiber(&fake, f);
	ur__ctx_switch(&here, &f->ctx);
	asan_back_from_fiber(fake);
	tls_self = outer;
	loop->current = NULL;
	if (f->state != F_DONE)
		return;
	if (f->detached)
		fiber_free(f);
	else
		stack_release(loop, f);
}

int ur__fibers_init(struct ur_loop *loop, size_t stack_size, unsigned pool_max)
{
	loop->current = NULL;
	ur_list_init(&loop->runq);
	ur_list_init(&loop->fibers);
	ur__stack_pool_init(&loop->stacks, stack_size,
			    pool_max != 0 ? pool_max : 1024);
	loop->stack_size = loop->stacks.stack_size;
	loop->st.fibers_live = 0;
	loop->st.stacks_mapped = 0;
	return 0;
}

/* Live fibers are abandoned: their stacks go without unwinding. */
void ur__fibers_fini(struct ur_loop *loop)
{
	struct ur_list *n, *tmp;

	ur_assert(loop->current == NULL);
	ur_list_for_each_safe(n, tmp, &loop->fibers) {
		struct ur_fiber *f =
			ur_container_of(n, struct ur_fiber, all_link);

		stack_release(loop, f);
		loop->st.fibers_live--;
		free(f);
	}
	ur_list_init(&loop->fibers);
	ur_list_init(&loop->runq);
	ur__stack_pool_fini(&loop->stacks);
	loop->st.stacks_mapped = loop->stacks.mapped;
}

unsigned ur__fibers_run(struct ur_loop *loop)
{
	struct ur_list batch, *n;
	unsigned ran = 0;

	ur_assert(loop->current == NULL);
	if (ur_list_empty(&loop->runq))
		return 0;
	/*
	 * Take the whole queue: fibers made runnable meanwhile (a yield, a
	 * wake from a fiber in this batch) wait for the next turn, so the
	 * loop gets back to the ring even if some fiber yields forever.
	 * Nothing but this loop takes fibers off a run queue.
	 */
	batch.next = loop->runq.next;
	batch.prev = loop->runq.prev;
	batch.next->prev = &batch;
	batch.prev->next = &batch;
	ur_list_init(&loop->runq);
	while ((n = ur_list_pop(&batch)) != NULL) {
		fiber_resume(loop,
			     ur_container_of(n, struct ur_fiber, run_link));
		ran++;
	}
	return ran;
}

void ur__fiber_make_runnable(struct ur_fiber *f)
{
	if (f->state != F_PARKED)
		return;
	f->state = F_RUNNABLE;
	ur_list_add_tail(&f->loop->runq, &f->run_link);
}

bool ur__fiber_cancelled(const struct ur_fiber *f)
{
	return f != NULL && f->cancelled;
}

static void park(struct ur_fiber *f, struct ur_op *op)
{
	f->wait_op = op;
	f->state = F_PARKED;
	fiber_suspend(f);
	f->wait_op = NULL;
}

/*
 * A cancelled fiber waiting on op: make sure the kernel was asked to
 * cancel it, then wait for its final CQE, whatever wakes us meanwhile.
 * The op's buffers (often on this very stack) stay the kernel's until
 * then, so returning earlier would let the caller reuse them. A cancel
 * the backend refused is asked again at each wake-up.
 */
static int park_until_reaped(struct ur_fiber *f, struct ur_op *op)
{
	while (op->ur__state == UR_OP_INFLIGHT) {
		if (f->cancel_op != op && ur__submit_cancel(f->loop, op) == 0)
			f->cancel_op = op;
		park(f, op);
	}
	f->cancel_op = NULL;
	return -ECANCELED;
}

int ur__fiber_park_on(struct ur_loop *loop, struct ur_op *op)
{
	struct ur_fiber *f = loop->current;

	ur_assert(f != NULL && f == tls_self);
	if (!f->cancelled) {
		park(f, op);
		if (!f->cancelled)
			return 0;
	}
	if (op == NULL)
		return -ECANCELED;
	return park_until_reaped(f, op);
}

int ur__fiber_spawn(struct ur_loop *loop, ur_fiber_fn *fn, void *arg,
		    const struct ur_fiber_opts *opts, struct ur_fiber **f_out,
		    const char *file, int line)
{
	size_t want = opts != NULL ? opts->stack_size : 0;
	struct ur_fiber *f;
	size_t skew;
	int err;

	if (fn == NULL || f_out == NULL)
		return -EINVAL;
	if (loop == NULL) {
		loop = ur__loop_for_call(&err);
		if (loop == NULL)
			return err;
	}
	f = calloc(1, sizeof(*f));
	if (f == NULL)
		return -ENOMEM;
	f->stack = stack_acquire(loop, want, &f->custom_stack);
	if (f->stack == NULL) {
		free(f);
		return -ENOMEM;
	}
	/*
	 * Stacks are all aligned alike, so the hot top frames of different
	 * fibers would map to the same L1 sets. Start each 0..960 bytes
	 * lower, chosen from the record's address (PhotonLibOS does this).
	 */
	skew = (((uintptr_t)f >> 5) & 15) * 64;
	err = ur__ctx_make(&f->ctx, f->stack->lo, f->stack->size - skew,
			   fiber_main, f);
	if (err < 0) {
		stack_release(loop, f);
		free(f);
		return err;
	}
	f->loop = loop;
	f->fn = fn;
	f->arg = arg;
	f->name = opts != NULL ? opts->name : NULL;
	f->file = file;
	f->line = line;
	f->state = F_RUNNABLE;
	ur_list_add_tail(&loop->fibers, &f->all_link);
	ur_list_add_tail(&loop->runq, &f->run_link);
	loop->st.fibers_live++;
	*f_out = f;
	return 0;
}

/*
 * Wait until f returns; 0, or -EINVAL if f got detached, or -errno.
 * f->join never outlives *jw: fiber_main, detach or this function clear
 * it. Not inlined, because gcc 12's -Wdangling-pointer cannot see that.
 */
__attribute__((noinline)) static int join_wait_for(struct ur_fiber *f,
						   struct join_wait *jw)
{
	int ret = 0;

	f->join = jw;
	while (!jw->done && !jw->detached) {
		ret = ur_waiter_wait(&jw->w);
		if (ret < 0)
			break;
	}
	if (jw->detached)
		return -EINVAL; /* f frees itself: do not touch it */
	if (!jw->done) {
		/* cancelled, or a loop error: f stays joinable */
		f->join = NULL;
		return ret;
	}
	return 0;
}

int ur_fiber_join(struct ur_fiber *f, int *ret_out)
{
	struct ur_fiber *self = tls_self;
	struct join_wait jw = {.done = false, .detached = false};
	int ret;

	if (f == NULL || f == self || f->detached || f->join != NULL)
		return -EINVAL;
	if (f->state != F_DONE) {
		ur_waiter_init(&jw.w, f->loop);
		ret = join_wait_for(f, &jw);
		if (ret < 0)
			return ret;
	}
	if (ret_out != NULL)
		*ret_out = f->ret;
	fiber_free(f);
	return 0;
}

void ur_fiber_detach(struct ur_fiber *f)
{
	struct join_wait *jw;

	if (f == NULL || f->detached)
		return;
	if (f->state == F_DONE) {
		fiber_free(f);
		return;
	}
	f->detached = true;
	jw = f->join;
	if (jw != NULL) {
		f->join = NULL;
		jw->detached = true;
		ur_waiter_wake(&jw->w);
	}
}

int ur_fiber_cancel(struct ur_fiber *f)
{
	struct ur_op *op;
	int ret = 0;

	if (f == NULL)
		return -EINVAL;
	if (f->state == F_DONE)
		return -ESRCH;
	if (f->cancelled || f->state != F_PARKED)
		goto out; /* seen at its next blocking call */
	op = f->wait_op;
	if (op != NULL && op->ur__state == UR_OP_INFLIGHT) {
		/*
		 * Stay parked: the op's CQE (-ECANCELED, or its own result
		 * if it won the race) wakes the fiber, and only then may its
		 * buffers be touched again.
		 */
		ret = ur__submit_cancel(f->loop, op);
		if (ret == 0)
			f->cancel_op = op;
	} else {
		ur__fiber_make_runnable(f);
	}
out:
	f->cancelled = true;
	return ret;
}

void ur__fiber_forget(void)
{
	tls_self = NULL;
}

struct ur_fiber *ur_fiber_self(void)
{
	return tls_self;
}

bool ur_fiber_is_cancelled(const struct ur_fiber *f)
{
	return ur__fiber_cancelled(f);
}

int ur_fiber_park(void)
{
	struct ur_fiber *f = tls_self;

	if (f == NULL)
		return -EINVAL;
	/* Only ur_fiber_wake() or a cancel ends it, not a stray CQE. */
	f->woken = false;
	do {
		int ret = ur__fiber_park_on(f->loop, NULL);

		if (ret < 0)
			return ret;
	} while (!f->woken);
	return 0;
}

void ur_fiber_wake(struct ur_fiber *f)
{
	/* Waiting on an op is not a park: only its completion ends that. */
	if (f == NULL || f->state != F_PARKED || f->wait_op != NULL)
		return;
	f->woken = true;
	ur__fiber_make_runnable(f);
}

int ur_fiber_yield(void)
{
	struct ur_fiber *f = tls_self;
	struct ur_loop *loop;
	int ret;

	if (f == NULL) {
		/* Outside a fiber: one turn that does not wait. */
		loop = ur_loop_current();
		if (loop == NULL)
			return -EINVAL;
		ret = ur_loop_run_once(loop, 0);
		return ret < 0 ? ret : 0;
	}
	f->state = F_RUNNABLE;
	ur_list_add_tail(&f->loop->runq, &f->run_link);
	fiber_suspend(f);
	return f->cancelled ? -ECANCELED : 0;
}

void ur__fibers_foreach_live(const struct ur_loop *loop, ur_live_fn *fn,
			     void *arg)
{
	const struct ur_list *n;
	char what[96];

	ur_list_for_each(n, &loop->fibers) {
		const struct ur_fiber *f =
			ur_container_of(n, const struct ur_fiber, all_link);

		if (f->name != NULL)
			(void)snprintf(
				what, sizeof(what), "fiber '%s'%s", f->name,
				f->state == F_DONE ? " (returned, not joined)"
						   : "");
		else
			(void)snprintf(what, sizeof(what), "fiber%s",
				       f->state == F_DONE
					       ? " (returned, not joined)"
					       : "");
		fn(what, f->file, f->line, arg);
	}
}
