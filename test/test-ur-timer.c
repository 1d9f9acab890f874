/* SPDX-License-Identifier: BSD-3-Clause */
/* test/ur-timer: absolute timers, update/remove races, lazy deadlines. */
#include "t-helpers.h"

#include "internal.h" /* ur__realtime_skew_ns: a faked clock step */

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MS 1000000ULL

struct order {
	int seq[16];
	int n;
	uint64_t at_ns[16];
	clockid_t clock;
};

struct otimer {
	struct ur_timer t;
	struct order *o;
	int id;
};

static void order_fn(struct ur_timer *t, void *arg)
{
	struct otimer *ot = arg;

	(void)t;
	ot->o->at_ns[ot->o->n] = ur_now_ns(ot->o->clock);
	ot->o->seq[ot->o->n++] = ot->id;
}

static void run_order(struct ur_loop *loop, clockid_t clock)
{
	/*
	 * Armed out of order; they must fire by deadline. The base is 100 ms
	 * out: a timer already due when the kernel sees it completes at once,
	 * in submission order, and a loaded machine can stall the arming
	 * loop for tens of milliseconds.
	 */
	static const int delay_ms[] = {50, 10, 40, 20, 30, 0};
	struct otimer ts[6];
	struct order o = {.clock = clock};
	uint64_t base = ur_now_ns(clock) + 100 * MS;

	for (int i = 0; i < 6; i++) {
		ts[i].o = &o;
		ts[i].id = delay_ms[i];
		ur_timer_init(&ts[i].t, loop);
		assert_int_equal(ur_timer_start_abs(&ts[i].t, clock,
						    base + delay_ms[i] * MS,
						    order_fn, &ts[i]),
				 0);
	}
	for (uint64_t end = t_now_ms() + 3000; o.n < 6 && t_now_ms() < end;)
		assert_true(ur_loop_run_once(loop, 100 * MS) >= 0);
	assert_int_equal(o.n, 6);
	for (int i = 0; i < 6; i++) {
		assert_int_equal(o.seq[i], i * 10);
		/* never early */
		assert_true(o.at_ns[i] >= base + (uint64_t)o.seq[i] * MS);
	}
}

static void test_ur_timer_abs_order_monotonic(void **state)
{
	run_order(((struct t_loop *)*state)->loop, CLOCK_MONOTONIC);
}

static void test_ur_timer_abs_order_realtime(void **state)
{
	run_order(((struct t_loop *)*state)->loop, CLOCK_REALTIME);
}

static void count_fn(struct ur_timer *t, void *arg)
{
	int *n = arg;

	(void)t;
	(*n)++;
}

static void test_ur_timer_bad_clock(void **state)
{
	struct ur_timer t;
	int n = 0;

	ur_timer_init(&t, ((struct t_loop *)*state)->loop);
	assert_int_equal(ur_timer_start_abs(&t, CLOCK_PROCESS_CPUTIME_ID, 1,
					    count_fn, &n),
			 -EINVAL);
	assert_false(ur_timer_is_armed(&t));
	assert_int_equal(ur_timer_stop(&t), -ENOENT);
	assert_int_equal(ur_timer_update(&t, 5), -ENOENT);
}

static void test_ur_timer_update_later_and_earlier(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct ur_timer t;
	int n = 0;
	uint64_t t0 = ur_now_ns(CLOCK_MONOTONIC);

	ur_timer_init(&t, loop);
	assert_int_equal(ur_timer_start(&t, 20 * MS, count_fn, &n), 0);
	assert_int_equal(ur_timer_update(&t, t0 + 120 * MS), 0);
	t_loop_run_until(loop, &n, 2000);
	assert_int_equal(n, 1);
	assert_true(ur_now_ns(CLOCK_MONOTONIC) >= t0 + 120 * MS);

	n = 0;
	t0 = ur_now_ns(CLOCK_MONOTONIC);
	assert_int_equal(ur_timer_start(&t, 10 * 1000 * MS, count_fn, &n), 0);
	assert_int_equal(ur_timer_update(&t, t0 + 30 * MS), 0);
	t_loop_run_until(loop, &n, 2000);
	assert_int_equal(n, 1);
	assert_true(ur_now_ns(CLOCK_MONOTONIC) < t0 + 5000 * MS);
}

/*
 * The update races the firing: the kernel has already fired (its -ETIME
 * CQE waits in the CQ) when the update is submitted. The timer must still
 * honour the new, later deadline.
 */
static void test_ur_timer_update_races_fire(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct ur_timer t;
	int n = 0;
	uint64_t t0 = ur_now_ns(CLOCK_MONOTONIC);
	struct timespec nap = {.tv_nsec = 5 * MS};

	ur_timer_init(&t, loop);
	assert_int_equal(ur_timer_start(&t, 1 * MS, count_fn, &n), 0);
	assert_true(ur_loop_run_once(loop, 0) >= 0); /* submitted */
	nanosleep(&nap, NULL);			     /* fired in kernel */
	assert_int_equal(ur_timer_update(&t, t0 + 80 * MS), 0);
	t_loop_run_until(loop, &n, 2000);
	assert_int_equal(n, 1);
	assert_true(ur_now_ns(CLOCK_MONOTONIC) >= t0 + 80 * MS);
}

/* Remove racing the firing: after stop, the callback never runs. */
static void test_ur_timer_stop_races_fire(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct timespec nap = {.tv_nsec = 3 * MS};
	struct ur_loop_stats st;

	for (int i = 0; i < 20; i++) {
		struct ur_timer *t = malloc(sizeof(*t));
		int n = 0;

		ur_timer_init(t, loop);
		/* 2-4 ms: the 3 ms nap leaves it fired in the kernel (CQE
		 * not reaped), about to fire, or not yet due. */
		assert_int_equal(ur_timer_start(t, (2 + (uint64_t)(i % 3)) * MS,
						count_fn, &n),
				 0);
		if (i % 2)
			assert_true(ur_loop_run_once(loop, 0) >= 0);
		nanosleep(&nap, NULL);
		assert_int_equal(ur_timer_stop(t), 0);
		free(t); /* storage may go at once (ASan checks) */
		for (int k = 0; k < 5; k++)
			assert_true(ur_loop_run_once(loop, MS) >= 0);
		assert_int_equal(n, 0);
	}
	ur_loop_stats(loop, &st);
	assert_int_equal(st.timers_armed, 0);
}

struct pair {
	struct ur_timer a, b;
	int a_fired, b_fired;
};

static void stop_other(struct ur_timer *t, void *arg)
{
	struct pair *p = arg;

	(void)t;
	p->a_fired++;
	assert_int_equal(ur_timer_stop(&p->b), 0);
}

static void b_fn(struct ur_timer *t, void *arg)
{
	struct pair *p = arg;

	(void)t;
	p->b_fired++;
}

/* Both due in the same turn: a stops b from its callback; b stays quiet. */
static void test_ur_timer_stop_from_other_callback(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct pair p = {.a_fired = 0};
	uint64_t at = ur_now_ns(CLOCK_MONOTONIC) + 10 * MS;
	struct timespec nap = {.tv_nsec = 30 * MS};

	ur_timer_init(&p.a, loop);
	ur_timer_init(&p.b, loop);
	assert_int_equal(
		ur_timer_start_abs(&p.a, CLOCK_MONOTONIC, at, stop_other, &p),
		0);
	assert_int_equal(
		ur_timer_start_abs(&p.b, CLOCK_MONOTONIC, at + 1, b_fn, &p), 0);
	assert_true(ur_loop_run_once(loop, 0) >= 0);
	nanosleep(&nap, NULL); /* both CQEs are in the CQ now */
	for (int k = 0; k < 5; k++)
		assert_true(ur_loop_run_once(loop, MS) >= 0);
	assert_int_equal(p.a_fired, 1);
	assert_int_equal(p.b_fired, 0);
}

struct rearm {
	struct ur_timer t;
	int n;
};

static void rearm_fn(struct ur_timer *t, void *arg)
{
	struct rearm *r = arg;

	if (++r->n < 3)
		assert_int_equal(ur_timer_start(t, 5 * MS, rearm_fn, r), 0);
}

static void test_ur_timer_rearm_from_callback(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct rearm r = {.n = 0};
	int three = 0;

	ur_timer_init(&r.t, loop);
	assert_int_equal(ur_timer_start(&r.t, 5 * MS, rearm_fn, &r), 0);
	for (uint64_t end = t_now_ms() + 2000; r.n < 3 && t_now_ms() < end;)
		assert_true(ur_loop_run_once(loop, 10 * MS) >= 0);
	three = r.n;
	assert_int_equal(three, 3);
	assert_false(ur_timer_is_armed(&r.t));
}

/*
 * Lazy deadline: pushing it later 1,000 times costs no SQE; it fires once,
 * at the last deadline.
 */
static void test_ur_timer_lazy_deadline(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct ur_deadline d;
	struct ur_loop_stats st0, st1;
	int n = 0;
	uint64_t t0 = ur_now_ns(CLOCK_MONOTONIC);

	ur_deadline_init(&d, loop, count_fn, &n);
	assert_int_equal(ur_deadline_set(&d, t0 + 30 * MS), 0);
	assert_true(ur_loop_run_once(loop, 0) >= 0);
	ur_loop_stats(loop, &st0);
	for (int i = 1; i <= 1000; i++)
		assert_int_equal(
			ur_deadline_set(&d, t0 + 30 * MS + i * 50000ULL), 0);
	ur_loop_stats(loop, &st1);
	assert_int_equal(st1.submits, st0.submits);
	t_loop_run_until(loop, &n, 2000);
	assert_int_equal(n, 1);
	assert_true(ur_now_ns(CLOCK_MONOTONIC) >= t0 + 80 * MS);

	/* Earlier than the armed timer: an update, and it fires early. */
	n = 0;
	t0 = ur_now_ns(CLOCK_MONOTONIC);
	assert_int_equal(ur_deadline_set(&d, t0 + 10000 * MS), 0);
	assert_int_equal(ur_deadline_set(&d, t0 + 20 * MS), 0);
	t_loop_run_until(loop, &n, 2000);
	assert_int_equal(n, 1);
	assert_true(ur_now_ns(CLOCK_MONOTONIC) < t0 + 5000 * MS);

	/* Cleared: nothing fires. */
	n = 0;
	assert_int_equal(
		ur_deadline_set(&d, ur_now_ns(CLOCK_MONOTONIC) + 10 * MS), 0);
	assert_int_equal(ur_deadline_set(&d, 0), 0);
	for (int k = 0; k < 5; k++)
		assert_true(ur_loop_run_once(loop, 10 * MS) >= 0);
	assert_int_equal(n, 0);
	ur_deadline_fini(&d);
}

static void test_ur_timer_sleep_outside_fiber(void **state)
{
	uint64_t t0 = ur_now_ns(CLOCK_MONOTONIC);

	(void)state;
	assert_int_equal(ur_sleep_until(CLOCK_MONOTONIC, t0 + 15 * MS), 0);
	assert_true(ur_now_ns(CLOCK_MONOTONIC) >= t0 + 15 * MS);
	/* A deadline in the past returns at once. */
	assert_int_equal(ur_sleep_until(CLOCK_REALTIME, 1), 0);
}

/*
 * CLOCK_REALTIME marks across clock steps on epoll. A test cannot step
 * the real clock without moving the whole machine's (a time namespace
 * leaves CLOCK_REALTIME alone), so the clock source is faked: the engine
 * reads CLOCK_REALTIME plus ur__realtime_skew_ns, and ur__clock_was_set()
 * stands for the kernel's TFD_TIMER_CANCEL_ON_SET notice. io_uring's
 * timers are the kernel's own (IORING_TIMEOUT_REALTIME follows steps
 * there), and the fake would only mislead them: epoll only.
 * Forward: a mark an hour away fires at once when the clock jumps an hour.
 * Backward: a mark 300 ms away waits for the clock to get there again.
 */
static void flag_cb(struct ur_timer *t, void *arg)
{
	(void)t;
	*(int *)arg = 1;
}

/* Turns that may sleep up to 5 s each: only the timer can wake them. */
static void run_until_flag(struct ur_loop *loop, const int *flag)
{
	for (int i = 0; i < 4 && !*flag; i++)
		assert_true(ur_loop_run_once(loop, 5000 * (int64_t)MS) >= 0);
}

static void test_ur_timer_realtime_step(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_timer t;
	int fired = 0;
	uint64_t t0;

	if (!t_epoll())
		skip();
	ur_timer_init(&t, loop);
	assert_int_equal(ur_timer_start_abs(&t, CLOCK_REALTIME,
					    ur_now_ns(CLOCK_REALTIME) +
						    3600 * 1000 * MS,
					    flag_cb, &fired),
			 0);
	assert_int_equal(t_loop_run_until(loop, &fired, 100), 0);
	ur__realtime_skew_ns = 3600LL * 1000 * 1000 * 1000;
	ur__clock_was_set(loop);
	t0 = t_now_ms();
	run_until_flag(loop, &fired);
	assert_int_equal(fired, 1);
	assert_true(t_now_ms() - t0 < 1000);

	fired = 0;
	assert_int_equal(ur_timer_start_abs(&t, CLOCK_REALTIME,
					    ur_now_ns(CLOCK_REALTIME) + 300 * MS,
					    flag_cb, &fired),
			 0);
	t0 = t_now_ms();
	ur__realtime_skew_ns -= 2LL * 1000 * 1000 * 1000;
	ur__clock_was_set(loop);
	run_until_flag(loop, &fired);
	assert_int_equal(fired, 1);
	assert_true(t_now_ms() - t0 >= 2250);
	assert_true(t_now_ms() - t0 < 4000);
	ur__realtime_skew_ns = 0;
}

static int skew_teardown(void **state)
{
	ur__realtime_skew_ns = 0;
	return t_loop_teardown(state);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
	const struct CMUnitTest tests[] = {
		T(test_ur_timer_abs_order_monotonic),
		T(test_ur_timer_abs_order_realtime),
		T(test_ur_timer_bad_clock),
		T(test_ur_timer_update_later_and_earlier),
		T(test_ur_timer_update_races_fire),
		T(test_ur_timer_stop_races_fire),
		T(test_ur_timer_stop_from_other_callback),
		T(test_ur_timer_rearm_from_callback),
		T(test_ur_timer_lazy_deadline),
		T(test_ur_timer_sleep_outside_fiber),
		cmocka_unit_test_setup_teardown(test_ur_timer_realtime_step,
						t_loop_setup, skew_teardown),
	};
#undef T

	t_require_loop();
	return t_run_groups("ur-timer", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
