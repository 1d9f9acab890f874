/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/wait: waiters and op deadlines, the blocking waits built once. */
#include "internal.h"

#include <errno.h>
#include <string.h>

/*
 * A waiter is a flag plus whoever waits for it: a fiber parked with
 * ur_fiber_park() (ur_fiber_wake() ends only that kind of park, never a
 * wait on an op), or, outside any fiber, the caller running loop turns
 * until the flag is up. The flag, not the wakeup, decides: a stray
 * resume or a turn that brings nothing just waits again.
 */
void ur_waiter_init(struct ur_waiter *w, struct ur_loop *loop)
{
	memset(w, 0, sizeof(*w));
	w->ur__loop = loop;
}

void ur_waiter_wake(struct ur_waiter *w)
{
	w->ur__woken = true;
	if (w->ur__fiber != NULL)
		ur_fiber_wake(w->ur__fiber);
}

static bool waiter_done(const struct ur_waiter *w)
{
	return w->ur__woken || w->ur__timed_out;
}

/* Wait until woken or timed out; 0, or -errno. */
static int waiter_sleep(struct ur_waiter *w)
{
	struct ur_fiber *f = ur_fiber_self();
	int ret = 0;

	if (f != NULL) {
		w->ur__fiber = f;
		while (!waiter_done(w)) {
			ret = ur_fiber_park();
			if (ret < 0)
				break;
		}
		w->ur__fiber = NULL;
		return ret;
	}
	while (!waiter_done(w)) {
		ret = ur__loop_turn_for(w->ur__loop, w);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int ur_waiter_wait(struct ur_waiter *w)
{
	int ret = waiter_sleep(w);

	if (ret == 0)
		w->ur__woken = false;
	return ret;
}

static void waiter_timer_fired(struct ur_timer *t, void *arg)
{
	struct ur_waiter *w = arg;

	(void)t;
	w->ur__timed_out = true;
	if (w->ur__fiber != NULL)
		ur_fiber_wake(w->ur__fiber);
}

int ur_waiter_wait_until(struct ur_waiter *w, clockid_t clock,
			 uint64_t deadline_ns)
{
	struct ur_fiber *f = ur_fiber_self();
	struct ur_timer t;
	int ret;

	if (w->ur__woken) {
		w->ur__woken = false;
		return 0;
	}
	/* A fiber cancelled already arms nothing. */
	if (f != NULL && ur_fiber_is_cancelled(f))
		return -ECANCELED;
	ur_timer_init(&t, w->ur__loop);
	w->ur__timed_out = false;
	ret = ur_timer_start_abs(&t, clock, deadline_ns, waiter_timer_fired, w);
	if (ret < 0)
		return ret;
	ret = waiter_sleep(w);
	/* Storage goes with this frame: a stop that fails still disarms. */
	if (ur_timer_is_armed(&t) && ur_timer_stop(&t) < 0) {
		/* fn never runs after ur_timer_stop() */
	}
	if (ret < 0) {
		w->ur__timed_out = false;
		return ret;
	}
	if (w->ur__woken) {
		w->ur__woken = false;
		w->ur__timed_out = false;
		return 0;
	}
	w->ur__timed_out = false;
	return -ETIME;
}

/*
 * An op deadline: a timer on the waiting stack cancels the op; its own
 * completion still ends the wait. The timer is stopped before returning,
 * which frees nothing the kernel holds (timer.c orphans its slot).
 */
struct op_deadline {
	struct ur_timer t;
	struct ur_op *op;
	bool fired;
};

/* A cancel the backend refused (no memory) is asked again this soon. */
#define CANCEL_RETRY_NS 1000000ULL

static void op_deadline_fired(struct ur_timer *t, void *arg)
{
	struct op_deadline *od = arg;

	if (!ur_op_is_busy(od->op))
		return;
	if (ur__submit_cancel(od->op->ur__loop, od->op) == 0) {
		od->fired = true;
		return;
	}
	if (ur_timer_start(t, CANCEL_RETRY_NS, op_deadline_fired, od) < 0) {
		/* no memory even for that: the op ends on its own */
	}
}

static bool clock_ok(clockid_t clock)
{
	return clock == CLOCK_MONOTONIC || clock == CLOCK_REALTIME ||
	       clock == CLOCK_BOOTTIME;
}

int ur_op_wait_until(struct ur_op *op, clockid_t clock, uint64_t deadline_ns)
{
	struct op_deadline od = {.op = op, .fired = false};
	int ret;

	if (!clock_ok(clock))
		return -EINVAL;
	if (!ur_op_is_busy(op))
		return op->res;
	ur_timer_init(&od.t, op->ur__loop);
	if (ur_now_ns(clock) >= deadline_ns &&
	    ur__submit_cancel(op->ur__loop, op) == 0) {
		/* Passed already: no timer, cancel at once. */
		od.fired = true;
	} else {
		ret = ur_timer_start_abs(&od.t, clock, deadline_ns,
					 op_deadline_fired, &od);
		if (ret < 0)
			return ret;
	}
	ret = ur_op_wait(op);
	if (ur_timer_is_armed(&od.t) && ur_timer_stop(&od.t) < 0) {
		/* fn never runs after ur_timer_stop() */
	}
	if (ret == -ECANCELED && od.fired && !ur_op_is_busy(op))
		return -ETIMEDOUT;
	return ret;
}
