/* SPDX-License-Identifier: BSD-3-Clause */
/* test/ur-fiber: spawn, join, yield, park/wake, cancel, detach, scale. */
#include "t-helpers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#ifdef RINGPROT_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define T_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define T_ASAN 1
#endif
#endif
#ifndef T_ASAN
#define T_ASAN 0
#endif

/* Run turns until *n reaches want (or 20 s pass). */
static void run_until_count(struct ur_loop *loop, const int *n, int want)
{
	uint64_t end = t_now_ms() + 20000;

	while (*n < want && t_now_ms() < end)
		assert_true(ur_loop_run_once(loop, 10 * 1000 * 1000) >= 0);
	assert_int_equal(*n, want);
}

static void run_turns(struct ur_loop *loop, int turns)
{
	for (int i = 0; i < turns; i++)
		assert_true(ur_loop_run_once(loop, 0) >= 0);
}

static struct ur_loop_stats stats(struct ur_loop *loop)
{
	struct ur_loop_stats st;

	ur_loop_stats(loop, &st);
	return st;
}

static int return_arg(void *arg)
{
	return (int)(intptr_t)arg;
}

static void test_ur_fiber_spawn_join(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_fiber *f[5];
	int ret = -1;

	assert_int_equal(
		ur_fiber_spawn(loop, return_arg, (void *)42, NULL, &f[0]), 0);
	assert_int_equal(stats(loop).fibers_live, 1);
	assert_true(stats(loop).stacks_mapped >= 1);
	assert_int_equal(ur_fiber_join(f[0], &ret), 0);
	assert_int_equal(ret, 42);
	assert_int_equal(stats(loop).fibers_live, 0);

	for (int i = 0; i < 5; i++)
		assert_int_equal(ur_fiber_spawn(loop, return_arg,
						(void *)(intptr_t)(i - 2), NULL,
						&f[i]),
				 0);
	for (int i = 4; i >= 0; i--) {
		assert_int_equal(ur_fiber_join(f[i], &ret), 0);
		assert_int_equal(ret, i - 2);
	}
	/* a returned fiber keeps its record, not its stack, until joined */
	assert_int_equal(ur_fiber_spawn(loop, return_arg, NULL, NULL, &f[0]),
			 0);
	run_turns(loop, 2);
	assert_int_equal(stats(loop).fibers_live, 1);
	assert_int_equal(ur_fiber_join(f[0], NULL), 0);
	assert_int_equal(stats(loop).fibers_live, 0);
	assert_int_equal(ur_fiber_spawn(loop, NULL, NULL, NULL, &f[0]),
			 -EINVAL);
}

static int store_self(void *arg)
{
	*(struct ur_fiber **)arg = ur_fiber_self();
	return 0;
}

static void test_ur_fiber_self(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_fiber *seen = NULL;
	struct ur_fiber *f;

	assert_null(ur_fiber_self());
	assert_int_equal(ur_fiber_spawn(loop, store_self, &seen, NULL, &f), 0);
	run_turns(loop, 1);
	assert_ptr_equal(seen, f);
	assert_null(ur_fiber_self());
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(ur_fiber_park(), -EINVAL); /* not in a fiber */
}

struct order {
	char log[64];
	int len;
};

struct order_arg {
	struct order *o;
	char id;
};

static int yield_three(void *arg)
{
	struct order_arg *a = arg;

	for (int i = 0; i < 3; i++) {
		a->o->log[a->o->len++] = a->id;
		if (ur_fiber_yield() != 0)
			return -1;
	}
	return 0;
}

static void test_ur_fiber_yield_order(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct order o = {.len = 0};
	struct order_arg a[3];
	struct ur_fiber *f[3];
	int ret;

	for (int i = 0; i < 3; i++) {
		a[i].o = &o;
		a[i].id = (char)('a' + i);
		assert_int_equal(
			ur_fiber_spawn(loop, yield_three, &a[i], NULL, &f[i]),
			0);
	}
	for (int i = 0; i < 3; i++) {
		assert_int_equal(ur_fiber_join(f[i], &ret), 0);
		assert_int_equal(ret, 0);
	}
	o.log[o.len] = '\0';
	assert_string_equal(o.log, "abcabcabc");
}

struct parker {
	int phase;
	int ret;
	struct ur_fiber *other; /* woken by this fiber, if set */
};

static int park_once(void *arg)
{
	struct parker *p = arg;

	p->phase = 1;
	p->ret = ur_fiber_park();
	p->phase = 2;
	return 0;
}

static int wake_other(void *arg)
{
	struct parker *p = arg;

	ur_fiber_wake(p->other);
	p->phase = 2;
	return 0;
}

static void test_ur_fiber_park_wake(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct parker p = {0, -1, NULL};
	struct parker w = {0, -1, NULL};
	struct ur_fiber *f, *g;

	assert_int_equal(ur_fiber_spawn(loop, park_once, &p, NULL, &f), 0);
	ur_fiber_wake(f); /* not parked yet: no effect */
	run_turns(loop, 3);
	assert_int_equal(p.phase, 1);
	assert_int_equal(stats(loop).fibers_live, 1);
	ur_fiber_wake(f);
	run_turns(loop, 1);
	assert_int_equal(p.phase, 2);
	assert_int_equal(p.ret, 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);

	/* woken by another fiber */
	p.phase = 0;
	assert_int_equal(ur_fiber_spawn(loop, park_once, &p, NULL, &f), 0);
	run_turns(loop, 1);
	assert_int_equal(p.phase, 1);
	w.other = f;
	assert_int_equal(ur_fiber_spawn(loop, wake_other, &w, NULL, &g), 0);
	assert_int_equal(ur_fiber_join(g, NULL), 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(p.phase, 2);
	assert_int_equal(p.ret, 0);
}

struct cancelee {
	int phase;
	int park_ret;
	int park2_ret;
	int yield_ret;
	ssize_t recv_ret;
	int fd;
};

static int cancel_in_park(void *arg)
{
	struct cancelee *c = arg;
	char buf[4];

	c->phase = 1;
	c->park_ret = ur_fiber_park();
	c->phase = 2;
	/* from now on every blocking call fails at once */
	c->park2_ret = ur_fiber_park();
	c->recv_ret = ur_recv(c->fd, buf, sizeof(buf), 0);
	c->yield_ret = ur_fiber_yield();
	return ur_fiber_is_cancelled(ur_fiber_self()) ? 7 : 0;
}

static void test_ur_fiber_cancel_park(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct cancelee c = {0};
	struct ur_fiber *f;
	int sv[2];
	int ret;
	char ch;

	t_socketpair(sv);
	c.fd = sv[1];
	assert_int_equal(write(sv[0], "x", 1), 1); /* data is there, still */
	assert_int_equal(ur_fiber_spawn(loop, cancel_in_park, &c, NULL, &f), 0);
	run_turns(loop, 2);
	assert_int_equal(c.phase, 1);
	assert_false(ur_fiber_is_cancelled(f));
	assert_int_equal(ur_fiber_cancel(f), 0);
	assert_true(ur_fiber_is_cancelled(f));
	assert_int_equal(ur_fiber_cancel(f), 0); /* twice is fine */
	run_until_count(loop, &c.phase, 2);
	run_turns(loop, 2);
	assert_int_equal(c.park_ret, -ECANCELED);
	assert_int_equal(c.park2_ret, -ECANCELED);
	assert_int_equal(c.recv_ret, -ECANCELED);
	assert_int_equal(c.yield_ret, -ECANCELED);
	assert_int_equal(ur_fiber_cancel(f), -ESRCH); /* returned */
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, 7);
	assert_int_equal(read(sv[1], &ch, 1), 1); /* not consumed */
	close(sv[0]);
	close(sv[1]);
}

static int recv_once(void *arg)
{
	struct cancelee *c = arg;
	char buf[8];

	memset(buf, 0, sizeof(buf));
	c->phase = 1;
	c->recv_ret = ur_recv(c->fd, buf, sizeof(buf), 0);
	c->phase = 2;
	if (c->recv_ret == 1 && buf[0] != 'y')
		return -1;
	return 0;
}

static void test_ur_fiber_cancel_recv(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct cancelee c = {0};
	struct ur_fiber *f;
	int sv[2];
	int ret;

	t_socketpair(sv);
	c.fd = sv[1];
	assert_int_equal(ur_fiber_spawn(loop, recv_once, &c, NULL, &f), 0);
	run_turns(loop, 3);
	assert_int_equal(c.phase, 1);
	assert_int_equal(stats(loop).ops_inflight, 1);
	assert_int_equal(ur_fiber_cancel(f), 0);
	run_until_count(loop, &c.phase, 2);
	assert_int_equal(c.recv_ret, -ECANCELED);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, 0);
	assert_int_equal(stats(loop).ops_inflight, 0);
	close(sv[0]);
	close(sv[1]);
}

/* Data and cancel in the same turn: either way, no byte is lost. */
static void test_ur_fiber_cancel_recv_data_race(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	int got = 0, cancelled = 0;

	for (int round = 0; round < 20; round++) {
		struct cancelee c = {0};
		struct ur_fiber *f;
		int sv[2];
		int ret;
		char ch = 0;

		t_socketpair(sv);
		c.fd = sv[1];
		assert_int_equal(ur_fiber_spawn(loop, recv_once, &c, NULL, &f),
				 0);
		run_turns(loop, 2);
		assert_int_equal(c.phase, 1);
		assert_int_equal(write(sv[0], "y", 1), 1);
		assert_int_equal(ur_fiber_cancel(f), 0);
		run_until_count(loop, &c.phase, 2);
		assert_int_equal(ur_fiber_join(f, &ret), 0);
		assert_int_equal(ret, 0);
		if (c.recv_ret == 1) {
			got++;
		} else {
			assert_int_equal(c.recv_ret, -ECANCELED);
			assert_int_equal(recv(sv[1], &ch, 1, MSG_DONTWAIT), 1);
			assert_int_equal(ch, 'y');
			cancelled++;
		}
		close(sv[0]);
		close(sv[1]);
	}
	fprintf(stderr, "ur-fiber: data won %d, cancel won %d\n", got,
		cancelled);
}

struct family {
	int child_ret;
	int join_ret;
	int self_join;
	int phase;
};

static int five(void *arg)
{
	(void)arg;
	if (ur_fiber_yield() != 0)
		return -1;
	return 5;
}

static int parent(void *arg)
{
	struct family *fam = arg;
	struct ur_fiber *child, *quick;
	int r;

	fam->self_join = ur_fiber_join(ur_fiber_self(), NULL);
	if (ur_fiber_spawn(NULL, five, NULL, NULL, &child) != 0)
		return -1;
	fam->join_ret = ur_fiber_join(child, &fam->child_ret);
	/* a child that has returned before the join */
	if (ur_fiber_spawn(NULL, return_arg, (void *)3, NULL, &quick) != 0)
		return -1;
	for (int i = 0; i < 3; i++)
		if (ur_fiber_yield() != 0)
			return -1;
	if (ur_fiber_join(quick, &r) != 0 || r != 3)
		return -1;
	return fam->child_ret + 1;
}

static void test_ur_fiber_join_from_fiber(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct family fam = {0};
	struct ur_fiber *f;
	int ret;

	assert_int_equal(ur_fiber_spawn(loop, parent, &fam, NULL, &f), 0);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(fam.self_join, -EINVAL);
	assert_int_equal(fam.join_ret, 0);
	assert_int_equal(fam.child_ret, 5);
	assert_int_equal(ret, 6);
}

static int bump(void *arg)
{
	(*(int *)arg)++;
	return 0;
}

static int spawn_detached(void *arg)
{
	for (int i = 0; i < 100; i++) {
		struct ur_fiber *f;

		if (ur_fiber_spawn(NULL, bump, arg, NULL, &f) != 0)
			return -1;
		ur_fiber_detach(f);
	}
	return 0;
}

struct join_arg {
	struct ur_fiber *target;
	int ret;
	int done;
};

static int join_target(void *arg)
{
	struct join_arg *j = arg;

	j->ret = ur_fiber_join(j->target, NULL);
	j->done = 1;
	return 0;
}

static void test_ur_fiber_detach(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct parker p = {0, -1, NULL};
	struct join_arg j = {NULL, 0, 0};
	struct ur_fiber *f, *g;
	int count = 0;

	/* detached before it runs: freed when it returns */
	assert_int_equal(ur_fiber_spawn(loop, bump, &count, NULL, &f), 0);
	ur_fiber_detach(f);
	run_until_count(loop, &count, 1);
	assert_int_equal(stats(loop).fibers_live, 0);

	/* detached after it returned: freed at once */
	assert_int_equal(ur_fiber_spawn(loop, bump, &count, NULL, &f), 0);
	run_until_count(loop, &count, 2);
	assert_int_equal(stats(loop).fibers_live, 1);
	ur_fiber_detach(f);
	assert_int_equal(stats(loop).fibers_live, 0);

	/* detached fibers spawned from a fiber */
	count = 0;
	assert_int_equal(ur_fiber_spawn(loop, spawn_detached, &count, NULL, &f),
			 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	run_until_count(loop, &count, 100);
	run_turns(loop, 1);
	assert_int_equal(stats(loop).fibers_live, 0);

	/* detached while another fiber waits to join it */
	assert_int_equal(ur_fiber_spawn(loop, park_once, &p, NULL, &f), 0);
	run_turns(loop, 1);
	j.target = f;
	assert_int_equal(ur_fiber_spawn(loop, join_target, &j, NULL, &g), 0);
	run_turns(loop, 2);
	assert_int_equal(j.done, 0);
	assert_int_equal(ur_fiber_join(f, NULL), -EINVAL); /* has a joiner */
	ur_fiber_detach(f);
	assert_int_equal(ur_fiber_join(g, NULL), 0);
	assert_int_equal(j.ret, -EINVAL);
	ur_fiber_wake(f);
	run_until_count(loop, &p.phase, 2);
	run_turns(loop, 1);
	assert_int_equal(stats(loop).fibers_live, 0);
}

static void test_ur_fiber_cancel_joiner(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct parker p = {0, -1, NULL};
	struct join_arg j = {NULL, 0, 0};
	struct ur_fiber *f, *g;

	assert_int_equal(ur_fiber_spawn(loop, park_once, &p, NULL, &f), 0);
	j.target = f;
	assert_int_equal(ur_fiber_spawn(loop, join_target, &j, NULL, &g), 0);
	run_turns(loop, 2);
	assert_int_equal(ur_fiber_cancel(g), 0);
	assert_int_equal(ur_fiber_join(g, NULL), 0);
	assert_int_equal(j.ret, -ECANCELED);
	/* f is still joinable */
	ur_fiber_wake(f);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(p.ret, 0);
}

/*
 * 10,000 fibers each parked in ur_recv on its own socket: 5,000 pairs,
 * one fiber on each end, so 10,000 fds (the limit here is 20,000).
 */
struct many {
	int *fds;
	ssize_t *res;
	int started;
	int done;
};

struct many_arg {
	struct many *m;
	int i;
};

static int many_recv(void *arg)
{
	struct many_arg *a = arg;
	char buf[4] = {0, 0, 0, 0};

	a->m->started++;
	a->m->res[a->i] = ur_recv(a->m->fds[a->i], buf, sizeof(buf), 0);
	if (a->m->res[a->i] == 1 && buf[0] != (char)('a' + a->i % 26))
		a->m->res[a->i] = -EBADMSG;
	a->m->done++;
	return 0;
}

static void test_ur_fiber_many_recv(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct rlimit rl;
	struct many m = {0};
	struct many_arg *args;
	struct ur_fiber **f;
	int n = 10000;
	uint64_t t0;

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	if (rl.rlim_cur < (rlim_t)n + 200 && rl.rlim_max >= (rlim_t)n + 200) {
		rl.rlim_cur = (rlim_t)n + 200;
		assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	}
	if (rl.rlim_cur < (rlim_t)n + 200)
		n = (int)((rl.rlim_cur - 200) & ~(rlim_t)1);
	m.fds = calloc((size_t)n, sizeof(*m.fds));
	m.res = calloc((size_t)n, sizeof(*m.res));
	args = calloc((size_t)n, sizeof(*args));
	f = calloc((size_t)n, sizeof(*f));
	assert_non_null(m.fds);
	assert_non_null(m.res);
	assert_non_null(args);
	assert_non_null(f);
	for (int i = 0; i < n; i += 2)
		t_socketpair(&m.fds[i]);
	t0 = t_now_ms();
	for (int i = 0; i < n; i++) {
		args[i].m = &m;
		args[i].i = i;
		assert_int_equal(
			ur_fiber_spawn(loop, many_recv, &args[i], NULL, &f[i]),
			0);
	}
	run_until_count(loop, &m.started, n);
	run_turns(loop, 2);
	assert_int_equal(m.done, 0);
	assert_int_equal(stats(loop).ops_inflight, (uint64_t)n);
	/* writing one end wakes the fiber on the other */
	for (int i = 0; i < n; i++) {
		char ch = (char)('a' + (i ^ 1) % 26);

		assert_int_equal(write(m.fds[i], &ch, 1), 1);
	}
	run_until_count(loop, &m.done, n);
	fprintf(stderr,
		"ur-fiber[%s]: %d fibers parked in recv, woken in "
		"%llu ms\n",
		ur_mode_name(ur_loop_mode(loop)), n,
		(unsigned long long)(t_now_ms() - t0));
	for (int i = 0; i < n; i++) {
		assert_int_equal(m.res[i], 1);
		assert_int_equal(ur_fiber_join(f[i], NULL), 0);
	}
	for (int i = 0; i < n; i++)
		close(m.fds[i]);
	free(m.fds);
	free(m.res);
	free(args);
	free(f);
}

static int send_later(void *arg)
{
	int fd = *(int *)arg;

	for (int i = 0; i < 3; i++)
		if (ur_fiber_yield() != 0)
			return -1;
	return (int)ur_send(fd, "late", 4, 0);
}

static void test_ur_fiber_blocking_outside(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_fiber *f;
	char buf[8];
	int sv[2];
	int ret;

	t_socketpair(sv);
	assert_int_equal(ur_nop(), 0);
	assert_int_equal(ur_fiber_spawn(loop, send_later, &sv[0], NULL, &f), 0);
	/* drives the loop, which runs the fiber that sends */
	memset(buf, 0, sizeof(buf));
	assert_int_equal(ur_recv(sv[1], buf, sizeof(buf), 0), 4);
	assert_memory_equal(buf, "late", 4);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, 4);
	assert_int_equal(ur_fiber_yield(), 0); /* outside: one turn */
	close(sv[0]);
	close(sv[1]);
}

/*
 * A fiber first run by the outer loop is resumed by a nested
 * ur_loop_run_once (a callback joining it) and must switch back there,
 * then later to the outer one again.
 */
struct nested {
	struct ur_fiber *joined;
	struct ur_fiber *other;
	int joined_ret;
	int cb_done;
	int other_phase;
};

static int park_then_yield(void *arg)
{
	(void)arg;
	if (ur_fiber_park() != 0)
		return -1;
	if (ur_fiber_yield() != 0 || ur_fiber_yield() != 0)
		return -1;
	return 9;
}

static int park_twice(void *arg)
{
	struct nested *n = arg;

	n->other_phase = 1;
	if (ur_fiber_park() != 0)
		return -1;
	n->other_phase = 2;
	if (ur_fiber_park() != 0)
		return -1;
	n->other_phase = 3;
	return 0;
}

static void nested_cb(struct ur_op *op)
{
	struct nested *n = op->data;

	ur_fiber_wake(n->joined);
	ur_fiber_wake(n->other);
	/* outside any fiber: drives a nested loop turn until it returns */
	assert_int_equal(ur_fiber_join(n->joined, &n->joined_ret), 0);
	n->cb_done = 1;
}

static void test_ur_fiber_nested_resume(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct nested n = {0};
	struct ur_op op;

	assert_int_equal(
		ur_fiber_spawn(loop, park_then_yield, NULL, NULL, &n.joined),
		0);
	assert_int_equal(ur_fiber_spawn(loop, park_twice, &n, NULL, &n.other),
			 0);
	run_turns(loop, 1);
	assert_int_equal(n.other_phase, 1);
	ur_op_init(&op, nested_cb, &n);
	assert_int_equal(ur_nop_start(loop, &op), 0);
	assert_true(t_loop_run_until(loop, &n.cb_done, 5000));
	assert_int_equal(n.joined_ret, 9);
	run_turns(loop, 1);
	assert_int_equal(n.other_phase, 2);
	ur_fiber_wake(n.other);
	assert_int_equal(ur_fiber_join(n.other, NULL), 0);
	assert_int_equal(n.other_phase, 3);
}

struct live_seen {
	int n;
	int named;
	int line_ok;
};

static int spawn_line;

static void count_live(const char *what, const char *file, int line, void *arg)
{
	struct live_seen *s = arg;

	s->n++;
	if (strstr(what, "idler") != NULL)
		s->named++;
	if (strcmp(file, __FILE__) == 0 && line == spawn_line)
		s->line_ok++;
}

static void test_ur_fiber_foreach_live(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_fiber_opts o = {.name = "idler"};
	struct parker p = {0, -1, NULL};
	struct live_seen seen = {0};
	struct ur_fiber *f;

	spawn_line = __LINE__ + 1;
	assert_int_equal(ur_fiber_spawn(loop, park_once, &p, &o, &f), 0);
	run_turns(loop, 1);
	ur_loop_foreach_live(loop, count_live, &seen);
	assert_int_equal(seen.n, 1);
	assert_int_equal(seen.named, 1);
	assert_int_equal(seen.line_ok, 1);
	ur_fiber_wake(f);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	memset(&seen, 0, sizeof(seen));
	ur_loop_foreach_live(loop, count_live, &seen);
	assert_int_equal(seen.n, 0);
}

/* Recursion that needs about 300 KiB: more than the default 64 KiB. */
__attribute__((noinline)) static int burn(int depth)
{
	volatile unsigned char pad[1024];

	memset((unsigned char *)pad, depth, sizeof(pad));
	if (depth == 0)
		return pad[7];
	return burn(depth - 1) + pad[depth % 1024] - depth % 256;
}

static int deep_fiber(void *arg)
{
	(void)arg;
	return burn(300);
}

static void test_ur_fiber_stack_size_opt(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_fiber_opts o = {.stack_size = 1024 * 1024};
	struct ur_fiber *f;
	int ret = -1;

	assert_int_equal(ur_fiber_spawn(loop, deep_fiber, NULL, &o, &f), 0);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, 0);
}

/*
 * longjmp out of deep frames on a fiber stack, then reuse that stack
 * region: ASan must know the fiber's stack bounds (the switch
 * annotations) to unpoison the abandoned frames, or it reports the
 * fresh frames as overflows.
 */
static jmp_buf jb_fiber;

__attribute__((noinline)) static void jump_from_deep(int depth)
{
	volatile char buf[100];

	buf[0] = (char)depth;
	if (depth < 0)
		return;
	if (depth == 0)
		longjmp(jb_fiber, 1);
	jump_from_deep(depth - 1);
	buf[1] = buf[0];
}

__attribute__((noinline)) static int write_wide(void)
{
	volatile char big[4096];

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)i;
	return big[100] + big[4000];
}

static int longjmp_fiber(void *arg)
{
	(void)arg;
	if (setjmp(jb_fiber) == 0)
		jump_from_deep(20);
	if (ur_fiber_yield() != 0)
		return -1;
	return write_wide();
}

static void test_ur_fiber_longjmp_within(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_fiber *f;
	int ret;

	assert_int_equal(ur_fiber_spawn(loop, longjmp_fiber, NULL, NULL, &f),
			 0);
	assert_int_equal(ur_fiber_join(f, &ret), 0);
	assert_int_equal(ret, (char)100 + (char)4000);
}

static long rss_kib(void)
{
	FILE *fp = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;

	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(fp);
	return kib;
}

static int park_quietly(void *arg)
{
	(void)arg;
	return ur_fiber_park();
}

/* The idle target: a parked fiber costs at most 8 KiB (stack + record). */
static void test_ur_fiber_idle_memory(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	enum {
		N = 10000
	};
	struct ur_fiber **f;
	long before, after;
	double per;

#ifdef RINGPROT_HAVE_VALGRIND
	if (RUNNING_ON_VALGRIND) {
		fprintf(stderr, "ur-fiber: RSS not measured under valgrind\n");
		return;
	}
#endif
	if (T_ASAN) {
		fprintf(stderr, "ur-fiber: RSS not measured under ASan\n");
		return;
	}
	f = calloc(N, sizeof(*f));
	assert_non_null(f);
	before = rss_kib();
	for (int i = 0; i < N; i++)
		assert_int_equal(
			ur_fiber_spawn(loop, park_quietly, NULL, NULL, &f[i]),
			0);
	run_turns(loop, 1);
	after = rss_kib();
	per = (double)(after - before) * 1024.0 / N;
	fprintf(stderr, "ur-fiber: %d parked fibers: %.0f bytes each\n", N,
		per);
	assert_true(per <= 8192.0);
	for (int i = 0; i < N; i++)
		ur_fiber_wake(f[i]);
	for (int i = 0; i < N; i++)
		assert_int_equal(ur_fiber_join(f[i], NULL), 0);
	free(f);
}

/*
 * Waiters (uring/wait.c): woken from a callback, from another fiber,
 * cancelled, and outside any fiber.
 */
struct wtest {
	struct ur_waiter w;
	struct ur_timer t;
	int ret;
	int done;
};

static void wake_from_timer(struct ur_timer *t, void *arg)
{
	(void)t;
	ur_waiter_wake(arg);
}

static int wait_once(void *arg)
{
	struct wtest *wt = arg;

	wt->ret = ur_waiter_wait(&wt->w);
	wt->done++;
	return 0;
}

static void test_ur_fiber_waiter_woken_by_callback(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct wtest wt = {.ret = 1};
	struct ur_fiber *f;

	ur_waiter_init(&wt.w, loop);
	ur_timer_init(&wt.t, loop);
	assert_int_equal(ur_fiber_spawn(loop, wait_once, &wt, NULL, &f), 0);
	run_turns(loop, 3);
	assert_int_equal(wt.done, 0); /* parked, not woken by stray turns */
	assert_int_equal(
		ur_timer_start(&wt.t, 5 * 1000 * 1000, wake_from_timer, &wt.w),
		0);
	run_until_count(loop, &wt.done, 1);
	assert_int_equal(wt.ret, 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
}

static int wake_it(void *arg)
{
	struct wtest *wt = arg;

	ur_waiter_wake(&wt->w);
	return 0;
}

static void test_ur_fiber_waiter_woken_by_fiber(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct wtest wt = {.ret = 1};
	struct ur_fiber *f, *g;

	ur_waiter_init(&wt.w, loop);
	assert_int_equal(ur_fiber_spawn(loop, wait_once, &wt, NULL, &f), 0);
	run_turns(loop, 2);
	assert_int_equal(wt.done, 0);
	assert_int_equal(ur_fiber_spawn(loop, wake_it, &wt, NULL, &g), 0);
	assert_int_equal(ur_fiber_join(g, NULL), 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(wt.ret, 0);
	assert_int_equal(wt.done, 1);
	/* A wake before the wait is kept for it; the wait consumes it. */
	ur_waiter_wake(&wt.w);
	assert_int_equal(ur_waiter_wait(&wt.w), 0);
	assert_int_equal(ur_waiter_wait_until(&wt.w, CLOCK_MONOTONIC,
					      ur_now_ns(CLOCK_MONOTONIC)),
			 -ETIME);
}

static void test_ur_fiber_waiter_cancelled(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct wtest wt = {.ret = 1};
	struct ur_fiber *f;

	ur_waiter_init(&wt.w, loop);
	assert_int_equal(ur_fiber_spawn(loop, wait_once, &wt, NULL, &f), 0);
	run_turns(loop, 2);
	assert_int_equal(wt.done, 0);
	assert_int_equal(ur_fiber_cancel(f), 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(wt.ret, -ECANCELED);
	/* A wake after the wait ended touches no fiber. */
	ur_waiter_wake(&wt.w);
}

static int wait_until_cancelled(void *arg)
{
	struct wtest *wt = arg;

	wt->ret = ur_waiter_wait_until(&wt->w, CLOCK_MONOTONIC,
				       ur_now_ns(CLOCK_MONOTONIC) +
					       10ULL * 1000 * 1000 * 1000);
	wt->done++;
	return 0;
}

static void test_ur_fiber_waiter_until_cancelled(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct wtest wt = {.ret = 1};
	struct ur_fiber *f;
	uint64_t t0 = t_now_ms();

	ur_waiter_init(&wt.w, loop);
	assert_int_equal(
		ur_fiber_spawn(loop, wait_until_cancelled, &wt, NULL, &f), 0);
	run_turns(loop, 2);
	assert_int_equal(stats(loop).timers_armed, 1);
	assert_int_equal(ur_fiber_cancel(f), 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(wt.ret, -ECANCELED);
	assert_true(t_now_ms() - t0 < 5000);
	assert_int_equal(stats(loop).timers_armed, 0); /* its timer went */
}

static void test_ur_fiber_waiter_outside_fiber(void **state)
{
	struct ur_loop *loop = t_loop_of(state);
	struct wtest wt = {.ret = 1};
	struct ur_fiber *g;
	uint64_t t0;

	ur_waiter_init(&wt.w, loop);
	/* Woken by a fiber the waiting caller's own turn runs. */
	assert_int_equal(ur_fiber_spawn(loop, wake_it, &wt, NULL, &g), 0);
	assert_int_equal(ur_waiter_wait(&wt.w), 0);
	assert_int_equal(ur_fiber_join(g, NULL), 0);
	/* Woken by a timer callback. */
	ur_timer_init(&wt.t, loop);
	assert_int_equal(
		ur_timer_start(&wt.t, 20 * 1000 * 1000, wake_from_timer, &wt.w),
		0);
	t0 = t_now_ms();
	assert_int_equal(ur_waiter_wait(&wt.w), 0);
	assert_true(t_now_ms() - t0 >= 19);
	/* A deadline that passes first, then a wake that beats one. */
	t0 = t_now_ms();
	assert_int_equal(ur_waiter_wait_until(&wt.w, CLOCK_MONOTONIC,
					      ur_now_ns(CLOCK_MONOTONIC) +
						      30 * 1000 * 1000),
			 -ETIME);
	assert_true(t_now_ms() - t0 >= 29);
	assert_int_equal(
		ur_timer_start(&wt.t, 5 * 1000 * 1000, wake_from_timer, &wt.w),
		0);
	assert_int_equal(
		ur_waiter_wait_until(&wt.w, CLOCK_REALTIME,
				     ur_now_ns(CLOCK_REALTIME) +
					     10ULL * 1000 * 1000 * 1000),
		0);
	assert_int_equal(stats(loop).timers_armed, 0);
	assert_int_equal(
		ur_waiter_wait_until(&wt.w, CLOCK_PROCESS_CPUTIME_ID, 1),
		-EINVAL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
	const struct CMUnitTest tests[] = {
		T(test_ur_fiber_spawn_join),
		T(test_ur_fiber_self),
		T(test_ur_fiber_yield_order),
		T(test_ur_fiber_park_wake),
		T(test_ur_fiber_cancel_park),
		T(test_ur_fiber_cancel_recv),
		T(test_ur_fiber_cancel_recv_data_race),
		T(test_ur_fiber_join_from_fiber),
		T(test_ur_fiber_detach),
		T(test_ur_fiber_cancel_joiner),
		T(test_ur_fiber_many_recv),
		T(test_ur_fiber_blocking_outside),
		T(test_ur_fiber_nested_resume),
		T(test_ur_fiber_foreach_live),
		T(test_ur_fiber_stack_size_opt),
		T(test_ur_fiber_longjmp_within),
		T(test_ur_fiber_idle_memory),
		T(test_ur_fiber_waiter_woken_by_callback),
		T(test_ur_fiber_waiter_woken_by_fiber),
		T(test_ur_fiber_waiter_cancelled),
		T(test_ur_fiber_waiter_until_cancelled),
		T(test_ur_fiber_waiter_outside_fiber),
	};
#undef T

	t_require_loop();
	return t_run_groups("ur-fiber", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
