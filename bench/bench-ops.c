/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/bench-ops: op round-trip costs per ring mode, beside raw liburing. */
#include <errno.h>
#include <liburing.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <ringprot/uring.h>

#define BENCH_BATCH   32
#define BENCH_RUNS    5
#define BENCH_NMODES  3
#define BENCH_DEFAULT 100000ul
/* Target length of one timed run; slow cases run fewer ops. */
#define BENCH_RUN_NS  100000000.0

/*
 * One timed case: runs n ops and returns the elapsed nanoseconds, or
 * -errno. raw is set for the liburing peers (loop is then NULL).
 */
struct bench_env {
	struct ur_loop *loop;
	struct io_uring *raw;
};
typedef int64_t bench_fn(struct bench_env *env, unsigned long n);

struct bench_case {
	const char *name;
	bench_fn *fn;
	int peer;      /* index of the raw case it is compared to, or -1 */
	bool raw;      /* needs the raw ring, not a ur_loop */
	bool ringless; /* independent of the ring mode: one column */
};

static const enum ur_mode bench_modes[BENCH_NMODES] = {
	UR_MODE_DEFER,
	UR_MODE_COOP,
	UR_MODE_PLAIN,
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int64_t bench_getppid(struct bench_env *env, unsigned long n)
{
	uint64_t t0 = now_ns();

	(void)env;
	for (unsigned long i = 0; i < n; i++) {
		/* glibc does not cache getppid; syscall() makes that sure. */
		if (syscall(SYS_getppid) < 0)
			return -errno;
	}
	return (int64_t)(now_ns() - t0);
}

enum raw_kind {
	RAW_NOP,
	RAW_TIMEOUT, /* IORING_TIMEOUT_ABS at "now": fires at once */
};

/* The liburing peer: batch SQEs, one submit_and_wait(batch), reap. */
static int64_t raw_run(struct io_uring *ring, unsigned long n, int batch,
		       enum raw_kind kind)
{
	struct __kernel_timespec ts[BENCH_BATCH];
	int want = kind == RAW_NOP ? 0 : -ETIME;
	uint64_t t0 = now_ns();

	for (unsigned long i = 0; i < n; i += (unsigned long)batch) {
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		int ret;

		for (int j = 0; j < batch; j++) {
			struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
			uint64_t t;

			if (sqe == NULL)
				return -EBUSY;
			if (kind == RAW_NOP) {
				io_uring_prep_nop(sqe);
				continue;
			}
			t = now_ns();
			ts[j].tv_sec = (long long)(t / 1000000000u);
			ts[j].tv_nsec = (long long)(t % 1000000000u);
			io_uring_prep_timeout(sqe, &ts[j], 0,
					      IORING_TIMEOUT_ABS);
		}
		ret = io_uring_submit_and_wait(ring, (unsigned)batch);
		if (ret < 0)
			return ret;
		io_uring_for_each_cqe(ring, head, cqe)
		{
			if (cqe->res != want)
				return cqe->res < 0 ? cqe->res : -EPROTO;
			seen++;
		}
		if (seen != (unsigned)batch)
			return -EPROTO;
		io_uring_cq_advance(ring, seen);
	}
	return (int64_t)(now_ns() - t0);
}

static int64_t bench_raw_nop(struct bench_env *env, unsigned long n)
{
	return raw_run(env->raw, n, 1, RAW_NOP);
}

static int64_t bench_raw_nop_batch(struct bench_env *env, unsigned long n)
{
	return raw_run(env->raw, n, BENCH_BATCH, RAW_NOP);
}

static int64_t bench_raw_timeout(struct bench_env *env, unsigned long n)
{
	return raw_run(env->raw, n, 1, RAW_TIMEOUT);
}

static int64_t bench_raw_timeout_batch(struct bench_env *env, unsigned long n)
{
	return raw_run(env->raw, n, BENCH_BATCH, RAW_TIMEOUT);
}

static int64_t bench_nop(struct bench_env *env, unsigned long n)
{
	uint64_t t0 = now_ns();

	(void)env;
	for (unsigned long i = 0; i < n; i++) {
		int ret = ur_nop();

		if (ret < 0)
			return ret;
	}
	return (int64_t)(now_ns() - t0);
}

struct fiber_arg {
	unsigned long n;
	int64_t elapsed;
};

static int nop_fiber_body(void *arg)
{
	struct fiber_arg *a = arg;

	a->elapsed = bench_nop(NULL, a->n);
	return 0;
}

/* Timed inside the fiber: the spawn and join are not counted. */
static int64_t bench_nop_fiber(struct bench_env *env, unsigned long n)
{
	struct fiber_arg a = {.n = n, .elapsed = -EINVAL};
	struct ur_fiber *f;
	int ret;

	ret = ur_fiber_spawn(env->loop, nop_fiber_body, &a, NULL, &f);
	if (ret < 0)
		return ret;
	ret = ur_fiber_join(f, NULL);
	if (ret < 0)
		return ret;
	return a.elapsed;
}

static void count_op(struct ur_op *op)
{
	int *done = op->data;

	if (op->res == 0)
		(*done)++;
}

static int64_t bench_nop_batch(struct bench_env *env, unsigned long n)
{
	struct ur_op ops[BENCH_BATCH];
	int done;
	uint64_t t0 = now_ns();

	for (unsigned long i = 0; i < n; i += BENCH_BATCH) {
		int ret;

		done = 0;
		for (int j = 0; j < BENCH_BATCH; j++) {
			ur_op_init(&ops[j], count_op, &done);
			ret = ur_nop_start(env->loop, &ops[j]);
			if (ret < 0)
				return ret;
		}
		ret = ur_loop_run(env->loop);
		if (ret < 0)
			return ret;
		if (done != BENCH_BATCH)
			return -EPROTO;
	}
	return (int64_t)(now_ns() - t0);
}

static void count_timer(struct ur_timer *t, void *arg)
{
	int *fired = arg;

	(void)t;
	(*fired)++;
}

static int64_t bench_timers(struct bench_env *env, unsigned long n, int batch)
{
	struct ur_timer timers[BENCH_BATCH];
	int fired;
	uint64_t t0 = now_ns();

	for (int j = 0; j < batch; j++)
		ur_timer_init(&timers[j], env->loop);
	for (unsigned long i = 0; i < n; i += (unsigned long)batch) {
		int ret;

		fired = 0;
		for (int j = 0; j < batch; j++) {
			ret = ur_timer_start(&timers[j], 0, count_timer,
					     &fired);
			if (ret < 0)
				return ret;
		}
		ret = ur_loop_run(env->loop);
		if (ret < 0)
			return ret;
		if (fired != batch)
			return -EPROTO;
	}
	return (int64_t)(now_ns() - t0);
}

static int64_t bench_timer(struct bench_env *env, unsigned long n)
{
	return bench_timers(env, n, 1);
}

static int64_t bench_timer_batch(struct bench_env *env, unsigned long n)
{
	return bench_timers(env, n, BENCH_BATCH);
}

#define NO_PEER (-1)
static const struct bench_case bench_cases[] = {
	{"raw liburing nop, wait(1)", bench_raw_nop, NO_PEER, true, false},
	{"raw liburing nop x32, wait(32)", bench_raw_nop_batch, NO_PEER, true,
	 false},
	{"raw liburing timeout(abs now)", bench_raw_timeout, NO_PEER, true,
	 false},
	{"raw liburing timeout x32", bench_raw_timeout_batch, NO_PEER, true,
	 false},
	{"ur_nop() outside a fiber", bench_nop, 0, false, false},
	{"ur_nop() in a fiber", bench_nop_fiber, 0, false, false},
	{"ur_nop_start() x32 + loop_run", bench_nop_batch, 1, false, false},
	{"ur_timer_start(0) + loop_run", bench_timer, 2, false, false},
	{"ur_timer_start(0) x32 + loop_run", bench_timer_batch, 3, false,
	 false},
	{"getppid() syscall", bench_getppid, NO_PEER, false, true},
};
#define BENCH_NCASES (sizeof(bench_cases) / sizeof(bench_cases[0]))

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/*
 * Median ns/op over BENCH_RUNS runs, or -errno. A warm-up run also sizes
 * the runs: at most n ops, fewer for slow cases so that one run lasts
 * about BENCH_RUN_NS, in whole batches.
 */
static double measure(const struct bench_case *c, struct bench_env *env,
		      unsigned long n)
{
	unsigned long warm = BENCH_BATCH * 32ul, per_run = n;
	double runs[BENCH_RUNS], fit;
	int64_t t = c->fn(env, warm);

	if (t < 0)
		return (double)t;
	/* Ops that fit in BENCH_RUN_NS; compared as double: no overflow. */
	fit = t > 0 ? BENCH_RUN_NS * (double)warm / (double)t : (double)n;
	if (fit < (double)n)
		per_run = (unsigned long)fit / BENCH_BATCH * BENCH_BATCH;
	if (per_run < BENCH_BATCH)
		per_run = BENCH_BATCH;
	for (int r = 0; r < BENCH_RUNS; r++) {
		t = c->fn(env, per_run);
		if (t < 0)
			return (double)t;
		runs[r] = (double)t / (double)per_run;
	}
	qsort(runs, BENCH_RUNS, sizeof(runs[0]), cmp_double);
	return runs[BENCH_RUNS / 2];
}

static unsigned raw_setup_flags(enum ur_mode mode)
{
	switch (mode) {
	case UR_MODE_DEFER:
		return IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	case UR_MODE_COOP:
		return IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
	default:
		return 0;
	}
}

/*
 * Fill ns[case] for one ring mode. Returns 0, or -errno when the kernel
 * refuses the mode (its column then reads "refused").
 */
static int run_mode(enum ur_mode mode, unsigned long n, double ns[BENCH_NCASES])
{
	struct ur_loop_opts opts = {.mode = mode};
	struct bench_env env = {0};
	struct io_uring ring;
	int ret;

	ret = ur_loop_new(&opts, &env.loop);
	if (ret < 0)
		return ret;
	ur_loop_bind(env.loop);
	ret = io_uring_queue_init(256, &ring, raw_setup_flags(mode));
	for (size_t i = 0; i < BENCH_NCASES; i++) {
		const struct bench_case *c = &bench_cases[i];

		if (c->ringless && mode != bench_modes[0]) {
			ns[i] = 0;
			continue;
		}
		if (c->raw && ret < 0) {
			ns[i] = ret;
			continue;
		}
		env.raw = c->raw ? &ring : NULL;
		ns[i] = measure(c, &env, n);
	}
	if (ret == 0)
		io_uring_queue_exit(&ring);
	ur_loop_bind(NULL);
	ur_loop_free(&env.loop);
	return 0;
}

static void print_cell(double v, double peer)
{
	if (v < 0)
		printf("  %-16s", strerror((int)-v));
	else if (v == 0)
		printf("  %-16s", "");
	else if (peer > 0)
		printf("  %8.1f %6.2fx", v, v / peer);
	else
		printf("  %8.1f %7s", v, "");
}

int main(int argc, char **argv)
{
	double ns[BENCH_NMODES][BENCH_NCASES];
	int refused[BENCH_NMODES];
	unsigned long n = BENCH_DEFAULT;
	int opt;

	while ((opt = getopt(argc, argv, "n:h")) != -1) {
		if (opt == 'n')
			n = strtoul(optarg, NULL, 10);
		if (opt != 'n' || n < BENCH_BATCH) {
			(void)fprintf(
				stderr,
				"usage: bench-ops [-n ops-per-run (>= %d)]\n",
				BENCH_BATCH);
			return opt == 'h' ? 0 : 2;
		}
	}
	/* Whole batches, so every case runs exactly n ops. */
	n = n / BENCH_BATCH * BENCH_BATCH;

	for (int m = 0; m < BENCH_NMODES; m++)
		refused[m] = run_mode(bench_modes[m], n, ns[m]);

	printf("bench-ops: ns per op, median of %d runs; a run is %lu ops or "
	       "about %.0f ms, whichever is less\n"
	       "ratio: to the raw liburing peer of the same kind and mode\n",
	       BENCH_RUNS, n, BENCH_RUN_NS / 1e6);
	printf("%-34s", "case");
	for (int m = 0; m < BENCH_NMODES; m++)
		printf("  %-16s", ur_mode_name(bench_modes[m]));
	printf("\n");
	for (size_t i = 0; i < BENCH_NCASES; i++) {
		const struct bench_case *c = &bench_cases[i];

		printf("%-34s", c->name);
		for (int m = 0; m < BENCH_NMODES; m++) {
			double peer;

			if (refused[m] < 0) {
				printf("  %-16s", "refused");
				continue;
			}
			peer = c->peer == NO_PEER ? 0 : ns[m][c->peer];
			print_cell(ns[m][i], peer);
		}
		printf("\n");
	}
	for (int m = 0; m < BENCH_NMODES; m++) {
		if (refused[m] < 0)
			printf("mode %s: ur_loop_new: %s\n",
			       ur_mode_name(bench_modes[m]),
			       strerror(-refused[m]));
	}
	for (int m = 0; m < BENCH_NMODES; m++) {
		for (size_t i = 0; i < BENCH_NCASES; i++) {
			if (refused[m] == 0 && ns[m][i] < 0)
				return 1;
		}
	}
	return 0;
}
