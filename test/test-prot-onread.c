/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * test/prot-onread: flush-on-read (spec 2.3 step 4, 2.12) when the
 * partner's forced flush is submitted with the read's own wait
 * (prot__flush_begin/end): bytes, their order, Cyrus's write-then-read
 * order when the socket is full, errors, output written meanwhile, and
 * the io_uring_enter it saves.
 */
#include "t-helpers.h" /* stdarg, stddef, setjmp, cmocka: in that order */

#include <ringprot/prot.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TRIPS 200

/* Read from fd until buf ends with "\r\n" (or EOF); returns the length. */
static size_t read_line(int fd, char *buf, size_t cap)
{
	size_t have = 0;

	while (have < 2 || memcmp(buf + have - 2, "\r\n", 2) != 0) {
		ssize_t r = read(fd, buf + have, cap - have);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		have += (size_t)r;
	}
	return have;
}

/* An IMAP-ish client: TRIPS commands, each answered before the next. */
struct client {
	pthread_t th;
	int fd;
	int bad; /* answers that were not the expected bytes */
};

static void *client_main(void *arg)
{
	struct client *c = arg;
	char req[64], want[64], got[256];

	for (int i = 0; i < TRIPS; i++) {
		int n = snprintf(req, sizeof(req), "a%d NOOP\r\n", i);
		int w = snprintf(want, sizeof(want), "a%d OK NOOP\r\n", i);
		size_t k;

		if (write(c->fd, req, (size_t)n) != n)
			c->bad++;
		k = read_line(c->fd, got, sizeof(got));
		if (k != (size_t)w || memcmp(got, want, k) != 0)
			c->bad++;
	}
	shutdown(c->fd, SHUT_WR);
	return NULL;
}

/* The server side of the trips: answer each line, no explicit flush. */
static int serve(struct protstream *in, struct protstream *out)
{
	char line[256];
	int n = 0;

	while (prot_fgets(line, sizeof(line), in) != NULL) {
		*strchr(line, ' ') = '\0';
		if (prot_printf(out, "%s OK NOOP\r\n", line) != 0)
			return -1;
		n++;
	}
	return n;
}

struct server {
	struct protstream *in, *out;
	int trips;
};

static int server_fiber(void *arg)
{
	struct server *sv = arg;

	sv->trips = serve(sv->in, sv->out);
	return 0;
}

/* What the server sends in all: "a<i> OK NOOP\r\n" for each i. */
static long answer_bytes(void)
{
	char tmp[64];
	long n = 0;

	for (int i = 0; i < TRIPS; i++)
		n += snprintf(tmp, sizeof(tmp), "a%d OK NOOP\r\n", i);
	return n;
}

static struct prot_waitevent *never_event(struct protstream *s,
					  struct prot_waitevent *ev, void *rock)
{
	(void)s;
	(void)ev;
	(void)rock;
	fail_msg("a wait event an hour away ran");
	return NULL;
}

/*
 * Every answer arrives, in order. With DEFER_TASKRUN a command costs two
 * enters (the probe, then the wait that also submits the flush) instead
 * of three; the other modes keep the flush's own enter. in_fiber runs
 * the server in a fiber (the loop sleeps) rather than outside fibers
 * (the read drives the loop). With timed, the read stream also has a
 * read timeout and a wait event an hour away. Returns the completions
 * the trips cost.
 */
static uint64_t check_trips(void **state, bool in_fiber, bool timed)
{
	struct ur_loop *loop = t_loop_of(state);
	struct ur_loop_stats st0, st1;
	struct server sv;
	struct client c = {0};
	int sp[2];

	t_socketpair(sp);
	sv.in = prot_new(sp[0], 0);
	sv.out = prot_new(sp[0], 1);
	assert_int_equal(prot_setflushonread(sv.in, sv.out), 0);
	if (timed) {
		assert_int_equal(prot_settimeout(sv.in, 60), 0);
		assert_non_null(prot_addwaitevent(sv.in, time(NULL) + 3600,
						  never_event, NULL));
	}
	c.fd = sp[1];
	ur_loop_stats(loop, &st0);
	assert_int_equal(pthread_create(&c.th, NULL, client_main, &c), 0);
	if (in_fiber) {
		struct ur_fiber *f;

		assert_int_equal(
			ur_fiber_spawn(loop, server_fiber, &sv, NULL, &f), 0);
		assert_int_equal(ur_fiber_join(f, NULL), 0);
	} else {
		sv.trips = serve(sv.in, sv.out);
	}
	assert_int_equal(pthread_join(c.th, NULL), 0);
	ur_loop_stats(loop, &st1);
	assert_int_equal(c.bad, 0);
	assert_int_equal(sv.trips, TRIPS);
	assert_null(prot_error(sv.out));
	assert_int_equal(prot_bytes_out(sv.out), answer_bytes());
	if (t_mode == UR_MODE_DEFER)
		assert_true(st1.enters - st0.enters <= 2 * TRIPS + TRIPS / 4);
	prot_free(sv.in);
	prot_free(sv.out);
	t_close_pair(sp);
	return st1.cqes - st0.cqes;
}

static void test_prot_onread_trips(void **state)
{
	(void)check_trips(state, false, false);
}

static void test_prot_onread_trips_fiber(void **state)
{
	(void)check_trips(state, true, false);
}

/*
 * A read timeout and a far wait event cost no ring operation per read
 * (issue 3: one lazy deadline per stream, one timeout per event): the
 * trips complete as many ops with them as without, give or take the
 * event's and the deadline's own few.
 */
static void test_prot_onread_timers_cost_nothing(void **state)
{
	for (int f = 0; f <= 1; f++) {
		uint64_t plain = check_trips(state, f, false);
		uint64_t timed = check_trips(state, f, true);

		assert_true(plain >= 2 * TRIPS);
		assert_true(timed <= plain + 4);
	}
}

/* A wait event that writes to the client while its read waits. */
struct evctx {
	struct protstream *out;
	bool flush;
	int ran;
};

static struct prot_waitevent *write_event(struct protstream *s,
					  struct prot_waitevent *ev, void *rock)
{
	struct evctx *e = rock;

	(void)ev;
	e->ran++;
	assert_int_equal(prot_printf(e->out, "* 1 EXISTS\r\n"), 0);
	if (e->flush)
		assert_int_equal(prot_flush(e->out), 0);
	prot_removewaitevent(s, ev);
	return NULL;
}

/* A peer that reads want bytes, waits delay_ms, then sends "DONE\r\n". */
struct idler {
	pthread_t th;
	int fd;
	size_t want;
	int delay_ms;
	char got[256];
	size_t len;
};

static void *idler_main(void *arg)
{
	struct idler *d = arg;

	while (d->len < d->want) {
		ssize_t r = read(d->fd, d->got + d->len, d->want - d->len);

		if (r <= 0)
			break;
		d->len += (size_t)r;
	}
	usleep((useconds_t)d->delay_ms * 1000);
	if (write(d->fd, "DONE\r\n", 6) != 6)
		d->len = 0;
	return NULL;
}

/*
 * IDLE: "+ idling" goes out when the read starts to wait; an event 100 ms
 * later writes "* 1 EXISTS" and flushes (it must come second), or only
 * writes it (it stays in the buffer behind the flushed bytes until the
 * next flush).
 */
static void check_event_output(bool flush)
{
	static const char want[] = "+ idling\r\n* 1 EXISTS\r\n";
	struct protstream *in, *out;
	struct evctx e = {0};
	struct idler d = {0};
	int sp[2];

	t_socketpair(sp);
	in = prot_new(sp[0], 0);
	out = prot_new(sp[0], 1);
	assert_int_equal(prot_setflushonread(in, out), 0);
	assert_int_equal(prot_settimeout(in, 30), 0);
	e.out = out;
	e.flush = flush;
	assert_non_null(prot_addwaitevent_ms(in, t_realtime_ms() + 100,
					     write_event, &e));
	d.fd = sp[1];
	d.want = flush ? sizeof(want) - 1 : 10;
	d.delay_ms = flush ? 0 : 300; /* the event runs in between */
	assert_int_equal(pthread_create(&d.th, NULL, idler_main, &d), 0);
	assert_int_equal(prot_printf(out, "+ idling\r\n"), 0);
	assert_int_equal(prot_getc(in), 'D');
	assert_int_equal(pthread_join(d.th, NULL), 0);
	assert_int_equal(e.ran, 1);
	assert_int_equal(d.len, d.want);
	assert_memory_equal(d.got, want, d.want);
	if (!flush) {
		/* The event's bytes wait in the buffer, whole. */
		char rest[64];

		assert_int_equal(prot_flush(out), 0);
		assert_int_equal(read_line(sp[1], rest, sizeof(rest)), 12);
		assert_memory_equal(rest, "* 1 EXISTS\r\n", 12);
	}
	assert_null(prot_error(out));
	prot_free(in);
	prot_free(out);
	t_close_pair(sp);
}

static void test_prot_onread_event_flushes(void **state)
{
	(void)state;
	check_event_output(true);
}

static void test_prot_onread_event_writes(void **state)
{
	(void)state;
	check_event_output(false);
}

/* A peer that sends a command first, then drains everything. */
struct late {
	pthread_t th;
	int fd;
	size_t want; /* bytes to drain */
	size_t drained;
	uint64_t drain_ms; /* when it started to drain */
	bool tail_ok;
};

static void *late_main(void *arg)
{
	struct late *l = arg;
	char *buf = malloc(l->want);

	usleep(100 * 1000);
	if (buf == NULL || write(l->fd, "q\r\n", 3) != 3)
		return NULL;
	usleep(200 * 1000);
	l->drain_ms = t_now_ms();
	while (l->drained < l->want) {
		ssize_t r = read(l->fd, buf + l->drained, l->want - l->drained);

		if (r <= 0)
			break;
		l->drained += (size_t)r;
	}
	l->tail_ok = l->drained == l->want &&
		     memcmp(buf + l->want - 6, "resp\r\n", 6) == 0;
	free(buf);
	return NULL;
}

/*
 * The socket is full when the read starts: the flush cannot complete at
 * once, and the command arrives before the peer reads anything. As in
 * Cyrus (write, then read), the read returns only once the flush is
 * done, which needs the peer to drain.
 */
static void test_prot_onread_full_socket(void **state)
{
	struct protstream *in, *out;
	struct late l = {0};
	char fill[4096];
	size_t filled = 0;
	uint64_t returned;
	int sp[2], v = 4096;

	(void)state;
	t_socketpair(sp);
	assert_int_equal(
		setsockopt(sp[0], SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)), 0);
	memset(fill, 'f', sizeof(fill));
	for (;;) {
		ssize_t r = send(sp[0], fill, sizeof(fill), MSG_DONTWAIT);

		if (r <= 0)
			break;
		filled += (size_t)r;
	}
	assert_true(filled > 0);
	in = prot_new(sp[0], 0);
	out = prot_new(sp[0], 1);
	assert_int_equal(prot_setflushonread(in, out), 0);
	assert_int_equal(prot_printf(out, "resp\r\n"), 0);
	l.fd = sp[1];
	l.want = filled + 6;
	assert_int_equal(pthread_create(&l.th, NULL, late_main, &l), 0);
	assert_int_equal(prot_getc(in), 'q');
	returned = t_now_ms();
	assert_int_equal(pthread_join(l.th, NULL), 0);
	assert_true(l.tail_ok);
	assert_true(returned >= l.drain_ms);
	assert_int_equal(prot_queued(out), 0);
	assert_null(prot_error(out));
	assert_int_equal(prot_bytes_out(out), 6);
	prot_free(in);
	prot_free(out);
	t_close_pair(sp);
}

static void *write_x_later(void *arg)
{
	usleep(100 * 1000);
	if (write(*(int *)arg, "x", 1) != 1)
		abort();
	return NULL;
}

/*
 * The peer no longer reads: the flush fails (the write stream's error),
 * and the read goes on and gets the peer's next bytes, as Cyrus's
 * write-then-read would.
 */
static void test_prot_onread_peer_stops_reading(void **state)
{
	struct protstream *in, *out;
	pthread_t th;
	int sp[2];

	(void)state;
	t_socketpair(sp);
	in = prot_new(sp[0], 0);
	out = prot_new(sp[0], 1);
	assert_int_equal(prot_setflushonread(in, out), 0);
	assert_int_equal(shutdown(sp[1], SHUT_RD), 0);
	assert_int_equal(pthread_create(&th, NULL, write_x_later, &sp[1]), 0);
	assert_int_equal(prot_printf(out, "* BYE\r\n"), 0);
	assert_int_equal(prot_getc(in), 'x');
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_non_null(prot_error(out));
	assert_string_equal(prot_error(out), strerror(EPIPE));
	assert_int_equal(prot_flush(out), EOF);
	prot_free(in);
	prot_free(out);
	t_close_pair(sp);
}

/*
 * The other paths stay: input ready means no flush; a non-blocking read
 * flushes its partner non-forced, at once.
 */
static void test_prot_onread_free_after(void **state)
{
	struct protstream *in, *out;
	char got[64];
	int sp[2];

	(void)state;
	t_socketpair(sp);
	in = prot_new(sp[0], 0);
	out = prot_new(sp[0], 1);
	assert_int_equal(prot_setflushonread(in, out), 0);
	assert_int_equal(write(sp[1], "x", 1), 1);
	assert_int_equal(prot_getc(in), 'x'); /* ready: nothing flushed */
	assert_int_equal(prot_printf(out, "last\r\n"), 0);
	prot_NONBLOCK(in);
	assert_int_equal(prot_getc(in), EOF); /* would block: non-forced */
	assert_null(prot_error(in));
	prot_BLOCK(in);
	prot_free(out);
	assert_int_equal(read_line(sp[1], got, sizeof(got)), 6);
	assert_memory_equal(got, "last\r\n", 6);
	prot_free(in);
	t_close_pair(sp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, t_loop_setup, t_loop_teardown)
		T(test_prot_onread_trips),
		T(test_prot_onread_trips_fiber),
		T(test_prot_onread_timers_cost_nothing),
		T(test_prot_onread_event_flushes),
		T(test_prot_onread_event_writes),
		T(test_prot_onread_full_socket),
		T(test_prot_onread_peer_stops_reading),
		T(test_prot_onread_free_after),
#undef T
	};

	signal(SIGPIPE, SIG_IGN);
	return t_run_groups("prot-onread", tests,
			    sizeof(tests) / sizeof(tests[0]));
}
