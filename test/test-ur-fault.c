/* SPDX-License-Identifier: BSD-3-Clause */
/* test/ur-fault: environment failures reach the caller, never abort. */
#include "t-helpers.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h" /* struct ur__backend: the refusing double below */

#define MS 1000000ULL

/*
 * Allocation failures: the link wraps malloc and calloc (meson:
 * -Wl,--wrap), so the next fail_allocs calls of the engine's code fail.
 */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);

static int fail_allocs;

void *__wrap_malloc(size_t n)
{
	if (fail_allocs > 0) {
		fail_allocs--;
		return NULL;
	}
	return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
	if (fail_allocs > 0) {
		fail_allocs--;
		return NULL;
	}
	return __real_calloc(n, size);
}

/*
 * A backend that refuses requests (as io_uring's does when the SQ cannot
 * be flushed: no memory to hold overflowed CQEs, a ring error): the
 * loop's own table with start() wrapped. Requests whose opcode is in
 * fail_mask are refused with -ENOMEM, fail_left times (-1: always).
 */
static const struct ur__backend *real_be;
static struct ur__backend fault_be;
static unsigned fail_mask;
static int fail_left;

static int fault_start(struct ur_loop *loop, struct ur_op *op,
		       const struct ur__req *req)
{
	if ((fail_mask & (1U << req->opcode)) != 0 && fail_left != 0) {
		if (fail_left > 0)
			fail_left--;
		return -ENOMEM;
	}
	return real_be->start(loop, op, req);
}

static void refuse(struct ur_loop *loop, unsigned mask, int times)
{
	if (loop->be != &fault_be) {
		real_be = loop->be;
		fault_be = *real_be;
		fault_be.start = fault_start;
		loop->be = &fault_be;
	}
	fail_mask = mask;
	fail_left = times;
}

static void refuse_none(struct ur_loop *loop)
{
	fail_mask = 0;
	if (loop->be == &fault_be)
		loop->be = real_be;
}

#define OPC(x) (1U << (x))

static void count_timer(struct ur_timer *t, void *arg)
{
	(void)t;
	++*(int *)arg;
}

static void run_ms(struct ur_loop *loop, uint64_t ms)
{
	for (uint64_t end = t_now_ms() + ms; t_now_ms() < end;)
		assert_true(ur_loop_run_once(loop, 5 * MS) >= 0);
}

static int nop_fiber(void *arg)
{
	(void)arg;
	return 0;
}

static int posted;

static void count_post(void *arg)
{
	++*(int *)arg;
}

static void test_ur_fault_nomem(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_fiber *f = NULL;
	struct ur_timer t;
	int fired = 0;

	/* A fresh loop has no spare timer slot: arming one allocates. */
	ur_timer_init(&t, loop);
	fail_allocs = 1;
	assert_int_equal(ur_timer_start(&t, 1 * MS, count_timer, &fired),
			 -ENOMEM);
	assert_false(ur_timer_is_armed(&t));
	fail_allocs = 1;
	assert_int_equal(ur_fiber_spawn(loop, nop_fiber, NULL, NULL, &f),
			 -ENOMEM);
	fail_allocs = 1;
	assert_int_equal(ur_loop_post(loop, count_post, &posted), -ENOMEM);
	fail_allocs = 0;
	/* And all is well once memory is back. */
	assert_int_equal(ur_timer_start(&t, 1 * MS, count_timer, &fired), 0);
	assert_int_equal(t_loop_run_until(loop, &fired, 2000), 1);
}

/* A refused remove: reported, and the timer is disarmed all the same. */
static void test_ur_fault_timer_stop_refused(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_loop_stats st;
	struct ur_timer t;
	int fired = 0;

	ur_timer_init(&t, loop);
	assert_int_equal(ur_timer_start(&t, 50 * MS, count_timer, &fired), 0);
	assert_true(ur_loop_run_once(loop, 0) >= 0);
	refuse(loop, OPC(UR__TIMER_REMOVE), -1);
	assert_int_equal(ur_timer_stop(&t), -ENOMEM);
	refuse_none(loop);
	assert_false(ur_timer_is_armed(&t));
	assert_int_equal(ur_timer_stop(&t), -ENOENT);
	/* The orphaned timeout runs to its deadline and calls nobody. */
	run_ms(loop, 150);
	assert_int_equal(fired, 0);
	ur_loop_stats(loop, &st);
	assert_int_equal(st.ops_inflight, 0);
}

/* A lazy deadline that cannot re-arm fires early rather than never. */
static void test_ur_fault_deadline_rearm_refused(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_deadline d;
	uint64_t t0 = t_now_ms();
	int fired = 0;

	ur_deadline_init(&d, loop, count_timer, &fired);
	assert_int_equal(
		ur_deadline_set(&d, ur_now_ns(CLOCK_MONOTONIC) + 20 * MS), 0);
	/* Pushed later: no SQE now, a re-arm when the first one fires. */
	assert_int_equal(
		ur_deadline_set(&d, ur_now_ns(CLOCK_MONOTONIC) + 60000 * MS),
		0);
	assert_true(ur_loop_run_once(loop, 0) >= 0);
	refuse(loop, OPC(UR__TIMER), -1);
	assert_int_equal(t_loop_run_until(loop, &fired, 5000), 1);
	refuse_none(loop);
	assert_true(t_now_ms() - t0 < 5000);
	ur_deadline_fini(&d);
}

/* The cancel of an op the backend refuses: the op ends by itself. */
static void on_op(struct ur_op *op)
{
	++*(int *)op->data;
}

static void test_ur_fault_op_cancel_refused(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_op op;
	char c;
	int sv[2], done = 0;

	t_socketpair(sv);
	ur_op_init(&op, on_op, &done);
	assert_int_equal(ur_recv_start(loop, &op, sv[0], &c, 1, 0), 0);
	assert_true(ur_loop_run_once(loop, 0) >= 0);
	refuse(loop, OPC(UR__CANCEL), -1);
	assert_int_equal(ur_op_cancel(&op), -ENOMEM);
	refuse_none(loop);
	run_ms(loop, 20);
	assert_int_equal(done, 0);
	assert_int_equal(write(sv[1], "x", 1), 1);
	assert_int_equal(t_loop_run_until(loop, &done, 2000), 1);
	assert_int_equal(op.res, 1);
	assert_int_equal(c, 'x');
	close(sv[0]);
	close(sv[1]);
}

struct rfib {
	int fd;
	char c;
	ssize_t got;
	int done;
};

static int recv_fiber(void *arg)
{
	struct rfib *r = arg;

	r->got = ur_recv(r->fd, &r->c, 1, 0);
	r->done = 1;
	return 0;
}

/* ur_fiber_cancel: the error, the flag all the same, no byte lost. */
static void test_ur_fault_fiber_cancel_refused(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct rfib r = {0};
	struct ur_fiber *f;
	int sv[2], ret = -1;

	t_socketpair(sv);
	r.fd = sv[0];
	assert_int_equal(ur_fiber_spawn(loop, recv_fiber, &r, NULL, &f), 0);
	run_ms(loop, 10);
	refuse(loop, OPC(UR__CANCEL), -1);
	assert_int_equal(ur_fiber_cancel(f), -ENOMEM);
	refuse_none(loop);
	assert_true(ur_fiber_is_cancelled(f));
	run_ms(loop, 20);
	assert_int_equal(r.done, 0);
	assert_int_equal(write(sv[1], "y", 1), 1);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, 0);
	assert_int_equal(r.got, 1);
	assert_int_equal(r.c, 'y');
	close(sv[0]);
	close(sv[1]);
}

/* Posts from a thread without a loop: the eventfd read wakes the loop. */
struct poster {
	struct ur_loop *loop;
	int ret;
};

static void *post_thread(void *arg)
{
	struct poster *p = arg;

	p->ret = ur_loop_post(p->loop, count_post, &posted);
	return NULL;
}

static void post_from_thread(struct ur_loop *loop)
{
	struct poster p = {.loop = loop, .ret = -1};
	pthread_t th;

	assert_int_equal(pthread_create(&th, NULL, post_thread, &p), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(p.ret, 0);
}

static void test_ur_fault_post_rearm_refused(void **state)
{
	struct ur_loop *loop = t_loop_of(state);

	posted = 0;
	/* The post read's re-arm after the first post is refused once. */
	refuse(loop, OPC(UR__READ), 1);
	post_from_thread(loop);
	assert_int_equal(t_loop_run_until(loop, &posted, 2000), 1);
	assert_int_equal(fail_left, 0);
	refuse_none(loop);
	/* Retried at the next turn: the second post still wakes the loop. */
	post_from_thread(loop);
	for (uint64_t end = t_now_ms() + 2000; posted < 2 && t_now_ms() < end;)
		assert_true(ur_loop_run_once(loop, -1) >= 0);
	assert_int_equal(posted, 2);
}

/* Signals. */
static volatile sig_atomic_t handled;

static void on_sigusr1(int signo)
{
	(void)signo;
	handled++;
}

static void count_sig(struct ur_signal *sig, int signo, void *arg)
{
	(void)sig;
	(void)signo;
	++*(int *)arg;
}

static bool usr1_blocked(void)
{
	sigset_t cur;

	assert_int_equal(pthread_sigmask(SIG_BLOCK, NULL, &cur), 0);
	return sigismember(&cur, SIGUSR1) == 1;
}

static void test_ur_fault_signal_refused(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_signal *sig = NULL;
	sigset_t set;
	int seen = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	/* Start: the first read refused, nothing left blocked. */
	refuse(loop, OPC(UR__READ), 1);
	assert_int_equal(ur_signal_start(loop, &set, count_sig, &seen, &sig),
			 -ENOMEM);
	assert_false(usr1_blocked());
	/* A refused re-arm after a delivery is retried: none is lost. */
	assert_int_equal(ur_signal_start(loop, &set, count_sig, &seen, &sig),
			 0);
	refuse(loop, OPC(UR__READ), 1);
	assert_int_equal(pthread_kill(pthread_self(), SIGUSR1), 0);
	assert_int_equal(t_loop_run_until(loop, &seen, 2000), 1);
	assert_int_equal(fail_left, 0);
	assert_int_equal(pthread_kill(pthread_self(), SIGUSR1), 0);
	for (uint64_t end = t_now_ms() + 2000; seen < 2 && t_now_ms() < end;)
		assert_true(ur_loop_run_once(loop, -1) >= 0);
	assert_int_equal(seen, 2);
	/* A stop whose cancel is refused ends with the next signal. */
	handled = 0;
	refuse(loop, OPC(UR__CANCEL), -1);
	ur_signal_stop(&sig);
	refuse_none(loop);
	assert_null(sig);
	assert_true(usr1_blocked());
	assert_int_equal(pthread_kill(pthread_self(), SIGUSR1), 0);
	for (uint64_t end = t_now_ms() + 2000;
	     handled == 0 && t_now_ms() < end;)
		assert_true(ur_loop_run_once(loop, 5 * MS) >= 0);
	/* Read by the pending read, raised again, delivered on unblock. */
	assert_int_equal(handled, 1);
	assert_int_equal(seen, 2);
	assert_false(usr1_blocked());
}

/*
 * Loop turns that fail (the kernel out of memory in io_uring_enter, say)
 * while a blocking call outside any fiber waits: the call must not
 * return while its op, with a buffer on its stack, is still in flight.
 * It cancels the op, turns on, and returns the turn's error once the op
 * is reaped (or the op's result, had it come first).
 */
static int waits_failing;

static int fault_wait(struct ur_loop *loop, int64_t timeout_ns)
{
	if (waits_failing > 0) {
		waits_failing--;
		return -ENOMEM;
	}
	return real_be->wait(loop, timeout_ns);
}

static void test_ur_fault_wait_fails_outside_fiber(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_loop_stats st;
	char buf[8];
	int sv[2];

	t_socketpair(sv);
	refuse(loop, 0, 0);
	fault_be.wait = fault_wait;
	waits_failing = 3;
	assert_int_equal(ur_recv(sv[0], buf, sizeof(buf), 0), -ENOMEM);
	waits_failing = 0; /* epoll reaps the cancel a turn sooner */
	ur_loop_stats(loop, &st);
	assert_int_equal(st.ops_inflight, 0); /* reaped before returning */
	/* Data that wins: the result, not the error. */
	assert_int_equal(write(sv[1], "x", 1), 1);
	waits_failing = 2;
	assert_int_equal(ur_recv(sv[0], buf, sizeof(buf), 0), 1);
	fault_be.wait = real_be->wait;
	refuse_none(loop);
	t_close_pair(sv);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
	const struct CMUnitTest tests[] = {
		T(test_ur_fault_nomem),
		T(test_ur_fault_timer_stop_refused),
		T(test_ur_fault_deadline_rearm_refused),
		T(test_ur_fault_op_cancel_refused),
		T(test_ur_fault_fiber_cancel_refused),
		T(test_ur_fault_post_rearm_refused),
		T(test_ur_fault_signal_refused),
		T(test_ur_fault_wait_fails_outside_fiber),
	};
#undef T
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigusr1;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) != 0)
		return 1;
	t_require_loop();
	return t_run_groups("ur-fault", tests,
			    sizeof(tests) / sizeof(tests[0])) != 0;
}
