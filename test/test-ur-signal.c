/* SPDX-License-Identifier: BSD-3-Clause */
/* test/ur-signal: signals delivered as completions, mask restored. */
#include "t-helpers.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

/*
 * Signals that reach a handler instead of the ring. The handler keeps a
 * stray signal from killing the test and lets it see where signals went.
 */
static volatile sig_atomic_t handled[NSIG];

static void on_signal(int signo)
{
	handled[signo]++;
}

struct seen {
	int n;
	int signo[16];
	struct ur_signal **stop_me; /* stop from inside the callback */
};

static void sig_fn(struct ur_signal *sig, int signo, void *arg)
{
	struct seen *s = arg;

	(void)sig;
	if (s->n < 16)
		s->signo[s->n] = signo;
	s->n++;
	if (s->stop_me != NULL)
		ur_signal_stop(s->stop_me);
}

static bool is_blocked(int signo)
{
	sigset_t cur;

	assert_int_equal(pthread_sigmask(SIG_BLOCK, NULL, &cur), 0);
	return sigismember(&cur, signo) == 1;
}

/* Run turns until s->n reaches n. */
static void wait_seen(struct ur_loop *loop, const struct seen *s, int n)
{
	uint64_t end = t_now_ms() + 2000;

	while (s->n < n && t_now_ms() < end)
		assert_true(ur_loop_run_once(loop, 10 * 1000 * 1000) >= 0);
	assert_int_equal(s->n, n);
}

static void test_ur_signal_kill_and_pthread_kill(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct ur_signal *sig = NULL;
	struct ur_loop_stats ls;
	struct seen s = {0};
	sigset_t set;

	memset((void *)handled, 0, sizeof(handled));
	assert_false(is_blocked(SIGUSR1));
	assert_false(is_blocked(SIGHUP));
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGHUP);
	assert_int_equal(ur_signal_start(loop, &set, sig_fn, &s, &sig), 0);
	assert_true(is_blocked(SIGUSR1));
	assert_true(is_blocked(SIGHUP));

	/* Several in a row, to the process and to this thread. */
	for (int i = 0; i < 6; i++) {
		int signo = i % 2 ? SIGHUP : SIGUSR1;

		if (i < 3)
			assert_int_equal(kill(getpid(), signo), 0);
		else
			assert_int_equal(pthread_kill(pthread_self(), signo),
					 0);
		wait_seen(loop, &s, i + 1);
		assert_int_equal(s.signo[i], signo);
	}
	/* Two different ones pending at once: both arrive. */
	assert_int_equal(kill(getpid(), SIGUSR1), 0);
	assert_int_equal(pthread_kill(pthread_self(), SIGHUP), 0);
	wait_seen(loop, &s, 8);
	assert_int_equal(s.signo[6] + s.signo[7], SIGUSR1 + SIGHUP);
	assert_int_not_equal(s.signo[6], s.signo[7]);
	assert_int_equal(handled[SIGUSR1] + handled[SIGHUP], 0);

	ur_signal_stop(&sig);
	assert_null(sig);
	/* The read's completion was reaped before stop returned. */
	ur_loop_stats(loop, &ls);
	assert_int_equal(ls.ops_inflight, 0);
	assert_false(is_blocked(SIGUSR1));
	assert_false(is_blocked(SIGHUP));
	/* Back to the handler once stopped. */
	assert_int_equal(kill(getpid(), SIGUSR1), 0);
	assert_int_equal(handled[SIGUSR1], 1);
	assert_int_equal(s.n, 8);
	ur_signal_stop(&sig); /* NULL is fine */
}

/* Stop restores the mask: a signal blocked before start stays blocked. */
static void test_ur_signal_stop_restores_mask(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct ur_signal *sig;
	struct seen s = {0};
	sigset_t set, hup;

	memset((void *)handled, 0, sizeof(handled));
	sigemptyset(&hup);
	sigaddset(&hup, SIGHUP);
	assert_int_equal(pthread_sigmask(SIG_BLOCK, &hup, NULL), 0);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGHUP);
	assert_int_equal(ur_signal_start(loop, &set, sig_fn, &s, &sig), 0);
	assert_int_equal(pthread_kill(pthread_self(), SIGHUP), 0);
	wait_seen(loop, &s, 1);
	assert_int_equal(s.signo[0], SIGHUP);
	ur_signal_stop(&sig);
	assert_false(is_blocked(SIGUSR1));
	assert_true(is_blocked(SIGHUP)); /* as it was before */
	assert_int_equal(pthread_sigmask(SIG_UNBLOCK, &hup, NULL), 0);
	assert_int_equal(handled[SIGHUP], 0);
}

/* The callback may stop its own watcher. */
static void test_ur_signal_stop_from_callback(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct ur_signal *sig;
	struct seen s = {.stop_me = &sig};
	sigset_t set;

	memset((void *)handled, 0, sizeof(handled));
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	assert_int_equal(ur_signal_start(loop, &set, sig_fn, &s, &sig), 0);
	assert_int_equal(kill(getpid(), SIGUSR2), 0);
	wait_seen(loop, &s, 1);
	assert_null(sig);
	assert_false(is_blocked(SIGUSR2));
	assert_int_equal(handled[SIGUSR2], 0);
}

/* Stop from a fiber waits (parked) for the cancelled read. */
struct stopper {
	struct ur_signal *sig;
	bool blocked_after;
};

static int stop_fiber(void *arg)
{
	struct stopper *st = arg;

	ur_signal_stop(&st->sig);
	st->blocked_after = is_blocked(SIGUSR1);
	return 0;
}

static void test_ur_signal_stop_from_fiber(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct stopper st = {0};
	struct seen s = {0};
	struct ur_loop_stats ls;
	struct ur_fiber *f;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	assert_int_equal(ur_signal_start(loop, &set, sig_fn, &s, &st.sig), 0);
	assert_true(ur_loop_run_once(loop, 0) >= 0);
	ur_loop_stats(loop, &ls);
	assert_int_equal(ls.ops_inflight, 1); /* the signalfd read */
	assert_int_equal(ur_fiber_spawn(loop, stop_fiber, &st, NULL, &f), 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_null(st.sig);
	assert_false(st.blocked_after);
	ur_loop_stats(loop, &ls);
	assert_int_equal(ls.ops_inflight, 0);
	assert_int_equal(s.n, 0);
}

static void test_ur_signal_bad_args(void **state)
{
	struct ur_loop *loop = ((struct t_loop *)*state)->loop;
	struct ur_signal *sig = NULL;
	struct seen s = {0};
	sigset_t set;

	sigemptyset(&set);
	assert_int_equal(ur_signal_start(loop, NULL, sig_fn, &s, &sig),
			 -EINVAL);
	assert_int_equal(ur_signal_start(loop, &set, NULL, &s, &sig), -EINVAL);
	assert_null(sig);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
	const struct CMUnitTest tests[] = {
		T(test_ur_signal_kill_and_pthread_kill),
		T(test_ur_signal_stop_restores_mask),
		T(test_ur_signal_stop_from_callback),
		T(test_ur_signal_stop_from_fiber),
		T(test_ur_signal_bad_args),
	};
#undef T
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) != 0 ||
	    sigaction(SIGUSR2, &sa, NULL) != 0 ||
	    sigaction(SIGHUP, &sa, NULL) != 0)
		return 1;
	t_require_loop();
	return t_run_groups("ur-signal", tests,
			    sizeof(tests) / sizeof(tests[0])) != 0;
}
