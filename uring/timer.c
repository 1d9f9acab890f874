/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/timer: absolute-deadline timers on IORING_OP_TIMEOUT, lazy deadlines.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

/*
 * The kernel side of a timer. A slot carries the op whose user_data the
 * kernel knows, so the user's struct ur_timer can be stopped and freed at
 * once: a stopped slot is orphaned (owner NULL) and freed when its last
 * CQE arrives. That single rule resolves every race between firing,
 * TIMEOUT_UPDATE and TIMEOUT_REMOVE:
 *  - a CQE for an orphaned slot only frees it;
 *  - a firing (-ETIME) before the owner's current deadline (an update
 *    that lost the race, a clock step) re-arms instead of calling back;
 *  - update and remove completions are ignored: the timeout's own CQE
 *    always follows and says what really happened.
 */
struct tslot {
	struct ur_op op;
	struct __kernel_timespec ts;
	struct ur_timer *owner;
	struct tslot *next_free;
	struct ur_list link; /* loop->tslots while in use */
	uint64_t armed_ns;   /* the deadline the kernel holds */
};

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

static bool clock_ok(clockid_t clock)
{
	return clock == CLOCK_MONOTONIC || clock == CLOCK_REALTIME ||
	       clock == CLOCK_BOOTTIME;
}

uint64_t ur_now_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void set_ts(struct __kernel_timespec *ts, uint64_t ns)
{
	ts->tv_sec = (long long)(ns / 1000000000ULL);
	ts->tv_nsec = (long long)(ns % 1000000000ULL);
}

static void slot_cqe(struct ur_op *op);

static struct tslot *slot_get(struct ur_loop *loop)
{
	struct tslot *s = loop->tslot_free;

	if (s != NULL) {
		loop->tslot_free = s->next_free;
	} else {
		s = malloc(sizeof(*s));
		ur_assert(s != NULL);
	}
	memset(s, 0, sizeof(*s));
	ur_op_init(&s->op, slot_cqe, s);
	ur_list_add_tail(&loop->tslots, &s->link);
	return s;
}

static void slot_put(struct ur_loop *loop, struct tslot *s)
{
	ur_list_del(&s->link);
	s->next_free = loop->tslot_free;
	loop->tslot_free = s;
}

static void slot_arm(struct ur_loop *loop, struct tslot *s, clockid_t clock,
		     uint64_t deadline_ns)
{
	struct io_uring_sqe *sqe = ur__sqe_get(loop);

	set_ts(&s->ts, deadline_ns);
	s->armed_ns = deadline_ns;
	/*
	 * A deadline already passed completes through a NOP on the same
	 * slot: an expired hrtimer costs a timer interrupt (about 16 us on
	 * this VM) for nothing. slot_cqe() treats both CQEs alike, and an
	 * update or remove aimed at the NOP finds nothing (-ENOENT), which
	 * the rules above already cover.
	 */
	if (deadline_ns <= ur_now_ns(clock))
		io_uring_prep_nop(sqe);
	else
		io_uring_prep_timeout(sqe, &s->ts, 0,
				      IORING_TIMEOUT_ABS | clock_flags(clock));
	ur__op_arm(loop, &s->op, sqe);
}

static void timer_unlink(struct ur_loop *loop, struct ur_timer *t)
{
	t->ur__slot = NULL;
	ur_list_del((struct ur_list *)t->ur__link);
	loop->timers_armed--;
}

static void slot_cqe(struct ur_op *op)
{
	struct tslot *s = op->data;
	struct ur_timer *t = s->owner;
	struct ur_loop *loop = op->ur__loop;

	if (t == NULL || op->res == -ECANCELED) {
		if (t != NULL)
			timer_unlink(loop, t);
		slot_put(loop, s);
		return;
	}
	if (ur_now_ns(t->ur__clock) < t->ur__deadline_ns) {
		slot_arm(loop, s, t->ur__clock, t->ur__deadline_ns);
		return;
	}
	timer_unlink(loop, t);
	slot_put(loop, s);
	t->ur__fn(t, t->ur__arg); /* may re-arm or free t */
}

void ur_timer_init(struct ur_timer *t, struct ur_loop *loop)
{
	memset(t, 0, sizeof(*t));
	t->ur__loop = loop;
	ur_list_init((struct ur_list *)t->ur__link);
}

int ur__timer_start_abs(struct ur_timer *t, clockid_t clock,
			uint64_t deadline_ns, ur_timer_fn *fn, void *arg,
			const char *file, int line)
{
	struct ur_loop *loop = t->ur__loop;
	struct tslot *s;

	if (!clock_ok(clock) || fn == NULL)
		return -EINVAL;
	t->ur__fn = fn;
	t->ur__arg = arg;
	t->ur__file = file;
	t->ur__line = line;
	if (t->ur__slot != NULL && t->ur__clock == clock)
		return ur_timer_update(t, deadline_ns);
	if (t->ur__slot != NULL)
		(void)ur_timer_stop(t);
	t->ur__clock = clock;
	t->ur__deadline_ns = deadline_ns;
	s = slot_get(loop);
	s->owner = t;
	t->ur__slot = s;
	ur_list_add_tail(&loop->timers, (struct ur_list *)t->ur__link);
	loop->timers_armed++;
	slot_arm(loop, s, clock, deadline_ns);
	return 0;
}

int ur_timer_update(struct ur_timer *t, uint64_t deadline_ns)
{
	struct tslot *s = t->ur__slot;
	struct io_uring_sqe *sqe;

	if (s == NULL)
		return -ENOENT;
	t->ur__deadline_ns = deadline_ns;
	if (s->armed_ns == deadline_ns || s->op.ur__state != UR_OP_INFLIGHT)
		return 0;
	sqe = ur__sqe_get(t->ur__loop);
	io_uring_prep_timeout_update(
		sqe, ur__ts_scratch(t->ur__loop, deadline_ns),
		(uint64_t)(uintptr_t)&s->op,
		IORING_TIMEOUT_ABS | clock_flags(t->ur__clock));
	io_uring_sqe_set_data64(sqe, UR_UD_IGNORE);
	s->armed_ns = deadline_ns;
	return 0;
}

int ur_timer_stop(struct ur_timer *t)
{
	struct tslot *s = t->ur__slot;
	struct io_uring_sqe *sqe;

	if (s == NULL)
		return -ENOENT;
	s->owner = NULL;
	timer_unlink(t->ur__loop, t);
	sqe = ur__sqe_get(t->ur__loop);
	io_uring_prep_timeout_remove(sqe, (uint64_t)(uintptr_t)&s->op, 0);
	io_uring_sqe_set_data64(sqe, UR_UD_IGNORE);
	return 0;
}

bool ur_timer_is_armed(const struct ur_timer *t)
{
	return t->ur__slot != NULL;
}

uint64_t ur_timer_deadline(const struct ur_timer *t)
{
	return t->ur__deadline_ns;
}

void ur__timers_fini(struct ur_loop *loop)
{
	struct ur_list *pos, *tmp;
	struct tslot *s;

	/* Slots still in use had their CQEs dropped by ur_loop_free. */
	ur_list_for_each_safe(pos, tmp, &loop->tslots) {
		s = ur_container_of(pos, struct tslot, link);
		if (s->owner != NULL)
			s->owner->ur__slot = NULL;
		slot_put(loop, s);
	}
	while ((s = loop->tslot_free) != NULL) {
		loop->tslot_free = s->next_free;
		free(s);
	}
}

/*
 * Lazy deadline. The timer stays at the earliest deadline it was armed
 * with; pushing the deadline later costs nothing until that timer fires,
 * when it re-arms at the current deadline (one SQE per idle period rather
 * than one per read).
 */
static void deadline_fired(struct ur_timer *t, void *arg)
{
	struct ur_deadline *d = arg;
	uint64_t now = ur_now_ns(CLOCK_MONOTONIC);
	int ret;

	(void)t;
	if (d->ur__want_ns == 0)
		return;
	if (now < d->ur__want_ns) {
		ret = ur_timer_start_abs(&d->ur__timer, CLOCK_MONOTONIC,
					 d->ur__want_ns, deadline_fired, d);
		ur_assert(ret == 0);
		return;
	}
	d->ur__want_ns = 0;
	d->ur__fn(&d->ur__timer, d->ur__arg);
}

void ur_deadline_init(struct ur_deadline *d, struct ur_loop *loop,
		      ur_timer_fn *fn, void *arg)
{
	memset(d, 0, sizeof(*d));
	ur_timer_init(&d->ur__timer, loop);
	d->ur__fn = fn;
	d->ur__arg = arg;
}

int ur_deadline_set(struct ur_deadline *d, uint64_t deadline_ns)
{
	struct ur_timer *t = &d->ur__timer;

	d->ur__want_ns = deadline_ns;
	if (deadline_ns == 0)
		return 0; /* an armed timer finds nothing to do and stops */
	if (!ur_timer_is_armed(t))
		return ur_timer_start_abs(t, CLOCK_MONOTONIC, deadline_ns,
					  deadline_fired, d);
	if (deadline_ns < ur_timer_deadline(t))
		return ur_timer_update(t, deadline_ns);
	return 0;
}

void ur_deadline_fini(struct ur_deadline *d)
{
	d->ur__want_ns = 0;
	(void)ur_timer_stop(&d->ur__timer);
}

struct sleeper {
	struct ur_timer t;
	int done;
	struct ur_fiber *f;
};

static void sleeper_fired(struct ur_timer *t, void *arg)
{
	struct sleeper *sl = arg;

	(void)t;
	sl->done = 1;
	if (sl->f != NULL)
		ur_fiber_wake(sl->f);
}

int ur_sleep_until(clockid_t clock, uint64_t deadline_ns)
{
	struct sleeper sl = {.done = 0};
	struct ur_loop *loop;
	int err = 0;
	int ret;

	loop = ur__loop_for_call(&err);
	if (loop == NULL)
		return err;
	sl.f = loop->current;
	if (sl.f != NULL && ur__fiber_cancelled(sl.f))
		return -ECANCELED;
	ur_timer_init(&sl.t, loop);
	ret = ur_timer_start_abs(&sl.t, clock, deadline_ns, sleeper_fired, &sl);
	if (ret < 0)
		return ret;
	while (!sl.done) {
		if (sl.f != NULL) {
			if (ur_fiber_park() == -ECANCELED) {
				(void)ur_timer_stop(&sl.t);
				return -ECANCELED;
			}
		} else {
			ret = ur_loop_run_once(loop, -1);
			if (ret < 0) {
				(void)ur_timer_stop(&sl.t);
				return ret;
			}
		}
	}
	return 0;
}
