/* SPDX-License-Identifier: BSD-3-Clause */
/* prot/waitevent: timed wait events and the wait of a refill (spec 2.13). */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>

/*
 * Each event is one absolute CLOCK_REALTIME ring timeout at its mark (a
 * time_t mark is wall-clock time). The timer's callback runs from the
 * loop turn and only wakes whoever waits on the stream; the event's own
 * callback runs later on the waiting fiber, inside prot__wait_input() or
 * prot_select(), so it may write and flush as Cyrus callbacks do.
 *
 * Timers are armed lazily, right before a wait, and left armed when the
 * wait ends: a stream that keeps reading re-uses them without an SQE.
 * Marks moved by hand (Cyrus code writes ev->mark) are noticed before
 * every wait and every dispatch pass by comparing ev->mark with the value
 * the event's deadline was derived from.
 *
 * Deviations from Cyrus, all deliberate (spec 6 items 2, 5, 7, 23):
 *  - A callback that returns its event with a mark still in the past does
 *    not kill the stream with "Invalid argument": the mark is clamped to
 *    the next tick (the next second; the next millisecond for events made
 *    with prot_addwaitevent_ms), so it fires again then, never in a busy
 *    loop.
 *  - A callback that returns NULL without removing its event has it
 *    removed (Cyrus would keep a node the caller believes is gone).
 *  - prot_removewaitevent() may remove any event of the stream from inside
 *    any callback: removed nodes are freed only when the dispatch ends.
 *  - prot__wait_fini() frees what is left at prot_free (Cyrus leaks it).
 *  - No EINTR: signals never end a wait.
 *  - Marks are compared with the clock in nanoseconds, not whole seconds,
 *    and the read deadline is exact (fill.c), so an event whose mark
 *    falls between the last whole second and the deadline still runs
 *    (spec 5.5 #48: E3 may run a third time at t+4).
 * Kept from Cyrus: the list in insertion order (callers walk it and write
 * ev->mark), list order for events due together, events only while the
 * stream waits in a refill with a read timeout or in non-blocking mode
 * (plus prot_select, see select.c), the callback signature.
 * prot_free() from inside a callback of the same stream is not supported.
 */

/* Milliseconds and seconds in nanoseconds. */
#define NS_MS  1000000ULL
#define NS_SEC 1000000000ULL

/* Who waits in prot__wait_input() for this stream. */
struct waiter {
	struct ur_fiber *fiber; /* NULL: outside any fiber */
	struct ur_waiter w;	/* parks fiber, or drives the loop */
};

/* One event: the Cyrus node first, so handles convert back. */
struct wevent {
	struct prot_waitevent pub;
	struct ur_timer timer; /* at mark_ns on CLOCK_REALTIME, lazily */
	struct wstate *w;
	uint64_t mark_ns; /* the deadline, wall-clock ns */
	time_t seen_mark; /* pub.mark when mark_ns was derived */
	unsigned pass;	  /* the dispatch pass that last ran it */
	bool ms;	  /* ms resolution: clamps to the next ms */
	bool removed;	  /* unlinked, waiting for the dispatch to end */
	struct wevent *grave_next;
};

/* Per-stream state (prot__stream.wait), made at the first need. */
struct wstate {
	struct ur_loop *loop;
	struct ur_deadline dl; /* the read deadline, lazily re-armed */
	struct waiter *waiter; /* set while prot__wait_input waits */
	unsigned pass;	       /* dispatch pass counter */
	unsigned depth;	       /* dispatches running (nesting guard) */
	struct wevent *grave;  /* removed during a dispatch */
};

_Static_assert(offsetof(struct wevent, pub) == 0, "handles convert back");

static struct wevent *wev_of(struct prot_waitevent *ev)
{
	return (struct wevent *)(void *)ev;
}

static const struct wevent *cwev_of(const struct prot_waitevent *ev)
{
	return (const struct wevent *)(const void *)ev;
}

static void waiter_wake(struct waiter *wt)
{
	if (wt == NULL)
		return;
	ur_waiter_wake(&wt->w);
}

/* The read deadline passed (only ever called at or after it). */
static void deadline_fired(struct ur_timer *t, void *arg)
{
	struct wstate *w = arg;

	(void)t;
	waiter_wake(w->waiter);
}

static void event_fired(struct ur_timer *t, void *arg)
{
	struct wevent *e = arg;

	(void)t;
	waiter_wake(e->w->waiter);
}

static struct wstate *wstate_get(struct protstream *s, int *err)
{
	struct prot__stream *ps = prot__of(s);
	struct wstate *w = ps->wait;
	struct ur_loop *loop;

	if (w != NULL)
		return w;
	*err = ur_loop_get(&loop);
	if (*err < 0)
		return NULL;
	w = calloc(1, sizeof(*w));
	if (w == NULL) {
		*err = -ENOMEM;
		return NULL;
	}
	w->loop = loop;
	ur_deadline_init(&w->dl, loop, deadline_fired, w);
	ps->wait = w;
	return w;
}

/* A time_t mark as wall-clock ns, saturated (0: long past). */
static uint64_t mark_to_ns(time_t mark)
{
	if (mark <= 0)
		return 0;
	if ((uint64_t)mark > INT64_MAX / NS_SEC)
		return (uint64_t)INT64_MAX;
	return (uint64_t)mark * NS_SEC;
}

/* A mark moved by hand wins over the (finer) deadline derived earlier. */
static void refresh_mark(struct wevent *e)
{
	if (e->pub.mark == e->seen_mark)
		return;
	e->seen_mark = e->pub.mark;
	e->mark_ns = mark_to_ns(e->pub.mark);
}

static void set_mark_ns(struct wevent *e, uint64_t ns)
{
	e->mark_ns = ns;
	e->pub.mark = (time_t)(ns / NS_SEC);
	e->seen_mark = e->pub.mark;
}

/* The deadline refresh_mark() would give, without changing e. */
static uint64_t current_mark_ns(const struct wevent *e)
{
	if (e->pub.mark != e->seen_mark)
		return mark_to_ns(e->pub.mark);
	return e->mark_ns;
}

static struct wevent *event_new(struct protstream *s, uint64_t mark_ns, bool ms,
				prot_waiteventcallback_t *proc, void *rock)
{
	struct prot_waitevent **tail;
	struct wevent *e;
	struct wstate *w;
	int err = 0;

	w = wstate_get(s, &err);
	if (w == NULL) {
		errno = -err;
		return NULL;
	}
	e = calloc(1, sizeof(*e));
	if (e == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	e->w = w;
	e->ms = ms;
	e->pub.proc = proc;
	e->pub.rock = rock;
	set_mark_ns(e, mark_ns);
	ur_timer_init(&e->timer, w->loop);
	for (tail = &s->waitevent; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = &e->pub;
	return e;
}

struct prot_waitevent *prot_addwaitevent(struct protstream *s, time_t mark,
					 prot_waiteventcallback_t *proc,
					 void *rock)
{
	struct wevent *e;

	if (proc == NULL)
		return s->waitevent;
	e = event_new(s, mark_to_ns(mark), false, proc, rock);
	if (e == NULL)
		return NULL;
	/* Keep the caller's mark exactly (mark_to_ns saturates). */
	e->pub.mark = mark;
	e->seen_mark = mark;
	return &e->pub;
}

struct prot_waitevent *prot_addwaitevent_ms(struct protstream *s,
					    uint64_t mark_ms,
					    prot_waiteventcallback_t *proc,
					    void *rock)
{
	struct wevent *e;

	if (proc == NULL)
		return s->waitevent;
	if (mark_ms > (uint64_t)INT64_MAX / NS_MS)
		mark_ms = (uint64_t)INT64_MAX / NS_MS;
	e = event_new(s, mark_ms * NS_MS, true, proc, rock);
	return e != NULL ? &e->pub : NULL;
}

/* The link pointing at ev in s's list, or NULL if ev is not on s. */
static struct prot_waitevent **find_link(struct protstream *s,
					 const struct prot_waitevent *ev)
{
	struct prot_waitevent **link;

	for (link = &s->waitevent; *link != NULL; link = &(*link)->next)
		if (*link == ev)
			return link;
	return NULL;
}

static void event_free_now(struct wevent *e)
{
	if (ur_timer_stop(&e->timer) < 0) {
		/* -ENOENT: not armed; fn never runs after this either way */
	}
	free(e);
}

/*
 * Unlink e and stop its timer. During a dispatch (defer) the node stays
 * readable, since the dispatcher may hold it, and is freed when the
 * dispatch ends.
 */
static void event_remove(struct wstate *w, struct prot_waitevent **link,
			 struct wevent *e, bool defer)
{
	*link = e->pub.next;
	if (!defer) {
		event_free_now(e);
		return;
	}
	if (ur_timer_stop(&e->timer) < 0) {
		/* -ENOENT: not armed; disarmed either way */
	}
	e->removed = true;
	e->grave_next = w->grave;
	w->grave = e;
}

void prot_removewaitevent(struct protstream *s, struct prot_waitevent *ev)
{
	struct prot_waitevent **link;
	struct wstate *w;

	if (s == NULL || ev == NULL)
		return;
	link = find_link(s, ev);
	if (link == NULL)
		return;
	w = prot__of(s)->wait; /* set: s has an event */
	event_remove(w, link, wev_of(ev), w->depth > 0);
}

/* Arm e's timer at its mark, or move it there; false if e is due now. */
static bool event_arm(struct wevent *e, uint64_t now_real)
{
	int ret;

	refresh_mark(e);
	if (e->mark_ns <= now_real)
		return false;
	if (ur_timer_is_armed(&e->timer)) {
		if (ur_timer_deadline(&e->timer) == e->mark_ns)
			return true;
		ret = ur_timer_update(&e->timer, e->mark_ns);
	} else {
		ret = ur_timer_start_abs(&e->timer, CLOCK_REALTIME, e->mark_ns,
					 event_fired, e);
	}
	/* Unarmable (cannot happen with a valid clock): treat as due. */
	return ret == 0;
}

int prot_rearmwaitevent(struct protstream *s, struct prot_waitevent *ev)
{
	struct wevent *e;

	if (s == NULL || ev == NULL || find_link(s, ev) == NULL) {
		errno = ENOENT;
		return EOF;
	}
	e = wev_of(ev);
	if (!event_arm(e, ur_now_ns(CLOCK_REALTIME)))
		waiter_wake(e->w->waiter); /* due already: run it now */
	return 0;
}

int prot_setwaitevent_ms(struct protstream *s, struct prot_waitevent *ev,
			 uint64_t mark_ms)
{
	struct wevent *e;

	if (s == NULL || ev == NULL || find_link(s, ev) == NULL) {
		errno = ENOENT;
		return EOF;
	}
	e = wev_of(ev);
	if (mark_ms > (uint64_t)INT64_MAX / NS_MS)
		mark_ms = (uint64_t)INT64_MAX / NS_MS;
	set_mark_ns(e, mark_ms * NS_MS);
	e->ms = true;
	/*
	 * Inside a dispatch the pass settles it. Otherwise move an armed
	 * timer now, and tell a pending wait (another fiber moved the mark).
	 */
	if (e->w->depth == 0 &&
	    (ur_timer_is_armed(&e->timer) || e->w->waiter != NULL) &&
	    !event_arm(e, ur_now_ns(CLOCK_REALTIME)))
		waiter_wake(e->w->waiter);
	return 0;
}

/* Arm every event's timer; true if some event is due right now. */
static bool arm_all(struct protstream *s)
{
	uint64_t now = ur_now_ns(CLOCK_REALTIME);
	bool due = false;

	for (struct prot_waitevent *ev = s->waitevent; ev != NULL;
	     ev = ev->next)
		if (!event_arm(wev_of(ev), now))
			due = true;
	return due;
}

/*
 * A kept event whose mark is not in the future fires again at the next
 * tick instead of failing the stream (Cyrus: EINVAL, "Invalid argument").
 */
static void clamp_mark(struct wevent *e)
{
	uint64_t now = ur_now_ns(CLOCK_REALTIME);
	uint64_t tick = e->ms ? NS_MS : NS_SEC;

	refresh_mark(e);
	if (e->mark_ns > now)
		return;
	set_mark_ns(e, (now / tick + 1) * tick);
}

/* After a callback returned ret for e: keep, or remove, as it asked. */
static void event_settle(struct protstream *s, struct wstate *w,
			 struct wevent *e, struct prot_waitevent *ret)
{
	struct prot_waitevent **link;

	if (e->removed)
		return;
	if (ret == NULL) {
		link = find_link(s, &e->pub);
		if (link != NULL)
			event_remove(w, link, e, true); /* run_pass holds e */
		return;
	}
	clamp_mark(e);
}

static void grave_free(struct wstate *w)
{
	struct wevent *e;

	while ((e = w->grave) != NULL) {
		w->grave = e->grave_next;
		free(e); /* its timer was stopped at removal */
	}
}

/* The first event at or after ev that this pass should run. */
static struct prot_waitevent *next_due(struct prot_waitevent *ev, unsigned pass,
				       uint64_t now)
{
	for (; ev != NULL; ev = ev->next) {
		struct wevent *e = wev_of(ev);

		refresh_mark(e);
		if (e->pass != pass && e->mark_ns <= now)
			return ev;
	}
	return NULL;
}

/*
 * One pass, in list order, of every event due at the pass's start (Cyrus
 * compares marks with one reading of the clock per pass). Events added
 * by callbacks are reached in the same pass if due. When a callback
 * removes the event the pass stands on, the walk restarts at the head;
 * the pass number keeps events that already ran from running twice.
 */
static unsigned run_pass(struct protstream *s, struct wstate *w)
{
	uint64_t now = ur_now_ns(CLOCK_REALTIME);
	unsigned pass, ran = 0;
	struct prot_waitevent *ev;

	if (w->depth > 0)
		return 0; /* a callback is waiting on its own stream */
	w->depth++;
	pass = ++w->pass;
	ev = next_due(s->waitevent, pass, now);
	while (ev != NULL) {
		struct wevent *e = wev_of(ev);
		struct prot_waitevent *ret;

		e->pass = pass;
		ran++;
		ret = ev->proc(s, ev, ev->rock);
		event_settle(s, w, e, ret);
		ev = next_due(e->removed ? s->waitevent : ev->next, pass, now);
	}
	w->depth--;
	if (w->depth == 0)
		grave_free(w);
	return ran;
}

bool prot__wait_run_due(struct protstream *s)
{
	struct wstate *w = prot__of(s)->wait;

	if (w == NULL || s->waitevent == NULL)
		return false;
	return run_pass(s, w) > 0;
}

/*
 * Spec 2.13: in a refill, events run only while the stream has a read
 * timeout or is non-blocking; a blocking stream without a timeout just
 * waits for its input ([R] 5.5 #50).
 */
static bool runs_events(const struct protstream *s)
{
	return s->waitevent != NULL &&
	       (prot__cof(s)->deadline_ns != 0 || s->dontblock);
}

static bool deadline_passed(const struct protstream *s)
{
	uint64_t d = prot__cof(s)->deadline_ns;

	return d != 0 && ur_now_ns(CLOCK_MONOTONIC) >= d;
}

/* One loop turn for a read expected to complete at once. */
static int one_turn(struct wstate *w, struct waiter *wt)
{
	int ret;

	if (wt->fiber != NULL)
		return ur_fiber_yield();
	ret = ur_loop_run_once(w->loop, 0);
	return ret < 0 ? ret : 0;
}

/* Park (or drive the loop) until something wakes wt. */
static int sleep_until_woken(struct waiter *wt)
{
	return ur_waiter_wait(&wt->w);
}

static void recv_done(struct ur_op *op)
{
	waiter_wake(op->data);
}

/*
 * The wait proper. Order per iteration: the due events (before every
 * wait, including the first, as Cyrus runs them), then the outcome
 * checks, then the timers, then sleep. Input wins over a deadline that
 * passed at the same time: its bytes are never thrown away. Every
 * iteration either sleeps or gives the loop a turn, so events that keep
 * coming due (a slow callback on a millisecond event) cannot starve the
 * read or the deadline.
 */
static int wait_loop(struct protstream *s, struct wstate *w, struct waiter *wt,
		     struct ur_op *recv_op)
{
	bool events = runs_events(s) && w->depth == 0;
	bool first = true;
	int ret;

	for (;;) {
		ur_waiter_init(&wt->w, w->loop); /* checked below */
		if (!first && !ur_op_is_busy(recv_op))
			return 0;
		first = false;
		if (events)
			(void)run_pass(s, w);
		if (!ur_op_is_busy(recv_op))
			return 0; /* completed while callbacks waited */
		if (s->dontblock || deadline_passed(s)) {
			/* A read of ready input completes within one turn. */
			ret = one_turn(w, wt);
			if (ret < 0)
				return ret;
			if (!ur_op_is_busy(recv_op))
				return 0;
			return s->dontblock ? -EAGAIN : -ETIMEDOUT;
		}
		if (prot__cof(s)->deadline_ns != 0) {
			ret = ur_deadline_set(&w->dl,
					      prot__cof(s)->deadline_ns);
			if (ret < 0)
				return ret;
		}
		if (events && arm_all(s))
			ret = one_turn(w, wt); /* due already: run it next */
		else
			ret = sleep_until_woken(wt);
		if (ret < 0)
			return ret;
	}
}

int prot__wait_input(struct protstream *s, struct ur_op *recv_op)
{
	struct waiter wt = {.fiber = ur_fiber_self()};
	struct waiter *outer;
	struct wstate *w;
	int err = 0;
	int ret;

	w = wstate_get(s, &err);
	if (w == NULL)
		return err;
	if (recv_op == NULL) {
		/* Input is at hand: Cyrus still runs due events first. */
		if (runs_events(s))
			(void)run_pass(s, w);
		return 0;
	}
	if (wt.fiber != NULL && ur_fiber_is_cancelled(wt.fiber))
		return -ECANCELED;
	ur_waiter_init(&wt.w, w->loop);
	outer = w->waiter;
	w->waiter = &wt;
	recv_op->fn = recv_done;
	recv_op->data = &wt;
	ret = wait_loop(s, w, &wt, recv_op);
	recv_op->fn = NULL;
	recv_op->data = NULL;
	w->waiter = outer;
	return ret;
}

void prot__wait_fini(struct protstream *s)
{
	struct prot__stream *ps = prot__of(s);
	struct wstate *w = ps->wait;
	struct prot_waitevent *ev;

	if (w == NULL)
		return;
	while ((ev = s->waitevent) != NULL) {
		s->waitevent = ev->next;
		event_free_now(wev_of(ev));
	}
	grave_free(w);
	ur_deadline_fini(&w->dl);
	free(w);
	ps->wait = NULL;
}

uint64_t prot__wait_next_deadline(const struct protstream *s)
{
	uint64_t mono = ur_now_ns(CLOCK_MONOTONIC);
	uint64_t real = ur_now_ns(CLOCK_REALTIME);
	uint64_t best = prot__cof(s)->deadline_ns;

	for (const struct prot_waitevent *ev = s->waitevent; ev != NULL;
	     ev = ev->next) {
		uint64_t m = current_mark_ns(cwev_of(ev));
		uint64_t at = m <= real ? mono : mono + (m - real);

		if (best == 0 || at < best)
			best = at;
	}
	return best;
}

/*
 * Parking. Timers are armed before a wait and left armed after it (the
 * next wait re-uses them without an SQE): a stream that waited holds one
 * kernel timeout per event whose mark is still ahead, plus the read
 * deadline's, each with a timer slot of the loop, until they fire. A
 * parked stream holds none: prot_release stops them all (one
 * TIMEOUT_REMOVE each; the slots go back to the loop's free list) and
 * frees the wait state of a stream without events. The next wait arms
 * them again; meanwhile the server asks prot_waitevent_next_ms().
 */
bool prot__wait_busy(const struct protstream *s)
{
	const struct wstate *w = prot__cof(s)->wait;

	return w != NULL && (w->depth > 0 || w->waiter != NULL);
}

void prot__wait_release(struct protstream *s)
{
	struct prot__stream *ps = prot__of(s);
	struct wstate *w = ps->wait;

	if (w == NULL)
		return;
	for (struct prot_waitevent *ev = s->waitevent; ev != NULL;
	     ev = ev->next)
		if (ur_timer_is_armed(&wev_of(ev)->timer) &&
		    ur_timer_stop(&wev_of(ev)->timer) < 0) {
			/* a refused remove: the orphaned slot cannot fire */
		}
	if (s->waitevent == NULL) {
		prot__wait_fini(s); /* no grave: no dispatch runs */
		return;
	}
	ur_deadline_fini(&w->dl); /* stops its timer; set again at a wait */
}

size_t prot__wait_memory(const struct protstream *s)
{
	const struct wstate *w = prot__cof(s)->wait;
	size_t n = w != NULL ? sizeof(*w) : 0;

	for (const struct prot_waitevent *ev = s->waitevent; ev != NULL;
	     ev = ev->next)
		n += sizeof(struct wevent);
	return n;
}

uint64_t prot_waitevent_next_ms(const struct protstream *s)
{
	uint64_t best = 0;

	for (const struct prot_waitevent *ev = s->waitevent; ev != NULL;
	     ev = ev->next) {
		/* Rounded up: at that millisecond the event is due. */
		uint64_t ms =
			(current_mark_ns(cwev_of(ev)) + NS_MS - 1) / NS_MS;

		if (ms == 0)
			ms = 1; /* long past, and 0 means none */
		if (best == 0 || ms < best)
			best = ms;
	}
	return best;
}

int prot_waitevent_run_due(struct protstream *s)
{
	struct wstate *w = prot__of(s)->wait;

	if (w == NULL || s->waitevent == NULL)
		return 0;
	return (int)run_pass(s, w);
}
