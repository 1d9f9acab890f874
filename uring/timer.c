/* SPDX-License-Identifier: BSD-3-Clause */
/* uring/timer: absolute-deadline timers, lazy deadlines. */
#include "internal.h"

#include <errno.h>
#include <string.h>

/*
 * The kernel side of a timer (io_uring: an IORING_OP_TIMEOUT; epoll: a
 * heap entry). A slot carries the op the backend knows, so the user's struct ur_timer can be stopped and freed at
 * once: a stopped slot is orphaned (owner NULL) and freed when its last
 * CQE arrives. That single rule resolves every race between firing,
 * TIMEOUT_UPDATE and TIMEOUT_REMOVE:
 *  - a CQE for an orphaned slot only frees it;
 *  - a firing (-ETIME) before the owner's current deadline (an update
 *    that lost the race, a clock step) re-arms instead of calling back;
 *  - update and remove completions are ignored: the timeout's own
 *    completion always follows and says what really happened.
 */
struct tslot {
	struct ur_op op;
	struct ur_timer *owner;
	struct tslot *next_free;
	struct ur_list link; /* loop->tslots while in use */
	uint64_t armed_ns;   /* the deadline the kernel holds */
};

static bool clock_ok(clockid_t clock)
{
	return clock == CLOCK_MONOTONIC || clock == CLOCK_REALTIME ||
	       clock == CLOCK_BOOTTIME;
}

int64_t ur__realtime_skew_ns;

uint64_t ur_now_ns(clockid_t clock)
{
	struct timespec ts;
	uint64_t ns;

	clock_gettime(clock, &ts);
	ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	if (clock == CLOCK_REALTIME)
		ns += (uint64_t)ur__realtime_skew_ns;
	return ns;
}

static void slot_cqe(struct ur_op *op);

static struct tslot *slot_get(struct ur_loop *loop)
{
	struct tslot *s = loop->tslot_free;

	if (s != NULL) {
		loop->tslot_free = s->next_free;
	} else {
		s = malloc(sizeof(*s));
		if (s == NULL)
			return NULL;
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

static int slot_arm(struct ur_loop *loop, struct tslot *s, clockid_t clock,
		    uint64_t deadline_ns)
{
	s->armed_ns = deadline_ns;
	return loop->be->start(loop, &s->op,
			       &(const struct ur__req){
				       .opcode = UR__TIMER,
				       .uflags = (unsigned)clock,
				       .ns = deadline_ns,
			       });
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
	if (ur_now_ns(t->ur__clock) < t->ur__deadline_ns &&
	    slot_arm(loop, s, t->ur__clock, t->ur__deadline_ns) == 0)
		return;
	/* Early, and no memory to re-arm: fire now rather than never. */
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
	int ret;

	if (!clock_ok(clock) || fn == NULL)
		return -EINVAL;
	t->ur__fn = fn;
	t->ur__arg = arg;
	t->ur__file = file;
	t->ur__line = line;
	if (t->ur__slot != NULL && t->ur__clock == clock)
		return ur_timer_update(t, deadline_ns);
	if (t->ur__slot != NULL && ur_timer_stop(t) < 0) {
		/* a refused remove: the old slot still cannot fire t */
	}
	t->ur__clock = clock;
	t->ur__deadline_ns = deadline_ns;
	s = slot_get(loop);
	if (s == NULL)
		return -ENOMEM;
	ret = slot_arm(loop, s, clock, deadline_ns);
	if (ret < 0) {
		slot_put(loop, s);
		return ret;
	}
	s->owner = t;
	t->ur__slot = s;
	ur_list_add_tail(&loop->timers, (struct ur_list *)t->ur__link);
	loop->timers_armed++;
	return 0;
}

int ur_timer_update(struct ur_timer *t, uint64_t deadline_ns)
{
	struct tslot *s = t->ur__slot;
	int ret;

	if (s == NULL)
		return -ENOENT;
	t->ur__deadline_ns = deadline_ns;
	if (s->armed_ns == deadline_ns || s->op.ur__state != UR_OP_INFLIGHT)
		return 0;
	ret = t->ur__loop->be->start(t->ur__loop, NULL,
				     &(const struct ur__req){
					     .opcode = UR__TIMER_UPDATE,
					     .target = &s->op,
					     .uflags = (unsigned)t->ur__clock,
					     .ns = deadline_ns,
				     });
	if (ret < 0)
		return ret;
	s->armed_ns = deadline_ns;
	return 0;
}

int ur_timer_stop(struct ur_timer *t)
{
	struct tslot *s = t->ur__slot;
	int ret;

	if (s == NULL)
		return -ENOENT;
	s->owner = NULL;
	timer_unlink(t->ur__loop, t);
	/*
	 * Orphaned, the slot can no longer call fn: if the ring refuses the
	 * remove (no SQE, no memory), its timeout only runs to its deadline
	 * and frees the slot then.
	 */
	ret = t->ur__loop->be->start(t->ur__loop, NULL,
				     &(const struct ur__req){
					     .opcode = UR__TIMER_REMOVE,
					     .target = &s->op,
				     });
	return ret < 0 ? ret : 0;
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
		if (ret == 0)
			return;
		/* No re-arm (no memory, a ring error): early, not never. */
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
	if (ur_timer_stop(&d->ur__timer) < 0) {
		/* -ENOENT: not armed; disarmed either way */
	}
}

int ur_sleep_until(clockid_t clock, uint64_t deadline_ns)
{
	struct ur_waiter w;
	struct ur_loop *loop;
	int err = 0;
	int ret;

	loop = ur__loop_for_call(&err);
	if (loop == NULL)
		return err;
	ur_waiter_init(&w, loop);
	ret = ur_waiter_wait_until(&w, clock, deadline_ns);
	return ret == -ETIME ? 0 : ret; /* nothing wakes w but its deadline */
}
