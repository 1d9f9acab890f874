/* SPDX-License-Identifier: BSD-3-Clause */
/* test/prot-select: protgroups and prot_select through the ring. */
#include "t-helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <ringprot/prot.h>

#define MS 1000000ULL

/* Bytes written to fd at a given time, from the loop turn. */
struct later {
	struct ur_timer t;
	int fd;
	const char *data;
};

static void later_fire(struct ur_timer *t, void *arg)
{
	struct later *l = arg;

	(void)t;
	assert_int_equal(write(l->fd, l->data, strlen(l->data)),
			 (ssize_t)strlen(l->data));
}

static void write_later(struct ur_loop *loop, struct later *l, int fd,
			const char *data, unsigned delay_ms)
{
	l->fd = fd;
	l->data = data;
	ur_timer_init(&l->t, loop);
	assert_int_equal(ur_timer_start(&l->t, delay_ms * MS, later_fire, l),
			 0);
}

static struct protgroup *group_of(struct protstream *s)
{
	struct protgroup *g = protgroup_new(2);

	assert_non_null(g);
	protgroup_insert(g, s);
	return g;
}

/*
 * The usual case: one member stream on a socketpair (sv[0]), in a group
 * of its own, and a pipe for the extra fd when asked (else p is -1).
 */
struct sel {
	int sv[2], p[2];
	struct protstream *s;
	struct protgroup *g;
};

static void sel_open(struct sel *x, bool with_pipe)
{
	x->s = t_read_pair(x->sv);
	x->p[0] = x->p[1] = -1;
	if (with_pipe)
		assert_int_equal(pipe2(x->p, O_CLOEXEC), 0);
	x->g = group_of(x->s);
}

static void sel_close(struct sel *x)
{
	protgroup_free(x->g);
	prot_free(x->s);
	t_close_pair(x->sv);
	if (x->p[0] >= 0) {
		close(x->p[0]);
		close(x->p[1]);
	}
}

/* Spec 5.6 #56, with protgroup_copy fixed (spec 6 item 15). */
static void test_prot_select_groups(void **state)
{
	static const char text[] = "abc";
	struct protstream *a = prot_readmap(text, 1);
	struct protstream *b = prot_readmap(text + 1, 1);
	struct protstream *c = prot_readmap(text + 2, 1);
	struct protgroup *g, *cp;

	(void)state;
	g = protgroup_new(0);
	assert_non_null(g);
	protgroup_insert(g, a);
	protgroup_insert(g, b);
	protgroup_insert(g, a);
	protgroup_insert(g, c);
	assert_ptr_equal(protgroup_getelement(g, 0), a);
	assert_ptr_equal(protgroup_getelement(g, 1), b);
	assert_ptr_equal(protgroup_getelement(g, 2), c);
	assert_null(protgroup_getelement(g, 3));
	protgroup_delete(g, b);
	assert_ptr_equal(protgroup_getelement(g, 0), a);
	assert_ptr_equal(protgroup_getelement(g, 1), c);
	assert_null(protgroup_getelement(g, 2));
	protgroup_delete(g, b); /* absent: ignored */
	assert_ptr_equal(protgroup_getelement(g, 1), c);

	/* Cyrus's copy reads as empty; this one has the members. */
	cp = protgroup_copy(g);
	assert_non_null(cp);
	assert_ptr_equal(protgroup_getelement(cp, 0), a);
	assert_ptr_equal(protgroup_getelement(cp, 1), c);
	assert_null(protgroup_getelement(cp, 2));
	protgroup_insert(cp, b); /* independent of the original */
	assert_null(protgroup_getelement(g, 2));
	protgroup_free(cp);
	protgroup_free(g);
	prot_free(a);
	prot_free(b);
	prot_free(c);
}

/* Spec 5.6 #56 continued: growth, reset, and NULL everywhere. */
static void test_prot_select_groups_grow_reset(void **state)
{
	static const char text[] = "abc";
	struct protstream *s[5];
	struct protgroup *small;

	(void)state;
	small = protgroup_new(1);
	assert_non_null(small);
	for (int i = 0; i < 5; i++) {
		s[i] = prot_readmap(text, 3);
		assert_non_null(s[i]);
		protgroup_insert(small, s[i]);
	}
	for (int i = 0; i < 5; i++)
		assert_ptr_equal(protgroup_getelement(small, (size_t)i), s[i]);
	protgroup_reset(small);
	assert_null(protgroup_getelement(small, 0));
	protgroup_insert(small, s[1]); /* usable after a reset */
	assert_ptr_equal(protgroup_getelement(small, 0), s[1]);
	protgroup_insert(small, NULL);
	assert_null(protgroup_getelement(small, 1));

	protgroup_reset(NULL);
	protgroup_free(NULL);
	protgroup_insert(NULL, s[0]);
	protgroup_delete(NULL, s[0]);
	assert_null(protgroup_getelement(NULL, 0));
	assert_null(protgroup_copy(NULL));

	protgroup_free(small);
	for (int i = 0; i < 5; i++)
		prot_free(s[i]);
}

/*
 * Spec 5.6 #57, fixed: a member with a buffered byte returns at once, and
 * the extra fd's flag is set, not left at the caller's 42: readable here,
 * so it counts.
 */
static void test_prot_select_buffered_and_extra(void **state)
{
	struct protgroup *out = NULL;
	struct sel x;
	int flag = 42;
	uint64_t t0;

	(void)state;
	sel_open(&x, true);
	assert_int_equal(write(x.sv[1], "ab", 2), 2);
	assert_int_equal(prot_getc(x.s), 'a'); /* 'b' stays buffered */
	assert_int_equal(write(x.p[1], "e", 1), 1);
	t0 = t_now_ms();
	assert_int_equal(prot_select(x.g, x.p[0], &out, &flag, NULL), 2);
	assert_true(t_now_ms() - t0 < 1500);
	assert_int_equal(flag, 1);
	assert_non_null(out);
	assert_ptr_equal(protgroup_getelement(out, 0), x.s);
	assert_null(protgroup_getelement(out, 1));
	protgroup_free(out);

	/* Extra fd not readable: the flag reads 0 (Cyrus: stale 42). */
	flag = 42;
	out = NULL;
	assert_int_equal(read(x.p[0], &flag, 1), 1);
	flag = 42;
	assert_int_equal(prot_select(x.g, x.p[0], &out, &flag, NULL), 1);
	assert_int_equal(flag, 0);
	assert_ptr_equal(protgroup_getelement(out, 0), x.s);
	protgroup_free(out);
	assert_int_equal(prot_getc(x.s), 'b');

	sel_close(&x);
}

/* Spec 5.6 #58: only the extra fd is readable. */
static void test_prot_select_only_extra(void **state)
{
	struct protgroup *out = (struct protgroup *)&out;
	struct sel x;
	struct later l;
	int flag = 42;

	sel_open(&x, true);
	write_later(t_loop_of(state), &l, x.p[1], "e", 100);
	assert_int_equal(prot_select(x.g, x.p[0], &out, &flag, NULL), 1);
	assert_null(out);
	assert_int_equal(flag, 1);
	sel_close(&x);
}

/* Spec 5.6 #59: only the member's fd is readable. */
static void test_prot_select_only_member(void **state)
{
	struct protgroup *out = NULL;
	struct sel x;
	struct later l;
	int flag = 42;

	sel_open(&x, true);
	write_later(t_loop_of(state), &l, x.sv[1], "m", 100);
	assert_int_equal(prot_select(x.g, x.p[0], &out, &flag, NULL), 1);
	assert_int_equal(flag, 0);
	assert_non_null(out);
	assert_ptr_equal(protgroup_getelement(out, 0), x.s);
	assert_int_equal(prot_getc(x.s), 'm');
	protgroup_free(out);
	sel_close(&x);
}

/* Spec 5.6 #60: nothing ready, caller timeout {1, 0}. */
static void test_prot_select_timeout(void **state)
{
	struct protgroup *out = (struct protgroup *)&out;
	struct timeval tv = {1, 0};
	struct sel x;
	int flag = 42;
	uint64_t t0;

	(void)state;
	sel_open(&x, true);
	t0 = t_now_ms();
	assert_int_equal(prot_select(x.g, x.p[0], &out, &flag, &tv), 0);
	assert_in_range(t_now_ms() - t0, 900, 3000);
	assert_null(out);
	assert_int_equal(flag, 0);
	assert_int_equal(tv.tv_sec, 1); /* no member deadline: untouched */
	sel_close(&x);
}

/*
 * Spec 5.6 #61: read timeout 1 s, caller timeout {10, 0}: the stream is
 * reported at its deadline, the caller's timeval reads {1, 0}, and the
 * next read says "idle for too long".
 */
static void test_prot_select_read_deadline(void **state)
{
	struct protgroup *out = NULL;
	struct timeval tv = {10, 0};
	struct sel x;
	int flag = 42;
	uint64_t t0;

	(void)state;
	sel_open(&x, false);
	assert_int_equal(prot_settimeout(x.s, 1), 0);
	t0 = t_now_ms();
	assert_int_equal(prot_select(x.g, -1, &out, &flag, &tv), 1);
	assert_in_range(t_now_ms() - t0, 900, 3000);
	assert_int_equal(tv.tv_sec, 1);
	assert_int_equal(tv.tv_usec, 0);
	assert_int_equal(flag, 0);
	assert_ptr_equal(protgroup_getelement(out, 0), x.s);
	assert_int_equal(prot_getc(x.s), EOF);
	assert_string_equal(prot_error(x.s), "idle for too long");
	protgroup_free(out);
	sel_close(&x);
}

/*
 * Spec 5.6 #62, fixed (spec 6 item 4): an event due at +1 s with a read
 * timeout of 100 s runs inside prot_select, which goes on waiting until
 * input arrives at +2 s (Cyrus returns the stream at +1 s without running
 * it, then blocks in the next read).
 */
static int ev_calls;

static struct prot_waitevent *ev_remove(struct protstream *s,
					struct prot_waitevent *ev, void *rock)
{
	uint64_t *at = rock;

	*at = t_realtime_ms();
	ev_calls++;
	prot_removewaitevent(s, ev);
	return NULL;
}

static void test_prot_select_runs_events(void **state)
{
	struct protgroup *out = NULL;
	struct sel x;
	struct later l;
	uint64_t mark, at = 0, t0;
	int flag = 42;

	sel_open(&x, false);
	assert_int_equal(prot_settimeout(x.s, 100), 0);
	ev_calls = 0;
	mark = t_realtime_ms() + 1000;
	assert_non_null(prot_addwaitevent_ms(x.s, mark, ev_remove, &at));
	write_later(t_loop_of(state), &l, x.sv[1], "d", 2000);
	t0 = t_now_ms();
	assert_int_equal(prot_select(x.g, -1, &out, &flag, NULL), 1);
	assert_in_range(t_now_ms() - t0, 1900, 4000);
	assert_int_equal(ev_calls, 1);
	assert_true(at >= mark && at < mark + 1000); /* before the input */
	assert_ptr_equal(protgroup_getelement(out, 0), x.s);
	assert_int_equal(prot_getc(x.s), 'd');
	protgroup_free(out);
	sel_close(&x);
}

/* An event already due runs at once; the caller's timeout still ends it. */
static void test_prot_select_due_event_then_timeout(void **state)
{
	struct protgroup *out = (struct protgroup *)&out;
	struct timeval tv = {0, 300000};
	struct sel x;
	uint64_t at = 0, t0;

	(void)state;
	sel_open(&x, false);
	ev_calls = 0;
	assert_non_null(prot_addwaitevent(x.s, time(NULL) - 5, ev_remove, &at));
	t0 = t_now_ms();
	assert_int_equal(prot_select(x.g, -1, &out, NULL, &tv), 0);
	assert_in_range(t_now_ms() - t0, 250, 2000);
	assert_int_equal(ev_calls, 1);
	assert_null(out);
	assert_null(x.s->waitevent);
	sel_close(&x);
}

/* A slow event that is always due again does not starve the wait. */
static struct prot_waitevent *slow_cb(struct protstream *s,
				      struct prot_waitevent *ev, void *rock)
{
	int *calls = rock;

	(void)s;
	(*calls)++;
	usleep(2000);
	return ev; /* its past mark is clamped to the next millisecond */
}

static void test_prot_select_slow_event_no_livelock(void **state)
{
	struct protgroup *out = NULL;
	struct timeval tv = {0, 300000};
	struct sel x;
	struct later l;
	int calls = 0;
	uint64_t t0;

	sel_open(&x, false);
	assert_non_null(
		prot_addwaitevent_ms(x.s, t_realtime_ms(), slow_cb, &calls));
	t0 = t_now_ms();
	assert_int_equal(prot_select(x.g, -1, &out, NULL, &tv), 0);
	assert_in_range(t_now_ms() - t0, 250, 2000);
	assert_true(calls > 1);
	write_later(t_loop_of(state), &l, x.sv[1], "w", 200);
	assert_int_equal(prot_select(x.g, -1, &out, NULL, NULL), 1);
	assert_ptr_equal(protgroup_getelement(out, 0), x.s);
	protgroup_free(out);
	sel_close(&x);
}

/*
 * Spec 5.6 #63: caller {0, 300000} before the stream deadline (2 s here,
 * 1 s in the spec, to keep the two outcomes far apart on a busy machine).
 */
static void test_prot_select_caller_timeout_first(void **state)
{
	struct protgroup *out = (struct protgroup *)&out;
	struct timeval tv = {0, 300000};
	struct sel x;
	int flag = 42;
	uint64_t t0;

	(void)state;
	sel_open(&x, false);
	assert_int_equal(prot_settimeout(x.s, 2), 0);
	t0 = t_now_ms();
	assert_int_equal(prot_select(x.g, -1, &out, &flag, &tv), 0);
	assert_in_range(t_now_ms() - t0, 250, 1900);
	assert_null(out);
	assert_int_equal(flag, 0);
	assert_int_equal(tv.tv_sec, 0);
	assert_int_equal(tv.tv_usec, 300000);
	sel_close(&x);
}

/*
 * A zero timeout polls once, as select(2) does: input still in the
 * socket and a readable extra fd are both seen; with nothing there it
 * returns 0 at once.
 */
static void test_prot_select_zero_timeout_polls(void **state)
{
	struct protgroup *out = NULL;
	struct timeval tv = {0, 0};
	struct sel x;
	int flag = 42;
	uint64_t t0;

	(void)state;
	sel_open(&x, true);
	t0 = t_now_ms();
	assert_int_equal(prot_select(x.g, x.p[0], &out, &flag, &tv), 0);
	assert_true(t_now_ms() - t0 < 1500);
	assert_int_equal(flag, 0);
	assert_null(out);
	assert_int_equal(write(x.sv[1], "q", 1), 1);
	assert_int_equal(write(x.p[1], "e", 1), 1);
	assert_int_equal(prot_select(x.g, x.p[0], &out, &flag, &tv), 2);
	assert_int_equal(flag, 1);
	assert_ptr_equal(protgroup_getelement(out, 0), x.s);
	assert_int_equal(prot_getc(x.s), 'q');
	protgroup_free(out);
	sel_close(&x);
}

/*
 * Spec 5.6 #64, fixed (spec 6 item 12): input held inside zlib makes the
 * member ready at once (Cyrus sleeps its whole 2 s timeout).
 */
static void test_prot_select_sees_layer_input(void **state)
{
	struct protgroup *g, *out = NULL;
	struct timeval tv = {2, 0};
	struct protstream *in, *w;
	static char big[200000];
	char buf[8192];
	int sv[2];
	uint64_t t0;

	(void)state;
	in = t_read_pair(sv);
	w = prot_new(sv[1], 1);
	assert_non_null(w);
	if (prot_setcompress(w) != 0 || prot_setcompress(in) != 0) {
		prot_free(w);
		prot_free(in);
		t_close_pair(sv);
		skip(); /* no DEFLATE layer in this build */
	}
	memset(big, 'A', sizeof(big));
	assert_int_equal(prot_write(w, big, sizeof(big)), 0);
	assert_int_equal(prot_flush(w), 0);
	assert_true(prot_read(in, buf, sizeof(buf)) > 0);
	while (in->cnt > 0)
		assert_true(prot_read(in, buf, sizeof(buf)) > 0);
	g = group_of(in);
	t0 = t_now_ms();
	assert_int_equal(prot_select(g, -1, &out, NULL, &tv), 1);
	assert_true(t_now_ms() - t0 < 1500);
	assert_true(prot_read(in, buf, sizeof(buf)) > 0);
	protgroup_free(out);
	protgroup_free(g);
	prot_free(w);
	prot_free(in);
	t_close_pair(sv);
}

/*
 * Bytes the stream already holds beyond its window, or still in the
 * socket: either way prot_select returns at once.
 */
static void test_prot_select_sees_held_bytes(void **state)
{
	struct protgroup *out = NULL;
	struct timeval tv = {2, 0};
	struct sel x;
	static char data[6000];
	char buf[PROT_BUFSIZE];
	uint64_t t0;

	(void)state;
	sel_open(&x, false);
	memset(data, 'h', sizeof(data));
	assert_int_equal(write(x.sv[1], data, sizeof(data)),
			 (ssize_t)sizeof(data));
	assert_int_equal(prot_read(x.s, buf, sizeof(buf)), PROT_BUFSIZE);
	assert_int_equal(x.s->cnt, 0);
	t0 = t_now_ms();
	assert_int_equal(prot_select(x.g, -1, &out, NULL, &tv), 1);
	assert_true(t_now_ms() - t0 < 1500);
	assert_ptr_equal(protgroup_getelement(out, 0), x.s);
	assert_int_equal(prot_read(x.s, buf, sizeof(buf)),
			 (int)sizeof(data) - PROT_BUFSIZE);
	protgroup_free(out);
	sel_close(&x);
}

/* Peer close and a stream already at EOF both count as ready. */
static void test_prot_select_eof_ready(void **state)
{
	struct protgroup *g, *out = NULL;
	struct timeval tv = {2, 0};
	struct protstream *s;
	int sv[2];

	(void)state;
	s = t_read_pair(sv);
	g = group_of(s);
	close(sv[1]);
	assert_int_equal(prot_select(g, -1, &out, NULL, &tv), 1);
	protgroup_free(out);
	assert_int_equal(prot_getc(s), EOF);
	assert_true(prot_IS_EOF(s));
	out = NULL;
	assert_int_equal(prot_select(g, -1, &out, NULL, &tv), 1);
	assert_ptr_equal(protgroup_getelement(out, 0), s);
	protgroup_free(out);
	protgroup_free(g);
	prot_free(s);
	close(sv[0]);
}

/*
 * Every member past its read deadline is reported (Cyrus: only the one
 * with the earliest deadline), in group order.
 */
static void test_prot_select_two_deadlines(void **state)
{
	struct protgroup *g, *out = NULL;
	struct protstream *a, *b, *c;
	int sa[2], sb[2], sc[2];

	(void)state;
	a = t_read_pair(sa);
	b = t_read_pair(sb);
	c = t_read_pair(sc);
	assert_int_equal(prot_settimeout(b, 1), 0);
	assert_int_equal(prot_settimeout(a, 1), 0);
	assert_int_equal(prot_settimeout(c, 60), 0);
	g = group_of(a);
	protgroup_insert(g, c);
	protgroup_insert(g, b);
	usleep(1100 * 1000);
	assert_int_equal(prot_select(g, -1, &out, NULL, NULL), 2);
	assert_ptr_equal(protgroup_getelement(out, 0), a);
	assert_ptr_equal(protgroup_getelement(out, 1), b);
	assert_null(protgroup_getelement(out, 2));
	protgroup_free(out);
	protgroup_free(g);
	prot_free(a);
	prot_free(b);
	prot_free(c);
	t_close_pair(sa);
	t_close_pair(sb);
	t_close_pair(sc);
}

/* A NULL group is an empty group (Cyrus dereferences it). */
static void test_prot_select_null_group(void **state)
{
	struct protgroup *out = (struct protgroup *)&out;
	struct timeval tv = {0, 100000};
	int p[2];
	int flag = 42;

	(void)state;
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	errno = 0;
	assert_int_equal(prot_select(NULL, -1, &out, &flag, NULL), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(prot_select(NULL, p[0], &out, &flag, &tv), 0);
	assert_null(out);
	assert_int_equal(flag, 0);
	assert_int_equal(write(p[1], "e", 1), 1);
	out = (struct protgroup *)&out;
	assert_int_equal(prot_select(NULL, p[0], &out, &flag, NULL), 1);
	assert_null(out);
	assert_int_equal(flag, 1);
	tv.tv_usec = 50000;
	assert_int_equal(prot_select(NULL, -1, &out, NULL, &tv), 0);
	close(p[0]);
	close(p[1]);
}

/* A bad extra fd fails as select(2) does. */
static void test_prot_select_bad_extra_fd(void **state)
{
	struct protgroup *out = NULL;
	struct sel x;
	int p[2];
	int flag = 42;

	(void)state;
	sel_open(&x, false);
	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	close(p[0]);
	close(p[1]);
	errno = 0;
	assert_int_equal(prot_select(x.g, p[0], &out, &flag, NULL), -1);
	assert_int_equal(errno, EBADF);
	sel_close(&x);
}

/* No FD_SETSIZE limit: a member on an fd above 1024. */
static void test_prot_select_high_fd(void **state)
{
	struct protgroup *g, *out = NULL;
	struct protstream *s;
	struct later l;
	int sv[2], hi;

	t_socketpair(sv);
	hi = fcntl(sv[0], F_DUPFD_CLOEXEC, 1500);
	if (hi < 0) {
		t_close_pair(sv);
		skip(); /* RLIMIT_NOFILE too low */
	}
	assert_true(hi >= 1500);
	s = prot_new(hi, 0);
	assert_non_null(s);
	g = group_of(s);
	write_later(t_loop_of(state), &l, sv[1], "h", 100);
	assert_int_equal(prot_select(g, -1, &out, NULL, NULL), 1);
	assert_ptr_equal(protgroup_getelement(out, 0), s);
	assert_int_equal(prot_getc(s), 'h');
	protgroup_free(out);
	protgroup_free(g);
	prot_free(s);
	close(hi);
	t_close_pair(sv);
}

/* From a fiber, with several members: only the one with input is out. */
struct fiber_sel {
	struct protgroup *g;
	struct protgroup *out;
	int ret;
	int flag;
};

static int select_fiber(void *arg)
{
	struct fiber_sel *f = arg;
	struct timeval tv = {3, 0};

	f->ret = prot_select(f->g, -1, &f->out, &f->flag, &tv);
	return 0;
}

static void test_prot_select_in_fiber(void **state)
{
	struct fiber_sel fs = {.flag = 42};
	struct protstream *s[3];
	struct ur_fiber *f;
	struct later l;
	int sv[3][2];

	fs.g = protgroup_new(0);
	assert_non_null(fs.g);
	for (int i = 0; i < 3; i++) {
		s[i] = t_read_pair(sv[i]);
		protgroup_insert(fs.g, s[i]);
	}
	write_later(t_loop_of(state), &l, sv[1][1], "f", 200);
	assert_int_equal(
		ur_fiber_spawn(t_loop_of(state), select_fiber, &fs, NULL, &f),
		0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(fs.ret, 1);
	assert_int_equal(fs.flag, 0);
	assert_ptr_equal(protgroup_getelement(fs.out, 0), s[1]);
	assert_null(protgroup_getelement(fs.out, 1));
	assert_int_equal(prot_getc(s[1]), 'f');
	protgroup_free(fs.out);
	protgroup_free(fs.g);
	for (int i = 0; i < 3; i++) {
		prot_free(s[i]);
		t_close_pair(sv[i]);
	}
}

/* A cancelled fiber: -1/ECANCELED, and no op is left in flight. */
static void test_prot_select_fiber_cancelled(void **state)
{
	struct fiber_sel fs = {.flag = 42};
	struct ur_loop_stats st;
	struct ur_fiber *f;
	struct sel x;
	int flag = 0;

	sel_open(&x, false);
	fs.g = x.g;
	assert_int_equal(
		ur_fiber_spawn(t_loop_of(state), select_fiber, &fs, NULL, &f),
		0);
	(void)t_loop_run_until(t_loop_of(state), &flag, 100);
	assert_int_equal(ur_fiber_cancel(f), 0);
	assert_int_equal(ur_fiber_join(f, NULL), 0);
	assert_int_equal(fs.ret, -1);
	(void)t_loop_run_until(t_loop_of(state), &flag, 100);
	ur_loop_stats(t_loop_of(state), &st);
	assert_int_equal(st.ops_inflight, 0);
	assert_int_equal(st.timers_armed, 0);
	sel_close(&x);
}

/* Spec 6 item 7: a signal does not end prot_select with EINTR. */
static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

static void test_prot_select_signal_no_eintr(void **state)
{
	struct sigaction sa = {.sa_handler = on_alarm}, old;
	struct itimerval it = {.it_value = {0, 100000}};
	struct protgroup *out = NULL;
	struct sel x;
	struct later l;

	sel_open(&x, false);
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	alarms = 0;
	assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
	write_later(t_loop_of(state), &l, x.sv[1], "s", 400);
	assert_int_equal(prot_select(x.g, -1, &out, NULL, NULL), 1);
	assert_int_equal(sigaction(SIGALRM, &old, NULL), 0);
	assert_int_equal(alarms, 1);
	assert_ptr_equal(protgroup_getelement(out, 0), x.s);
	protgroup_free(out);
	sel_close(&x);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_prot_select_groups),
		T(test_prot_select_groups_grow_reset),
		T(test_prot_select_buffered_and_extra),
		T(test_prot_select_only_extra),
		T(test_prot_select_only_member),
		T(test_prot_select_timeout),
		T(test_prot_select_read_deadline),
		T(test_prot_select_runs_events),
		T(test_prot_select_due_event_then_timeout),
		T(test_prot_select_caller_timeout_first),
		T(test_prot_select_zero_timeout_polls),
		T(test_prot_select_slow_event_no_livelock),
		T(test_prot_select_sees_layer_input),
		T(test_prot_select_sees_held_bytes),
		T(test_prot_select_eof_ready),
		T(test_prot_select_two_deadlines),
		T(test_prot_select_null_group),
		T(test_prot_select_bad_extra_fd),
		T(test_prot_select_high_fd),
		T(test_prot_select_in_fiber),
		T(test_prot_select_fiber_cancelled),
		T(test_prot_select_signal_no_eintr),
	};

	t_require_loop();
	return t_run_groups("prot-select", tests,
			    sizeof(tests) / sizeof(tests[0])) != 0;
}
