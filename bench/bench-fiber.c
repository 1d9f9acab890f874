/* SPDX-License-Identifier: BSD-3-Clause */
/* bench/bench-fiber: switch cost vs swapcontext, spawn+join, parked RSS. */
#include <ringprot/uring.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

/*
 * The bare switch and the scheduler's run queue are internal; this
 * benchmark measures them directly, so it reaches into uring/ as the
 * unit tests of internals do.
 */
#include "internal.h" /* uring/, for the bare context switch */

#define SWITCHES 10000000L /* per switch benchmark: 5M round trips */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "bench-fiber: %s: %s\n", what, strerror(err));
	exit(1);
}

/* ---- our switch: ping-pong between main and one context ---- */
static struct ur__ctx our_main, our_co;

static void our_entry(void *arg)
{
	(void)arg;
	for (;;)
		ur__ctx_switch(&our_co, &our_main);
}

static double bench_our_switch(void)
{
	struct ur__stack_pool pool;
	struct ur__stack *s;
	uint64_t t0, t1;

	ur__stack_pool_init(&pool, 0, 1);
	s = ur__stack_get(&pool);
	if (s == NULL)
		die("stack", ENOMEM);
	if (ur__ctx_make(&our_co, s->lo, s->size, our_entry, NULL) < 0)
		die("ur__ctx_make", ENOMEM);
	ur__ctx_switch(&our_main, &our_co); /* warm up */
	t0 = now_ns();
	for (long i = 0; i < SWITCHES / 2; i++)
		ur__ctx_switch(&our_main, &our_co);
	t1 = now_ns();
	ur__ctx_fini(&our_co);
	ur__stack_put(&pool, s);
	ur__stack_pool_fini(&pool);
	return (double)(t1 - t0) / SWITCHES;
}

/* ---- glibc swapcontext, same shape ---- */
static ucontext_t uc_main, uc_co;

static void uc_entry(void)
{
	for (;;)
		swapcontext(&uc_co, &uc_main);
}

static double bench_swapcontext(void)
{
	size_t size = 64 * 1024;
	void *stack = malloc(size);
	uint64_t t0, t1;

	if (stack == NULL || getcontext(&uc_co) < 0)
		die("swapcontext setup", ENOMEM);
	uc_co.uc_stack.ss_sp = stack;
	uc_co.uc_stack.ss_size = size;
	uc_co.uc_link = NULL;
	makecontext(&uc_co, uc_entry, 0);
	swapcontext(&uc_main, &uc_co);
	t0 = now_ns();
	for (long i = 0; i < SWITCHES / 2; i++)
		swapcontext(&uc_main, &uc_co);
	t1 = now_ns();
	free(stack);
	return (double)(t1 - t0) / SWITCHES;
}

/* ---- a fiber resumed by the scheduler and parking again ---- */
static int park_loop(void *arg)
{
	long *n = arg;

	while (ur_fiber_park() == 0)
		(*n)++;
	return 0;
}

static double bench_resume_park(struct ur_loop *loop, long rounds)
{
	struct ur_fiber *f;
	long n = 0;
	uint64_t t0, t1;

	if (ur_fiber_spawn(loop, park_loop, &n, NULL, &f) < 0)
		die("spawn", ENOMEM);
	ur__fibers_run(loop);
	t0 = now_ns();
	for (long i = 0; i < rounds; i++) {
		ur_fiber_wake(f);
		ur__fibers_run(loop);
	}
	t1 = now_ns();
	if (n != rounds)
		die("resume/park count", EPROTO);
	if (ur_fiber_cancel(f) < 0 || ur_fiber_join(f, NULL) < 0)
		die("join", EPROTO);
	return (double)(t1 - t0) / (double)rounds;
}

static int nothing(void *arg)
{
	(void)arg;
	return 0;
}

/* Spawn a batch, run it once, join every one (all have returned). */
static double bench_spawn_join_batch(struct ur_loop *loop, int batch,
				     int rounds)
{
	struct ur_fiber **f = calloc((size_t)batch, sizeof(*f));
	uint64_t t0, t1;

	if (f == NULL)
		die("calloc", ENOMEM);
	t0 = now_ns();
	for (int r = 0; r < rounds; r++) {
		for (int i = 0; i < batch; i++)
			if (ur_fiber_spawn(loop, nothing, NULL, NULL, &f[i]) <
			    0)
				die("spawn", ENOMEM);
		ur__fibers_run(loop);
		for (int i = 0; i < batch; i++)
			if (ur_fiber_join(f[i], NULL) < 0)
				die("join", EPROTO);
	}
	t1 = now_ns();
	free(f);
	return (double)(t1 - t0) / ((double)batch * rounds);
}

/* One at a time: the join outside any fiber drives a loop turn. */
static double bench_spawn_join_one(struct ur_loop *loop, int n)
{
	uint64_t t0, t1;

	t0 = now_ns();
	for (int i = 0; i < n; i++) {
		struct ur_fiber *f;

		if (ur_fiber_spawn(loop, nothing, NULL, NULL, &f) < 0)
			die("spawn", ENOMEM);
		if (ur_fiber_join(f, NULL) < 0)
			die("join", EPROTO);
	}
	t1 = now_ns();
	return (double)(t1 - t0) / n;
}

/* VmRSS and VmPTE of this process, in KiB. */
static void vm_kib(long *rss, long *pte)
{
	FILE *fp = fopen("/proc/self/status", "r");
	char line[256];

	*rss = *pte = -1;
	if (fp == NULL)
		return;
	while (fgets(line, sizeof(line), fp) != NULL) {
		if (sscanf(line, "VmRSS: %ld kB", rss) == 1)
			continue;
		(void)sscanf(line, "VmPTE: %ld kB", pte);
	}
	fclose(fp);
}

static int park_idle(void *arg)
{
	(void)arg;
	return ur_fiber_park();
}

/* On a fresh loop, so that no pooled stack hides its page. */
static void bench_idle(int n)
{
	struct ur_fiber **f = calloc((size_t)n, sizeof(*f));
	long rss0, pte0, rss1, pte1;
	struct ur_loop *loop;
	uint64_t t0, t1;
	int ret;

	if (f == NULL)
		die("calloc", ENOMEM);
	ret = ur_loop_new(NULL, &loop);
	if (ret < 0)
		die("ur_loop_new", -ret);
	vm_kib(&rss0, &pte0);
	t0 = now_ns();
	for (int i = 0; i < n; i++)
		if (ur_fiber_spawn(loop, park_idle, NULL, NULL, &f[i]) < 0)
			die("spawn", ENOMEM);
	ur__fibers_run(loop);
	t1 = now_ns();
	vm_kib(&rss1, &pte1);
	printf("| parked fibers (ur_fiber_park) | %7d | %9.0f B RSS/fiber"
	       " | + %4.0f B page tables; %.0f ns/spawn+first run |\n",
	       n, (double)(rss1 - rss0) * 1024.0 / n,
	       (double)(pte1 - pte0) * 1024.0 / n, (double)(t1 - t0) / n);
	for (int i = 0; i < n; i++)
		ur_fiber_wake(f[i]);
	ur__fibers_run(loop);
	for (int i = 0; i < n; i++)
		if (ur_fiber_join(f[i], NULL) < 0)
			die("join", EPROTO);
	ur_loop_free(&loop);
	free(f);
}

int main(void)
{
	struct ur_loop *loop;
	double ours, uc;
	int ret;

	ours = bench_our_switch();
	uc = bench_swapcontext();
	ret = ur_loop_new(NULL, &loop);
	if (ret < 0)
		die("ur_loop_new", -ret);

	printf("bench-fiber: switch implementation %s, %ld switches each\n\n",
	       ur__ctx_impl(), SWITCHES);
	printf("| what | n | result | note |\n|---|---|---|---|\n");
	printf("| ur__ctx_switch | %ld | %.2f ns/switch | |\n", SWITCHES, ours);
	printf("| glibc swapcontext | %ld | %.2f ns/switch | |\n", SWITCHES,
	       uc);
	printf("| ratio | | %.1fx | swapcontext / ours |\n", uc / ours);
	printf("| wake + resume + park | %d | %.2f ns/round | 2 switches "
	       "plus run queue |\n",
	       1000000, bench_resume_park(loop, 1000000));
	printf("| spawn + run + join, batch of 1000 | %d | %.0f ns/fiber | "
	       "stack from the pool |\n",
	       100000, bench_spawn_join_batch(loop, 1000, 100));
	printf("| spawn + join from outside a fiber | %d | %.0f ns/fiber | "
	       "join drives one loop turn |\n",
	       100000, bench_spawn_join_one(loop, 100000));
	ur_loop_free(&loop);
	bench_idle(10000);
	bench_idle(100000);
	return 0;
}
