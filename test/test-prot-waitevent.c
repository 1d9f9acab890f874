/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-waitevent: wait events, read timeouts and the refill wait. */
#include "t-helpers.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <ringprot/prot.h>

#define MS 1000000ULL

/*
 * A peer action at a given time, from the loop turn: optionally peek at
 * what the stream side has sent so far, then write bytes.
 */
struct peer_act {
	struct ur_timer t;
	int fd; /* write data here (-1: none) */
	const char *data;
	int peek_fd; /* recv(MSG_DONTWAIT) from here first (-1: none) */
	char peek[128];
	ssize_t peek_len;
	struct prot_waitevent *move_ev; /* move this mark to now, by hand */
	struct protstream *move_s;
	int fired;
};

static void peer_act_fire(struct ur_timer *t, void *arg)
{
	struct peer_act *a = arg;

	(void)t;
	if (a->peek_fd >= 0)
		a->peek_len = recv(a->peek_fd, a->peek, sizeof(a->peek) - 1,
				   MSG_DONTWAIT);
	if (a->move_ev != NULL) {
		a->move_ev->mark = time(NULL) - 1;
		(void)prot_rearmwaitevent(a->move_s, a->move_ev);
	}
	if (a->fd >= 0 && a->data != NULL)
		assert_int_equal(write(a->fd, a->data, strlen(a->data)),
				 (ssize_t)strlen(a->data));
	a->fired = 1;
}

static void peer_act_start(struct ur_loop *loop, struct peer_act *a,
			   unsigned delay_ms)
{
	ur_timer_init(&a->t, loop);
	assert_int_equal(ur_timer_start(&a->t, delay_ms * MS, peer_act_fire, a),
			 0);
}

static struct peer_act peer_write(int fd, const char *data)
{
	struct peer_act a = {
		.fd = fd, .data = data, .peek_fd = -1, .peek_len = -1};

	return a;
}

/* What the event callbacks do and what they saw. */
enum ev_do {
	EV_REMOVE,    /* prot_removewaitevent(self), return NULL */
	EV_RETNULL,   /* return NULL without removing itself */
	EV_REARM_SEC, /* ev->mark = time(NULL) + 1, `limit` times, then remove
		       */
	EV_REARM_MS,  /* prot_setwaitevent_ms(now + period), `limit` times */
	EV_KEEP_PAST, /* return ev with its mark unchanged (in the past) */
	EV_KEEP,      /* ev->mark += 100 s, return ev */
	EV_KILL,      /* remove `victim` (another event), then as EV_KEEP */
	EV_KILL_SELF, /* remove `victim`, then itself; return NULL */
	EV_WRITE,     /* printf + flush `out`, then remove itself */
};

struct evlog {
	int n;
	int ids[64];
	uint64_t at_ms[64]; /* CLOCK_REALTIME ms */
};

struct evctx {
	int id;
	enum ev_do what;
	int calls;
	int limit;
	unsigned period_ms;
	struct evlog *log;
	struct prot_waitevent *victim;
	struct protstream *out;
	uint64_t bytes_in_at_call;
	void *user;
};

static struct prot_waitevent *ev_cb(struct protstream *s,
				    struct prot_waitevent *ev, void *rock)
{
	struct evctx *c = rock;
	struct evlog *l = c->log;

	c->calls++;
	c->bytes_in_at_call = prot_bytes_in(s);
	if (l != NULL && l->n < 64) {
		l->at_ms[l->n] = t_realtime_ms();
		l->ids[l->n++] = c->id;
	}
	switch (c->what) {
	case EV_REMOVE:
		prot_removewaitevent(s, ev);
		return NULL;
	case EV_RETNULL:
		return NULL;
	case EV_REARM_SEC:
		if (c->calls >= c->limit) {
			prot_removewaitevent(s, ev);
			return NULL;
		}
		ev->mark = time(NULL) + 1;
		return ev;
	case EV_REARM_MS:
		if (c->calls >= c->limit) {
			prot_removewaitevent(s, ev);
			return NULL;
		}
		if (prot_setwaitevent_ms(s, ev,
					 t_realtime_ms() + c->period_ms) != 0)
			return NULL;
		return ev;
	case EV_KEEP_PAST:
		return ev;
	case EV_KILL:
		prot_removewaitevent(s, c->victim);
		ev->mark += 100;
		return ev;
	case EV_KILL_SELF:
		prot_removewaitevent(s, c->victim);
		prot_removewaitevent(s, ev);
		return NULL;
	case EV_KEEP:
		ev->mark += 100;
		return ev;
	case EV_WRITE:
		(void)prot_printf(c->out, "* OK still here\r\n");
		(void)prot_flush(c->out);
		prot_removewaitevent(s, ev);
		return NULL;
	}
	return NULL;
}

static int list_len(const struct protstream *s)
{
	int n = 0;

	for (const struct prot_waitevent *e = s->waitevent; e != NULL;
	     e = e->next)
		n++;
	return n;
}

/*
 * Spec 5.5 #48: E1, E2 at t+1 remove themselves, E3 at t+2 re-arms to
 * now+1, E4 at t removes itself; timeout 4 s, silent peer. Fire order
 * E4, E1, E2, E3, E3, then "idle for too long" at about 4 s. Outside any
 * fiber: the refill drives the loop itself.
 */
static void test_prot_waitevent_spec48_order(void **state)
{
	struct evlog log = {0};
	struct evctx e1 = {.id = 1, .what = EV_REMOVE, .log = &log};
	struct evctx e2 = {.id = 2, .what = EV_REMOVE, .log = &log};
	struct evctx e3 = {
		.id = 3, .what = EV_REARM_SEC, .limit = 99, .log = &log};
	struct evctx e4 = {.id = 4, .what = EV_REMOVE, .log = &log};
	static const int want[] = {4, 1, 2, 3, 3};
	struct protstream *s;
	uint64_t t0;
	time_t t;
	int sv[2];

	(void)state;
	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 4), 0);
	t = time(NULL);
	assert_non_null(prot_addwaitevent(s, t + 1, ev_cb, &e1));
	assert_non_null(prot_addwaitevent(s, t + 1, ev_cb, &e2));
	assert_non_null(prot_addwaitevent(s, t + 2, ev_cb, &e3));
	assert_non_null(prot_addwaitevent(s, t, ev_cb, &e4));
	t0 = t_now_ms();
	assert_int_equal(prot_getc(s), EOF);
	assert_string_equal(prot_error(s), "idle for too long");
	assert_false(prot_IS_EOF(s));
	assert_in_range(t_now_ms() - t0, 3500, 6000);
	/*
	 * Cyrus counts the 4 s in whole seconds from the wait's start, so
	 * E3's third mark (t+4) meets the deadline and E3 runs twice. Here
	 * the deadline is 4 s to the nanosecond (spec 6 item 2), so a mark
	 * at t+4 is still before it unless the test began exactly on a
	 * second: E3 may run a third time, at t+4, never later.
	 */
	assert_in_range(log.n, 5, 6);
	for (int i = 0; i < 5; i++)
		assert_int_equal(log.ids[i], want[i]);
	if (log.n == 6) {
		assert_int_equal(log.ids[5], 3);
		assert_true(log.at_ms[5] >= (uint64_t)(t + 4) * 1000);
	}
	assert_int_equal(e1.calls, 1);
	assert_int_equal(e2.calls, 1);
	assert_int_equal(e3.calls, log.n - 3);
	assert_int_equal(e4.calls, 1);
	/* Never early: E1 at or after t+1, E3 at or after t+2 and t+3. */
	assert_true(log.at_ms[1] >= (uint64_t)(t + 1) * 1000);
	assert_true(log.at_ms[3] >= (uint64_t)(t + 2) * 1000);
	assert_true(log.at_ms[4] >= (uint64_t)(t + 3) * 1000);
	/* Only E3 is left, and the stream stays dead. */
	assert_int_equal(list_len(s), 1);
	assert_int_equal(prot_getc(s), EOF);
	prot_free(s);
	t_close_pair(sv);
}

/* Spec 5.5 #49: a NULL proc adds nothing and returns the head. */
static void test_prot_waitevent_null_proc_returns_head(void **state)
{
	struct evctx c = {.what = EV_REMOVE};
	struct prot_waitevent *e;
	struct protstream *s;
	int sv[2];

	(void)state;
	s = t_read_pair(sv);
	assert_null(prot_addwaitevent(s, time(NULL), NULL, NULL));
	assert_null(s->waitevent);
	e = prot_addwaitevent(s, time(NULL) + 50, ev_cb, &c);
	assert_non_null(e);
	assert_ptr_equal(prot_addwaitevent(s, time(NULL), NULL, &c), e);
	assert_ptr_equal(prot_addwaitevent_ms(s, t_realtime_ms(), NULL, &c), e);
	assert_int_equal(list_len(s), 1);
	assert_int_equal(c.calls, 0);
	prot_free(s);
	t_close_pair(sv);
}

/* Spec 5.5 #50: blocking, no timeout: an overdue event never runs. */
static void test_prot_waitevent_blocking_no_timeout_never_runs(void **state)
{
	struct evctx c = {.what = EV_KEEP_PAST};
	struct protstream *s;
	struct peer_act a;
	uint64_t t0;
	int sv[2];

	s = t_read_pair(sv);
	assert_non_null(prot_addwaitevent(s, time(NULL) - 10, ev_cb, &c));
	a = peer_write(sv[1], "x");
	peer_act_start(t_loop_of(state), &a, 1000);
	t0 = t_now_ms();
	assert_int_equal(prot_getc(s), 'x');
	assert_true(t_now_ms() - t0 >= 900);
	assert_int_equal(c.calls, 0);
	prot_free(s);
	t_close_pair(sv);
}

/* Spec 5.5 #51: non-blocking: a due event runs once, then EAGAIN. */
static void test_prot_waitevent_nonblocking_runs_once(void **state)
{
	struct evctx c = {.what = EV_KEEP};
	struct protstream *s;
	int sv[2];

	(void)state;
	s = t_read_pair(sv);
	prot_NONBLOCK(s);
	assert_non_null(prot_addwaitevent(s, time(NULL) - 1, ev_cb, &c));
	errno = 0;
	assert_int_equal(prot_getc(s), EOF);
	assert_int_equal(errno, EAGAIN);
	assert_null(prot_error(s));
	assert_int_equal(c.calls, 1);
	/* Data that arrives later is returned. */
	assert_int_equal(write(sv[1], "y", 1), 1);
	assert_int_equal(prot_getc(s), 'y');
	assert_int_equal(c.calls, 1); /* its mark moved 100 s out */
	prot_free(s);
	t_close_pair(sv);
}

/* Spec 5.5 #52: with a timeout and input readable, a due event runs first. */
static void test_prot_waitevent_runs_before_readable_input(void **state)
{
	struct evctx c = {.what = EV_REMOVE, .bytes_in_at_call = 99};
	struct protstream *s;
	int sv[2];

	(void)state;
	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 10), 0);
	assert_int_equal(write(sv[1], "z", 1), 1);
	assert_non_null(prot_addwaitevent(s, time(NULL) - 1, ev_cb, &c));
	assert_int_equal(prot_getc(s), 'z');
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.bytes_in_at_call, 0);
	assert_null(s->waitevent);
	prot_free(s);
	t_close_pair(sv);
}

/*
 * Spec 5.5 #53, fixed (spec 6 item 5): a callback that keeps its event
 * with a past mark does not kill the stream ("Invalid argument" in
 * Cyrus) and does not busy-loop: it fires again at the next second.
 */
static void test_prot_waitevent_past_mark_clamped(void **state)
{
	struct evctx c = {.what = EV_KEEP_PAST};
	struct prot_waitevent *ev;
	struct protstream *s;
	struct peer_act a;
	time_t old;
	int sv[2];

	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 10), 0);
	old = time(NULL) - 1;
	ev = prot_addwaitevent(s, old, ev_cb, &c);
	assert_non_null(ev);
	a = peer_write(sv[1], "x");
	peer_act_start(t_loop_of(state), &a, 1500);
	assert_int_equal(prot_getc(s), 'x');
	assert_null(prot_error(s));
	assert_in_range(c.calls, 1, 4); /* once, then once per second */
	assert_true(ev->mark > old);
	prot_free(s);
	t_close_pair(sv);
}

/* The same for a millisecond event: clamped to the next millisecond. */
static void test_prot_waitevent_past_mark_ms_clamped(void **state)
{
	struct evctx c = {.what = EV_KEEP_PAST};
	struct protstream *s;
	struct peer_act a;
	int sv[2];

	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 10), 0);
	assert_non_null(
		prot_addwaitevent_ms(s, t_realtime_ms() - 5, ev_cb, &c));
	a = peer_write(sv[1], "x");
	peer_act_start(t_loop_of(state), &a, 300);
	assert_int_equal(prot_getc(s), 'x');
	assert_null(prot_error(s));
	/* At most one per millisecond, and it did keep firing. */
	assert_in_range(c.calls, 2, 400);
	prot_free(s);
	t_close_pair(sv);
}

/*
 * A slow callback (2 ms) on a millisecond event that keeps a past mark is
 * due again every time it returns: the wait must still see its input and
 * its deadline (no livelock).
 */
static struct prot_waitevent *slow_cb(struct protstream *s,
				      struct prot_waitevent *ev, void *rock)
{
	int *calls = rock;

	(void)s;
	(*calls)++;
	usleep(2000);
	return ev;
}

static void test_prot_waitevent_slow_event_no_livelock(void **state)
{
	struct protstream *s;
	struct peer_act a;
	int calls = 0;
	uint64_t t0;
	int sv[2];

	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 1), 0);
	assert_non_null(
		prot_addwaitevent_ms(s, t_realtime_ms(), slow_cb, &calls));
	a = peer_write(sv[1], "x");
	peer_act_start(t_loop_of(state), &a, 200);
	assert_int_equal(prot_getc(s), 'x');
	assert_true(calls > 1);
	t0 = t_now_ms();
	assert_int_equal(prot_getc(s), EOF);
	assert_in_range(t_now_ms() - t0, 900, 3000);
	assert_string_equal(prot_error(s), "idle for too long");
	prot_free(s);
	t_close_pair(sv);
}

static int rcb_calls;

static void read_cb(struct protstream *s, void *rock)
{
	(void)s;
	(void)rock;
	rcb_calls++;
}

/* Spec 5.5 #54: flush-on-read and the one-shot read callback. */
static void test_prot_waitevent_flushonread(void **state)
{
	struct protstream *in, *out;
	struct peer_act a;
	char buf[32];
	int sv[2];

	in = t_read_pair(sv);
	out = prot_new(sv[0], 1);
	assert_non_null(out);
	assert_int_equal(prot_setflushonread(in, out), 0);
	assert_int_equal(prot_settimeout(in, 10), 0);

	/* Input already readable: the partner's output stays put. */
	assert_int_equal(prot_printf(out, "pending"), 0);
	assert_int_equal(write(sv[1], "a", 1), 1);
	assert_int_equal(prot_getc(in), 'a');
	assert_int_equal(recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT), -1);
	assert_int_equal(errno, EAGAIN);

	/* Not readable: the callback runs once and "pending" goes out first. */
	rcb_calls = 0;
	assert_int_equal(prot_setreadcallback(in, read_cb, NULL), 0);
	a = peer_write(sv[1], "b");
	a.peek_fd = sv[1];
	peer_act_start(t_loop_of(state), &a, 300);
	assert_int_equal(prot_getc(in), 'b');
	assert_int_equal(rcb_calls, 1);
	assert_int_equal(a.peek_len, 7);
	a.peek[7] = '\0';
	assert_string_equal(a.peek, "pending");

	/* A later blocking read does not run the callback again. */
	a = peer_write(sv[1], "c");
	peer_act_start(t_loop_of(state), &a, 100);
	assert_int_equal(prot_getc(in), 'c');
	assert_int_equal(rcb_calls, 1);
	prot_free(out);
	prot_free(in);
	t_close_pair(sv);
}

/* Events due together run in list order, whatever their marks' order. */
static void test_prot_waitevent_equal_marks_list_order(void **state)
{
	struct evlog log = {0};
	struct evctx c[4];
	struct protstream *s;
	struct peer_act a;
	uint64_t mark = t_realtime_ms() + 200;
	int sv[2];

	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 10), 0);
	for (int i = 0; i < 4; i++) {
		c[i] = (struct evctx){.id = i, .what = EV_REMOVE, .log = &log};
		assert_non_null(prot_addwaitevent_ms(s, mark, ev_cb, &c[i]));
	}
	a = peer_write(sv[1], "x");
	peer_act_start(t_loop_of(state), &a, 900);
	assert_int_equal(prot_getc(s), 'x');
	assert_int_equal(log.n, 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(log.ids[i], i);
		assert_true(log.at_ms[i] >= mark);
	}
	assert_null(s->waitevent);
	prot_free(s);
	t_close_pair(sv);
}

/* Re-arming: an ms event keeps itself three times, 100 ms apart. */
static void test_prot_waitevent_rearm_ms(void **state)
{
	struct evlog log = {0};
	struct evctx c = {
		.what = EV_REARM_MS, .limit = 4, .period_ms = 100, .log = &log};
	struct protstream *s;
	struct peer_act a;
	int sv[2];

	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 10), 0);
	assert_non_null(
		prot_addwaitevent_ms(s, t_realtime_ms() + 50, ev_cb, &c));
	a = peer_write(sv[1], "x");
	peer_act_start(t_loop_of(state), &a, 1200);
	assert_int_equal(prot_getc(s), 'x');
	assert_int_equal(c.calls, 4);
	for (int i = 1; i < 4; i++)
		assert_true(log.at_ms[i] >= log.at_ms[i - 1] + 99);
	assert_null(s->waitevent);
	prot_free(s);
	t_close_pair(sv);
}

/* A callback returning NULL without removing its event: it is removed. */
static void test_prot_waitevent_return_null_removes(void **state)
{
	struct evctx c = {.what = EV_RETNULL};
	struct protstream *s;
	struct peer_act a;
	int sv[2];

	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 10), 0);
	assert_non_null(prot_addwaitevent(s, time(NULL) - 1, ev_cb, &c));
	a = peer_write(sv[1], "x");
	peer_act_start(t_loop_of(state), &a, 300);
	assert_int_equal(prot_getc(s), 'x');
	assert_int_equal(c.calls, 1);
	assert_null(s->waitevent);
	prot_free(s);
	t_close_pair(sv);
}

/* Removal from outside a callback: before arming and once armed. */
static void test_prot_waitevent_remove_outside(void **state)
{
	struct evctx c1 = {.what = EV_REMOVE}, c2 = {.what = EV_REMOVE};
	struct prot_waitevent stranger = {0};
	struct prot_waitevent *e1, *e2;
	struct ur_loop_stats st0, st1;
	struct protstream *s;
	struct peer_act a;
	int sv[2];

	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 10), 0);
	e1 = prot_addwaitevent_ms(s, t_realtime_ms() + 200, ev_cb, &c1);
	e2 = prot_addwaitevent(s, time(NULL) + 60, ev_cb, &c2);
	assert_non_null(e1);
	assert_non_null(e2);
	prot_removewaitevent(s, e1);	    /* never armed */
	prot_removewaitevent(s, &stranger); /* unknown: ignored */
	prot_removewaitevent(s, NULL);
	assert_ptr_equal(s->waitevent, e2);

	/* A read arms e2's timer and leaves it armed. */
	assert_int_equal(write(sv[1], "x", 1), 1);
	assert_int_equal(prot_getc(s), 'x');
	a = peer_write(sv[1], "y");
	peer_act_start(t_loop_of(state), &a, 100);
	assert_int_equal(prot_getc(s), 'y');
	ur_loop_stats(t_loop_of(state), &st0);
	prot_removewaitevent(s, e2); /* armed: its timer goes too */
	ur_loop_stats(t_loop_of(state), &st1);
	assert_int_equal(st1.timers_armed + 1, st0.timers_armed);
	assert_null(s->waitevent);

	a = peer_write(sv[1], "z");
	peer_act_start(t_loop_of(state), &a, 500);
	assert_int_equal(prot_getc(s), 'z');
	assert_int_equal(c1.calls + c2.calls, 0);
	prot_free(s);
	t_close_pair(sv);
}

/*
 * Spec 6 item 5: callbacks removing *other* events during the pass. Under
 * ASan, any use of a freed node fails the test.
 *  1. A removes B (due, after it in the list) and keeps itself: B never
 *     runs, C (due) still does.
 *  2. X removes Y (due, next) and then itself: Y never runs, Z does.
 */
static void test_prot_waitevent_remove_other_in_callback(void **state)
{
	struct evlog log = {0};
	struct evctx a = {.id = 1, .what = EV_KILL, .log = &log};
	struct evctx b = {.id = 2, .what = EV_REMOVE, .log = &log};
	struct evctx c = {.id = 3, .what = EV_REMOVE, .log = &log};
	struct evctx x = {.id = 4, .what = EV_KILL_SELF, .log = &log};
	struct evctx y = {.id = 5, .what = EV_REMOVE, .log = &log};
	struct evctx z = {.id = 6, .what = EV_REMOVE, .log = &log};
	struct prot_waitevent *ea;
	struct protstream *s;
	struct peer_act pa;
	time_t past = time(NULL) - 1;
	int sv[2];

	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 10), 0);
	ea = prot_addwaitevent(s, past, ev_cb, &a);
	a.victim = prot_addwaitevent(s, past, ev_cb, &b);
	assert_non_null(prot_addwaitevent(s, past, ev_cb, &c));
	pa = peer_write(sv[1], "x");
	peer_act_start(t_loop_of(state), &pa, 200);
	assert_int_equal(prot_getc(s), 'x');
	assert_int_equal(log.n, 2);
	assert_int_equal(log.ids[0], 1);
	assert_int_equal(log.ids[1], 3);
	assert_int_equal(b.calls, 0);
	assert_ptr_equal(s->waitevent, ea); /* only A is left */
	assert_int_equal(list_len(s), 1);

	prot_removewaitevent(s, ea);
	assert_non_null(prot_addwaitevent(s, past, ev_cb, &x));
	x.victim = prot_addwaitevent(s, past, ev_cb, &y);
	assert_non_null(prot_addwaitevent(s, past, ev_cb, &z));
	pa = peer_write(sv[1], "y");
	peer_act_start(t_loop_of(state), &pa, 200);
	assert_int_equal(prot_getc(s), 'y');
	assert_int_equal(log.n, 4);
	assert_int_equal(log.ids[2], 4);
	assert_int_equal(log.ids[3], 6);
	assert_int_equal(y.calls, 0);
	assert_null(s->waitevent);
	prot_free(s);
	t_close_pair(sv);
}

/*
 * Callbacks write to the client: on the stream's own fiber, the callback
 * prints and flushes to the output stream; the peer reads the bytes
 * before the input it sends next is even written.
 */
struct writer_run {
	int sv[2];
	struct evctx c;
	int got;
	const char *err;
};

static int writer_fiber(void *arg)
{
	struct writer_run *r = arg;
	struct protstream *in = prot_new(r->sv[0], 0);
	struct protstream *out = prot_new(r->sv[0], 1);

	if (in == NULL || out == NULL)
		return -1;
	(void)prot_settimeout(in, 10);
	r->c.out = out;
	if (prot_addwaitevent_ms(in, t_realtime_ms() + 200, ev_cb, &r->c) ==
	    NULL)
		return -1;
	r->got = prot_getc(in);
	r->err = prot_error(in) != NULL ? "error" : NULL;
	prot_free(out);
	prot_free(in);
	return 0;
}

static void test_prot_waitevent_callback_writes_client(void **state)
{
	struct writer_run r = {.c = {.what = EV_WRITE}};
	struct ur_fiber *f;
	struct peer_act a;
	int ret = -1;

	t_socketpair(r.sv);
	a = peer_write(r.sv[1], "x");
	a.peek_fd = r.sv[1];
	peer_act_start(t_loop_of(state), &a, 1000);
	assert_int_equal(
		ur_fiber_spawn(t_loop_of(state), writer_fiber, &r, NULL, &f),
		0);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, 0);
	assert_int_equal(r.got, 'x');
	assert_null(r.err);
	assert_int_equal(r.c.calls, 1);
	assert_int_equal(a.peek_len, (ssize_t)strlen("* OK still here\r\n"));
	a.peek[a.peek_len] = '\0';
	assert_string_equal(a.peek, "* OK still here\r\n");
	t_close_pair(r.sv);
}

/* A mark moved earlier by hand: before the wait, and during it. */
static void test_prot_waitevent_hand_moved_earlier(void **state)
{
	struct evlog log = {0};
	struct evctx c = {.id = 1, .what = EV_KEEP, .log = &log};
	struct prot_waitevent *ev;
	struct protstream *s;
	struct peer_act a, mv = {.fd = -1, .peek_fd = -1};
	uint64_t t0;
	int sv[2];

	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 10), 0);
	ev = prot_addwaitevent(s, time(NULL) + 100, ev_cb, &c);
	assert_non_null(ev);
	ev->mark = time(NULL) - 1; /* Cyrus style: write the field */
	a = peer_write(sv[1], "x");
	peer_act_start(t_loop_of(state), &a, 300);
	assert_int_equal(prot_getc(s), 'x');
	assert_int_equal(c.calls, 1);
	assert_true(ev->mark > time(NULL) + 50); /* EV_KEEP moved it */

	/* During a wait (another party moves it and re-arms): fires then. */
	mv.move_ev = ev;
	mv.move_s = s;
	peer_act_start(t_loop_of(state), &mv, 200);
	a = peer_write(sv[1], "y");
	peer_act_start(t_loop_of(state), &a, 900);
	t0 = t_realtime_ms();
	assert_int_equal(prot_getc(s), 'y');
	assert_int_equal(c.calls, 2);
	assert_true(log.at_ms[1] >= t0 + 150); /* not before it was moved */
	prot_free(s);
	t_close_pair(sv);
}

/* A mark moved later by hand: the armed timer follows it. */
static void test_prot_waitevent_hand_moved_later(void **state)
{
	struct evctx c = {.what = EV_REMOVE};
	struct prot_waitevent *ev;
	struct protstream *s;
	struct peer_act a;
	int sv[2];

	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 10), 0);
	ev = prot_addwaitevent_ms(s, t_realtime_ms() + 300, ev_cb, &c);
	assert_non_null(ev);
	/* A first read arms the event's timer at +300 ms. */
	assert_int_equal(write(sv[1], "x", 1), 1);
	assert_int_equal(prot_getc(s), 'x');
	ev->mark = time(NULL) + 100;
	a = peer_write(sv[1], "y");
	peer_act_start(t_loop_of(state), &a, 900);
	assert_int_equal(prot_getc(s), 'y');
	assert_int_equal(c.calls, 0);
	assert_int_equal(list_len(s), 1);
	prot_free(s);
	t_close_pair(sv);
}

/*
 * The millisecond variant: a mark half way through a second fires at it,
 * never early, and not at a whole second (before or after).
 */
static void test_prot_waitevent_ms_variant(void **state)
{
	struct evlog log = {0};
	struct evctx c = {.what = EV_REMOVE, .log = &log};
	struct prot_waitevent *ev;
	struct protstream *s;
	struct peer_act a;
	uint64_t now = t_realtime_ms();
	uint64_t mark = (now / 1000 + 1) * 1000 + 200;
	int sv[2];

	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 10), 0);
	ev = prot_addwaitevent_ms(s, mark, ev_cb, &c);
	assert_non_null(ev);
	assert_int_equal(ev->mark, (time_t)(mark / 1000));
	a = peer_write(sv[1], "x");
	peer_act_start(t_loop_of(state), &a, (unsigned)(mark - now) + 800);
	assert_int_equal(prot_getc(s), 'x');
	assert_int_equal(c.calls, 1);
	assert_true(log.at_ms[0] >= mark);
	assert_true(log.at_ms[0] < mark + 800); /* not at a whole second */
	assert_int_equal(prot_setwaitevent_ms(s, ev, mark), EOF); /* gone */
	assert_int_equal(errno, ENOENT);
	assert_int_equal(prot_rearmwaitevent(s, ev), EOF);
	prot_free(s);
	t_close_pair(sv);
}

/* Spec 5.4 #43: a read timeout with no event. */
static void test_prot_waitevent_timeout_without_events(void **state)
{
	struct protstream *s;
	uint64_t t0;
	int sv[2];

	(void)state;
	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 1), 0);
	t0 = t_now_ms();
	assert_int_equal(prot_getc(s), EOF);
	assert_in_range(t_now_ms() - t0, 900, 3000);
	assert_string_equal(prot_error(s), "idle for too long");
	/* Sticky: later data is never returned. */
	assert_int_equal(write(sv[1], "x", 1), 1);
	assert_int_equal(prot_getc(s), EOF);
	prot_free(s);
	t_close_pair(sv);
}

/* A read timeout with an event that keeps firing: it still expires. */
static void test_prot_waitevent_timeout_with_events(void **state)
{
	struct evctx c = {.what = EV_REARM_MS, .limit = 1000, .period_ms = 300};
	struct protstream *s;
	uint64_t t0;
	int sv[2];

	(void)state;
	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 2), 0);
	assert_non_null(
		prot_addwaitevent_ms(s, t_realtime_ms() + 300, ev_cb, &c));
	t0 = t_now_ms();
	assert_int_equal(prot_getc(s), EOF);
	assert_in_range(t_now_ms() - t0, 1800, 4000);
	assert_string_equal(prot_error(s), "idle for too long");
	assert_in_range(c.calls, 2, 7);
	prot_free(s);
	t_close_pair(sv);
}

/*
 * Spec 5.4 #44: the window counts from the last refill; once it passed,
 * a read with no input fails at once, but input already there is read.
 */
static void test_prot_waitevent_expired_window(void **state)
{
	struct protstream *s;
	uint64_t t0;
	int sv[2];

	(void)state;
	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 1), 0);
	assert_int_equal(write(sv[1], "ab", 2), 2);
	assert_int_equal(prot_getc(s), 'a');
	assert_int_equal(prot_getc(s), 'b');
	usleep(1300 * 1000);
	assert_int_equal(write(sv[1], "c", 1), 1);
	assert_int_equal(prot_getc(s), 'c'); /* input present: let through */
	usleep(1300 * 1000);
	t0 = t_now_ms();
	assert_int_equal(prot_getc(s), EOF);
	assert_true(t_now_ms() - t0 < 900); /* no new 1 s window */
	assert_string_equal(prot_error(s), "idle for too long");
	prot_free(s);
	t_close_pair(sv);
}

/* prot_free with events pending (armed or not): nothing leaks. */
static void test_prot_waitevent_free_with_pending(void **state)
{
	struct evctx c[3] = {
		{.what = EV_KEEP}, {.what = EV_KEEP}, {.what = EV_KEEP}};
	struct ur_loop_stats st;
	struct protstream *s, *w;
	int sv[2];

	s = t_read_pair(sv);
	w = prot_new(sv[0], 1);
	assert_non_null(w);
	assert_int_equal(prot_settimeout(s, 30), 0);
	assert_non_null(prot_addwaitevent(s, time(NULL) + 60, ev_cb, &c[0]));
	assert_non_null(
		prot_addwaitevent_ms(s, t_realtime_ms() + 90000, ev_cb, &c[1]));
	assert_int_equal(write(sv[1], "x", 1), 1);
	assert_int_equal(prot_getc(s), 'x'); /* arms both timers */
	assert_non_null(prot_addwaitevent(s, time(NULL) + 60, ev_cb, &c[2]));
	/* Events on a write stream are freed too. */
	assert_non_null(prot_addwaitevent(w, time(NULL) + 60, ev_cb, &c[0]));
	ur_loop_stats(t_loop_of(state), &st);
	assert_true(st.timers_armed >= 2);
	prot_free(s);
	prot_free(w);
	ur_loop_stats(t_loop_of(state), &st);
	assert_int_equal(st.timers_armed, 0);
	assert_int_equal(c[0].calls + c[1].calls + c[2].calls, 0);
	t_close_pair(sv);
}

/* A callback adding an event that is due: reached in the same wait. */
static struct evctx add_child = {.id = 2, .what = EV_REMOVE};

static struct prot_waitevent *adder_cb(struct protstream *s,
				       struct prot_waitevent *ev, void *rock)
{
	(void)rock;
	(void)prot_addwaitevent(s, time(NULL) - 1, ev_cb, &add_child);
	prot_removewaitevent(s, ev);
	return NULL;
}

static void test_prot_waitevent_callback_adds(void **state)
{
	struct protstream *s;
	struct peer_act a;
	int sv[2];

	s = t_read_pair(sv);
	add_child.calls = 0;
	assert_int_equal(prot_settimeout(s, 10), 0);
	assert_non_null(prot_addwaitevent(s, time(NULL) - 1, adder_cb, NULL));
	a = peer_write(sv[1], "x");
	peer_act_start(t_loop_of(state), &a, 300);
	assert_int_equal(prot_getc(s), 'x');
	assert_int_equal(add_child.calls, 1);
	assert_null(s->waitevent);
	prot_free(s);
	t_close_pair(sv);
}

/*
 * Spec 6 item 7: a signal during a timed wait does not end the session
 * (Cyrus: "Interrupted system call"). The handler has no SA_RESTART.
 */
static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

static void test_prot_waitevent_signal_no_eintr(void **state)
{
	struct sigaction sa = {.sa_handler = on_alarm}, old;
	struct itimerval it = {.it_value = {0, 200000}};
	struct itimerval off = {{0, 0}, {0, 0}};
	struct evctx c = {.what = EV_KEEP};
	struct protstream *s;
	struct peer_act a;
	int sv[2];

	s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(s, 10), 0);
	assert_non_null(prot_addwaitevent(s, time(NULL) + 60, ev_cb, &c));
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	alarms = 0;
	assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
	a = peer_write(sv[1], "x");
	peer_act_start(t_loop_of(state), &a, 700);
	assert_int_equal(prot_getc(s), 'x');
	assert_int_equal(setitimer(ITIMER_REAL, &off, NULL), 0);
	assert_int_equal(sigaction(SIGALRM, &old, NULL), 0);
	assert_int_equal(alarms, 1);
	assert_null(prot_error(s));
	prot_free(s);
	t_close_pair(sv);
}

/* A fiber cancelled while it waits in a timed read: EOF, nothing leaks. */
struct cancel_run {
	struct protstream *s;
	int got;
};

static int cancel_fiber(void *arg)
{
	struct cancel_run *r = arg;

	r->got = prot_getc(r->s);
	return 0;
}

static void test_prot_waitevent_fiber_cancelled(void **state)
{
	struct evctx c = {.what = EV_KEEP};
	struct cancel_run r = {.got = 0};
	struct ur_fiber *f;
	int sv[2];
	int flag = 0;

	r.s = t_read_pair(sv);
	assert_int_equal(prot_settimeout(r.s, 10), 0);
	assert_non_null(prot_addwaitevent(r.s, time(NULL) + 60, ev_cb, &c));
	assert_int_equal(
		ur_fiber_spawn(t_loop_of(state), cancel_fiber, &r, NULL, &f),
		0);
	(void)t_loop_run_until(t_loop_of(state), &flag, 200);
	assert_int_equal(ur_fiber_cancel(f), 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(r.got, EOF);
	assert_non_null(prot_error(r.s));
	prot_free(r.s);
	t_close_pair(sv);
}

/*
 * 10,000 streams over 5,000 socketpairs (10,000 fds), one fiber each,
 * each with a wait event about 1 s out. Every event fires on its own
 * stream's fiber and sends one byte from the partner's end of the pair,
 * so that byte reaches the stream itself: a stream's read can only
 * complete after its own event ran. (Were the byte sent to the partner,
 * the partner's read could complete before its own event fired, and a
 * read that completes ends the wait, in Cyrus too: input found ready
 * beats an event that came due meanwhile.)
 */
#define MANY 10000

struct many {
	struct protstream *s[MANY];
	struct evctx c[MANY];
	struct ur_fiber *f[MANY];
	int got[MANY];
	int fd[MANY];
	int done;
	int fired;
};

static struct prot_waitevent *many_cb(struct protstream *s,
				      struct prot_waitevent *ev, void *rock)
{
	struct evctx *c = rock;
	struct many *m = c->user;
	char b = 'k';

	c->calls++;
	m->fired++;
	if (send(m->fd[c->id ^ 1], &b, 1, MSG_DONTWAIT) != 1)
		c->calls += 1000; /* shows up as a wrong count */
	prot_removewaitevent(s, ev);
	return NULL;
}

static int many_fiber(void *arg)
{
	struct evctx *c = arg;
	struct many *m = c->user;

	m->got[c->id] = prot_getc(m->s[c->id]);
	m->done++;
	return 0;
}

static void test_prot_waitevent_10000_streams(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct rlimit rl;
	struct many *m = calloc(1, sizeof(*m));
	time_t mark = time(NULL) + 1;
	uint64_t t0;
	int fired, done, err = 0;

	assert_non_null(m);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < MANY + 200 && rl.rlim_max >= MANY + 200) {
		rl.rlim_cur = rl.rlim_max;
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	if (rl.rlim_cur < MANY + 200) {
		free(m);
		skip();
	}
	for (int i = 0; i < MANY; i += 2) {
		t_socketpair(&m->fd[i]);
	}
	for (int i = 0; i < MANY; i++) {
		m->s[i] = prot_new(m->fd[i], 0);
		assert_non_null(m->s[i]);
		assert_int_equal(prot_settimeout(m->s[i], 90), 0);
		m->c[i] = (struct evctx){.id = i, .user = m};
		assert_non_null(
			prot_addwaitevent(m->s[i], mark, many_cb, &m->c[i]));
		assert_int_equal(ur_fiber_spawn(loop, many_fiber, &m->c[i],
						NULL, &m->f[i]),
				 0);
	}
	t0 = t_now_ms();
	/* Generous: a correctness test, run under ASan on a loaded VM. */
	for (uint64_t end = t0 + 60000; m->done < MANY && t_now_ms() < end;)
		assert_true(ur_loop_run_once(loop, 100 * MS) >= 0);
	fired = m->fired;
	done = m->done;
	/*
	 * Clean up before asserting, so a failure here leaves no 10,000 fds
	 * or fibers behind for the tests after it. Fibers still parked are
	 * cancelled first.
	 */
	for (int i = 0; i < MANY && done != MANY; i++) {
		int r = ur_fiber_cancel(m->f[i]);

		if (r != 0 && r != -ESRCH)
			err++;
	}
	for (int i = 0; i < MANY; i++) {
		if (m->got[i] != 'k' || m->c[i].calls != 1)
			err++;
		if (ur_fiber_join(m->f[i], NULL) != 0)
			err++;
		prot_free(m->s[i]);
		close(m->fd[i]);
	}
	free(m);
	/*
	 * Freeing the streams stopped 10,000 read-deadline timers: let their
	 * remove completions drain (DEFER_TASKRUN hands out a few per turn).
	 */
	for (uint64_t end = t_now_ms() + 10000; t_now_ms() < end;) {
		struct ur_loop_stats st;

		ur_loop_stats(loop, &st);
		if (st.ops_inflight == 0)
			break;
		assert_true(ur_loop_run_once(loop, 10 * MS) >= 0);
	}
	if (fired != MANY || done != MANY || err != 0)
		fail_msg("%d of %d events fired, %d reads done, %d wrong after "
			 "%llu ms",
			 fired, MANY, done, err,
			 (unsigned long long)(t_now_ms() - t0));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_prot_waitevent_spec48_order),
		T(test_prot_waitevent_null_proc_returns_head),
		T(test_prot_waitevent_blocking_no_timeout_never_runs),
		T(test_prot_waitevent_nonblocking_runs_once),
		T(test_prot_waitevent_runs_before_readable_input),
		T(test_prot_waitevent_past_mark_clamped),
		T(test_prot_waitevent_past_mark_ms_clamped),
		T(test_prot_waitevent_slow_event_no_livelock),
		T(test_prot_waitevent_flushonread),
		T(test_prot_waitevent_equal_marks_list_order),
		T(test_prot_waitevent_rearm_ms),
		T(test_prot_waitevent_return_null_removes),
		T(test_prot_waitevent_remove_outside),
		T(test_prot_waitevent_remove_other_in_callback),
		T(test_prot_waitevent_callback_writes_client),
		T(test_prot_waitevent_hand_moved_earlier),
		T(test_prot_waitevent_hand_moved_later),
		T(test_prot_waitevent_ms_variant),
		T(test_prot_waitevent_timeout_without_events),
		T(test_prot_waitevent_timeout_with_events),
		T(test_prot_waitevent_expired_window),
		T(test_prot_waitevent_free_with_pending),
		T(test_prot_waitevent_callback_adds),
		T(test_prot_waitevent_signal_no_eintr),
		T(test_prot_waitevent_fiber_cancelled),
		T(test_prot_waitevent_10000_streams),
	};

	t_require_loop();
	return t_run_groups("prot-waitevent", tests,
			    sizeof(tests) / sizeof(tests[0])) != 0;
}
