/* SPDX-License-Identifier: BSD-3-Clause */
/* test/ur-loop: ring modes, SQ-full and CQ-overflow paths, posts, teardown. */
#include "t-helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void count_cb(struct ur_op *op)
{
	int *n = op->data;

	assert_int_equal(op->res, 0);
	(*n)++;
}

static void test_ur_loop_mode_is_reported(void **state)
{
	struct t_loop *tl = *state;

	assert_int_equal(ur_loop_backend(tl->loop), t_backend);
	assert_int_equal(ur_loop_mode(tl->loop), t_mode);
	assert_string_not_equal(ur_mode_name(ur_loop_mode(tl->loop)), "?");
	assert_string_equal(ur_backend_name(ur_loop_backend(tl->loop)),
			    t_epoll() ? "epoll" : "io_uring");
	assert_true(ur_loop_has(tl->loop, UR_CAP_DIRECT_FILES));
	assert_int_equal(ur_loop_has(tl->loop, UR_CAP_KERNEL_BUFFERS),
			 !t_epoll());
	assert_ptr_equal(ur_loop_current(), tl->loop);
}

/* 8-entry SQ: 1,000 ops queued in one go are flushed, never dropped. */
static void test_ur_loop_sq_full_never_drops(void **state)
{
	struct ur_loop_opts o = {
		.mode = t_mode, .sq_entries = 8, .cq_entries = 32};
	struct ur_loop *loop;
	struct ur_loop_stats st;
	struct ur_op *ops;
	int done = 0;

	(void)state;
	t_skip_on_epoll("no submission queue");
	ops = calloc(1000, sizeof(*ops));
	assert_non_null(ops);
	assert_int_equal(ur_loop_new(&o, &loop), 0);
	for (int i = 0; i < 1000; i++) {
		ur_op_init(&ops[i], count_cb, &done);
		assert_int_equal(ur_nop_start(loop, &ops[i]), 0);
	}
	while (done < 1000)
		assert_true(ur_loop_run_once(loop, 1000000000) >= 0);
	ur_loop_stats(loop, &st);
	assert_true(st.sq_full > 0);
	assert_int_equal(st.ops_inflight, 0);
	ur_loop_free(&loop);
	free(ops);
}

/*
 * CQ of 64 with 2,000 completions queued before any reaping: the kernel
 * keeps the overflow (FEAT_NODROP) and the loop drains it (liburing's peek
 * flushes the kernel's overflow list); every completion is dispatched
 * exactly once.
 */
static void test_ur_loop_cq_overflow_loses_nothing(void **state)
{
	struct ur_loop_opts o = {
		.mode = t_mode, .sq_entries = 16, .cq_entries = 64};
	struct ur_loop *loop;
	struct ur_op *ops;
	struct ur_loop_stats st;
	int done = 0;

	(void)state;
	t_skip_on_epoll("no completion queue");
	ops = calloc(2000, sizeof(*ops));
	assert_non_null(ops);
	assert_int_equal(ur_loop_new(&o, &loop), 0);
	for (int i = 0; i < 2000; i++) {
		ur_op_init(&ops[i], count_cb, &done);
		assert_int_equal(ur_nop_start(loop, &ops[i]), 0);
	}
	while (done < 2000)
		assert_true(ur_loop_run_once(loop, 1000000000) >= 0);
	assert_int_equal(done, 2000);
	for (int i = 0; i < 2000; i++)
		assert_false(ur_op_is_busy(&ops[i]));
	ur_loop_stats(loop, &st);
	assert_int_equal(st.cqes, 2000);
	assert_true(st.sq_full > 0);
	ur_loop_free(&loop);
	free(ops);
}

/*
 * One turn reaps a large burst of completions that arrive as task work
 * (timers fired while the loop slept): with DEFER_TASKRUN the kernel runs
 * only about 20 of those per enter, and the loop must keep asking.
 */
static void fired_cb(struct ur_timer *t, void *arg)
{
	int *n = arg;

	(void)t;
	(*n)++;
}

static void test_ur_loop_one_turn_reaps_burst(void **state)
{
	struct t_loop *tl = *state;
	struct ur_timer *ts = calloc(1000, sizeof(*ts));
	uint64_t at = ur_now_ns(CLOCK_MONOTONIC) + 2000000;
	struct timespec nap = {.tv_nsec = 20000000};
	int done = 0;

	assert_non_null(ts);
	for (int i = 0; i < 1000; i++) {
		ur_timer_init(&ts[i], tl->loop);
		assert_int_equal(ur_timer_start_abs(&ts[i], CLOCK_MONOTONIC, at,
						    fired_cb, &done),
				 0);
	}
	assert_true(ur_loop_run_once(tl->loop, 0) >= 0); /* submitted */
	nanosleep(&nap, NULL);				 /* all fired */
	assert_true(ur_loop_run_once(tl->loop, 0) >= 0);
	assert_int_equal(done, 1000);
	free(ts);
}

/*
 * Where io_uring is refused (seccomp in containers, io_uring_disabled),
 * a loop made with default options runs on epoll, and one that forces
 * io_uring gets the kernel's errno. A child installs a filter failing
 * io_uring_setup with err, then makes a loop on backend and runs an op
 * on it; it exits with the errno, or 200 + the backend it got.
 */
static int loop_new_under_filter(int err, enum ur_backend backend)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K,
			 SECCOMP_RET_ERRNO |
				 ((unsigned)err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]),
				  .filter = code};
	int status;
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct ur_loop *loop = NULL;
		int ret;

		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
			_exit(100);
		struct ur_loop_opts o = {.backend = backend};

		ur_loop_bind(NULL);
		unsetenv("RINGPROT_BACKEND");
		ret = ur_loop_new(&o, &loop);
		if (ret < 0)
			_exit(-ret);
		if (ur_nop() != 0 ||
		    ur_sleep_until(CLOCK_MONOTONIC,
				   ur_now_ns(CLOCK_MONOTONIC) + 1000000) != 0)
			_exit(101);
		_exit(200 + (int)ur_loop_backend(loop));
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void test_ur_loop_unavailable_falls_back(void **state)
{
	(void)state;
	assert_int_equal(loop_new_under_filter(ENOSYS, UR_BACKEND_URING),
			 ENOSYS);
	assert_int_equal(loop_new_under_filter(EPERM, UR_BACKEND_URING), EPERM);
	assert_int_equal(loop_new_under_filter(ENOSYS, UR_BACKEND_AUTO),
			 200 + UR_BACKEND_EPOLL);
	assert_int_equal(loop_new_under_filter(EPERM, UR_BACKEND_AUTO),
			 200 + UR_BACKEND_EPOLL);
	assert_int_equal(loop_new_under_filter(EPERM, UR_BACKEND_EPOLL),
			 200 + UR_BACKEND_EPOLL);
}

/*
 * NAPI busy polling registers on both backends (6.18 has both calls;
 * loopback has no NAPI, so nothing is polled), turns off again, and is
 * refused cleanly (-EOPNOTSUPP, the loop still works) where the kernel
 * does not know it: a child whose filter answers the registration as a
 * pre-6.9 kernel does (io_uring_register: EINVAL, the ioctl: ENOTTY).
 */
static void test_ur_loop_napi(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_register, 0,
			 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 27, 0, 5),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_ioctl, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
			 offsetof(struct seccomp_data, args[1])),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x40088a01, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOTTY),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof(code) / sizeof(code[0]),
				  .filter = code};
	int status;
	pid_t pid;

	assert_int_equal(ur_loop_napi(loop, 50, false), 0);
	assert_int_equal(ur_nop(), 0);
	assert_int_equal(ur_loop_napi(loop, 50, true), 0);
	assert_int_equal(ur_loop_napi(loop, 0, false), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ur_loop_opts o = {.backend = t_backend, .mode = t_mode};
		struct ur_loop *mine;

		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
		    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
			_exit(100);
		if (ur_loop_new(&o, &mine) != 0)
			_exit(101);
		ur_loop_bind(mine);
		if (ur_loop_napi(mine, 50, false) != -EOPNOTSUPP)
			_exit(102);
		_exit(ur_nop() == 0 ? 0 : 103);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/*
 * UR_MODE_SQPOLL: a poller thread submits, the loop polls the CQ before
 * it sleeps. Ops, timers and a fiber work as in the other modes.
 */
static int sqpoll_echo(void *arg)
{
	int *sv = arg;
	char buf[8];

	if (ur_send(sv[0], "ping", 4, 0) != 4)
		return -1;
	if (ur_recv(sv[1], buf, sizeof(buf), 0) != 4)
		return -2;
	return memcmp(buf, "ping", 4) == 0 ? 0 : -3;
}

static void test_ur_loop_sqpoll(void **state)
{
	struct ur_loop_opts o = {.mode = UR_MODE_SQPOLL, .sqpoll_idle_ms = 10};
	struct ur_loop *loop;
	struct ur_fiber *f;
	int sv[2], ret = -9;
	uint64_t t0;

	(void)state;
	t_skip_on_epoll("a ring mode");
	assert_int_equal(ur_loop_new(&o, &loop), 0);
	ur_loop_bind(loop);
	assert_int_equal(ur_loop_mode(loop), UR_MODE_SQPOLL);
	assert_string_equal(ur_mode_name(UR_MODE_SQPOLL), "sqpoll");
	for (int i = 0; i < 100; i++)
		assert_int_equal(ur_nop(), 0);
	t_socketpair(sv);
	for (int i = 0; i < 50; i++) {
		assert_int_equal(
			ur_fiber_spawn(loop, sqpoll_echo, sv, NULL, &f), 0);
		assert_int_equal(ur_fiber_join(f, &ret), 0);
		assert_int_equal(ret, 0);
	}
	t0 = t_now_ms();
	assert_int_equal(ur_sleep_until(CLOCK_MONOTONIC,
					ur_now_ns(CLOCK_MONOTONIC) + 20000000),
			 0);
	assert_true(t_now_ms() - t0 >= 19);
	t_close_pair(sv);
	ur_loop_free(&loop);
	ur_loop_bind(NULL);
}

/* RINGPROT_BACKEND decides an AUTO choice; a bad name is refused. */
static void test_ur_loop_backend_env(void **state)
{
	const char *saved = getenv("RINGPROT_BACKEND");
	char *keep = saved != NULL ? strdup(saved) : NULL;
	struct ur_loop *loop;

	(void)state;
	setenv("RINGPROT_BACKEND", "epoll", 1);
	assert_int_equal(ur_loop_new(NULL, &loop), 0);
	assert_int_equal(ur_loop_backend(loop), UR_BACKEND_EPOLL);
	ur_loop_free(&loop);
	setenv("RINGPROT_BACKEND", "uring", 1);
	assert_int_equal(ur_loop_new(NULL, &loop), 0);
	assert_int_equal(ur_loop_backend(loop), UR_BACKEND_URING);
	ur_loop_free(&loop);
	setenv("RINGPROT_BACKEND", "kqueue", 1);
	assert_int_equal(ur_loop_new(NULL, &loop), -EINVAL);
	if (keep != NULL)
		setenv("RINGPROT_BACKEND", keep, 1);
	else
		unsetenv("RINGPROT_BACKEND");
	free(keep);
	ur_loop_bind(NULL);
}

/* A blocking call outside any fiber drives the thread's loop. */
static void test_ur_loop_blocking_outside_fiber(void **state)
{
	int p[2];
	char buf[8] = {0};

	(void)state;
	assert_null(ur_fiber_self());
	assert_int_equal(ur_nop(), 0);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(ur_write(p[1], "hello", 5, -1), 5);
	assert_int_equal(ur_read(p[0], buf, sizeof(buf), -1), 5);
	assert_memory_equal(buf, "hello", 5);
	close(p[0]);
	close(p[1]);
}

struct post_arg {
	struct ur_loop *loop;
	int ran;
	pthread_t ran_on;
};

static void post_fn(void *arg)
{
	struct post_arg *pa = arg;

	pa->ran_on = pthread_self();
	pa->ran++;
}

static void *poster(void *arg)
{
	struct post_arg *pa = arg;

	usleep(20000); /* let the loop block in io_uring_enter first */
	assert_int_equal(ur_loop_post(pa->loop, post_fn, pa), 0);
	return NULL;
}

/* A thread with its own loop posts with MSG_RING. */
static void *poster_with_loop(void *arg)
{
	struct post_arg *pa = arg;
	struct ur_loop *mine;

	assert_int_equal(ur_loop_new(NULL, &mine), 0);
	usleep(20000);
	assert_int_equal(ur_loop_post(pa->loop, post_fn, pa), 0);
	ur_loop_free(&mine);
	return NULL;
}

static void check_post(struct t_loop *tl, void *(*thread_fn)(void *))
{
	struct post_arg pa = {.loop = tl->loop};
	pthread_t th;
	uint64_t end = t_now_ms() + 5000;

	assert_int_equal(pthread_create(&th, NULL, thread_fn, &pa), 0);
	while (pa.ran == 0 && t_now_ms() < end)
		assert_true(ur_loop_run_once(tl->loop, 100000000) >= 0);
	pthread_join(th, NULL);
	assert_int_equal(pa.ran, 1);
	assert_true(pthread_equal(pa.ran_on, pthread_self()));
}

static void test_ur_loop_post_wakes_blocked_loop(void **state)
{
	check_post(*state, poster);
}

static void test_ur_loop_post_by_msg_ring(void **state)
{
	check_post(*state, poster_with_loop);
}

/* A post from the loop's own thread: no CQE announces it. */
struct self_post {
	struct ur_waiter w;
	int ran;
};

static void self_post_fn(void *arg)
{
	struct self_post *sp = arg;

	sp->ran++;
	ur_waiter_wake(&sp->w);
}

static int self_post_fiber(void *arg)
{
	struct self_post *sp = arg;

	ur_waiter_init(&sp->w, ur_loop_current());
	if (ur_loop_post(ur_loop_current(), self_post_fn, sp) < 0)
		return -1;
	/* Nothing else is in flight: only the post can end this wait. */
	return ur_waiter_wait(&sp->w);
}

static void test_ur_loop_post_from_own_fiber(void **state)
{
	struct t_loop *tl = *state;
	struct self_post sp = {0};
	struct ur_fiber *f;
	uint64_t end = t_now_ms() + 5000;
	int ret = -1;

	assert_int_equal(
		ur_fiber_spawn(tl->loop, self_post_fiber, &sp, NULL, &f), 0);
	/* Each turn may block for 100 ms at most: the post must not wait
	 * for that, nor for some other completion. */
	while (sp.ran == 0 && t_now_ms() < end)
		assert_true(ur_loop_run_once(tl->loop, 100000000) >= 0);
	assert_int_equal(sp.ran, 1);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, 0);
}

static void live_fn(const char *what, const char *file, int line, void *arg)
{
	int *n = arg;

	assert_string_equal(what, "timer");
	assert_non_null(strstr(file, "test-ur-loop.c"));
	assert_true(line > 0);
	(*n)++;
}

static void never(struct ur_timer *t, void *arg)
{
	(void)t;
	(void)arg;
	fail_msg("timer fired after stop");
}

/* Teardown can name what is still live, by file and line. */
static void test_ur_loop_reports_live_timer(void **state)
{
	struct t_loop *tl = *state;
	struct ur_timer t;
	struct ur_loop_stats st;
	int n = 0;

	ur_timer_init(&t, tl->loop);
	assert_int_equal(ur_timer_start(&t, 60ULL * 1000000000, never, NULL),
			 0);
	ur_loop_foreach_live(tl->loop, live_fn, &n);
	assert_int_equal(n, 1);
	ur_loop_stats(tl->loop, &st);
	assert_int_equal(st.timers_armed, 1);
	assert_int_equal(ur_timer_stop(&t), 0);
	n = 0;
	ur_loop_foreach_live(tl->loop, live_fn, &n);
	assert_int_equal(n, 0);
}

/* ur_loop_run returns once nothing is alive. */
static void test_ur_loop_run_until_idle(void **state)
{
	struct t_loop *tl = *state;
	struct ur_op ops[4];
	int done = 0;

	for (int i = 0; i < 4; i++) {
		ur_op_init(&ops[i], count_cb, &done);
		assert_int_equal(ur_nop_start(tl->loop, &ops[i]), 0);
	}
	assert_int_equal(ur_loop_run(tl->loop), 0);
	assert_int_equal(done, 4);
}

/* Freeing a loop with work in flight cancels and reaps it. */
static void test_ur_loop_free_with_inflight(void **state)
{
	struct ur_loop_opts o = {.mode = t_mode};
	struct ur_loop *loop;
	struct ur_op op;
	int sv[2];
	char buf[4];
	int done = 0;

	(void)state;
	t_socketpair(sv);
	assert_int_equal(ur_loop_new(&o, &loop), 0);
	ur_op_init(&op, count_cb, &done);
	assert_int_equal(ur_recv_start(loop, &op, sv[0], buf, sizeof(buf), 0),
			 0);
	assert_true(ur_loop_run_once(loop, 0) >= 0);
	ur_loop_free(&loop);
	assert_null(loop);
	close(sv[0]);
	close(sv[1]);
}

/*
 * A program started with stdin closed: the loop's ring and eventfd must
 * not land on fd 0, where the program (a Cyrus service reading its
 * client from fd 0) would find them instead of EBADF.
 */
static void test_ur_loop_leaves_stdio_free(void **state)
{
	struct ur_loop_opts o = {.mode = t_mode};
	struct ur_loop *loop;
	int saved = dup(0);

	(void)state;
	assert_true(saved >= 0);
	close(0);
	assert_int_equal(ur_loop_new(&o, &loop), 0);
	errno = 0;
	assert_int_equal(fcntl(0, F_GETFD), -1);
	assert_int_equal(errno, EBADF);
	assert_int_equal(ur_nop(), 0); /* the ring works where it went */
	ur_loop_free(&loop);
	assert_int_equal(dup2(saved, 0), 0);
	close(saved);
}

/*
 * fork(): the child forgets the loop it inherited and makes its own; its
 * ur_loop_free() of the inherited loop must leave the parent's ring
 * alone, so a recv the parent had in flight still completes there.
 */
static int forked_child_checks(struct ur_loop *inherited, int wfd)
{
	struct ur_loop *mine;

	if (ur_loop_current() != NULL)
		return 2;
	if (ur_nop() != 0) /* a fresh loop of the child's own */
		return 3;
	mine = ur_loop_current();
	if (mine == NULL || mine == inherited)
		return 4;
	ur_loop_free(&inherited);
	if (write(wfd, "x", 1) != 1)
		return 5;
	ur_loop_free(&mine);
	return 0;
}

static void test_ur_loop_fork_child(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_op op;
	char buf[4];
	int sv[2], status;
	pid_t pid;

	t_socketpair(sv);
	ur_op_init(&op, NULL, NULL);
	assert_int_equal(ur_recv_start(loop, &op, sv[0], buf, sizeof(buf), 0),
			 0);
	assert_true(ur_loop_run_once(loop, 0) >= 0); /* the recv waits */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(forked_child_checks(loop, sv[1]));
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(ur_op_wait(&op), 1);
	assert_int_equal(buf[0], 'x');
	assert_ptr_equal(ur_loop_current(), loop);
	assert_int_equal(ur_nop(), 0);
	t_close_pair(sv);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ur_loop_mode_is_reported,
						t_loop_setup, t_loop_teardown),
		cmocka_unit_test(test_ur_loop_sq_full_never_drops),
		cmocka_unit_test(test_ur_loop_cq_overflow_loses_nothing),
		cmocka_unit_test_setup_teardown(
			test_ur_loop_one_turn_reaps_burst, t_loop_setup,
			t_loop_teardown),
		cmocka_unit_test_setup_teardown(
			test_ur_loop_blocking_outside_fiber, t_loop_setup,
			t_loop_teardown),
		cmocka_unit_test_setup_teardown(
			test_ur_loop_post_wakes_blocked_loop, t_loop_setup,
			t_loop_teardown),
		cmocka_unit_test_setup_teardown(
			test_ur_loop_post_from_own_fiber, t_loop_setup,
			t_loop_teardown),
		cmocka_unit_test_setup_teardown(test_ur_loop_post_by_msg_ring,
						t_loop_setup, t_loop_teardown),
		cmocka_unit_test_setup_teardown(test_ur_loop_reports_live_timer,
						t_loop_setup, t_loop_teardown),
		cmocka_unit_test_setup_teardown(test_ur_loop_run_until_idle,
						t_loop_setup, t_loop_teardown),
		cmocka_unit_test(test_ur_loop_free_with_inflight),
		cmocka_unit_test(test_ur_loop_leaves_stdio_free),
		cmocka_unit_test_setup_teardown(test_ur_loop_fork_child,
						t_loop_setup, t_loop_teardown),
		cmocka_unit_test(test_ur_loop_unavailable_falls_back),
		cmocka_unit_test(test_ur_loop_backend_env),
		cmocka_unit_test_setup_teardown(test_ur_loop_napi, t_loop_setup,
						t_loop_teardown),
		cmocka_unit_test(test_ur_loop_sqpoll),
	};

	t_require_loop();
	return t_run_groups("ur-loop", tests, sizeof(tests) / sizeof(tests[0]));
}
